//! The scheduler service: one loop that owns every running execution, fed by the event bus,
//! by API calls and by the executor. Job state changes are stored, published as `JOB_STATUS`
//! events and evaluated against the execution's rules; rule decisions start, stop or restart
//! jobs through the local executor.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use aiflow_api::meta::WorkflowExecutionInfo;
pub use aiflow_api::scheduler::Submitted;
use aiflow_api::{Event, EventFilter, NewEvent, Offset};
use aiflow_meta::{NewWorkflowVersion, Store};
use aiflow_notification::EventBus;
use aiflow_translator::{Document, Workflow, WorkflowTrigger};
use chrono::Utc;
use futures::StreamExt;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tracing::Instrument as _;

use crate::Error;
use crate::durable::{
    self, Batch, Delayed, FLAG_RESTART, FLAG_STOP, MetaWrite, OFFSET_KEY, Record,
};
use crate::executor::{LaunchSpec, LocalExecutor, Outcome};
use crate::leader::Role;
use crate::metrics::{Obs, Progress};
use crate::rules::{
    Decision, Evaluation, RuleMemory, Signal, decide, describe_signal, evaluate, evaluate_finish,
    event_matches, finished, initial_jobs, memory_slots, outcome, trigger_events,
};
use crate::state::{JobState, WorkflowState};
use crate::triggers::{is_time, parts};

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
    /// This replica's name (recorded with the leader lease).
    pub node: String,
    /// NATS streams for remote workers and for forwarding requests from standbys.
    pub fabric: Option<crate::remote::Fabric>,
    /// Jobs go to remote workers (`fabric` required) instead of local processes.
    pub remote: bool,
    /// With authentication on: mints each job's `AIFLOW_TOKEN`, scoped to its execution.
    pub job_tokens: Option<aiflow_meta::auth::Tokens>,
    /// Lifetime of a job's token when the job has no timeout (with one: the timeout plus ten
    /// minutes). A token is refused anyway once its execution has ended.
    pub job_token_ttl: Duration,
    /// Largest size of one job attempt's log (none: no limit).
    pub log_max_bytes: Option<u64>,
    /// The `aiflow` binary that supervises each local job attempt (`aiflow supervise`), so
    /// jobs outlive this process and the next one re-adopts them. None: attempts are tasks
    /// of this process and end with it (`aiflow server --stop-jobs-on-exit`).
    pub supervisor: Option<PathBuf>,
    /// `AIFLOW_CA_CERT` given to jobs: the CA to trust for an https:// `server_url`.
    pub ca_cert: Option<PathBuf>,
}

/// Default of [`SchedulerConfig::job_token_ttl`]: one day.
pub const DEFAULT_JOB_TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);

/// The longest wait the scheduler computes (a retry's backoff, a trigger's delay): longer ones
/// are cut to it, so clock arithmetic never overflows whatever a stored document says.
pub const MAX_WAIT: Duration = Duration::from_secs(100 * 366 * 86_400);

/// Now plus `d` (at most [`MAX_WAIT`]), without overflowing.
fn later(d: Duration) -> chrono::DateTime<Utc> {
    let now = Utc::now();
    chrono::TimeDelta::from_std(d.min(MAX_WAIT))
        .ok()
        .and_then(|d| now.checked_add_signed(d))
        .unwrap_or(now)
}

impl SchedulerConfig {
    /// Where supervised job attempts keep their folders.
    #[must_use]
    pub fn attempts_root(&self) -> PathBuf {
        self.data_dir.join("attempts")
    }

    /// Embedded defaults: local processes, no NATS.
    #[must_use]
    pub fn local(data_dir: PathBuf, server_url: String) -> SchedulerConfig {
        SchedulerConfig {
            data_dir,
            server_url,
            stop_grace: Duration::from_secs(10),
            aiflow_bin: None,
            max_running: DEFAULT_MAX_RUNNING,
            node: crate::leader::node_name(),
            fabric: None,
            remote: false,
            job_tokens: None,
            job_token_ttl: DEFAULT_JOB_TOKEN_TTL,
            log_max_bytes: None,
            supervisor: None,
            ca_cert: None,
        }
    }
}

/// Default of [`SchedulerConfig::max_running`].
pub const DEFAULT_MAX_RUNNING: usize = 32;

/// At most this many more commands are handled before one commit.
const BATCH: usize = 255;
/// An offset with no state change to go with it is committed at most this often: a restart
/// reads that much again, instead of one write per event halving the bus.
const OFFSET_EVERY: Duration = Duration::from_millis(200);

pub(crate) enum Command {
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
    /// A remote worker's report, acknowledged once handled and committed.
    Report(
        Box<crate::remote::Report>,
        Arc<async_nats::jetstream::message::Acker>,
    ),
    /// An event-triggered start whose `delay_s` has passed.
    Delayed(Box<Delayed>),
}

/// A cheap handle to the scheduler loop.
#[derive(Clone)]
pub struct Scheduler {
    tx: mpsc::Sender<Command>,
    store: Store,
    config: Arc<SchedulerConfig>,
    progress: Arc<Progress>,
    role: watch::Receiver<Role>,
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler").finish_non_exhaustive()
    }
}

