//! The scheduler service: one loop that owns every running execution, fed by the event bus,
//! by API calls and by the executor. Job state changes are stored, published as `JOB_STATUS`
//! events and evaluated against the execution's rules; rule decisions start, stop or restart
//! jobs through the local executor.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use aiflow_api::meta::WorkflowExecutionInfo;
pub use aiflow_api::scheduler::Submitted;
use aiflow_api::{Event, EventFilter, NewEvent, Offset};
use aiflow_meta::{NewJobExecution, NewWorkflowExecution, NewWorkflowVersion, Store};
use aiflow_notification::EventBus;
use aiflow_translator::{Document, Workflow, WorkflowTrigger};
use chrono::Utc;
use futures::StreamExt;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tracing::Instrument as _;

use crate::Error;
use crate::executor::{LaunchSpec, LocalExecutor, Outcome};
use crate::metrics::{Obs, Progress, QueryTimer};
use crate::rules::{
    Decision, Evaluation, RuleMemory, Signal, decide, evaluate, event_matches, initial_jobs,
    outcome, trigger_events,
};
use crate::state::{JobState, WorkflowState};

/// The sender name on events the scheduler publishes.
pub const SENDER: &str = "aiflow-scheduler";
/// Event type of job state changes.
pub const JOB_STATUS: &str = "JOB_STATUS";
/// Event type of workflow execution state changes.
pub const WORKFLOW_STATUS: &str = "WORKFLOW_STATUS";

/// Scheduler settings.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// Job logs go to `<data_dir>/logs/<execution>/<job>-<attempt>.log`.
    pub data_dir: PathBuf,
    /// `AIFLOW_URL` given to jobs.
    pub server_url: String,
    /// SIGTERM → SIGKILL grace period.
    pub stop_grace: Duration,
    /// The `aiflow` binary, given to jobs as `AIFLOW_BIN` so they can call the CLI.
    pub aiflow_bin: Option<PathBuf>,
    /// At most this many job processes at once; more wait QUEUED, highest priority first.
    pub max_running: usize,
}

/// Default of [`SchedulerConfig::max_running`].
pub const DEFAULT_MAX_RUNNING: usize = 32;

enum Command {
    Start {
        workflow: String,
        trigger: serde_json::Value,
        event: Option<Event>,
        reply: oneshot::Sender<Result<WorkflowExecutionInfo, Error>>,
    },
    Stop {
        execution: String,
        reply: oneshot::Sender<Result<(), Error>>,
    },
    Event(Event),
    JobEnded {
        execution: String,
        job: String,
        attempt: u32,
        outcome: Outcome,
    },
    Retry {
        execution: String,
        job: String,
        attempt: u32,
    },
    Reload,
    /// The process of a job attempt exists.
    Started {
        execution: String,
        job: String,
        attempt: u32,
    },
    /// The clock moved: fire due time triggers.
    Tick(chrono::DateTime<Utc>),
}

/// A cheap handle to the scheduler loop.
#[derive(Clone)]
pub struct Scheduler {
    tx: mpsc::Sender<Command>,
    store: Store,
    config: Arc<SchedulerConfig>,
    progress: Arc<Progress>,
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler").finish_non_exhaustive()
    }
}

