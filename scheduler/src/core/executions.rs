//! The core's decisions on executions: starts and stops, the time limit, and the triggers that
//! events and the clock fire.

use std::sync::Arc;
use std::time::Duration;

use aiflow_api::Event;
use aiflow_translator::{Workflow, WorkflowTrigger};
use chrono::Utc;

use super::{Core, Effect, Exec, SENDER, later, timer_key, trigger_memory_key};
use crate::durable::{Delayed, MetaWrite, Record};
use crate::metrics::Obs;
use crate::rules::{Signal, event_matches, initial_jobs};
use crate::state::{JobState, WorkflowState};
use crate::triggers::parts;

impl Core {
    /// Starts an execution of `workflow` (version `version` of the workflow with row id
    /// `workflow_id`): its first jobs are queued.
    pub(crate) fn start_execution(
        &mut self,
        workflow: Arc<Workflow>,
        workflow_id: i64,
        version: i64,
        trigger: serde_json::Value,
        event: Option<Event>,
    ) -> String {
        let name = workflow.name.clone();
        let id = uuid::Uuid::new_v4().simple().to_string();
        self.pending.meta.push(MetaWrite::ExecCreate {
            id: id.clone(),
            workflow_id,
            version,
            state: WorkflowState::Running.as_str(),
            trigger: Some(trigger),
        });
        let exec = Exec::new(id.clone(), workflow.clone(), version, event);
        self.executions.insert(id.clone(), exec);
        self.pending.execs.insert(id.clone());
        tracing::info!(workflow = name, execution = %id, "execution started");
        Obs::execution_state(WorkflowState::Running.as_str());
        self.publish_workflow_status(&id, WorkflowState::Running);
        for job in initial_jobs(&workflow) {
            // The trigger event (if any) is the cause of the first jobs.
            let cause = self
                .executions
                .get(&id)
                .and_then(|e| e.trigger_event.clone());
            self.queue_job(&id, job, cause);
        }
        self.check_finished(&id);
        id
    }

    /// Stops a running execution: its running jobs are stopped, waiting ones never start.
    /// `false` when it is not running here.
    pub(crate) fn stop_execution(&mut self, id: &str) -> bool {
        let Some(exec) = self.executions.get_mut(id) else {
            return false;
        };
        exec.stopping = true;
        self.pending.execs.insert(id.to_string());
        let mut never_started = Vec::new();
        for (name, job) in &mut exec.jobs {
            job.restart_after_stop = false;
            match job.state {
                s if s.is_active() => {
                    job.stop_asked = true;
                    self.pending.jobs.insert((id.to_string(), name.clone()));
                    self.pending.effects.push(Effect::Stop {
                        id: id.to_string(),
                        job: name.clone(),
                        attempt: job.attempt,
                    });
                    if s != JobState::Running {
                        never_started.push(name.clone());
                    }
                }
                _ => {}
            }
        }
        for job in never_started {
            self.set_job_state(id, &job, JobState::Stopped, None);
        }
        self.check_finished(id);
        true
    }

    /// Stops, as FAILED, every execution that has run longer than its `max_duration_s`: its
    /// jobs get the usual grace period, and `why` shows the limit for each job it stopped.
    pub(crate) fn expire_overdue(&mut self, now: chrono::DateTime<Utc>) {
        let overdue: Vec<(String, String)> = self
            .executions
            .values()
            .filter(|e| e.expired.is_none())
            .filter_map(|e| e.over_time(now).map(|why| (e.id.clone(), why)))
            .collect();
        for (id, why) in overdue {
            tracing::warn!(execution = %id, reason = %why, "execution over its time limit; stopping it");
            let Some(exec) = self.executions.get_mut(&id) else {
                continue;
            };
            exec.expired = Some(why.clone());
            let active: Vec<String> = exec
                .jobs
                .iter()
                .filter(|(_, j)| j.state.is_active())
                .map(|(name, _)| name.clone())
                .collect();
            for job in active {
                self.pending.records.push(Record {
                    execution: id.clone(),
                    job,
                    rule: usize::MAX,
                    offset: None,
                    signal: format!("clock {}", now.to_rfc3339()),
                    met: "[]".into(),
                    fired: Some("STOP".into()),
                    decision: "STOP".into(),
                    explanation: why.clone(),
                });
            }
            self.stop_execution(&id);
        }
    }

