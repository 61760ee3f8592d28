//! The scheduler core: every decision, as synchronous code over plain data.
//!
//! The core holds the running executions (their jobs' states and attempts, rule memory), the
//! workflows' triggers and the line of attempts waiting for a slot. Its methods take one input
//! (an event, an executor's report, a clock tick, an API request already read from the store)
//! and return what must happen: the state to commit ([`Pending`]: rows, rule memory, `why`
//! records, status events) and the [`Effect`]s to carry out once it is committed (stop an
//! attempt, schedule a retry, answer a caller), and [`Core::dispatch`] returns the attempts
//! to launch. It does no I/O: the runtime ([`crate::runtime`]) reads the store, commits, and
//! talks to the executor.

mod executions;
mod jobs;
#[cfg(test)]
mod tests;

use std::collections::{BTreeSet, BinaryHeap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use aiflow_api::meta::WorkflowExecutionInfo;
use aiflow_api::{Event, NewEvent};
use aiflow_translator::Workflow;
use chrono::Utc;
use tokio::sync::oneshot;

use crate::Error;
use crate::durable::{self, Delayed, FLAG_RESTART, FLAG_STOP, MetaWrite, Record};
use crate::exec::AttemptId;
use crate::metrics::Obs;
use crate::rules::{RuleMemory, memory_slots};
use crate::runtime::SchedulerConfig;
use crate::state::{JobState, WorkflowState};

/// The sender name on events the scheduler publishes.
pub const SENDER: &str = "aiflow-scheduler";
/// Event type of job state changes.
pub const JOB_STATUS: &str = "JOB_STATUS";
/// Event type of workflow execution state changes.
pub const WORKFLOW_STATUS: &str = "WORKFLOW_STATUS";

/// The longest wait the scheduler computes (a retry's backoff, a trigger's delay): longer ones
/// are cut to it, so clock arithmetic never overflows whatever a stored document says.
pub const MAX_WAIT: Duration = Duration::from_secs(100 * 366 * 86_400);

/// Now plus `d` (at most [`MAX_WAIT`]), without overflowing.
pub(crate) fn later(d: Duration) -> chrono::DateTime<Utc> {
    let now = Utc::now();
    chrono::TimeDelta::from_std(d.min(MAX_WAIT))
        .ok()
        .and_then(|d| now.checked_add_signed(d))
        .unwrap_or(now)
}

/// The log file of one attempt: `<data_dir>/logs/<execution>/<job>-<attempt>.log`.
pub(crate) fn log_path(
    config: &SchedulerConfig,
    execution: &str,
    job: &str,
    attempt: u32,
) -> PathBuf {
    config
        .data_dir
        .join("logs")
        .join(execution)
        .join(format!("{job}-{attempt}.log"))
}

/// Begins the next attempt of a job: a new number and a new row (written in `state`).
pub(crate) fn new_attempt(
    meta: &mut Vec<MetaWrite>,
    rt: &mut JobRt,
    execution: &str,
    job: &str,
    state: JobState,
) -> u32 {
    rt.attempt += 1;
    let row = uuid::Uuid::new_v4().simple().to_string();
    rt.row = Some(row.clone());
    meta.push(MetaWrite::JobCreate {
        row,
        execution: execution.to_string(),
        job: job.to_string(),
        attempt: rt.attempt,
        state: state.as_str(),
    });
    rt.attempt
}

/// An execution's id (a workflow execution row).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct ExecutionId(pub(crate) String);

/// A QUEUED attempt waiting for a slot. Ordered for the line: highest priority first, then
/// the earliest queued.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Waiting {
    pub(crate) priority: i32,
    pub(crate) seq: std::cmp::Reverse<u64>,
    pub(crate) execution: ExecutionId,
    pub(crate) job: String,
    pub(crate) attempt: u32,
}

pub(crate) fn trigger_key(workflow: &str, index: usize) -> String {
    format!("scheduler.trigger.{workflow}.{index}")
}

/// The key of a time trigger's last firing: `part` is the leaf of an `all_of` trigger.
pub(crate) fn timer_key(workflow: &str, index: usize, part: Option<usize>) -> String {
    match part {
        None => trigger_key(workflow, index),
        Some(j) => format!("{}.{j}", trigger_key(workflow, index)),
    }
}

/// A time trigger's clock.
pub(crate) struct Timer {
    pub(crate) workflow: Arc<Workflow>,
    pub(crate) trigger: usize,
    /// The leaf, when the trigger is an `all_of`.
    pub(crate) part: Option<usize>,
    pub(crate) last: chrono::DateTime<Utc>,
}

pub(crate) fn trigger_memory_key(workflow: &str, index: usize) -> String {
    format!("scheduler.trigger_memory.{workflow}.{index}")
}