impl Scheduler {
    /// Starts the loop and the bus subscription (from the last committed offset).
    pub async fn start(
        store: Store,
        bus: Arc<dyn EventBus>,
        config: SchedulerConfig,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<(Scheduler, JoinHandle<()>), Error> {
        recover_orphans(&store).await;
        let (tx, rx) = mpsc::channel(4096);
        let config = Arc::new(config);
        let committed = load_offset(&store).await?;
        let from = if committed == Offset(0) {
            bus.latest_offset().await.map_err(Error::bus)?
        } else {
            committed
        };
        let mut events = bus
            .subscribe(EventFilter::default(), from)
            .await
            .map_err(Error::bus)?;
        let feed = tx.clone();
        let mut feed_shutdown = shutdown.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    next = events.next() => match next {
                        Some(Ok(e)) => {
                            if feed.send(Command::Event(e)).await.is_err() {
                                break;
                            }
                        }
                        Some(Err(e)) => {
                            tracing::warn!(error = %e, "event subscription failed");
                            break;
                        }
                        None => break,
                    },
                    () = until_shutdown(&mut feed_shutdown) => break,
                }
            }
        });
        let progress = Arc::new(Progress::default());
        let mut core = Core {
            obs: Obs::new(progress.clone(), from.0),
            store: store.clone(),
            executor: LocalExecutor {
                grace: config.stop_grace,
            },
            config: config.clone(),
            tx: tx.clone(),
            executions: HashMap::new(),
            triggers: Vec::new(),
            timers: Vec::new(),
            statuses: spawn_status_publisher(bus.clone()),
            writes: spawn_job_writer(store.clone()),
            waiting: std::collections::BinaryHeap::new(),
            queued_seq: 0,
            running_total: 0,
            handled: from,
            saved: from,
            saved_at: std::time::Instant::now(),
        };
        core.reload_triggers().await;
        let ticks = tx.clone();
        let mut tick_shutdown = shutdown.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(1));
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                tokio::select! {
                    _ = every.tick() => {
                        if ticks.send(Command::Tick(Utc::now())).await.is_err() {
                            break;
                        }
                    }
                    () = until_shutdown(&mut tick_shutdown) => break,
                }
            }
        });
        let handle = tokio::spawn(async move {
            let mut rx = rx;
            loop {
                tokio::select! {
                    cmd = rx.recv() => match cmd {
                        Some(cmd) => core.handle(cmd).await,
                        None => break,
                    },
                    () = until_shutdown(&mut shutdown) => break,
                }
            }
            core.commit_offset().await;
            tracing::info!(
                running = core.executions.len(),
                "scheduler stopped; running jobs keep their processes until the server exits"
            );
        });
        Ok((
            Scheduler {
                tx,
                store,
                config,
                progress,
            },
            handle,
        ))
    }

    /// Stores a new version of a workflow from an AI graph or workflow document; an unchanged
    /// document stores nothing.
    pub async fn submit(&self, doc: serde_json::Value) -> Result<Submitted, Error> {
        let parsed = Document::from_value(doc.clone()).map_err(Error::Invalid)?;
        let graph = matches!(parsed, Document::Graph(_)).then_some(doc);
        let workflow = parsed.into_workflow().map_err(Error::Invalid)?;
        let workflow_json = serde_json::to_value(&workflow).expect("workflow serialises");
        if let Ok(info) = self.store.get_workflow(&workflow.name).await
            && info.latest_version > 0
            && let Ok(latest) = self
                .store
                .get_workflow_version(&workflow.name, info.latest_version)
                .await
            && latest.workflow_doc == workflow_json
        {
            return Ok(Submitted {
                workflow: workflow.name,
                version: info.latest_version,
                created: false,
            });
        }
        // A workflow's project is created on first use, as experiment trackers do.
        if let Some(project) = &workflow.project
            && let Err(aiflow_meta::Error::NotFound { .. }) = self.store.get_project(project).await
        {
            let created = self
                .store
                .create_project(&aiflow_api::meta::NewProject {
                    name: project.clone(),
                    description: None,
                    properties: None,
                    tags: Default::default(),
                })
                .await;
            if let Err(e) = created
                && !matches!(e, aiflow_meta::Error::Conflict { .. })
            {
                return Err(e.into());
            }
        }
        let stored = self
            .store
            .submit_workflow_version(&NewWorkflowVersion {
                name: workflow.name.clone(),
                project: workflow.project.clone(),
                namespace: Some(workflow.namespace.clone()),
                description: workflow.description.clone(),
                graph,
                workflow: workflow_json,
            })
            .await?;
        let _ = self.tx.send(Command::Reload).await;
        Ok(Submitted {
            workflow: stored.workflow,
            version: stored.version,
            created: true,
        })
    }

    /// Starts an execution of the latest version of `workflow`.
    pub async fn start_execution(
        &self,
        workflow: &str,
        trigger: serde_json::Value,
    ) -> Result<WorkflowExecutionInfo, Error> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Start {
            workflow: workflow.to_string(),
            trigger,
            event: None,
            reply,
        })
        .await?;
        rx.await.map_err(|_| Error::Stopped)?
    }

    /// Stops a running execution: its running jobs get SIGTERM, waiting jobs never start.
    pub async fn stop_execution(&self, execution: &str) -> Result<(), Error> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Stop {
            execution: execution.to_string(),
            reply,
        })
        .await?;
        rx.await.map_err(|_| Error::Stopped)?
    }

    /// Asks the loop to reread workflow triggers (after pause, resume or delete).
    pub async fn reload(&self) {
        let _ = self.tx.send(Command::Reload).await;
    }

    /// The log file of one attempt.
    #[must_use]
    pub fn log_path(&self, execution: &str, job: &str, attempt: u32) -> PathBuf {
        log_path(&self.config, execution, job, attempt)
    }

    /// The meta store the scheduler writes to.
    #[must_use]
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Offsets of the last handled and the last committed event.
    #[must_use]
    pub fn progress(&self) -> &Progress {
        &self.progress
    }

    async fn send(&self, cmd: Command) -> Result<(), Error> {
        self.tx.send(cmd).await.map_err(|_| Error::Stopped)
    }
}

/// A change to a job execution row.
enum JobWrite {
    Create(NewJobExecution),
    State {
        row: String,
        state: JobState,
        started: Option<chrono::DateTime<Utc>>,
        ended: Option<chrono::DateTime<Utc>>,
    },
}

