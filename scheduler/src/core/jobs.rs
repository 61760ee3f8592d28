//! The core's decisions on jobs: rules evaluated on signals, attempts queued, dispatched,
//! stopped and ended, retries, and the end of an execution.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use aiflow_api::{Event, NewEvent};

use super::{
    Core, Effect, ExecutionId, JOB_STATUS, MAX_WAIT, SENDER, Waiting, later, log_path, new_attempt,
};
use crate::durable::{MetaWrite, Record};
use crate::exec::{AttemptId, LaunchRequest, LaunchSpec, Outcome, Status};
use crate::metrics::Obs;
use crate::rules::{
    Decision, Evaluation, Signal, decide, describe_signal, evaluate, evaluate_finish, finished,
    outcome,
};
use crate::state::{JobState, WorkflowState};

impl Core {
    pub(crate) fn evaluate_signal(&mut self, id: &str, signal: Signal<'_>) {
        let Some(exec) = self.executions.get_mut(id) else {
            return;
        };
        if exec.stopping {
            return;
        }
        let workflow = exec.workflow.clone();
        let rules = workflow.rules.len();
        if finished(&workflow, &exec.memory) {
            return; // `finish_on` was met: the rules take no more actions
        }
        let before = exec.memory.get(rules).cloned();
        let finishing = evaluate_finish(&workflow, &mut exec.memory, signal);
        if exec.memory.get(rules) != before.as_ref() {
            // Parts of `finish_on` met so far are committed like a rule's memory.
            self.pending.rules.insert((id.to_string(), rules));
        }
        if finishing {
            tracing::info!(workflow = %workflow.name, execution = id, signal = %describe_signal(&signal), "finish_on met: the execution ends when its running jobs have ended");
            self.check_finished(id);
            return;
        }
        let evaluations = {
            let _span = tracing::debug_span!("rule.evaluate", workflow = %workflow.name, execution = id, rules).entered();
            evaluate(&workflow, &mut exec.memory[..rules], signal)
        };
        let cause = match signal {
            Signal::Event(e) => Some(e.clone()),
            Signal::Job { .. } => None,
        };
        let decided: Vec<(Evaluation, Decision)> = evaluations
            .into_iter()
            .map(|ev| {
                let decision = match &ev.fired {
                    Some(action) => {
                        let state = exec
                            .jobs
                            .get(&ev.job)
                            .map_or(JobState::Waiting, |j| j.state);
                        decide(action, state)
                    }
                    None => Decision::Ignore("condition not met yet"),
                };
                (ev, decision)
            })
            .collect();
        for (ev, decision) in decided {
            self.pending.rules.insert((id.to_string(), ev.rule));
            self.record(id, &ev, &signal, &decision);
            Obs::evaluation(matches!(signal, Signal::Event(_)), &decision);
            let span = tracing::debug_span!("rule.action", workflow = %workflow.name, execution = id, job = %ev.job, rule = ev.rule, decision = ?decision);
            let _entered = span.enter();
            match decision {
                Decision::Start => self.queue_job(id, &ev.job, cause.clone()),
                Decision::Stop => self.stop_job(id, &ev.job, false),
                Decision::Restart => self.stop_job(id, &ev.job, true),
                Decision::Ignore(_) => {}
            }
        }
    }

    pub(crate) fn record(
        &mut self,
        id: &str,
        ev: &Evaluation,
        signal: &Signal<'_>,
        decision: &Decision,
    ) {
        let (offset, signal_text) = match signal {
            Signal::Event(e) => (
                Some(e.offset.0),
                format!("event {} {} {}", e.offset, e.key, e.event_type),
            ),
            Signal::Job { job, state } => (None, format!("job {job} {state}")),
        };
        let decision = match decision {
            Decision::Start => "START".to_string(),
            Decision::Stop => "STOP".to_string(),
            Decision::Restart => "RESTART".to_string(),
            Decision::Ignore(why) => format!("ignored: {why}"),
        };
        self.pending.records.push(Record {
            execution: id.to_string(),
            job: ev.job.clone(),
            rule: ev.rule,
            offset,
            signal: signal_text,
            met: serde_json::to_string(&ev.met).unwrap_or_default(),
            fired: ev.fired.as_ref().map(ToString::to_string),
            decision,
            explanation: ev.explanation.clone(),
        });
    }