impl Scheduler {
    /// Starts the scheduler. The embedded shape (SQLite) resumes the executions a previous
    /// process left running, then starts the loop and the bus subscription (from the last
    /// committed offset). On PostgreSQL several replicas may run: this one waits as a standby
    /// (forwarding scheduler requests to the leader over NATS) until it takes the leader lease
    /// (see [`crate::leader`]), then does the same from the committed offset.
    pub async fn start(
        store: Store,
        bus: Arc<dyn EventBus>,
        config: SchedulerConfig,
        shutdown: watch::Receiver<bool>,
    ) -> Result<(Scheduler, JoinHandle<()>), Error> {
        let (tx, rx) = mpsc::channel(4096);
        let config = Arc::new(config);
        let progress = Arc::new(Progress::default());
        let replicated = store.db().backend == aiflow_db::Backend::Postgres;
        let (role_tx, role) = watch::channel(if replicated {
            Role::Standby
        } else {
            Role::Single
        });
        let handle = if replicated {
            let (store, config, progress, tx) =
                (store.clone(), config.clone(), progress.clone(), tx.clone());
            tokio::spawn(async move {
                let mut rx = rx;
                // Standby until the lease is ours, lead until it is lost, then stand by again
                // (a PostgreSQL restart ends the lease; the state is rebuilt from the store).
                loop {
                    let _ = role_tx.send(Role::Standby);
                    let mut stop = shutdown.clone();
                    let lease = tokio::select! {
                        lease = standby(&store, &config, &mut rx) => lease,
                        () = until_shutdown(&mut stop) => return,
                    };
                    let Some(lease) = lease else { return };
                    tracing::info!(epoch = lease.epoch, node = %config.node, "this replica is the scheduling leader now");
                    let _ = role_tx.send(Role::Leader { epoch: lease.epoch });
                    // Everything this term starts stops when it ends.
                    let (term_tx, term) = watch::channel(false);
                    let mut global = shutdown.clone();
                    let forward = term_tx.clone();
                    tokio::spawn(async move {
                        tokio::select! {
                            () = until_shutdown(&mut global) => { let _ = forward.send(true); }
                            () = forward.closed() => {}
                        }
                    });
                    let core = lead(
                        store.clone(),
                        bus.clone(),
                        config.clone(),
                        progress.clone(),
                        tx.clone(),
                        term,
                        Some(lease.epoch),
                    )
                    .await;
                    let deposed = match core {
                        Ok(core) => core.run(&mut rx, Some(lease)).await,
                        Err(e) => {
                            tracing::error!(error = %e, "the leader cannot resume the scheduler state; standing by again");
                            tokio::time::sleep(Duration::from_secs(1)).await;
                            true
                        }
                    };
                    let _ = term_tx.send(true);
                    if !deposed || *shutdown.borrow() {
                        return;
                    }
                    tracing::warn!(node = %config.node, "no longer the scheduling leader; standing by");
                }
            })
        } else {
            let core = lead(
                store.clone(),
                bus,
                config.clone(),
                progress.clone(),
                tx.clone(),
                shutdown,
                None,
            )
            .await?;
            let mut rx = rx;
            tokio::spawn(async move {
                core.run(&mut rx, None).await;
            })
        };
        Ok((
            Scheduler {
                tx,
                store,
                config,
                progress,
                role,
            },
            handle,
        ))
    }

