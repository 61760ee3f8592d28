//! The runtime's event loop: takes commands (API requests, bus events, executor reports,
//! clock ticks) in batches, lets the [`Core`] decide, commits what it decided in one
//! transaction (fenced by the leader epoch), then carries out the effects: answers, stops,
//! retries, delayed starts, and launches into free slots.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use aiflow_api::{Event, NewEvent, Offset};
use aiflow_meta::Store;
use aiflow_translator::{Workflow, WorkflowTrigger};
use chrono::Utc;
use tokio::sync::{mpsc, watch};
use tracing::Instrument as _;

use super::{BATCH, Command, OFFSET_EVERY, until_shutdown};
use crate::Error;
use crate::core::{Core, Effect, Exec, Pending, Timer, timer_key, trigger_memory_key};
use crate::durable::{self, Batch, FLAG_RESTART, FLAG_STOP, OFFSET_KEY};
use crate::exec::{Adoption, Executor, LaunchRequest, Outcome, StatusReport};
use crate::rules::trigger_events;
use crate::state::{JobState, WorkflowState};
use crate::triggers::{is_time, parts};

/// The loop's state: the core, and what it needs to act.
pub(crate) struct Runtime {
    pub(crate) core: Core,
    pub(crate) store: Store,
    /// Runs the attempts (local processes, remote workers, ...): the core never asks which.
    pub(crate) executor: Arc<dyn Executor>,
    /// The leader epoch every commit checks (replicated shape).
    pub(crate) fence: Option<i64>,
    /// Set when the lease connection failed.
    pub(crate) lease_lost: Option<watch::Receiver<bool>>,
    /// This replica lost the lease: the loop ends and nothing more takes effect.
    pub(crate) deposed: bool,
    pub(crate) shutdown: watch::Receiver<bool>,
    pub(crate) tx: mpsc::Sender<Command>,
    /// Committed status events on their way to the bus (see `spawn_status_publisher`).
    pub(crate) statuses: mpsc::UnboundedSender<Vec<(i64, NewEvent)>>,
    /// Offset of the last event handled, and of the last one committed.
    pub(crate) handled: Offset,
    pub(crate) saved: Offset,
    pub(crate) saved_at: std::time::Instant,
}

impl Runtime {
    /// [`Core::handle`], with a panic in it caught: logged, counted, and that command alone
    /// fails (its caller, if any, gets an error) while the loop goes on.
    async fn handle_guarded(&mut self, cmd: Command) {
        let what = match &cmd {
            Command::Start { .. } => "start",
            Command::Stop { .. } => "stop",
            Command::Event(_) => "event",
            Command::Status(_) => "status",
            Command::Retry { .. } => "retry",
            Command::Reload => "reload",
            Command::Tick(_) => "tick",
            Command::Delayed(_) => "delayed",
        };
        crate::metrics::guarded(what, self.handle(cmd)).await;
    }