    /// Begins a new attempt of `job` (QUEUED, then launched).
    pub(crate) fn queue_job(&mut self, id: &str, job: &str, cause: Option<Event>) {
        let Some(exec) = self.executions.get_mut(id) else {
            return;
        };
        let Some(rt) = exec.jobs.get_mut(job) else {
            return;
        };
        if rt.state.is_active() {
            return;
        }
        self.obs.queuing(cause.as_ref().map(|e| e.created_at));
        rt.cause = cause.or_else(|| exec.trigger_event.clone());
        rt.restart_after_stop = false;
        new_attempt(&mut self.pending.meta, rt, id, job, JobState::Queued);
        self.set_job_state(id, job, JobState::Queued, None);
        self.enqueue(id, job);
    }

    /// Puts the job's current attempt in line for a slot; slots are handed out after the commit
    /// (see [`Core::flush`]).
    pub(crate) fn enqueue(&mut self, id: &str, job: &str) {
        let Some(exec) = self.executions.get(id) else {
            return;
        };
        let Some(rt) = exec.jobs.get(job) else {
            return;
        };
        let priority = exec.spec(job).map_or(0, |j| j.priority);
        self.queued_seq += 1;
        self.waiting.push(Waiting {
            priority,
            seq: std::cmp::Reverse(self.queued_seq),
            execution: ExecutionId(id.to_string()),
            job: job.to_string(),
            attempt: rt.attempt,
        });
    }

    /// Hands out free slots to waiting attempts, highest priority first, then the earliest:
    /// in total, and per execution (`max_concurrent_jobs`). Each attempt returned holds its
    /// slot until it ends; the runtime launches it.
    pub(crate) fn dispatch(&mut self) -> Vec<LaunchRequest> {
        let mut launches = Vec::new();
        let mut blocked = Vec::new();
        while self.running_total < self.config.max_running.max(1) {
            let Some(entry) = self.waiting.pop() else {
                break;
            };
            let Waiting {
                execution: ExecutionId(id),
                job,
                attempt,
                ..
            } = &entry;
            let Some(exec) = self.executions.get(id) else {
                continue;
            };
            let current = exec.jobs.get(job).map(|j| (j.attempt, j.state));
            if current != Some((*attempt, JobState::Queued)) {
                continue; // stopped or superseded while waiting
            }
            let limit = exec
                .workflow
                .max_concurrent_jobs
                .map_or(usize::MAX, |n| n as usize);
            if exec.running >= limit {
                blocked.push(entry);
                continue;
            }
            let (id, job) = (id.clone(), job.clone());
            match self.launch_request(&id, &job) {
                Some(Ok(request)) => {
                    self.hold_slot(&id, &job);
                    launches.push(request);
                }
                Some(Err(message)) => {
                    let attempt = *attempt;
                    self.on_job_ended(&id, &job, attempt, Outcome::Failed { message });
                }
                None => {}
            }
        }
        self.waiting.extend(blocked);
        Obs::slots(self.waiting.len(), self.running_total);
        launches
    }