pub(crate) struct JobRt {
    pub(crate) state: JobState,
    pub(crate) attempt: u32,
    pub(crate) row: Option<String>,
    pub(crate) restart_after_stop: bool,
    /// A stop was asked for the current attempt (kept so a restart knows it was not lost).
    pub(crate) stop_asked: bool,
    pub(crate) cause: Option<Event>,
    /// The current attempt holds a slot (launched or adopted, not ended).
    pub(crate) launched: bool,
    /// When a RETRYING job's next attempt is due.
    pub(crate) retry_at: Option<chrono::DateTime<Utc>>,
}

impl JobRt {
    pub(crate) fn new() -> JobRt {
        JobRt {
            state: JobState::Waiting,
            attempt: 0,
            row: None,
            restart_after_stop: false,
            stop_asked: false,
            cause: None,
            launched: false,
            retry_at: None,
        }
    }

    pub(crate) fn saved(&self) -> durable::JobRow {
        let mut flags = 0;
        if self.restart_after_stop {
            flags |= FLAG_RESTART;
        }
        if self.stop_asked {
            flags |= FLAG_STOP;
        }
        durable::JobRow {
            state: self.state,
            attempt: self.attempt,
            row: self.row.clone(),
            flags,
            cause: self.cause.clone(),
            retry_at: self.retry_at.map(|t| t.timestamp_micros()),
        }
    }
}

pub(crate) struct Exec {
    pub(crate) id: String,
    pub(crate) workflow: Arc<Workflow>,
    pub(crate) version: i64,
    pub(crate) memory: Vec<RuleMemory>,
    pub(crate) jobs: HashMap<String, JobRt>,
    pub(crate) trigger_event: Option<Event>,
    pub(crate) stopping: bool,
    /// Job processes of this execution holding a slot.
    pub(crate) running: usize,
    /// Jobs QUEUED, RUNNING or RETRYING (kept so the end check is cheap).
    pub(crate) active: usize,
    /// Job name → index in `workflow.jobs`.
    pub(crate) index: HashMap<String, usize>,
    /// When the execution started (its `max_duration_s` counts from here).
    pub(crate) started_at: chrono::DateTime<Utc>,
    /// Why the execution is being stopped as FAILED (its `max_duration_s` was reached).
    pub(crate) expired: Option<String>,
}

impl Exec {
    pub(crate) fn new(
        id: String,
        workflow: Arc<Workflow>,
        version: i64,
        trigger_event: Option<Event>,
    ) -> Exec {
        Exec {
            id,
            memory: vec![RuleMemory::default(); memory_slots(&workflow)],
            jobs: workflow
                .jobs
                .iter()
                .map(|j| (j.name.clone(), JobRt::new()))
                .collect(),
            index: workflow
                .jobs
                .iter()
                .enumerate()
                .map(|(i, j)| (j.name.clone(), i))
                .collect(),
            workflow,
            version,
            trigger_event,
            stopping: false,
            running: 0,
            active: 0,
            started_at: Utc::now(),
            expired: None,
        }
    }

    pub(crate) fn spec(&self, job: &str) -> Option<&aiflow_translator::Job> {
        self.index.get(job).map(|&i| &self.workflow.jobs[i])
    }

    /// The reason to stop this execution as FAILED when it has run longer than its
    /// `max_duration_s` at `now`.
    pub(crate) fn over_time(&self, now: chrono::DateTime<Utc>) -> Option<String> {
        let max = self.workflow.max_duration_s?;
        let limit = chrono::Duration::seconds(i64::try_from(max).unwrap_or(i64::MAX / 1_000_000));
        let ran = now.signed_duration_since(self.started_at);
        (ran >= limit).then(|| {
            format!(
                "max_duration_s: the execution ran {} s, longer than its limit of {max} s",
                ran.num_seconds()
            )
        })
    }
}

/// An action that takes effect only once the changes that decided it are committed.
pub(crate) enum Effect {
    Stop {
        id: String,
        job: String,
        attempt: u32,
    },
    Retry {
        id: String,
        job: String,
        attempt: u32,
        delay: Duration,
    },
    Delayed(Box<Delayed>),
    /// Answered with the execution as stored.
    StartReply(
        oneshot::Sender<Result<WorkflowExecutionInfo, Error>>,
        Result<String, Error>,
    ),
    StopReply(oneshot::Sender<Result<(), Error>>, Result<(), Error>),
    /// An executor's report whose changes are committed.
    Ack(crate::exec::Ack),
    /// A process of an attempt that is not the job's current one started: it is stopped.
    StopStale(AttemptId),
}