    /// Whether the scheduler loop is still there to take commands (`false` once it has ended:
    /// shut down, or stopped by a fault).
    #[must_use]
    pub fn loop_running(&self) -> bool {
        !self.tx.is_closed()
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
        crate::dags::clear_stored_error(&self.store, &stored.workflow).await;
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

    /// Whether this replica schedules (`leader`, `single`) or waits (`standby`).
    #[must_use]
    pub fn role(&self) -> Role {
        self.role.borrow().clone()
    }

    /// Remote execution over NATS, when configured.
    #[must_use]
    pub fn fabric(&self) -> Option<&crate::remote::Fabric> {
        self.config.fabric.as_ref()
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

/// Begins the next attempt of a job: a new number and a new row (written in `state`).
fn new_attempt(
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

/// Publishes committed status events in order, in batches (one transaction on the embedded
/// bus), then deletes them from the outbox; retries a failed batch with backoff so no status
/// is dropped while the bus is away.
/// A standby's wait for the lease: scheduler requests made here meanwhile go to the leader
/// over NATS (`aiflow.scheduler.*`), or fail with 503 when there is no NATS or no leader.
async fn standby(
    store: &Store,
    config: &SchedulerConfig,
    rx: &mut mpsc::Receiver<Command>,
) -> Option<crate::leader::Lease> {
    let acquire = async {
        let mut backoff = Duration::from_millis(200);
        loop {
            match crate::leader::acquire(store.db(), &config.node, &config.server_url).await {
                Ok(lease) => return lease,
                Err(e) => {
                    tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "cannot wait for the scheduling lease");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    };
    tokio::pin!(acquire);
    tracing::info!(node = %config.node, "standby: another replica schedules; waiting for the lease");
    loop {
        tokio::select! {
            lease = &mut acquire => return Some(lease),
            cmd = rx.recv() => match cmd {
                Some(cmd) => crate::forward::send(config.fabric.clone(), cmd),
                None => return None,
            },
        }
    }
}

/// Builds the loop's state from the committed state (resuming running executions) and starts
/// the feeds: bus events from the committed offset, clock ticks, remote reports.
async fn lead(
    store: Store,
    bus: Arc<dyn EventBus>,
    config: Arc<SchedulerConfig>,
    progress: Arc<Progress>,
    tx: mpsc::Sender<Command>,
    shutdown: watch::Receiver<bool>,
    fence: Option<i64>,
) -> Result<Core, Error> {
    let committed = load_offset(&store).await?;
    let from = if committed == Offset(0) {
        bus.latest_offset().await.map_err(Error::bus)?
    } else {
        committed
    };
    let statuses = spawn_status_publisher(bus.clone(), store.clone());
    // Status events committed by a previous process but not published yet go first.
    let leftover = durable::pending_statuses(store.db())
        .await
        .map_err(|e| Error::Store(e.to_string()))?;
    if !leftover.is_empty() {
        tracing::info!(
            events = leftover.len(),
            "publishing status events left by the previous process"
        );
        let _ = statuses.send(leftover);
    }
    let mut core = Core {
        obs: Obs::new(progress, from.0),
        store: store.clone(),
        executor: LocalExecutor {
            grace: config.stop_grace,
            log_max_bytes: config.log_max_bytes,
            supervisor: config
                .supervisor
                .clone()
                .map(|program| crate::supervisor::Supervisor { program }),
        },
        fabric: config.fabric.clone(),
        fence,
        lease_lost: None,
        deposed: false,
        config: config.clone(),
        tx: tx.clone(),
        executions: HashMap::new(),
        triggers: Vec::new(),
        timers: Vec::new(),
        trigger_memory: HashMap::new(),
        statuses,
        waiting: std::collections::BinaryHeap::new(),
        queued_seq: 0,
        running_total: 0,
        handled: from,
        saved: from,
        saved_at: std::time::Instant::now(),
        pending: Pending::default(),
        shutdown: shutdown.clone(),
    };
    core.resume().await?;
    core.reload_triggers().await?;
    core.flush().await;
    let mut events = bus
        .subscribe(EventFilter::default(), from)
        .await
        .map_err(Error::bus)?;
    let feed = tx.clone();
    let mut feed_shutdown = shutdown.clone();
    tokio::spawn(async move {
        // A subscription that fails (the bus restarted, say) starts again after the last
        // event passed on: nothing is skipped, and the loop ignores what it already handled.
        let mut last = from;
        let mut backoff = Duration::from_millis(100);
        loop {
            tokio::select! {
                next = events.next() => match next {
                    Some(Ok(e)) => {
                        last = e.offset;
                        backoff = Duration::from_millis(100);
                        if feed.send(Command::Event(e)).await.is_err() {
                            break;
                        }
                        continue;
                    }
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, after = last.0, "event subscription failed; subscribing again");
                    }
                    None => {
                        tracing::warn!(after = last.0, "event subscription ended; subscribing again");
                    }
                },
                () = until_shutdown(&mut feed_shutdown) => break,
            }
            loop {
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = until_shutdown(&mut feed_shutdown) => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
                match bus.subscribe(EventFilter::default(), last).await {
                    Ok(s) => {
                        events = s;
                        break;
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot subscribe to the event bus yet"),
                }
            }
        }
    });
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
    if let Some(fabric) = &config.fabric {
        crate::forward::serve(fabric, tx.clone(), shutdown.clone()).await?;
        if fence.is_some() || config.remote {
            spawn_report_feed(fabric.clone(), tx.clone(), shutdown.clone()).await?;
        }
    }
    Ok(core)
}

/// Remote workers' reports into the loop (acknowledged once their changes are committed).
async fn spawn_report_feed(
    fabric: crate::remote::Fabric,
    tx: mpsc::Sender<Command>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), Error> {
    let mut reports = fabric.reports().await.map_err(Error::Bus)?;
    tokio::spawn(async move {
        loop {
            tokio::select! {
                next = reports.next() => match next {
                    Some(Ok(m)) => {
                        let (m, acker) = m.split();
                        match serde_json::from_slice::<crate::remote::Report>(&m.payload) {
                            Ok(r) => {
                                if tx.send(Command::Report(Box::new(r), Arc::new(acker))).await.is_err() {
                                    break;
                                }
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, "dropping an unreadable worker report");
                                let _ = acker.ack().await;
                            }
                        }
                    }
                    Some(Err(e)) => tracing::warn!(error = %e, "worker reports"),
                    None => {
                        // NATS restarted: pull again (unacknowledged reports come again).
                        loop {
                            tokio::select! {
                                () = tokio::time::sleep(Duration::from_secs(1)) => {}
                                () = until_shutdown(&mut shutdown) => return,
                            }
                            match fabric.reports().await {
                                Ok(r) => {
                                    reports = r;
                                    break;
                                }
                                Err(e) => tracing::warn!(error = %e, "cannot read worker reports yet"),
                            }
                        }
                    }
                },
                () = until_shutdown(&mut shutdown) => break,
            }
        }
    });
    Ok(())
}

impl Core {
    /// [`Core::handle`], with a panic in it caught: logged, counted, and that command alone
    /// fails (its caller, if any, gets an error) while the loop goes on.
    async fn handle_guarded(&mut self, cmd: Command) {
        let what = match &cmd {
            Command::Start { .. } => "start",
            Command::Stop { .. } => "stop",
            Command::Event(_) => "event",
            Command::JobEnded { .. } => "job_ended",
            Command::Retry { .. } => "retry",
            Command::Reload => "reload",
            Command::Started { .. } => "started",
            Command::Tick(_) => "tick",
            Command::Report(..) => "report",
            Command::Delayed(_) => "delayed",
        };
        crate::metrics::guarded(what, self.handle(cmd)).await;
    }

    /// The loop: handles commands in batches, each batch committed in one transaction.
    /// Returns `true` when this replica lost the leader lease (and must stand by), `false` on
    /// shutdown.
    async fn run(
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
            running = self.executions.len(),
            "scheduler stopped; its executions resume when it starts again"
        );
        self.deposed
    }
}

fn spawn_status_publisher(
    bus: Arc<dyn EventBus>,
    store: Store,
) -> mpsc::UnboundedSender<Vec<(i64, NewEvent)>> {
    let (tx, mut rx) = mpsc::unbounded_channel::<Vec<(i64, NewEvent)>>();
    tokio::spawn(async move {
        let mut queue: Vec<Vec<(i64, NewEvent)>> = Vec::new();
        // Published rows are cleared from the outbox at most every CLEAR_EVERY (or once things
        // are quiet): one write instead of one per batch, so the writers that start jobs are
        // not kept waiting. Rows published twice after a crash are dropped by the bus
        // (idempotency keys).
        let mut published: Option<i64> = None;
        let mut cleared_at = tokio::time::Instant::now();
        loop {
            let got = if published.is_some() {
                match tokio::time::timeout(CLEAR_EVERY, rx.recv_many(&mut queue, 64)).await {
                    Ok(n) => n,
                    Err(_) => {
                        clear_published(&store, &mut published, &mut cleared_at).await;
                        continue;
                    }
                }
            } else {
                rx.recv_many(&mut queue, 64).await
            };
            if got == 0 {
                clear_published(&store, &mut published, &mut cleared_at).await;
                break;
            }
            let items: Vec<(i64, NewEvent)> = queue.drain(..).flatten().collect();
            for chunk in items.chunks(256) {
                let batch: Vec<NewEvent> = chunk.iter().map(|(_, e)| e.clone()).collect();
                let last = chunk.last().map_or(0, |(id, _)| *id);
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
                published = Some(last);
            }
            if cleared_at.elapsed() >= CLEAR_EVERY {
                clear_published(&store, &mut published, &mut cleared_at).await;
            }
        }
    });
    tx
}

/// How often published status events are cleared from the outbox.
const CLEAR_EVERY: Duration = Duration::from_millis(250);

async fn clear_published(
    store: &Store,
    published: &mut Option<i64>,
    cleared_at: &mut tokio::time::Instant,
) {
    if let Some(last) = published.take()
        && let Err(e) = durable::published(store.db(), last).await
    {
        tracing::warn!(error = %e, "cannot clear published status events");
        *published = Some(last);
    }
    *cleared_at = tokio::time::Instant::now();
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

async fn load_offset(store: &Store) -> Result<Offset, Error> {
    let v = durable::kv_get(store.db(), OFFSET_KEY)
        .await
        .map_err(|e| Error::Store(e.to_string()))?;
    Ok(v.and_then(|s| s.parse().ok()).unwrap_or_default())
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

fn trigger_key(workflow: &str, index: usize) -> String {
    format!("scheduler.trigger.{workflow}.{index}")
}

/// The key of a time trigger's last firing: `part` is the leaf of an `all_of` trigger.
fn timer_key(workflow: &str, index: usize, part: Option<usize>) -> String {
    match part {
        None => trigger_key(workflow, index),
        Some(j) => format!("{}.{j}", trigger_key(workflow, index)),
    }
}

/// A time trigger's clock.
struct Timer {
    workflow: Arc<Workflow>,
    trigger: usize,
    /// The leaf, when the trigger is an `all_of`.
    part: Option<usize>,
    last: chrono::DateTime<Utc>,
}

async fn load_trigger_time(store: &Store, key: &str) -> Option<chrono::DateTime<Utc>> {
    let v = durable::kv_get(store.db(), key).await.ok().flatten();
    v.and_then(|s| s.parse().ok())
}

fn trigger_memory_key(workflow: &str, index: usize) -> String {
    format!("scheduler.trigger_memory.{workflow}.{index}")
}

struct JobRt {
    state: JobState,
    attempt: u32,
    row: Option<String>,
    stopper: Option<watch::Sender<bool>>,
    restart_after_stop: bool,
    /// A stop was asked for the current attempt (kept so a restart knows it was not lost).
    stop_asked: bool,
    cause: Option<Event>,
    /// A process of the current attempt holds a slot.
    launched: bool,
    /// When a RETRYING job's next attempt is due.
    retry_at: Option<chrono::DateTime<Utc>>,
}

impl JobRt {
    fn new() -> JobRt {
        JobRt {
            state: JobState::Waiting,
            attempt: 0,
            row: None,
            stopper: None,
            restart_after_stop: false,
            stop_asked: false,
            cause: None,
            launched: false,
            retry_at: None,
        }
    }

    fn saved(&self) -> durable::JobRow {
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

struct Exec {
    id: String,
    workflow: Arc<Workflow>,
    version: i64,
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
    /// When the execution started (its `max_duration_s` counts from here).
    started_at: chrono::DateTime<Utc>,
    /// Why the execution is being stopped as FAILED (its `max_duration_s` was reached).
    expired: Option<String>,
}

impl Exec {
    fn new(
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

    fn spec(&self, job: &str) -> Option<&aiflow_translator::Job> {
        self.index.get(job).map(|&i| &self.workflow.jobs[i])
    }

    /// The reason to stop this execution as FAILED when it has run longer than its
    /// `max_duration_s` at `now`.
    fn over_time(&self, now: chrono::DateTime<Utc>) -> Option<String> {
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
enum Effect {
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
    /// A worker report whose changes are committed.
    Ack(Arc<async_nats::jetstream::message::Acker>),
}

/// What the next commit writes, and what happens after it.
#[derive(Default)]
struct Pending {
    meta: Vec<MetaWrite>,
    execs: HashSet<String>,
    jobs: HashSet<(String, String)>,
    rules: HashSet<(String, usize)>,
    finished: Vec<String>,
    records: Vec<Record>,
    statuses: Vec<NewEvent>,
    kv: Vec<(String, String)>,
    delayed_add: Vec<Delayed>,
    delayed_done: Vec<String>,
    effects: Vec<Effect>,
}

impl Pending {
    fn is_empty(&self) -> bool {
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

struct Core {
    /// Metrics bookkeeping (see [`crate::metrics`]).
    obs: Obs,
    store: Store,
    executor: LocalExecutor,
    /// Remote execution: set when jobs go to workers, or for stopping remote tasks.
    fabric: Option<crate::remote::Fabric>,
    /// The leader epoch every commit checks (replicated shape).
    fence: Option<i64>,
    /// Set when the lease connection failed.
    lease_lost: Option<watch::Receiver<bool>>,
    /// This replica lost the lease: the loop ends and nothing more takes effect.
    deposed: bool,
    shutdown: watch::Receiver<bool>,
    config: Arc<SchedulerConfig>,
    tx: mpsc::Sender<Command>,
    executions: HashMap<String, Exec>,
    /// Active (not paused) workflows with event triggers.
    triggers: Vec<Arc<Workflow>>,
    /// Time triggers (and time parts of `all_of` triggers) of active workflows.
    timers: Vec<Timer>,
    /// `all_of` triggers: the parts (leaves, in pre-order) met since the last start.
    trigger_memory: HashMap<(String, usize), std::collections::BTreeSet<usize>>,
    /// Committed status events on their way to the bus (see [`spawn_status_publisher`]).
    statuses: mpsc::UnboundedSender<Vec<(i64, NewEvent)>>,
    /// QUEUED attempts waiting for a slot: (priority, earlier first, execution, job, attempt).
    waiting: std::collections::BinaryHeap<(i32, std::cmp::Reverse<u64>, String, String, u32)>,
    queued_seq: u64,
    running_total: usize,
    /// Offset of the last event handled, and of the last one committed.
    handled: Offset,
    saved: Offset,
    saved_at: std::time::Instant,
    pending: Pending,
}

impl Core {
    /// The current attempt of a job and its state: a late command names an older attempt.
    fn attempt_state(&self, execution: &str, job: &str) -> Option<(u32, JobState)> {
        self.executions
            .get(execution)
            .and_then(|e| e.jobs.get(job))
            .map(|j| (j.attempt, j.state))
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
                self.pending.effects.push(Effect::StartReply(reply, r));
            }
            Command::Stop { execution, reply } => {
                let r = self.stop_execution(&execution).await;
                self.pending.effects.push(Effect::StopReply(reply, r));
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
            }
            Command::Retry {
                execution,
                job,
                attempt,
            } => {
                let current = self.attempt_state(&execution, &job);
                if current == Some((attempt, JobState::Retrying)) {
                    self.set_job_state(&execution, &job, JobState::Queued, None)
                        .await;
                    self.enqueue(&execution, &job).await;
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
            Command::Started {
                execution,
                job,
                attempt,
            } => {
                let current = self.attempt_state(&execution, &job);
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
            Command::Tick(now) => self.on_tick(now).await,
            Command::Report(report, acker) => {
                self.on_report(*report).await;
                self.pending.effects.push(Effect::Ack(acker));
            }
            Command::Delayed(d) => {
                let d = *d;
                self.pending.delayed_done.push(d.id.clone());
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
    async fn reload_triggers(&mut self) -> Result<(), Error> {
        let mut triggers = Vec::new();
        let mut timers = Vec::new();
        let mut cursor = None;
        // Clocks and `all_of` parts already known here may be newer than the stored ones
        // (not committed yet): they are kept.
        let known: HashMap<(String, usize, Option<usize>), chrono::DateTime<Utc>> = self
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
                        return Err(Error::Store(e.to_string()));
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
                    if all_of && !self.trigger_memory.contains_key(&(wf.name.clone(), i)) {
                        let met =
                            durable::kv_get(self.store.db(), &trigger_memory_key(&wf.name, i))
                                .await
                                .ok()
                                .flatten()
                                .and_then(|v| serde_json::from_str(&v).ok())
                                .unwrap_or_default();
                        self.trigger_memory.insert((wf.name.clone(), i), met);
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
        self.triggers = triggers;
        self.timers = timers;
        Ok(())
    }

    /// Notes that part `part` of the `all_of` trigger `trigger` happened; true when that
    /// completes it (its memory then starts over).
    fn trigger_part_met(&mut self, workflow: &Workflow, trigger: usize, part: usize) -> bool {
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

    async fn on_tick(&mut self, now: chrono::DateTime<Utc>) {
        self.expire_overdue(now).await;
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
        for (name, trigger) in starts {
            tracing::info!(workflow = name, %trigger, "time trigger fired");
            if let Err(e) = self.start_triggered(&name, trigger, None).await {
                if self.deposed {
                    return;
                }
                tracing::warn!(workflow = name, error = %e, "time trigger could not start an execution");
            }
        }
    }

    /// Stops, as FAILED, every execution that has run longer than its `max_duration_s`: its
    /// jobs get the usual grace period, and `why` shows the limit for each job it stopped.
    async fn expire_overdue(&mut self, now: chrono::DateTime<Utc>) {
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
            if let Err(e) = self.stop_execution(&id).await {
                tracing::warn!(execution = %id, error = %e, "cannot stop an execution over its time limit");
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
        let mut backoff = Duration::from_millis(50);
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
                    tracing::warn!(workflow = name, error = %e, retry_in_ms = backoff.as_millis() as u64, "cannot read the store to start a triggered execution; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
                other => return other,
            }
        }
    }

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
            serde_json::from_value(version.workflow_doc)
                .map_err(|e| Error::Store(format!("stored workflow {name} is unreadable: {e}")))?,
        );
        let id = uuid::Uuid::new_v4().simple().to_string();
        self.pending.meta.push(MetaWrite::ExecCreate {
            id: id.clone(),
            workflow_id: info.id,
            version: info.latest_version,
            state: WorkflowState::Running.as_str(),
            trigger: Some(trigger),
        });
        let exec = Exec::new(id.clone(), workflow.clone(), info.latest_version, event);
        self.executions.insert(id.clone(), exec);
        self.pending.execs.insert(id.clone());
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
        Ok(id)
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
            self.set_job_state(id, &job, JobState::Stopped, None).await;
        }
        self.check_finished(id).await;
        Ok(())
    }

    async fn on_event(&mut self, event: Event) {
        let offset = event.offset;
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
                self.evaluate_signal(&id, Signal::Event(&event)).await;
            }
            let mut starts: Vec<(String, serde_json::Value)> = Vec::new();
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
                            && event_matches(cond, &event, &wf.namespace)
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
        }
        // Committed with the next state change, or on its own at most every OFFSET_EVERY.
        self.handled = offset;
    }

    async fn evaluate_signal(&mut self, id: &str, signal: Signal<'_>) {
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
            self.check_finished(id).await;
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

    fn record(&mut self, id: &str, ev: &Evaluation, signal: &Signal<'_>, decision: &Decision) {
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
        new_attempt(&mut self.pending.meta, rt, id, job, JobState::Queued);
        self.set_job_state(id, job, JobState::Queued, None).await;
        self.enqueue(id, job).await;
    }

    /// Puts the job's current attempt in line for a slot; slots are handed out after the commit
    /// (see [`Core::flush`]).
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
        let remote = self.remote();
        let task_id = self.task_id(id, job);
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
        if let (Some(fabric), Some(task_id)) = (remote, task_id) {
            let task = crate::remote::Task {
                id: task_id,
                workflow: launch.workflow,
                execution: launch.execution,
                job: launch.job,
                attempt,
                queue: spec.queue.clone(),
                commands: launch.commands,
                env: launch.env,
                working_dir: spec.working_dir.clone(),
                timeout_s: spec.timeout_s,
                resources: spec
                    .resources
                    .as_ref()
                    .map(|r| crate::remote::Resources {
                        cpus: r.cpus,
                        memory_mb: r.memory_mb,
                        gpus: r.gpus,
                    })
                    .unwrap_or_default(),
            };
            rt.launched = true;
            exec.running += 1;
            self.running_total += 1;
            let tx = self.tx.clone();
            tokio::spawn(async move {
                let mut backoff = Duration::from_millis(100);
                let mut last = String::new();
                for _ in 0..8 {
                    match fabric.hand_out(&task).await {
                        Ok(()) => return,
                        Err(e) => {
                            tracing::warn!(task = %task.id, queue = %task.queue, error = %e, "cannot hand out a task; retrying");
                            last = e;
                            tokio::time::sleep(backoff).await;
                            backoff = (backoff * 2).min(Duration::from_secs(5));
                        }
                    }
                }
                let _ = tx
                    .send(Command::JobEnded {
                        execution: task.execution,
                        job: task.job,
                        attempt: task.attempt,
                        outcome: Outcome::Failed {
                            message: format!(
                                "cannot hand the task to the work queue {}: {last}",
                                task.queue
                            ),
                        },
                    })
                    .await;
            });
            return;
        }
        let launched = match (&self.executor.supervisor, &rt.row) {
            (Some(sup), Some(row)) => {
                let dir = crate::supervisor::attempt_dir(&self.config.attempts_root(), id, row);
                match sup.launch(&self.executor, launch.clone(), dir).await {
                    Ok(running) => Ok(running),
                    Err(e) => {
                        // A full disk, say: the attempt runs in this process instead (it ends
                        // with the server) rather than not at all.
                        tracing::warn!(execution = id, job, attempt, error = %e, "cannot start the job's supervisor; running the job in the server's process");
                        self.executor.launch(launch).await
                    }
                }
            }
            _ => self.executor.launch(launch).await,
        };
        match launched {
            Ok(running) => {
                rt.launched = true;
                exec.running += 1;
                self.running_total += 1;
                self.follow(id, job, attempt, running);
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

    /// Hands a running attempt's start and end to the loop; the loop never waits for
    /// fork/exec.
    fn follow(&mut self, id: &str, job: &str, attempt: u32, mut running: crate::RunningJob) {
        if let Some(rt) = self
            .executions
            .get_mut(id)
            .and_then(|e| e.jobs.get_mut(job))
        {
            rt.stopper = Some(running.stopper());
        }
        let tx = self.tx.clone();
        let (execution, job_name) = (id.to_string(), job.to_string());
        tokio::spawn(async move {
            // RUNNING once the process exists.
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

    /// A remote worker's report on an attempt. Reports of an attempt that is not the job's
    /// current one, or that already ended, change nothing (attempt fencing); a process of such
    /// an attempt that has just started is told to stop.
    async fn on_report(&mut self, r: crate::remote::Report) {
        use crate::remote::ReportKind;
        let current = self.attempt_state(&r.execution, &r.job);
        let is_current = current.is_some_and(|(a, s)| a == r.attempt && s.is_active());
        match &r.kind {
            ReportKind::Started => {
                if current == Some((r.attempt, JobState::Queued)) {
                    tracing::info!(execution = %r.execution, job = %r.job, attempt = r.attempt, worker = %r.worker, "job started on a worker");
                    self.set_job_state(&r.execution, &r.job, JobState::Running, None)
                        .await;
                } else if !is_current {
                    tracing::info!(task = %r.task, worker = %r.worker, "a stale attempt started on a worker; stopping it");
                    if let Some(f) = self.fabric.clone() {
                        tokio::spawn(async move { f.stop(&r.task).await });
                    }
                }
            }
            ReportKind::Ended { .. } | ReportKind::Lost { .. } => {
                if is_current && let Some(outcome) = r.outcome() {
                    // After a leader change the `started` report may come again after the
                    // `ended` one (it was delivered to the old leader, which never acknowledged
                    // it): the attempt did run.
                    if current == Some((r.attempt, JobState::Queued))
                        && matches!(r.kind, ReportKind::Ended { .. })
                    {
                        self.set_job_state(&r.execution, &r.job, JobState::Running, None)
                            .await;
                    }
                    self.on_job_ended(&r.execution, &r.job, r.attempt, outcome)
                        .await;
                } else {
                    tracing::debug!(task = %r.task, worker = %r.worker, "late report of an older attempt ignored");
                }
            }
        }
    }

    /// The remote task id of a job's current attempt.
    fn task_id(&self, id: &str, job: &str) -> Option<String> {
        let rt = self.executions.get(id)?.jobs.get(job)?;
        Some(match &rt.row {
            Some(row) => format!("{row}-{}", rt.attempt),
            None => format!(
                "{}-{}-{}",
                crate::remote::token(id),
                crate::remote::token(job),
                rt.attempt
            ),
        })
    }

    /// Jobs go to remote workers.
    fn remote(&self) -> Option<crate::remote::Fabric> {
        if self.config.remote {
            self.fabric.clone()
        } else {
            None
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
                // A QUEUED attempt may already be spawning its process: stop that too.
                self.pending.effects.push(effect);
                if self.config.remote {
                    // A task nobody took yet is cancelled: no report will free its slot.
                    self.release(id, job);
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
        rt.stop_asked = false;
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
            let delay = Duration::try_from_secs_f64(base * jitter)
                .unwrap_or(MAX_WAIT)
                .min(MAX_WAIT);
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
            self.pending.meta.push(MetaWrite::JobState { row, state });
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

    async fn publish_workflow_status(&mut self, id: &str, state: WorkflowState) {
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
    /// Adds a status event to the next commit; it is published after it, in order.
    fn publish(&mut self, event: NewEvent) {
        let key = format!("sched-{}", uuid::Uuid::new_v4().simple());
        self.pending.statuses.push(event.idempotency_key(key));
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
        self.publish_workflow_status(id, state).await;
        Obs::execution_state(state.as_str());
        tracing::info!(execution = id, state = %state, "execution finished");
        self.executions.remove(id);
        self.pending.finished.push(id.to_string());
    }

    /// Gives up leadership: what was decided but not committed is dropped (callers waiting for
    /// an answer get "not running"); the next leader decides it again from the store.
    fn depose(&mut self) {
        self.deposed = true;
        self.pending = Pending::default();
        self.obs.progress().set_commit_failing(false);
    }

    /// Commits everything the handled commands changed, in one transaction together with the
    /// event offset, then lets their actions take effect: replies, stops, retries, delayed
    /// starts, and job launches into free slots. Actions may change state again (a launch that
    /// fails), so this repeats until nothing is left.
    async fn flush(&mut self) {
        if self.deposed {
            return;
        }
        for _ in 0..16 {
            let (batch, offset) = self.take_batch();
            if !batch.is_empty() {
                let mut backoff = Duration::from_millis(50);
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
                            self.obs.progress().set_commit_failing(true);
                            tracing::error!(error = %e, retry_in_ms = backoff.as_millis() as u64, "cannot commit the scheduler state; nothing acts until it is stored");
                            tokio::time::sleep(backoff).await;
                            backoff = (backoff * 2).min(Duration::from_secs(5));
                            if self.lease_lost.as_ref().is_some_and(|l| *l.borrow()) {
                                tracing::error!(
                                    "the scheduling lease was lost while the commit failed; standing by"
                                );
                                return self.depose();
                            }
                        }
                    }
                };
                self.obs.progress().set_commit_failing(false);
                if !batch.finished.is_empty() {
                    // Finished executions' attempt folders are no longer needed for re-adoption.
                    let root = self.config.attempts_root();
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
                    self.obs.committed(o.0);
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
            for effect in std::mem::take(&mut self.pending.effects) {
                self.apply(effect).await;
            }
            self.dispatch().await;
            if self.pending.is_empty() {
                return;
            }
        }
    }

    /// The changes to commit; the offset goes with any change, or alone every OFFSET_EVERY.
    fn take_batch(&mut self) -> (Batch, Option<Offset>) {
        let p = &mut self.pending;
        let mut b = Batch::default();
        for id in p.execs.drain() {
            if let Some(e) = self.executions.get(&id) {
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
            if let Some(rt) = self.executions.get(&id).and_then(|e| e.jobs.get(&job)) {
                b.jobs.push((id, job, rt.saved()));
            }
        }
        for (id, rule) in p.rules.drain() {
            if let Some(m) = self.executions.get(&id).and_then(|e| e.memory.get(rule)) {
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
            Effect::Ack(acker) => {
                tokio::spawn(async move {
                    let _ = acker.ack().await;
                });
            }
            Effect::Stop { id, job, attempt } if self.config.remote => {
                if self.attempt_state(&id, &job).map(|(a, _)| a) == Some(attempt)
                    && let (Some(task), Some(f)) = (self.task_id(&id, &job), self.fabric.clone())
                {
                    tokio::spawn(async move { f.stop(&task).await });
                }
            }
            Effect::Stop { id, job, attempt } => {
                if let Some(rt) = self.executions.get(&id).and_then(|e| e.jobs.get(&job))
                    && rt.attempt == attempt
                    && let Some(stop) = &rt.stopper
                {
                    let _ = stop.send(true);
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
    async fn resume(&mut self) -> Result<(), Error> {
        let saved = durable::load(self.store.db())
            .await
            .map_err(|e| Error::Store(e.to_string()))?;
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
                    serde_json::from_value::<Workflow>(v.workflow_doc)
                        .map_err(|e| Error::Store(e.to_string()))
                }) {
                Ok(wf) => Arc::new(wf),
                Err(e) => {
                    tracing::warn!(execution = %row.id, error = %e, "cannot resume an execution: its workflow version is unreadable");
                    tracked.remove(&row.id);
                    self.pending.finished.push(row.id);
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
            self.executions.insert(row.id, exec);
        }
        fail_untracked(&self.store, &tracked).await;
        for (id, job) in lost {
            let Some(rt) = self.executions.get(&id).and_then(|e| e.jobs.get(&job)) else {
                continue;
            };
            let (state, attempt, stop_asked) = (rt.state, rt.attempt, rt.stop_asked);
            let row = rt.row.clone();
            if self.config.remote {
                // Remote attempts live on their workers: reports and heartbeats say how they go.
                match state {
                    JobState::Running => {
                        if let Some(exec) = self.executions.get_mut(&id)
                            && let Some(rt) = exec.jobs.get_mut(&job)
                        {
                            rt.launched = true;
                            exec.running += 1;
                            self.running_total += 1;
                        }
                        if stop_asked {
                            self.pending.effects.push(Effect::Stop {
                                id: id.clone(),
                                job: job.clone(),
                                attempt,
                            });
                        }
                        continue;
                    }
                    // Handed out again: NATS drops it when it is already in the queue.
                    JobState::Queued => {
                        self.enqueue(&id, &job).await;
                        continue;
                    }
                    _ => {}
                }
            }
            if matches!(state, JobState::Queued | JobState::Running)
                && let Some(row) = &row
                && let Some(adopted) = crate::supervisor::adopt(crate::supervisor::attempt_dir(
                    &self.config.attempts_root(),
                    &id,
                    row,
                ))
            {
                // The attempt outlived the previous process: follow it again (its outcome
                // comes at once when it ended meanwhile).
                tracing::info!(execution = %id, job, attempt, started = adopted.started, running = adopted.running, "job attempt re-adopted");
                if let Some(exec) = self.executions.get_mut(&id)
                    && let Some(rt) = exec.jobs.get_mut(&job)
                {
                    rt.launched = true;
                    exec.running += 1;
                    self.running_total += 1;
                }
                self.follow(&id, &job, attempt, adopted.job);
                if stop_asked {
                    self.pending.effects.push(Effect::Stop {
                        id: id.clone(),
                        job: job.clone(),
                        attempt,
                    });
                }
                continue;
            }
            if matches!(state, JobState::Queued | JobState::Running)
                && let Some(row) = &row
            {
                let killed = durable::kill_leftovers(row);
                if killed > 0 {
                    tracing::warn!(execution = %id, job, attempt, processes = killed, "killed what was left of a job attempt");
                }
            }
            match state {
                JobState::Queued => self.enqueue(&id, &job).await,
                JobState::Running => {
                    let outcome = if stop_asked {
                        Outcome::Stopped
                    } else {
                        Outcome::Failed {
                            message: "lost: the scheduler restarted while the job ran".into(),
                        }
                    };
                    tracing::warn!(execution = %id, job, attempt, "job attempt lost in a restart");
                    self.on_job_ended(&id, &job, attempt, outcome).await;
                }
                JobState::Retrying => {
                    let at = rt.retry_at.unwrap_or_else(Utc::now);
                    self.pending.effects.push(Effect::Retry {
                        delay: (at - Utc::now()).to_std().unwrap_or_default(),
                        id: id.clone(),
                        job: job.clone(),
                        attempt,
                    });
                }
                _ => {}
            }
        }
        let ids: Vec<String> = self.executions.keys().cloned().collect();
        for id in ids {
            self.check_finished(&id).await;
        }
        for d in saved.delayed {
            self.pending.effects.push(Effect::Delayed(Box::new(d)));
        }
        Ok(())
    }
}