    /// What the executor gets to start the job's current attempt: the job's document and its
    /// environment with the `AIFLOW_*` variables.
    ///
    /// The one read it does is of the job's secrets (`env_from`, files under the data folder):
    /// a job whose secrets cannot be read fails with the reason.
    pub(crate) fn launch_request(
        &mut self,
        id: &str,
        job: &str,
    ) -> Option<Result<LaunchRequest, String>> {
        let attempt_id = self.attempt_id(id, job)?;
        let exec = self.executions.get(id)?;
        let spec = exec.spec(job)?.clone();
        let rt = exec.jobs.get(job)?;
        let attempt = rt.attempt;
        let secrets = crate::jobenv::secrets_dir(&self.config.data_dir);
        let secrets = match crate::jobenv::resolve_secrets(&secrets, &spec.env_from) {
            Ok(s) => s,
            Err(message) => {
                tracing::warn!(execution = id, job, attempt, error = %message, "cannot read the job's secrets");
                return Some(Err(message));
            }
        };
        let mut env = spec.env.clone();
        env.extend(secrets);
        env.insert("AIFLOW_URL".into(), self.config.server_url.clone());
        if let Some(ca) = &self.config.ca_cert {
            env.insert("AIFLOW_CA_CERT".into(), ca.display().to_string());
        }
        match &self.config.job_tokens {
            // A token the job's own env names (say, an admin's for a job that submits
            // workflows) is kept; otherwise the job gets one scoped to this execution.
            Some(tokens) if env.get("AIFLOW_TOKEN").is_none_or(String::is_empty) => {
                let ttl = spec.timeout_s.map_or(self.config.job_token_ttl, |t| {
                    Duration::from_secs(t.saturating_add(600))
                });
                env.insert("AIFLOW_TOKEN".into(), tokens.job_token(id, ttl));
            }
            _ => {
                env.entry("AIFLOW_TOKEN".into()).or_default();
            }
        }
        env.insert("AIFLOW_NAMESPACE".into(), exec.workflow.namespace.clone());
        env.insert("AIFLOW_WORKFLOW".into(), exec.workflow.name.clone());
        env.insert("AIFLOW_EXECUTION".into(), id.to_string());
        env.insert("AIFLOW_JOB".into(), job.to_string());
        env.insert("AIFLOW_ATTEMPT".into(), attempt.to_string());
        if let Some(row) = &rt.row {
            env.insert("AIFLOW_JOB_EXECUTION".into(), row.clone());
        }
        env.insert(
            "AIFLOW_DATA_DIR".into(),
            self.config.data_dir.display().to_string(),
        );
        if let Some(bin) = &self.config.aiflow_bin {
            env.insert("AIFLOW_BIN".into(), bin.display().to_string());
        }
        if let Some(e) = &rt.cause {
            env.insert(
                "AIFLOW_EVENT".into(),
                serde_json::to_string(e).unwrap_or_default(),
            );
        }
        let span = crate::telemetry::job_start_span(
            &exec.workflow.name,
            id,
            job,
            attempt,
            rt.cause.as_ref(),
        );
        if let Some(tp) = crate::telemetry::job_traceparent(&span, rt.cause.as_ref()) {
            env.insert("TRACEPARENT".into(), tp);
        }
        self.obs.launched(id, job, span);
        Some(Ok(LaunchRequest {
            id: attempt_id,
            spec: LaunchSpec {
                workflow: exec.workflow.name.clone(),
                execution: id.to_string(),
                job: job.to_string(),
                attempt,
                commands: spec.commands().map(<[String]>::to_vec).collect(),
                env,
                working_dir: spec.working_dir.as_ref().map(PathBuf::from),
                timeout: spec.timeout_s.map(Duration::from_secs),
                log_path: log_path(&self.config, id, job, attempt),
            },
            job: Arc::new(spec),
        }))
    }

    /// An executor's report on an attempt. Reports of an attempt that is not the job's current
    /// one, or that already ended, change nothing (attempt fencing); a process of such an
    /// attempt that has just started is told to stop.
    pub(crate) fn on_status(&mut self, id: AttemptId, status: Status, by: Option<&str>) {
        let current = self.attempt_state(&id.execution, &id.job);
        let is_current = current.is_some_and(|(a, s)| a == id.attempt && s.is_active());
        let (execution, job, attempt) = (id.execution.as_str(), id.job.as_str(), id.attempt);
        match status {
            Status::Started => {
                if current == Some((attempt, JobState::Queued)) {
                    let workflow = self
                        .executions
                        .get(execution)
                        .map(|e| e.workflow.name.clone())
                        .unwrap_or_default();
                    tracing::info!(
                        workflow,
                        execution,
                        job,
                        attempt,
                        worker = by.unwrap_or(""),
                        "job started"
                    );
                    self.set_job_state(execution, job, JobState::Running, None);
                } else if !is_current {
                    tracing::info!(
                        execution,
                        job,
                        attempt,
                        worker = by.unwrap_or(""),
                        "a stale attempt started; stopping it"
                    );
                    self.pending.effects.push(Effect::StopStale(id.clone()));
                }
            }
            Status::Ended { outcome, ran } => {
                if is_current {
                    // A report of the start may come after the end (after a leader change it
                    // was delivered to the old leader, which never acknowledged it): the
                    // attempt did run.
                    if ran && current == Some((attempt, JobState::Queued)) {
                        self.set_job_state(execution, job, JobState::Running, None);
                    }
                    self.on_job_ended(execution, job, attempt, outcome);
                } else {
                    tracing::debug!(
                        execution,
                        job,
                        attempt,
                        "late report of an older attempt ignored"
                    );
                }
            }
        }
    }