    /// The clock moved: expires executions over their time limit and fires due time triggers.
    /// Returns the executions to start: (workflow, trigger).
    pub(crate) fn on_tick(
        &mut self,
        now: chrono::DateTime<Utc>,
    ) -> Vec<(String, serde_json::Value)> {
        self.expire_overdue(now);
        let mut fired_parts = Vec::new();
        let mut starts = Vec::new();
        for t in &mut self.timers {
            let whole = &t.workflow.triggers[t.trigger];
            let trigger = match t.part {
                Some(j) => parts(whole)[j],
                None => whole,
            };
            let fired = crate::triggers::due(trigger, t.last, now);
            t.last = match trigger {
                WorkflowTrigger::Interval { .. } => fired.last().copied().unwrap_or(t.last),
                _ => now,
            };
            // Stored only when a tick fires: after downtime, ticks since the last firing are
            // the missed ones that `catchup` decides about.
            if let Some(latest) = fired.last() {
                self.pending.kv.push((
                    timer_key(&t.workflow.name, t.trigger, t.part),
                    latest.to_rfc3339(),
                ));
            }
            match t.part {
                Some(j) => {
                    if let Some(tick) = fired.last() {
                        fired_parts.push((t.workflow.clone(), t.trigger, j, *tick));
                    }
                }
                None => {
                    for tick in fired {
                        starts.push((
                            t.workflow.name.clone(),
                            serde_json::json!({"type": "time", "trigger": t.trigger, "tick": tick}),
                        ));
                    }
                }
            }
        }
        for (wf, i, j, tick) in fired_parts {
            if self.trigger_part_met(&wf, i, j) {
                starts.push((
                    wf.name.clone(),
                    serde_json::json!({"type": "all_of", "trigger": i, "tick": tick}),
                ));
            }
        }
        for (name, trigger) in &starts {
            tracing::info!(workflow = name, %trigger, "time trigger fired");
        }
        starts
    }

    /// An event from the bus: evaluated against the rules of the executions it reaches, and
    /// against the workflows' event triggers. Returns the executions to start now:
    /// (workflow, trigger); delayed starts are effects.
    pub(crate) fn on_event(&mut self, event: &Event) -> Vec<(String, serde_json::Value)> {
        let mut starts: Vec<(String, serde_json::Value)> = Vec::new();
        let own = event.sender.as_deref() == Some(SENDER);
        if !own {
            // An event that names an execution reaches that one only, and none when it is not
            // running; an event that names none reaches every running execution.
            let ids: Vec<String> = match event.context.as_ref().and_then(|c| c.get("execution")) {
                None | Some(serde_json::Value::Null) => self.executions.keys().cloned().collect(),
                Some(serde_json::Value::String(id)) if self.executions.contains_key(id) => {
                    vec![id.clone()]
                }
                Some(_) => Vec::new(),
            };
            for id in ids {
                self.evaluate_signal(&id, Signal::Event(event));
            }
            // (workflow, trigger, all_of part or None, delay_s) of every matching event part.
            let mut matched: Vec<(Arc<Workflow>, usize, Option<usize>, u64)> = Vec::new();
            for wf in &self.triggers {
                for (i, t) in wf.triggers.iter().enumerate() {
                    let all_of = matches!(t, WorkflowTrigger::AllOf { .. });
                    for (j, part) in parts(t).into_iter().enumerate() {
                        if let WorkflowTrigger::Event {
                            event: cond,
                            delay_s,
                        } = part
                            && event_matches(cond, event, &wf.namespace)
                        {
                            matched.push((wf.clone(), i, all_of.then_some(j), *delay_s));
                        }
                    }
                }
            }
            for (wf, i, part, delay_s) in matched {
                let trigger = match part {
                    None => {
                        serde_json::json!({"type": "event", "offset": event.offset, "delay_s": delay_s})
                    }
                    Some(j) => {
                        if !self.trigger_part_met(&wf, i, j) {
                            continue;
                        }
                        serde_json::json!({"type": "all_of", "trigger": i, "offset": event.offset, "delay_s": delay_s})
                    }
                };
                if delay_s == 0 {
                    starts.push((wf.name.clone(), trigger));
                } else {
                    let d = Delayed {
                        id: uuid::Uuid::new_v4().simple().to_string(),
                        workflow: wf.name.clone(),
                        fire_at: later(Duration::from_secs(delay_s)),
                        trigger,
                        event: event.clone(),
                    };
                    self.pending.delayed_add.push(d.clone());
                    self.pending.effects.push(Effect::Delayed(Box::new(d)));
                }
            }
        }
        starts
    }

    /// Notes that part `part` of the `all_of` trigger `trigger` happened; true when that
    /// completes it (its memory then starts over).
    pub(crate) fn trigger_part_met(
        &mut self,
        workflow: &Workflow,
        trigger: usize,
        part: usize,
    ) -> bool {
        let total = parts(&workflow.triggers[trigger]).len();
        let met = self
            .trigger_memory
            .entry((workflow.name.clone(), trigger))
            .or_default();
        met.insert(part);
        let complete = met.len() >= total;
        if complete {
            met.clear();
        }
        let text = serde_json::to_string(&*met).unwrap_or_default();
        self.pending
            .kv
            .push((trigger_memory_key(&workflow.name, trigger), text));
        complete
    }
}