/// Begins the next attempt of a job: a new number and a new row (written in `state`).
fn new_attempt(
    writes: &mpsc::UnboundedSender<JobWrite>,
    rt: &mut JobRt,
    execution: &str,
    job: &str,
    state: JobState,
) -> u32 {
    rt.attempt += 1;
    let row = uuid::Uuid::new_v4().simple().to_string();
    rt.row = Some(row.clone());
    let created = writes.send(JobWrite::Create(NewJobExecution {
        id: row,
        workflow_execution: Some(execution.to_string()),
        job: job.to_string(),
        attempt: i64::from(rt.attempt),
        state: state.as_str().to_string(),
        worker: Some("local".into()),
        properties: None,
    }));
    if created.is_err() {
        tracing::warn!(
            execution,
            job,
            "the job row writer has stopped; an attempt is not stored"
        );
    }
    rt.attempt
}

/// Applies job row writes in order, off the scheduler loop, so one slow write never holds up
/// the starting of other jobs.
fn spawn_job_writer(store: Store) -> mpsc::UnboundedSender<JobWrite> {
    let (tx, mut rx) = mpsc::unbounded_channel::<JobWrite>();
    tokio::spawn(async move {
        while let Some(w) = rx.recv().await {
            let r = match &w {
                JobWrite::Create(j) => store.create_job_execution(j).await.map(drop),
                JobWrite::State {
                    row,
                    state,
                    started,
                    ended,
                } => {
                    store
                        .set_job_execution_state(row, state.as_str(), None, *started, *ended)
                        .await
                }
            };
            if let Err(e) = r {
                tracing::warn!(error = %e, "cannot store a job execution change");
            }
        }
    });
    tx
}

/// Publishes status events in order, up to 256 in one batch (one transaction on the embedded
/// bus); retries a failed batch with backoff so no status is dropped while the bus is away.
fn spawn_status_publisher(bus: Arc<dyn EventBus>) -> mpsc::UnboundedSender<NewEvent> {
    let (tx, mut rx) = mpsc::unbounded_channel::<NewEvent>();
    tokio::spawn(async move {
        let mut batch = Vec::with_capacity(256);
        while rx.recv_many(&mut batch, 256).await > 0 {
            let mut backoff = Duration::from_millis(50);
            loop {
                match bus.publish_batch(batch.clone()).await {
                    Ok(_) => break,
                    Err(e) => {
                        tracing::warn!(error = %e, events = batch.len(), retry_in_ms = backoff.as_millis() as u64, "cannot publish status events");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                    }
                }
            }
            batch.clear();
        }
    });
    tx
}