    pub(crate) fn stop_job(&mut self, id: &str, job: &str, restart: bool) {
        let Some(rt) = self
            .executions
            .get_mut(id)
            .and_then(|e| e.jobs.get_mut(job))
        else {
            return;
        };
        let effect = Effect::Stop {
            id: id.to_string(),
            job: job.to_string(),
            attempt: rt.attempt,
        };
        match rt.state {
            JobState::Running => {
                rt.restart_after_stop = restart;
                rt.stop_asked = true;
                self.pending.jobs.insert((id.to_string(), job.to_string()));
                self.pending.effects.push(effect);
            }
            JobState::Waiting | JobState::Queued | JobState::Retrying => {
                // A QUEUED attempt may already be on its way to a process: stop that too. Its
                // slot is free now (see `set_job_state`), and its end report changes nothing.
                self.pending.effects.push(effect);
                self.set_job_state(id, job, JobState::Stopped, None);
                if restart {
                    self.queue_job(id, job, None);
                } else {
                    self.check_finished(id);
                }
            }
            _ => {}
        }
    }

    pub(crate) fn on_job_ended(&mut self, id: &str, job: &str, attempt: u32, outcome: Outcome) {
        let Some(exec) = self.executions.get_mut(id) else {
            return;
        };
        let retries = exec.spec(job).map_or(0, |j| j.retries);
        let backoff = exec.spec(job).and_then(|j| j.retry_backoff_s).unwrap_or(1);
        let stopping = exec.stopping;
        let Some(rt) = exec.jobs.get_mut(job) else {
            return;
        };
        if rt.attempt != attempt {
            return; // a late report of an older attempt
        }
        self.release(id, job);
        let Some(rt) = self
            .executions
            .get_mut(id)
            .and_then(|e| e.jobs.get_mut(job))
        else {
            return;
        };
        rt.stop_asked = false;
        let restart = std::mem::take(&mut rt.restart_after_stop);
        let (state, message) = match &outcome {
            Outcome::Succeeded => (JobState::Succeeded, None),
            Outcome::Stopped => (JobState::Stopped, None),
            Outcome::TimedOut => (JobState::Failed, Some("timed out".to_string())),
            Outcome::Failed { message } | Outcome::Exited { message, .. } => {
                (JobState::Failed, Some(message.clone()))
            }
        };
        let exit_code = outcome.exit_code();
        if state == JobState::Failed && attempt <= retries && !stopping {
            self.set_job_state(id, job, JobState::Retrying, message);
            // Exponential backoff with jitter: base · 2^(attempt-1) · [1, 1.25).
            let base = Duration::from_secs(backoff.saturating_mul(1 << (attempt - 1).min(10)));
            let delay = aiflow_api::backoff::jittered(base.min(MAX_WAIT)).min(MAX_WAIT);
            // The next attempt gets a new number when it is queued.
            if let Some(rt) = self
                .executions
                .get_mut(id)
                .and_then(|e| e.jobs.get_mut(job))
            {
                // The failed attempt's row ends FAILED; the job goes on RETRYING in the next.
                if let Some(row) = rt.row.clone() {
                    self.pending.meta.push(MetaWrite::JobState {
                        row,
                        state: JobState::Failed,
                        exit_code,
                    });
                }
                let next = new_attempt(&mut self.pending.meta, rt, id, job, JobState::Retrying);
                rt.retry_at = Some(later(delay));
                self.pending.jobs.insert((id.to_string(), job.to_string()));
                // The scheduled retry names the attempt it launches.
                self.pending.effects.push(Effect::Retry {
                    id: id.to_string(),
                    job: job.to_string(),
                    attempt: next,
                    delay,
                });
            }
            return;
        }
        self.set_job_state_exited(id, job, state, message, exit_code);
        if restart && !stopping {
            self.queue_job(id, job, None);
        }
        self.check_finished(id);
    }