    /// The loop: handles commands in batches, each batch committed in one transaction.
    /// Returns `true` when this replica lost the leader lease (and must stand by), `false` on
    /// shutdown.
    pub(crate) async fn run(
        mut self,
        rx: &mut mpsc::Receiver<Command>,
        lease: Option<crate::leader::Lease>,
    ) -> bool {
        let mut shutdown = self.shutdown.clone();
        self.lease_lost = lease.as_ref().map(crate::leader::Lease::watch);
        let lost = async move {
            match lease {
                Some(mut l) => l.lost().await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(lost);
        loop {
            tokio::select! {
                cmd = rx.recv() => match cmd {
                    Some(cmd) => {
                        // Every command waiting now is handled, then all their changes are
                        // committed in one transaction, then their actions take effect.
                        self.handle_guarded(cmd).await;
                        for _ in 0..BATCH {
                            if self.deposed {
                                break;
                            }
                            match rx.try_recv() {
                                Ok(cmd) => self.handle_guarded(cmd).await,
                                Err(_) => break,
                            }
                        }
                        crate::metrics::guarded("commit", self.flush()).await;
                        if self.deposed {
                            return true;
                        }
                    }
                    None => break,
                },
                () = &mut lost => {
                    tracing::error!("the scheduling lease connection was lost; nothing more is decided here");
                    return true;
                }
                () = until_shutdown(&mut shutdown) => break,
            }
        }
        // The offset goes with this last commit even if nothing else does.
        self.saved_at = std::time::Instant::now()
            .checked_sub(OFFSET_EVERY)
            .unwrap_or(self.saved_at);
        self.flush().await;
        tracing::info!(
            running = self.core.executions.len(),
            "scheduler stopped; its executions resume when it starts again"
        );
        self.deposed
    }
}

/// Executions the meta tables say are RUNNING but the scheduler has no state for (it crashed
/// between creating the row and its first commit): nothing of theirs ever ran, so they are
/// marked FAILED.
async fn fail_untracked(store: &Store, tracked: &HashSet<String>) {
    let q = aiflow_api::meta::ExecutionQuery {
        state: Some(WorkflowState::Running.as_str().to_string()),
        limit: Some(1000),
        ..Default::default()
    };
    let Ok(page) = store.list_workflow_executions(&q).await else {
        return;
    };
    let now = Utc::now();
    for e in page.items.iter().filter(|e| !tracked.contains(&e.id)) {
        let _ = store
            .set_workflow_execution_state(&e.id, WorkflowState::Failed.as_str(), None, Some(now))
            .await;
        tracing::warn!(
            execution = %e.id,
            workflow = %e.workflow,
            "execution lost: the scheduler stopped before it recorded the start"
        );
    }
}

async fn load_trigger_time(store: &Store, key: &str) -> Option<chrono::DateTime<Utc>> {
    let v = durable::kv_get(store.db(), key).await.ok().flatten();
    v.and_then(|s| s.parse().ok())
}

impl Runtime {
    /// Hands an attempt the core dispatched to the executor; one that cannot start ends
    /// FAILED with the reason.
    async fn launch(&mut self, request: LaunchRequest) {
        let id = request.id.clone();
        if let Err(message) = self.executor.launch(request).await {
            tracing::warn!(execution = %id.execution, job = %id.job, attempt = id.attempt, executor = self.executor.name(), error = %message, "cannot start a job attempt");
            self.core.on_job_ended(
                &id.execution,
                &id.job,
                id.attempt,
                Outcome::Failed { message },
            );
        }
    }

    /// Reads the latest version of a workflow and starts an execution of it.
    async fn start_execution(
        &mut self,
        name: &str,
        trigger: serde_json::Value,
        event: Option<Event>,
    ) -> Result<String, Error> {
        let info = self.store.get_workflow(name).await?;
        if info.paused {
            return Err(Error::Conflict(format!("workflow {name} is paused")));
        }
        if info.latest_version == 0 {
            return Err(Error::Conflict(format!("workflow {name} has no version")));
        }
        let version = self
            .store
            .get_workflow_version(name, info.latest_version)
            .await?;
        let workflow: Arc<Workflow> = Arc::new(
            serde_json::from_value(version.workflow_doc).map_err(|source| Error::Unreadable {
                what: format!("stored workflow {name}"),
                source,
            })?,
        );
        Ok(self
            .core
            .start_execution(workflow, info.id, info.latest_version, trigger, event))
    }

    async fn stop_execution(&mut self, id: &str) -> Result<(), Error> {
        if self.core.stop_execution(id) {
            return Ok(());
        }
        let info = self.store.get_workflow_execution(id).await?;
        Err(Error::Conflict(format!(
            "execution {id} is not running (state {})",
            info.state
        )))
    }

    async fn on_event(&mut self, event: Event) {
        let offset = event.offset;
        let starts = self.core.on_event(&event);
        for (name, trigger) in starts {
            if let Err(e) = self
                .start_triggered(&name, trigger, Some(event.clone()))
                .await
            {
                if self.deposed {
                    return; // handled again by the next leader
                }
                tracing::warn!(workflow = name, error = %e, "event trigger could not start an execution");
            }
        }
        // Committed with the next state change, or on its own at most every OFFSET_EVERY.
        self.handled = offset;
    }

    async fn on_tick(&mut self, now: chrono::DateTime<Utc>) {
        for (name, trigger) in self.core.on_tick(now) {
            if let Err(e) = self.start_triggered(&name, trigger, None).await {
                if self.deposed {
                    return;
                }
                tracing::warn!(workflow = name, error = %e, "time trigger could not start an execution");
            }
        }
    }

    async fn handle(&mut self, cmd: Command) {
        match cmd {
            Command::Start {
                workflow,
                trigger,
                event,
                reply,
            } => {
                let r = self.start_execution(&workflow, trigger, event).await;
                self.core.pending.effects.push(Effect::StartReply(reply, r));
            }
            Command::Stop { execution, reply } => {
                let r = self.stop_execution(&execution).await;
                self.core.pending.effects.push(Effect::StopReply(reply, r));
            }
            Command::Event(e) => {
                let (offset, created, started) =
                    (e.offset.0, e.created_at, std::time::Instant::now());
                let span = crate::telemetry::event_span(&e);
                self.on_event(e).instrument(span).await;
                self.core.obs.event_handled(offset, created, started);
            }
            Command::Status(report) => {
                let StatusReport {
                    id,
                    status,
                    by,
                    ack,
                } = *report;
                self.core.on_status(id, status, by.as_deref());
                if let Some(ack) = ack {
                    self.core.pending.effects.push(Effect::Ack(ack));
                }
            }
            Command::Retry {
                execution,
                job,
                attempt,
            } => {
                let current = self.core.attempt_state(&execution, &job);
                if current == Some((attempt, JobState::Retrying)) {
                    self.core
                        .set_job_state(&execution, &job, JobState::Queued, None);
                    self.core.enqueue(&execution, &job);
                }
            }
            Command::Reload => {
                if let Err(e) = self.reload_triggers().await {
                    // The old triggers stay; try again shortly.
                    tracing::warn!(error = %e, "cannot reread the workflows' triggers; again in 1 s");
                    let tx = self.tx.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        let _ = tx.send(Command::Reload).await;
                    });
                }
            }
            Command::Tick(now) => self.on_tick(now).await,
            Command::Delayed(d) => {
                let d = *d;
                self.core.pending.delayed_done.push(d.id.clone());
                if let Err(e) = self
                    .start_triggered(&d.workflow, d.trigger, Some(d.event))
                    .await
                {
                    tracing::warn!(workflow = d.workflow, error = %e, "a delayed event trigger could not start an execution");
                }
            }
        }
    }

