//! The scheduler runtime: carries out what the core ([`crate::core`]) decides. It owns the
//! leader term (standby until the lease is this replica's, see [`crate::leader`]), the feeds
//! into the loop (bus events from the committed offset, clock ticks, the executor's reports,
//! requests forwarded by standbys), the resume of a previous process's state, and the status
//! event publisher; [`event_loop`] is the loop itself: commands in, one commit per batch, then
//! effects.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use aiflow_api::meta::WorkflowExecutionInfo;
pub use aiflow_api::scheduler::Submitted;
use aiflow_api::{EventFilter, NewEvent, Offset};
use aiflow_meta::{NewWorkflowVersion, Store};
use aiflow_notification::EventBus;
use aiflow_translator::Document;
use chrono::Utc;
use futures::StreamExt;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::Error;
pub(crate) use crate::command::Command;
use crate::core::{Core, log_path};
pub use crate::core::{JOB_STATUS, MAX_WAIT, SENDER, WORKFLOW_STATUS};
use crate::durable::{self, OFFSET_KEY};
use crate::exec::Executor;
use crate::leader::Role;
use crate::metrics::{Obs, Progress};
use event_loop::Runtime;

mod event_loop;

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
    /// The Docker engine container jobs run on (none: `DOCKER_HOST`, else the local socket).
    pub docker_host: Option<String>,
    /// The engine network container jobs join (none: the host's network).
    pub container_network: Option<String>,
    /// GPUs of this machine's executor (none: those `nvidia-smi -L` lists, if any).
    pub gpus: Option<u32>,
    /// Variables of this process that local jobs also get, besides the base (names or `*`
    /// patterns; see [`crate::jobenv`]). Remote workers have their own setting.
    pub job_env_passthrough: Vec<String>,
}

/// Default of [`SchedulerConfig::job_token_ttl`]: one day.
pub const DEFAULT_JOB_TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);

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
            docker_host: None,
            container_network: None,
            gpus: None,
            job_env_passthrough: Vec::new(),
        }
    }
}

/// Default of [`SchedulerConfig::max_running`].
pub const DEFAULT_MAX_RUNNING: usize = 32;

/// At most this many more commands are handled before one commit.
pub(crate) const BATCH: usize = 255;
/// An offset with no state change to go with it is committed at most this often: a restart
/// reads that much again, instead of one write per event halving the bus.
pub(crate) const OFFSET_EVERY: Duration = Duration::from_millis(200);

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

/// A standby's wait for the lease: scheduler requests made here meanwhile go to the leader
/// over NATS (`aiflow.scheduler.*`), or fail with 503 when there is no NATS or no leader.
async fn standby(
    store: &Store,
    config: &SchedulerConfig,
    rx: &mut mpsc::Receiver<Command>,
) -> Option<crate::leader::Lease> {
    let acquire = async {
        let mut backoff =
            aiflow_api::backoff::Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
        loop {
            match crate::leader::acquire(store.db(), &config.node, &config.server_url).await {
                Ok(lease) => return lease,
                Err(e) => {
                    let delay = backoff.next_delay();
                    tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "cannot wait for the scheduling lease");
                    tokio::time::sleep(delay).await;
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
) -> Result<Runtime, Error> {
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
        .map_err(Error::Store)?;
    if !leftover.is_empty() {
        tracing::info!(
            events = leftover.len(),
            "publishing status events left by the previous process"
        );
        let _ = statuses.send(leftover);
    }
    let executor = crate::exec::build(&config, shutdown.clone()).await?;
    spawn_status_feed(executor.as_ref(), tx.clone(), shutdown.clone());
    let mut core = Runtime {
        core: Core::new(config.clone(), Obs::new(progress, from.0)),
        store: store.clone(),
        executor,
        fence,
        lease_lost: None,
        deposed: false,
        shutdown: shutdown.clone(),
        tx: tx.clone(),
        statuses,
        handled: from,
        saved: from,
        saved_at: std::time::Instant::now(),
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
        let mut backoff =
            aiflow_api::backoff::Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        loop {
            tokio::select! {
                next = events.next() => match next {
                    Some(Ok(e)) => {
                        last = e.offset;
                        backoff.reset();
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
                    () = tokio::time::sleep(backoff.next_delay()) => {}
                    () = until_shutdown(&mut feed_shutdown) => return,
                }
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
    }
    Ok(core)
}

/// The executor's reports into the loop, for this term.
fn spawn_status_feed(
    executor: &dyn Executor,
    tx: mpsc::Sender<Command>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut reports = executor.reports();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                next = reports.next() => match next {
                    Some(r) => {
                        if tx.send(Command::Status(Box::new(r))).await.is_err() {
                            break;
                        }
                    }
                    None => break,
                },
                () = until_shutdown(&mut shutdown) => break,
            }
        }
    });
}

/// Publishes committed status events in order, in batches (one transaction on the embedded
/// bus), then deletes them from the outbox; retries a failed batch with backoff so no status
/// is dropped while the bus is away.
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
                let mut backoff = aiflow_api::backoff::Backoff::new(
                    Duration::from_millis(50),
                    Duration::from_secs(5),
                );
                loop {
                    match bus.publish_batch(batch.clone()).await {
                        Ok(_) => break,
                        Err(e) => {
                            let delay = backoff.next_delay();
                            tracing::warn!(error = %e, events = batch.len(), retry_in_ms = delay.as_millis() as u64, "cannot publish status events");
                            tokio::time::sleep(delay).await;
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

pub(crate) async fn until_shutdown(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

async fn load_offset(store: &Store) -> Result<Offset, Error> {
    let v = durable::kv_get(store.db(), OFFSET_KEY)
        .await
        .map_err(Error::Store)?;
    Ok(v.and_then(|s| s.parse().ok()).unwrap_or_default())
}