/// What the next commit writes, and what happens after it.
#[derive(Default)]
pub(crate) struct Pending {
    pub(crate) meta: Vec<MetaWrite>,
    pub(crate) execs: HashSet<String>,
    pub(crate) jobs: HashSet<(String, String)>,
    pub(crate) rules: HashSet<(String, usize)>,
    pub(crate) finished: Vec<String>,
    pub(crate) records: Vec<Record>,
    pub(crate) statuses: Vec<NewEvent>,
    pub(crate) kv: Vec<(String, String)>,
    pub(crate) delayed_add: Vec<Delayed>,
    pub(crate) delayed_done: Vec<String>,
    pub(crate) effects: Vec<Effect>,
}

impl Pending {
    pub(crate) fn is_empty(&self) -> bool {
        self.meta.is_empty()
            && self.execs.is_empty()
            && self.jobs.is_empty()
            && self.rules.is_empty()
            && self.finished.is_empty()
            && self.records.is_empty()
            && self.statuses.is_empty()
            && self.kv.is_empty()
            && self.delayed_add.is_empty()
            && self.delayed_done.is_empty()
            && self.effects.is_empty()
    }
}

/// The scheduler's state and decisions (see the module documentation).
pub(crate) struct Core {
    pub(crate) config: Arc<SchedulerConfig>,
    /// Metrics bookkeeping (see [`crate::metrics`]).
    pub(crate) obs: Obs,
    pub(crate) executions: HashMap<String, Exec>,
    /// Active (not paused) workflows with event triggers.
    pub(crate) triggers: Vec<Arc<Workflow>>,
    /// Time triggers (and time parts of `all_of` triggers) of active workflows.
    pub(crate) timers: Vec<Timer>,
    /// `all_of` triggers: the parts (leaves, in pre-order) met since the last start.
    pub(crate) trigger_memory: HashMap<(String, usize), BTreeSet<usize>>,
    /// QUEUED attempts waiting for a slot.
    pub(crate) waiting: BinaryHeap<Waiting>,
    pub(crate) queued_seq: u64,
    /// Attempts holding a slot.
    pub(crate) running_total: usize,
    /// What the next commit writes, and what happens after it.
    pub(crate) pending: Pending,
}

impl Core {
    pub(crate) fn new(config: Arc<SchedulerConfig>, obs: Obs) -> Core {
        Core {
            config,
            obs,
            executions: HashMap::new(),
            triggers: Vec::new(),
            timers: Vec::new(),
            trigger_memory: HashMap::new(),
            waiting: BinaryHeap::new(),
            queued_seq: 0,
            running_total: 0,
            pending: Pending::default(),
        }
    }

    /// The current attempt of a job and its state: a late command names an older attempt.
    pub(crate) fn attempt_state(&self, execution: &str, job: &str) -> Option<(u32, JobState)> {
        self.executions
            .get(execution)
            .and_then(|e| e.jobs.get(job))
            .map(|j| (j.attempt, j.state))
    }

    /// The attempt a job is at now, as executors name it.
    pub(crate) fn attempt_id(&self, id: &str, job: &str) -> Option<AttemptId> {
        let rt = self.executions.get(id)?.jobs.get(job)?;
        Some(AttemptId {
            execution: id.to_string(),
            job: job.to_string(),
            attempt: rt.attempt,
            row: rt.row.clone(),
        })
    }

    /// Frees the slot held by a job's process.
    pub(crate) fn release(&mut self, id: &str, job: &str) {
        if let Some(exec) = self.executions.get_mut(id)
            && let Some(rt) = exec.jobs.get_mut(job)
            && rt.launched
        {
            rt.launched = false;
            exec.running = exec.running.saturating_sub(1);
            self.running_total = self.running_total.saturating_sub(1);
        }
    }

    /// The job's current attempt holds a slot until it ends.
    pub(crate) fn hold_slot(&mut self, id: &str, job: &str) {
        if let Some(exec) = self.executions.get_mut(id)
            && let Some(rt) = exec.jobs.get_mut(job)
            && !rt.launched
        {
            rt.launched = true;
            exec.running += 1;
            self.running_total += 1;
        }
    }

    /// Hands a job row write to the writer task (applied in order).
    /// Adds a status event to the next commit; it is published after it, in order.
    pub(crate) fn publish(&mut self, event: NewEvent) {
        let key = format!("sched-{}", uuid::Uuid::new_v4().simple());
        self.pending.statuses.push(event.idempotency_key(key));
    }

    pub(crate) fn publish_workflow_status(&mut self, id: &str, state: WorkflowState) {
        let Some(exec) = self.executions.get(id) else {
            return;
        };
        let event = NewEvent::new(exec.workflow.name.clone(), state.as_str())
            .namespace(exec.workflow.namespace.clone())
            .event_type(WORKFLOW_STATUS)
            .sender(SENDER)
            .context(serde_json::json!({"execution": id, "workflow": exec.workflow.name}));
        self.publish(event);
    }
}