async fn until_shutdown(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

fn log_path(config: &SchedulerConfig, execution: &str, job: &str, attempt: u32) -> PathBuf {
    config
        .data_dir
        .join("logs")
        .join(execution)
        .join(format!("{job}-{attempt}.log"))
}

const OFFSET_KEY: &str = "scheduler.committed_offset";

async fn load_offset(store: &Store) -> Result<Offset, Error> {
    let v: Option<String> = sqlx::query_scalar("SELECT v FROM aiflow_kv WHERE k = $1")
        .bind(OFFSET_KEY)
        .fetch_optional(&store.db().pool)
        .await
        .map_err(|e| Error::Store(e.to_string()))?;
    Ok(v.and_then(|s| s.parse().ok()).unwrap_or_default())
}

/// Executions left RUNNING by a previous process are not resumed yet: their unfinished attempts
/// are marked FAILED (lost) and the executions FAILED, so no state claims work nobody does.
async fn recover_orphans(store: &Store) {
    let q = aiflow_api::meta::ExecutionQuery {
        state: Some(WorkflowState::Running.as_str().to_string()),
        limit: Some(1000),
        ..Default::default()
    };
    let Ok(page) = store.list_workflow_executions(&q).await else {
        return;
    };
    let now = Utc::now();
    for e in page.items {
        if let Ok(jobs) = store.list_job_executions(&e.id).await {
            for j in jobs.iter().filter(|j| {
                j.state
                    .parse::<JobState>()
                    .is_ok_and(|s| s.is_active() || s == JobState::Waiting)
            }) {
                let _ = store
                    .set_job_execution_state(
                        &j.id,
                        JobState::Failed.as_str(),
                        None,
                        None,
                        Some(now),
                    )
                    .await;
            }
        }
        let _ = store
            .set_workflow_execution_state(&e.id, WorkflowState::Failed.as_str(), None, Some(now))
            .await;
        tracing::warn!(
            execution = %e.id,
            workflow = %e.workflow,
            "execution lost: the scheduler restarted while it ran (resuming is not supported yet)"
        );
    }
}

fn trigger_key(workflow: &str, index: usize) -> String {
    format!("scheduler.trigger.{workflow}.{index}")
}

async fn load_trigger_time(
    store: &Store,
    workflow: &str,
    index: usize,
) -> Option<chrono::DateTime<Utc>> {
    let v: Option<String> = sqlx::query_scalar("SELECT v FROM aiflow_kv WHERE k = $1")
        .bind(trigger_key(workflow, index))
        .fetch_optional(&store.db().pool)
        .await
        .ok()
        .flatten();
    v.and_then(|s| s.parse().ok())
}

async fn save_trigger_time(store: &Store, workflow: &str, index: usize, t: chrono::DateTime<Utc>) {
    let r = sqlx::query(
        "INSERT INTO aiflow_kv (k, v, updated_at) VALUES ($1, $2, $3) \
         ON CONFLICT (k) DO UPDATE SET v = excluded.v, updated_at = excluded.updated_at",
    )
    .bind(trigger_key(workflow, index))
    .bind(t.to_rfc3339())
    .bind(Utc::now().timestamp_micros())
    .execute(&store.db().pool)
    .await;
    if let Err(e) = r {
        tracing::warn!(workflow, error = %e, "cannot store a trigger's last check");
    }
}

async fn save_offset(store: &Store, offset: Offset) -> Result<(), Error> {
    let _timer = QueryTimer::new("commit_offset");
    sqlx::query(
        "INSERT INTO aiflow_kv (k, v, updated_at) VALUES ($1, $2, $3) \
         ON CONFLICT (k) DO UPDATE SET v = excluded.v, updated_at = excluded.updated_at",
    )
    .bind(OFFSET_KEY)
    .bind(offset.0.to_string())
    .bind(Utc::now().timestamp_micros())
    .execute(&store.db().pool)
    .await
    .map_err(|e| Error::Store(e.to_string()))?;
    Ok(())
}

struct JobRt {
    state: JobState,
    attempt: u32,
    row: Option<String>,
    stopper: Option<watch::Sender<bool>>,
    restart_after_stop: bool,
    cause: Option<Event>,
    /// A process of the current attempt holds a slot.
    launched: bool,
}

struct Exec {
    id: String,
    workflow: Arc<Workflow>,
    memory: Vec<RuleMemory>,
    jobs: HashMap<String, JobRt>,
    trigger_event: Option<Event>,
    stopping: bool,
    /// Job processes of this execution holding a slot.
    running: usize,
    /// Jobs QUEUED, RUNNING or RETRYING (kept so the end check is cheap).
    active: usize,
    /// Job name → index in `workflow.jobs`.
    index: HashMap<String, usize>,
}

impl Exec {
    fn spec(&self, job: &str) -> Option<&aiflow_translator::Job> {
        self.index.get(job).map(|&i| &self.workflow.jobs[i])
    }
}

struct Core {
    /// Metrics bookkeeping (see [`crate::metrics`]).
    obs: Obs,
    store: Store,
    executor: LocalExecutor,
    config: Arc<SchedulerConfig>,
    tx: mpsc::Sender<Command>,
    executions: HashMap<String, Exec>,
    /// Active (not paused) workflows with event triggers.
    triggers: Vec<Arc<Workflow>>,
    /// Time triggers of active workflows: workflow, trigger index, last check.
    timers: Vec<(Arc<Workflow>, usize, chrono::DateTime<Utc>)>,
    /// Job row writes on their way to the store (see [`spawn_job_writer`]).
    writes: mpsc::UnboundedSender<JobWrite>,
    /// Status events on their way to the bus (see [`spawn_status_publisher`]).
    statuses: mpsc::UnboundedSender<NewEvent>,
    /// QUEUED attempts waiting for a slot: (priority, earlier first, execution, job, attempt).
    waiting: std::collections::BinaryHeap<(i32, std::cmp::Reverse<u64>, String, String, u32)>,
    queued_seq: u64,
    running_total: usize,
    /// Offset of the last event handled, and of the last one stored.
    handled: Offset,
    saved: Offset,
    saved_at: std::time::Instant,
}

impl Core {
    async fn handle(&mut self, cmd: Command) {
        match cmd {
            Command::Start {
                workflow,
                trigger,
                event,
                reply,
            } => {
                let r = self.start_execution(&workflow, trigger, event).await;
                let _ = reply.send(r);
            }
            Command::Stop { execution, reply } => {
                let r = self.stop_execution(&execution).await;
                let _ = reply.send(r);
            }
            Command::Event(e) => {
                let (offset, created, started) =
                    (e.offset.0, e.created_at, std::time::Instant::now());
                let span = crate::telemetry::event_span(&e);
                self.on_event(e).instrument(span).await;
                self.obs.event_handled(offset, created, started);
            }
            Command::JobEnded {
                execution,
                job,
                attempt,
                outcome,
            } => {
                self.on_job_ended(&execution, &job, attempt, outcome).await;
                self.dispatch().await;
            }
            Command::Retry {
                execution,
                job,
                attempt,
            } => {
                let current = self
                    .executions
                    .get(&execution)
                    .and_then(|e| e.jobs.get(&job))
                    .map(|j| (j.attempt, j.state));
                if current == Some((attempt, JobState::Retrying)) {
                    self.set_job_state(&execution, &job, JobState::Queued, None)
                        .await;
                    self.enqueue(&execution, &job).await;
                }
            }
            Command::Reload => self.reload_triggers().await,
            Command::Started {
                execution,
                job,
                attempt,
            } => {
                let current = self
                    .executions
                    .get(&execution)
                    .and_then(|e| e.jobs.get(&job))
                    .map(|j| (j.attempt, j.state));
                if current == Some((attempt, JobState::Queued)) {
                    let workflow = self
                        .executions
                        .get(&execution)
                        .map(|e| e.workflow.name.clone())
                        .unwrap_or_default();
                    tracing::info!(workflow, execution = %execution, job = %job, attempt, "job started");
                    self.set_job_state(&execution, &job, JobState::Running, None)
                        .await;
                }
            }
            Command::Tick(now) => {
                self.on_tick(now).await;
                self.commit_offset().await;
            }
        }
    }

    async fn reload_triggers(&mut self) {
        let mut triggers = Vec::new();
        let mut timers = Vec::new();
        let mut cursor = None;
        loop {
            let q = aiflow_api::meta::ListQuery {
                limit: Some(1000),
                cursor: cursor.clone(),
                ..Default::default()
            };
            let Ok(page) = self.store.list_workflows(&q).await else {
                break;
            };
            for info in page
                .items
                .iter()
                .filter(|w| !w.paused && w.latest_version > 0)
            {
                let Ok(wf) = self.load_workflow(&info.name).await else {
                    continue;
                };
                for (i, t) in wf.triggers.iter().enumerate() {
                    if matches!(
                        t,
                        WorkflowTrigger::Cron { .. } | WorkflowTrigger::Interval { .. }
                    ) {
                        // A trigger seen for the first time starts from now.
                        let last = load_trigger_time(&self.store, &wf.name, i)
                            .await
                            .unwrap_or_else(Utc::now);
                        timers.push((wf.clone(), i, last));
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
        self.triggers = triggers;
        self.timers = timers;
    }

    async fn on_tick(&mut self, now: chrono::DateTime<Utc>) {
        let mut starts = Vec::new();
        for (wf, i, last) in &mut self.timers {
            let trigger = &wf.triggers[*i];
            let fired = crate::triggers::due(trigger, *last, now);
            *last = match trigger {
                WorkflowTrigger::Interval { .. } => fired.last().copied().unwrap_or(*last),
                _ => now,
            };
            // Stored only when a tick fires: after downtime, ticks since the last firing are
            // the missed ones that `catchup` decides about.
            if let Some(latest) = fired.last() {
                save_trigger_time(&self.store, &wf.name, *i, *latest).await;
            }
            for tick in fired {
                starts.push((
                    wf.name.clone(),
                    serde_json::json!({"type": "time", "trigger": *i, "tick": tick}),
                ));
            }
        }
        for (name, trigger) in starts {
            tracing::info!(workflow = name, %trigger, "time trigger fired");
            if let Err(e) = self.start_execution(&name, trigger, None).await {
                tracing::warn!(workflow = name, error = %e, "time trigger could not start an execution");
            }
        }
    }

    async fn load_workflow(&self, name: &str) -> Result<Arc<Workflow>, Error> {
        let info = self.store.get_workflow(name).await?;
        let version = self
            .store
            .get_workflow_version(name, info.latest_version)
            .await?;
        let wf: Workflow = serde_json::from_value(version.workflow_doc)
            .map_err(|e| Error::Store(format!("stored workflow {name} is unreadable: {e}")))?;
        Ok(Arc::new(wf))
    }

    async fn start_execution(
        &mut self,
        name: &str,
        trigger: serde_json::Value,
        event: Option<Event>,
    ) -> Result<WorkflowExecutionInfo, Error> {
        let info = self.store.get_workflow(name).await?;
        if info.paused {
            return Err(Error::Conflict(format!("workflow {name} is paused")));
        }
        let workflow = self.load_workflow(name).await?;
        let id = uuid::Uuid::new_v4().simple().to_string();
        let now = Utc::now();
        self.store
            .create_workflow_execution(&NewWorkflowExecution {
                id: id.clone(),
                workflow: name.to_string(),
                workflow_version: Some(info.latest_version),
                state: WorkflowState::Running.as_str().to_string(),
                trigger: Some(trigger),
            })
            .await?;
        self.store
            .set_workflow_execution_state(&id, WorkflowState::Running.as_str(), Some(now), None)
            .await?;
        let jobs = workflow
            .jobs
            .iter()
            .map(|j| {
                (
                    j.name.clone(),
                    JobRt {
                        state: JobState::Waiting,
                        attempt: 0,
                        row: None,
                        stopper: None,
                        restart_after_stop: false,
                        cause: None,
                        launched: false,
                    },
                )
            })
            .collect();
        let exec = Exec {
            id: id.clone(),
            memory: vec![RuleMemory::default(); workflow.rules.len()],
            workflow: workflow.clone(),
            jobs,
            trigger_event: event,
            stopping: false,
            running: 0,
            active: 0,
            index: workflow
                .jobs
                .iter()
                .enumerate()
                .map(|(i, j)| (j.name.clone(), i))
                .collect(),
        };
        self.executions.insert(id.clone(), exec);
        tracing::info!(workflow = name, execution = %id, "execution started");
        Obs::execution_state(WorkflowState::Running.as_str());
        self.publish_workflow_status(&id, WorkflowState::Running)
            .await;
        for job in initial_jobs(&workflow) {
            // The trigger event (if any) is the cause of the first jobs.
            let cause = self
                .executions
                .get(&id)
                .and_then(|e| e.trigger_event.clone());
            self.queue_job(&id, job, cause).await;
        }
        self.check_finished(&id).await;
        Ok(self.store.get_workflow_execution(&id).await?)
    }

    async fn stop_execution(&mut self, id: &str) -> Result<(), Error> {
        let Some(exec) = self.executions.get_mut(id) else {
            let info = self.store.get_workflow_execution(id).await?;
            return Err(Error::Conflict(format!(
                "execution {id} is not running (state {})",
                info.state
            )));
        };
        exec.stopping = true;
        let mut never_started = Vec::new();
        for (name, job) in &mut exec.jobs {
            job.restart_after_stop = false;
            match job.state {
                s if s.is_active() => {
                    if let Some(stop) = &job.stopper {
                        let _ = stop.send(true);
                    }
                    if s != JobState::Running {
                        never_started.push(name.clone());
                    }
                }
                _ => {}
            }
        }
        for job in never_started {
            self.set_job_state(id, &job, JobState::Stopped, None).await;
        }
        self.check_finished(id).await;
        Ok(())
    }

    async fn on_event(&mut self, event: Event) {
        let offset = event.offset;
        let own = event.sender.as_deref() == Some(SENDER);
        if !own {
            let target = event
                .context
                .as_ref()
                .and_then(|c| c.get("execution"))
                .and_then(|v| v.as_str())
                .map(str::to_string);
            let ids: Vec<String> = match target {
                Some(id) if self.executions.contains_key(&id) => vec![id],
                _ => self.executions.keys().cloned().collect(),
            };
            for id in ids {
                self.evaluate_signal(&id, Signal::Event(&event)).await;
            }
            let mut starts: Vec<(String, serde_json::Value)> = Vec::new();
            for wf in &self.triggers {
                for t in &wf.triggers {
                    let WorkflowTrigger::Event {
                        event: cond,
                        delay_s,
                    } = t
                    else {
                        continue;
                    };
                    if !event_matches(cond, &event, &wf.namespace) {
                        continue;
                    }
                    let trigger = serde_json::json!({"type": "event", "offset": event.offset, "delay_s": delay_s});
                    if *delay_s == 0 {
                        starts.push((wf.name.clone(), trigger));
                    } else {
                        let (tx, name, e) = (self.tx.clone(), wf.name.clone(), event.clone());
                        let delay = Duration::from_secs(*delay_s);
                        tokio::spawn(async move {
                            tokio::time::sleep(delay).await;
                            let (reply, _) = oneshot::channel();
                            let _ = tx
                                .send(Command::Start {
                                    workflow: name,
                                    trigger,
                                    event: Some(e),
                                    reply,
                                })
                                .await;
                        });
                    }
                }
            }
            for (name, trigger) in starts {
                if let Err(e) = self
                    .start_execution(&name, trigger, Some(event.clone()))
                    .await
                {
                    tracing::warn!(workflow = name, error = %e, "event trigger could not start an execution");
                }
            }
        }
        // The offset is stored at most every 200 ms (and on every tick), not per event: a
        // restart re-reads at most that much, instead of one write per event halving the bus.
        self.handled = offset;
        if self.saved_at.elapsed() >= Duration::from_millis(200) {
            self.commit_offset().await;
        }
    }

    async fn commit_offset(&mut self) {
        if self.handled == self.saved {
            return;
        }
        match save_offset(&self.store, self.handled).await {
            Ok(()) => {
                self.saved = self.handled;
                self.obs.committed(self.handled.0);
            }
            Err(e) => tracing::warn!(error = %e, "cannot commit the scheduler offset"),
        }
        self.saved_at = std::time::Instant::now();
    }

    async fn evaluate_signal(&mut self, id: &str, signal: Signal<'_>) {
        let Some(exec) = self.executions.get_mut(id) else {
            return;
        };
        if exec.stopping {
            return;
        }
        let workflow = exec.workflow.clone();
        let evaluations = {
            let _span = tracing::debug_span!("rule.evaluate", workflow = %workflow.name, execution = id, rules = workflow.rules.len()).entered();
            evaluate(&workflow, &mut exec.memory, signal)
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
            self.record(id, &ev, &signal, &decision).await;
            Obs::evaluation(matches!(signal, Signal::Event(_)), &decision);
            let span = tracing::debug_span!("rule.action", workflow = %workflow.name, execution = id, job = %ev.job, rule = ev.rule, decision = ?decision);
            async {
                match decision {
                    Decision::Start => self.queue_job(id, &ev.job, cause.clone()).await,
                    Decision::Stop => self.stop_job(id, &ev.job, false).await,
                    Decision::Restart => self.stop_job(id, &ev.job, true).await,
                    Decision::Ignore(_) => {}
                }
            }
            .instrument(span)
            .await;
        }
    }

    async fn record(&self, id: &str, ev: &Evaluation, signal: &Signal<'_>, decision: &Decision) {
        let (offset, signal_text) = match signal {
            Signal::Event(e) => (
                Some(e.offset.0),
                format!("event {} {} {}", e.offset, e.key, e.event_type),
            ),
            Signal::Job { job, state } => (None, format!("job {job} {state}")),
        };
        let decision_text = match decision {
            Decision::Start => "START".to_string(),
            Decision::Stop => "STOP".to_string(),
            Decision::Restart => "RESTART".to_string(),
            Decision::Ignore(why) => format!("ignored: {why}"),
        };
        let _timer = QueryTimer::new("record_evaluation");
        let r = sqlx::query(
            "INSERT INTO rule_evaluations (execution_id, job_name, rule_index, event_offset, \
             signal, met, fired, decision, explanation, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(id)
        .bind(&ev.job)
        .bind(ev.rule as i64)
        .bind(offset)
        .bind(signal_text)
        .bind(serde_json::to_string(&ev.met).unwrap_or_default())
        .bind(ev.fired.as_ref().map(ToString::to_string))
        .bind(decision_text)
        .bind(&ev.explanation)
        .bind(Utc::now().timestamp_micros())
        .execute(&self.store.db().pool)
        .await;
        if let Err(e) = r {
            tracing::warn!(execution = id, error = %e, "cannot record a rule evaluation");
        }
    }

    /// Begins a new attempt of `job` (QUEUED, then launched).
    async fn queue_job(&mut self, id: &str, job: &str, cause: Option<Event>) {
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
        new_attempt(&self.writes, rt, id, job, JobState::Queued);
        self.set_job_state(id, job, JobState::Queued, None).await;
        self.enqueue(id, job).await;
    }

    /// Puts the job's current attempt in line for a slot, then hands out free slots.
    async fn enqueue(&mut self, id: &str, job: &str) {
        let Some(exec) = self.executions.get(id) else {
            return;
        };
        let Some(rt) = exec.jobs.get(job) else {
            return;
        };
        let priority = exec.spec(job).map_or(0, |j| j.priority);
        self.queued_seq += 1;
        self.waiting.push((
            priority,
            std::cmp::Reverse(self.queued_seq),
            id.to_string(),
            job.to_string(),
            rt.attempt,
        ));
        self.dispatch().await;
    }

    /// Launches waiting attempts while slots are free: in total, and per execution
    /// (`max_concurrent_jobs`).
    async fn dispatch(&mut self) {
        let mut blocked = Vec::new();
        while self.running_total < self.config.max_running.max(1) {
            let Some(entry) = self.waiting.pop() else {
                break;
            };
            let (_, _, id, job, attempt) = &entry;
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
            self.launch(&id, &job).await;
        }
        self.waiting.extend(blocked);
        Obs::slots(self.waiting.len(), self.running_total);
    }

    /// Frees the slot held by a job's process.
    fn release(&mut self, id: &str, job: &str) {
        if let Some(exec) = self.executions.get_mut(id)
            && let Some(rt) = exec.jobs.get_mut(job)
            && rt.launched
        {
            rt.launched = false;
            exec.running = exec.running.saturating_sub(1);
            self.running_total = self.running_total.saturating_sub(1);
        }
    }

    /// Starts the process of the job's current attempt.
    async fn launch(&mut self, id: &str, job: &str) {
        let Some(exec) = self.executions.get_mut(id) else {
            return;
        };
        let Some(spec) = exec.spec(job).cloned() else {
            return;
        };
        let Some(rt) = exec.jobs.get_mut(job) else {
            return;
        };
        let attempt = rt.attempt;
        let mut env = spec.env.clone();
        env.insert("AIFLOW_URL".into(), self.config.server_url.clone());
        env.entry("AIFLOW_TOKEN".into()).or_default();
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
        let launch_workflow = exec.workflow.name.clone();
        let launch = LaunchSpec {
            workflow: launch_workflow.clone(),
            execution: id.to_string(),
            job: job.to_string(),
            attempt,
            commands: spec.commands().map(<[String]>::to_vec).collect(),
            env,
            working_dir: spec.working_dir.as_ref().map(PathBuf::from),
            timeout: spec.timeout_s.map(Duration::from_secs),
            log_path: log_path(&self.config, id, job, attempt),
        };
        match self.executor.launch(launch).await {
            Ok(mut running) => {
                rt.stopper = Some(running.stopper());
                rt.launched = true;
                exec.running += 1;
                self.running_total += 1;
                let tx = self.tx.clone();
                let (execution, job_name) = (id.to_string(), job.to_string());
                tokio::spawn(async move {
                    // RUNNING once the process exists; the loop never waits for fork/exec.
                    if running.started().await {
                        let _ = tx
                            .send(Command::Started {
                                execution: execution.clone(),
                                job: job_name.clone(),
                                attempt,
                            })
                            .await;
                    }
                    let outcome = running.wait().await;
                    let _ = tx
                        .send(Command::JobEnded {
                            execution,
                            job: job_name,
                            attempt,
                            outcome,
                        })
                        .await;
                });
            }
            Err(e) => {
                tracing::warn!(workflow = %launch_workflow, execution = id, job, attempt, error = %e, "cannot open the job log");
                Box::pin(self.on_job_ended(
                    id,
                    job,
                    attempt,
                    Outcome::Failed {
                        message: format!("cannot open the job log: {e}"),
                    },
                ))
                .await;
            }
        }
    }

    async fn stop_job(&mut self, id: &str, job: &str, restart: bool) {
        let Some(rt) = self
            .executions
            .get_mut(id)
            .and_then(|e| e.jobs.get_mut(job))
        else {
            return;
        };
        match rt.state {
            JobState::Running => {
                rt.restart_after_stop = restart;
                if let Some(stop) = &rt.stopper {
                    let _ = stop.send(true);
                }
            }
            JobState::Waiting | JobState::Queued | JobState::Retrying => {
                // A QUEUED attempt may already be spawning its process: stop that too.
                if let Some(stop) = &rt.stopper {
                    let _ = stop.send(true);
                }
                self.set_job_state(id, job, JobState::Stopped, None).await;
                if restart {
                    self.queue_job(id, job, None).await;
                }
            }
            _ => {}
        }
    }

    async fn on_job_ended(&mut self, id: &str, job: &str, attempt: u32, outcome: Outcome) {
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
        rt.stopper = None;
        let restart = std::mem::take(&mut rt.restart_after_stop);
        let (state, message) = match &outcome {
            Outcome::Succeeded => (JobState::Succeeded, None),
            Outcome::Stopped => (JobState::Stopped, None),
            Outcome::TimedOut => (JobState::Failed, Some("timed out".to_string())),
            Outcome::Failed { message } => (JobState::Failed, Some(message.clone())),
        };
        if state == JobState::Failed && attempt <= retries && !stopping {
            self.set_job_state(id, job, JobState::Retrying, message)
                .await;
            // Exponential backoff with jitter: base · 2^(attempt-1) · [1, 1.25).
            let base = backoff.saturating_mul(1 << (attempt - 1).min(10)) as f64;
            let jitter = 1.0 + f64::from(uuid::Uuid::new_v4().as_u128() as u16) / 262_140.0;
            let delay = Duration::from_secs_f64(base * jitter);
            // The next attempt gets a new number when it is queued.
            if let Some(rt) = self
                .executions
                .get_mut(id)
                .and_then(|e| e.jobs.get_mut(job))
            {
                let next = new_attempt(&self.writes, rt, id, job, JobState::Retrying);
                // The scheduled retry names the attempt it launches.
                let tx = self.tx.clone();
                let (execution, job_name) = (id.to_string(), job.to_string());
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    let _ = tx
                        .send(Command::Retry {
                            execution,
                            job: job_name,
                            attempt: next,
                        })
                        .await;
                });
            }
            return;
        }
        self.set_job_state(id, job, state, message).await;
        if restart && !stopping {
            self.queue_job(id, job, None).await;
        }
        self.check_finished(id).await;
    }

    /// Stores a job's new state, publishes it, and evaluates rules on it.
    async fn set_job_state(
        &mut self,
        id: &str,
        job: &str,
        state: JobState,
        message: Option<String>,
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
            (true, false) => exec.active = exec.active.saturating_sub(1),
            _ => {}
        }
        rt.state = state;
        let attempt = rt.attempt;
        self.obs.job_state(id, job, attempt, state);
        if let Some(row) = rt.row.clone() {
            let now = Utc::now();
            let started = (state == JobState::Running).then_some(now);
            let ended = state.is_terminal().then_some(now);
            self.write(JobWrite::State {
                row,
                state,
                started,
                ended,
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
        Box::pin(self.evaluate_signal(id, Signal::Job { job, state })).await;
    }

    async fn publish_workflow_status(&self, id: &str, state: WorkflowState) {
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

    /// Hands a job row write to the writer task (applied in order).
    fn write(&self, w: JobWrite) {
        if self.writes.send(w).is_err() {
            tracing::warn!("the job row writer has stopped; a job state is not stored");
        }
    }

    /// Hands a status event to the publisher task: published in order, in batches, without
    /// holding up the loop.
    fn publish(&self, event: NewEvent) {
        if self.statuses.send(event).is_err() {
            tracing::warn!("the status publisher has stopped; a status event is lost");
        }
    }

    async fn check_finished(&mut self, id: &str) {
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
            (!states.values().any(|s| s.is_active())).then_some(WorkflowState::Stopped)
        } else {
            outcome(&exec.workflow, &states, &exec.memory)
        };
        let Some(state) = done else {
            return;
        };
        if let Err(e) = self
            .store
            .set_workflow_execution_state(&exec.id, state.as_str(), None, Some(Utc::now()))
            .await
        {
            tracing::warn!(execution = id, error = %e, "cannot store the execution state");
        }
        self.publish_workflow_status(id, state).await;
        Obs::execution_state(state.as_str());
        tracing::info!(execution = id, state = %state, "execution finished");
        self.executions.remove(id);
    }
}