    /// Rereads the triggers of the active workflows. A store that does not answer leaves the
    /// triggers as they were and fails (a workflow that is gone or unreadable is skipped).
    pub(crate) async fn reload_triggers(&mut self) -> Result<(), Error> {
        let mut triggers = Vec::new();
        let mut timers = Vec::new();
        let mut cursor = None;
        // Clocks and `all_of` parts already known here may be newer than the stored ones
        // (not committed yet): they are kept.
        let known: HashMap<(String, usize, Option<usize>), chrono::DateTime<Utc>> = self
            .core
            .timers
            .iter()
            .map(|t| ((t.workflow.name.clone(), t.trigger, t.part), t.last))
            .collect();
        loop {
            let q = aiflow_api::meta::ListQuery {
                limit: Some(1000),
                cursor: cursor.clone(),
                ..Default::default()
            };
            let page = self.store.list_workflows(&q).await?;
            for info in page
                .items
                .iter()
                .filter(|w| !w.paused && w.latest_version > 0)
            {
                let wf = match self.load_workflow(&info.name).await {
                    Ok(wf) => wf,
                    Err(Error::Meta(aiflow_meta::Error::Db(e))) => {
                        return Err(Error::Meta(aiflow_meta::Error::Db(e)));
                    }
                    Err(e) => {
                        tracing::warn!(workflow = %info.name, error = %e, "a workflow's triggers cannot be read; skipped");
                        if let Error::Invalid(v) = &e {
                            crate::dags::record_stored_error(
                                &self.store,
                                &info.name,
                                &v.to_string(),
                            )
                            .await;
                        }
                        continue;
                    }
                };
                for (i, t) in wf.triggers.iter().enumerate() {
                    let all_of = matches!(t, WorkflowTrigger::AllOf { .. });
                    if all_of && !self.core.trigger_memory.contains_key(&(wf.name.clone(), i)) {
                        let met =
                            durable::kv_get(self.store.db(), &trigger_memory_key(&wf.name, i))
                                .await
                                .ok()
                                .flatten()
                                .and_then(|v| serde_json::from_str(&v).ok())
                                .unwrap_or_default();
                        self.core.trigger_memory.insert((wf.name.clone(), i), met);
                    }
                    for (j, part) in parts(t).into_iter().enumerate() {
                        if !is_time(part) {
                            continue;
                        }
                        let part = all_of.then_some(j);
                        let key = (wf.name.clone(), i, part);
                        let last = match known.get(&key) {
                            Some(t) => *t,
                            // A trigger seen for the first time starts from now.
                            None => load_trigger_time(&self.store, &timer_key(&wf.name, i, part))
                                .await
                                .unwrap_or_else(Utc::now),
                        };
                        timers.push(Timer {
                            workflow: wf.clone(),
                            trigger: i,
                            part,
                            last,
                        });
                    }
                }
                if wf.triggers.iter().any(|t| !trigger_events(t).is_empty()) {
                    triggers.push(wf);
                }
            }
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        self.core.triggers = triggers;
        self.core.timers = timers;
        Ok(())
    }

    async fn load_workflow(&self, name: &str) -> Result<Arc<Workflow>, Error> {
        let info = self.store.get_workflow(name).await?;
        let version = self
            .store
            .get_workflow_version(name, info.latest_version)
            .await?;
        let wf: Workflow =
            serde_json::from_value(version.workflow_doc).map_err(|source| Error::Unreadable {
                what: format!("stored workflow {name}"),
                source,
            })?;
        // An older server may have stored what this one refuses (say, a retry_backoff_s of
        // 10^13): such a workflow is not run, and says why.
        aiflow_translator::validate_workflow(&wf).map_err(Error::Invalid)?;
        Ok(Arc::new(wf))
    }

    /// Starts an execution for a trigger. A store that does not answer is waited for (the
    /// trigger must not be lost with the event that fired it): this retries while this replica
    /// leads; when it stops leading it is deposed and the next leader handles the event again.
    async fn start_triggered(
        &mut self,
        name: &str,
        trigger: serde_json::Value,
        event: Option<Event>,
    ) -> Result<String, Error> {
        let mut backoff =
            aiflow_api::backoff::Backoff::new(Duration::from_millis(50), Duration::from_secs(2));
        loop {
            match self
                .start_execution(name, trigger.clone(), event.clone())
                .await
            {
                Err(Error::Meta(aiflow_meta::Error::Db(e))) => {
                    if self.lease_lost.as_ref().is_some_and(|l| *l.borrow()) {
                        self.depose();
                        return Err(Error::Stopped);
                    }
                    let delay = backoff.next_delay();
                    tracing::warn!(workflow = name, error = %e, retry_in_ms = delay.as_millis() as u64, "cannot read the store to start a triggered execution; retrying");
                    tokio::time::sleep(delay).await;
                }
                other => return other,
            }
        }
    }

    /// Gives up leadership: what was decided but not committed is dropped (callers waiting for
    /// an answer get "not running"); the next leader decides it again from the store.
    fn depose(&mut self) {
        self.deposed = true;
        self.core.pending = Pending::default();
        self.core.obs.progress().set_commit_failing(false);
    }

    /// Commits everything the handled commands changed, in one transaction together with the
    /// event offset, then lets their actions take effect: replies, stops, retries, delayed
    /// starts, and job launches into free slots. Actions may change state again (a launch that
    /// fails), so this repeats until nothing is left.
    pub(crate) async fn flush(&mut self) {
        if self.deposed {
            return;
        }
        for _ in 0..16 {
            let (batch, offset) = self.take_batch();
            if !batch.is_empty() {
                let mut backoff = aiflow_api::backoff::Backoff::new(
                    Duration::from_millis(50),
                    Duration::from_secs(5),
                );
                let _timer = aiflow_db::QueryTimer::new("scheduler", "commit_state");
                let ids = loop {
                    match durable::commit(self.store.db(), &batch, self.fence).await {
                        Ok(ids) => break ids,
                        Err(durable::CommitError::Fenced) => {
                            tracing::error!(
                                "another replica took the scheduling lease; this batch is dropped and this replica stands by"
                            );
                            return self.depose();
                        }
                        Err(e) => {
                            self.core.obs.progress().set_commit_failing(true);
                            let delay = backoff.next_delay();
                            tracing::error!(error = %e, retry_in_ms = delay.as_millis() as u64, "cannot commit the scheduler state; nothing acts until it is stored");
                            tokio::time::sleep(delay).await;
                            if self.lease_lost.as_ref().is_some_and(|l| *l.borrow()) {
                                tracing::error!(
                                    "the scheduling lease was lost while the commit failed; standing by"
                                );
                                return self.depose();
                            }
                        }
                    }
                };
                self.core.obs.progress().set_commit_failing(false);
                if !batch.finished.is_empty() {
                    // Finished executions' attempt folders are no longer needed for re-adoption.
                    let root = self.core.config.attempts_root();
                    let dirs: Vec<PathBuf> = batch
                        .finished
                        .iter()
                        .map(|id| crate::supervisor::execution_dir(&root, id))
                        .collect();
                    tokio::task::spawn_blocking(move || {
                        for d in dirs {
                            let _ = std::fs::remove_dir_all(d);
                        }
                    });
                }
                if let Some(o) = offset {
                    self.saved = o;
                    self.saved_at = std::time::Instant::now();
                    self.core.obs.committed(o.0);
                }
                if !ids.is_empty() {
                    let committed = ids.into_iter().zip(batch.statuses).collect();
                    if self.statuses.send(committed).is_err() {
                        tracing::warn!(
                            "the status publisher has stopped; status events wait in the outbox"
                        );
                    }
                }
            }
            for effect in std::mem::take(&mut self.core.pending.effects) {
                self.apply(effect).await;
            }
            for request in self.core.dispatch() {
                self.launch(request).await;
            }
            if self.core.pending.is_empty() {
                return;
            }
        }
    }

    /// The changes to commit; the offset goes with any change, or alone every OFFSET_EVERY.
    fn take_batch(&mut self) -> (Batch, Option<Offset>) {
        let p = &mut self.core.pending;
        let mut b = Batch::default();
        for id in p.execs.drain() {
            if let Some(e) = self.core.executions.get(&id) {
                b.execs.push(durable::ExecRow {
                    id,
                    workflow: e.workflow.name.clone(),
                    version: e.version,
                    stopping: e.stopping,
                    trigger_event: e.trigger_event.clone(),
                });
            }
        }
        for (id, job) in p.jobs.drain() {
            if let Some(rt) = self.core.executions.get(&id).and_then(|e| e.jobs.get(&job)) {
                b.jobs.push((id, job, rt.saved()));
            }
        }
        for (id, rule) in p.rules.drain() {
            if let Some(m) = self
                .core
                .executions
                .get(&id)
                .and_then(|e| e.memory.get(rule))
            {
                b.rules.push((id, rule, m.clone()));
            }
        }
        b.meta = std::mem::take(&mut p.meta);
        b.finished = std::mem::take(&mut p.finished);
        b.records = std::mem::take(&mut p.records);
        b.statuses = std::mem::take(&mut p.statuses);
        b.kv = std::mem::take(&mut p.kv);
        b.delayed_add = std::mem::take(&mut p.delayed_add);
        b.delayed_done = std::mem::take(&mut p.delayed_done);
        let offset = (self.handled != self.saved
            && (!b.is_empty() || self.saved_at.elapsed() >= OFFSET_EVERY))
            .then_some(self.handled);
        if let Some(o) = offset {
            b.kv.push((OFFSET_KEY.to_string(), o.0.to_string()));
        }
        (b, offset)
    }

    /// One committed action.
    async fn apply(&mut self, effect: Effect) {
        match effect {
            Effect::Ack(ack) => ack.done(),
            Effect::StopStale(id) => self.executor.stop(&id),
            Effect::Stop { id, job, attempt } => {
                if let Some(attempt_id) = self.core.attempt_id(&id, &job)
                    && attempt_id.attempt == attempt
                {
                    self.executor.stop(&attempt_id);
                }
            }
            Effect::Retry {
                id,
                job,
                attempt,
                delay,
            } => {
                let tx = self.tx.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    let _ = tx
                        .send(Command::Retry {
                            execution: id,
                            job,
                            attempt,
                        })
                        .await;
                });
            }
            Effect::Delayed(d) => {
                let tx = self.tx.clone();
                let wait = (d.fire_at - Utc::now()).to_std().unwrap_or_default();
                tokio::spawn(async move {
                    tokio::time::sleep(wait).await;
                    let _ = tx.send(Command::Delayed(d)).await;
                });
            }
            Effect::StartReply(reply, r) => {
                let r = match r {
                    Ok(id) => self
                        .store
                        .get_workflow_execution(&id)
                        .await
                        .map_err(Error::from),
                    Err(e) => Err(e),
                };
                let _ = reply.send(r);
            }
            Effect::StopReply(reply, r) => {
                let _ = reply.send(r);
            }
        }
    }

    /// Rebuilds the executions a previous process left running from the committed state.
    /// Attempts that were QUEUED go back in line; attempts that were RUNNING lost their
    /// process (what is left of it is killed): a stop that was asked for ends STOPPED,
    /// anything else is FAILED (lost) and retried under the job's retry policy.
    pub(crate) async fn resume(&mut self) -> Result<(), Error> {
        let saved = durable::load(self.store.db()).await.map_err(Error::Store)?;
        let mut tracked: HashSet<String> = saved.execs.iter().map(|e| e.id.clone()).collect();
        let mut jobs = saved.jobs;
        let mut rules = saved.rules;
        let mut lost = Vec::new();
        for row in saved.execs {
            let workflow = match self
                .store
                .get_workflow_version(&row.workflow, row.version)
                .await
                .map_err(Error::from)
                .and_then(|v| {
                    serde_json::from_value::<Workflow>(v.workflow_doc).map_err(|source| {
                        Error::Unreadable {
                            what: format!(
                                "stored workflow {} version {}",
                                row.workflow, row.version
                            ),
                            source,
                        }
                    })
                }) {
                Ok(wf) => Arc::new(wf),
                Err(e) => {
                    tracing::warn!(execution = %row.id, error = %e, "cannot resume an execution: its workflow version is unreadable");
                    tracked.remove(&row.id);
                    self.core.pending.finished.push(row.id);
                    continue;
                }
            };
            let mut exec = Exec::new(
                row.id.clone(),
                workflow,
                row.version,
                row.trigger_event.clone(),
            );
            exec.stopping = row.stopping;
            // The time limit holds across restarts: it counts from the stored start.
            if let Ok(info) = self.store.get_workflow_execution(&row.id).await {
                exec.started_at = info.started_at.unwrap_or(info.created_at);
            }
            if exec.stopping {
                exec.expired = exec.over_time(Utc::now());
            }
            for (i, m) in rules.remove(&row.id).unwrap_or_default() {
                if let Some(slot) = exec.memory.get_mut(i) {
                    *slot = m;
                }
            }
            for (name, j) in jobs.remove(&row.id).unwrap_or_default() {
                let Some(rt) = exec.jobs.get_mut(&name) else {
                    continue;
                };
                rt.state = j.state;
                rt.attempt = j.attempt;
                rt.row = j.row;
                rt.restart_after_stop = j.flags & FLAG_RESTART != 0;
                rt.stop_asked = j.flags & FLAG_STOP != 0;
                rt.cause = j.cause;
                rt.retry_at = j.retry_at.and_then(chrono::DateTime::from_timestamp_micros);
                if rt.state.is_active() {
                    exec.active += 1;
                }
                lost.push((row.id.clone(), name));
            }
            tracing::info!(execution = %row.id, workflow = %row.workflow, "execution resumed");
            self.core.executions.insert(row.id, exec);
        }
        fail_untracked(&self.store, &tracked).await;
        for (id, job) in lost {
            let Some(rt) = self.core.executions.get(&id).and_then(|e| e.jobs.get(&job)) else {
                continue;
            };
            let (state, attempt, stop_asked) = (rt.state, rt.attempt, rt.stop_asked);
            let retry_at = rt.retry_at;
            let started = state == JobState::Running;
            if matches!(state, JobState::Queued | JobState::Running)
                && let Some(attempt_id) = self.core.attempt_id(&id, &job)
                && let Adoption::Following { .. } = self.executor.adopt(&attempt_id, started).await
            {
                // The attempt outlived the previous process or leader: its executor follows it
                // again and reports how it goes.
                self.core.hold_slot(&id, &job);
                if stop_asked {
                    self.core.pending.effects.push(Effect::Stop {
                        id: id.clone(),
                        job: job.clone(),
                        attempt,
                    });
                }
                continue;
            }
            match state {
                JobState::Queued => self.core.enqueue(&id, &job),
                JobState::Running => {
                    let outcome = if stop_asked {
                        Outcome::Stopped
                    } else {
                        Outcome::Failed {
                            message: "lost: the scheduler restarted while the job ran".into(),
                        }
                    };
                    tracing::warn!(execution = %id, job, attempt, "job attempt lost in a restart");
                    self.core.on_job_ended(&id, &job, attempt, outcome);
                }
                JobState::Retrying => {
                    let at = retry_at.unwrap_or_else(Utc::now);
                    self.core.pending.effects.push(Effect::Retry {
                        delay: (at - Utc::now()).to_std().unwrap_or_default(),
                        id: id.clone(),
                        job: job.clone(),
                        attempt,
                    });
                }
                _ => {}
            }
        }
        // What a previous process left and nothing follows now (a container of an attempt
        // that ended, or was lost) goes.
        self.executor.recovered().await;
        let ids: Vec<String> = self.core.executions.keys().cloned().collect();
        for id in ids {
            self.core.check_finished(&id);
        }
        for d in saved.delayed {
            self.core.pending.effects.push(Effect::Delayed(Box::new(d)));
        }
        Ok(())
    }
}