    /// Stores a job's new state, publishes it, and evaluates rules on it.
    pub(crate) fn set_job_state(
        &mut self,
        id: &str,
        job: &str,
        state: JobState,
        message: Option<String>,
    ) {
        self.set_job_state_exited(id, job, state, message, None);
    }

    /// [`Self::set_job_state`] of an attempt that ended, with its command's exit code (stored on
    /// the attempt's job execution).
    pub(crate) fn set_job_state_exited(
        &mut self,
        id: &str,
        job: &str,
        state: JobState,
        message: Option<String>,
        exit_code: Option<i64>,
    ) {
        let Some(exec) = self.executions.get_mut(id) else {
            return;
        };
        let workflow = exec.workflow.clone();
        let Some(rt) = exec.jobs.get_mut(job) else {
            return;
        };
        if rt.state != state && !rt.state.can_become(state) {
            tracing::warn!(workflow = %workflow.name, execution = id, job, attempt = rt.attempt, from = %rt.state, to = %state, "transition refused");
            return;
        }
        match (rt.state.is_active(), state.is_active()) {
            (false, true) => exec.active += 1,
            (true, false) => {
                exec.active = exec.active.saturating_sub(1);
                // An attempt that is over (or stopped before it ran) holds no slot: an end
                // report of it that comes later changes nothing.
                if rt.launched {
                    rt.launched = false;
                    exec.running = exec.running.saturating_sub(1);
                    self.running_total = self.running_total.saturating_sub(1);
                }
            }
            _ => {}
        }
        rt.state = state;
        if state != JobState::Retrying {
            rt.retry_at = None;
        }
        if state.is_terminal() || state == JobState::Queued {
            rt.stop_asked = false;
        }
        let attempt = rt.attempt;
        self.obs.job_state(id, job, attempt, state);
        self.pending.jobs.insert((id.to_string(), job.to_string()));
        if let Some(row) = rt.row.clone() {
            self.pending.meta.push(MetaWrite::JobState {
                row,
                state,
                exit_code,
            });
        }
        let mut context = serde_json::json!({
            "execution": id, "workflow": workflow.name, "job": job, "attempt": attempt,
        });
        if let Some(m) = &message {
            context["message"] = serde_json::Value::String(m.clone());
        }
        let event = NewEvent::new(format!("{}/{job}", workflow.name), state.as_str())
            .namespace(workflow.namespace.clone())
            .event_type(JOB_STATUS)
            .sender(SENDER)
            .context(context);
        self.publish(event);
        tracing::info!(workflow = %workflow.name, execution = id, job, attempt, state = %state, reason = message.as_deref().unwrap_or(""), "job state");
        self.evaluate_signal(id, Signal::Job { job, state });
    }

    pub(crate) fn check_finished(&mut self, id: &str) {
        let Some(exec) = self.executions.get(id) else {
            return;
        };
        if exec.active > 0 {
            return; // something still runs or waits for a slot
        }
        let states: HashMap<String, JobState> = exec
            .jobs
            .iter()
            .map(|(k, v)| (k.clone(), v.state))
            .collect();
        let done = if exec.stopping {
            (!states.values().any(|s| s.is_active())).then_some(if exec.expired.is_some() {
                WorkflowState::Failed
            } else {
                WorkflowState::Stopped
            })
        } else {
            outcome(&exec.workflow, &states, &exec.memory)
        };
        let Some(state) = done else {
            return;
        };
        // Written after its jobs' rows in the same commit: a reader never sees a finished
        // execution with unfinished jobs.
        self.pending.meta.push(MetaWrite::ExecState {
            id: exec.id.clone(),
            state: state.as_str(),
            reason: exec.expired.clone(),
        });
        self.publish_workflow_status(id, state);
        Obs::execution_state(state.as_str());
        tracing::info!(execution = id, state = %state, "execution finished");
        self.executions.remove(id);
        self.pending.finished.push(id.to_string());
    }
}
