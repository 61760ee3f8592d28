//! Executors: how a job attempt runs. The scheduler core decides *that* an attempt starts or
//! stops; an [`Executor`] carries it out and reports back, and the core never asks which one it
//! talks to.
//!
//! - [`local`]: processes on this machine, each under its own supervisor ([`supervisor`]) so it
//!   outlives the server, or as tasks of the server (`--stop-jobs-on-exit`); [`process`] runs
//!   the commands of one attempt.
//! - [`crate::remote`]: `aiflow worker` agents over a NATS JetStream work queue.
//!
//! A new way to run jobs (containers, say) implements [`Executor`]: the launch request carries
//! the job's whole document ([`LaunchRequest::job`]: commands, env, working dir, queue,
//! resources) besides the environment the scheduler built for the attempt.

pub mod cgroup;
pub mod container;
pub mod gpus;
pub mod local;
pub mod process;
pub mod routed;
pub mod supervisor;

use std::sync::Arc;

use futures::future::BoxFuture;
use futures::stream::BoxStream;

pub use local::LocalProcesses;
pub use process::{LaunchSpec, LocalExecutor, Outcome, RunningJob};

/// One attempt of one job: what every executor names it by.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AttemptId {
    pub execution: String,
    pub job: String,
    pub attempt: u32,
    /// The attempt's job execution row (absent only for attempts stored by old versions).
    pub row: Option<String>,
}

impl AttemptId {
    /// A name unique to this attempt: `<row>-<attempt>` (the remote task id).
    #[must_use]
    pub fn key(&self) -> String {
        match &self.row {
            Some(row) => format!("{row}-{}", self.attempt),
            None => format!(
                "{}-{}-{}",
                crate::remote::token(&self.execution),
                crate::remote::token(&self.job),
                self.attempt
            ),
        }
    }
}

/// Everything an executor needs to start an attempt.
#[derive(Debug, Clone)]
pub struct LaunchRequest {
    pub id: AttemptId,
    /// The job as the workflow document says (commands, env, working dir, timeout, queue,
    /// resources): an executor reads what it supports from here.
    pub job: Arc<aiflow_translator::Job>,
    /// The attempt as built by the scheduler: commands, the job's environment with the
    /// `AIFLOW_*` variables, working dir, timeout and log file on this machine.
    pub spec: LaunchSpec,
}

/// What an executor knows of an attempt a previous server (or leader) handed to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Adoption {
    /// The executor follows it again: its reports come on [`Executor::reports`] (at once when
    /// it ended meanwhile). `started`: its process had started.
    Following { started: bool },
    /// The executor has nothing of it: it never started here, or was lost with what ran it.
    /// Launching it again is safe: an executor never runs one attempt twice.
    Unknown,
}

/// What an executor tells the core about an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// Its process exists (or has been taken by a worker).
    Started,
    /// It ended. `ran`: it is known to have started (a report of its start may have been
    /// lost or come later).
    Ended { outcome: Outcome, ran: bool },
}

/// Done once the state a report changed is committed (a remote report is acknowledged then,
/// so a leader change loses none).
pub struct Ack(Box<dyn FnOnce() -> BoxFuture<'static, ()> + Send + Sync>);

impl Ack {
    pub fn new(f: impl FnOnce() -> BoxFuture<'static, ()> + Send + Sync + 'static) -> Ack {
        Ack(Box::new(f))
    }

    /// Acknowledges in the background.
    pub fn done(self) {
        tokio::spawn((self.0)());
    }
}

impl std::fmt::Debug for Ack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Ack")
    }
}

/// One report from an executor.
#[derive(Debug)]
pub struct StatusReport {
    pub id: AttemptId,
    pub status: Status,
    /// Who ran it (a worker's name), for the log.
    pub by: Option<String>,
    /// To call once the report's effects are committed.
    pub ack: Option<Ack>,
}

/// Runs job attempts somewhere and reports how they go.
///
/// Rules every executor keeps:
/// - an attempt ([`AttemptId`]) is never run twice, whatever is launched or adopted again;
/// - every launched or adopted attempt ends with exactly one [`Status::Ended`] report, unless
///   it was stopped before anything ran it (then there may be none);
/// - a stop of an attempt that already ended, or that the executor does not know, does nothing.
#[async_trait::async_trait]
pub trait Executor: Send + Sync {
    /// A short name for logs (`local`, `remote`).
    fn name(&self) -> &'static str;

    /// Starts an attempt and returns once it is on its way (not when its process runs): the
    /// rest comes as reports. An error is a reason the attempt cannot start at all; it then
    /// ends FAILED with that reason.
    async fn launch(&self, request: LaunchRequest) -> Result<(), String>;

    /// Stops a running attempt: SIGTERM, then SIGKILL after the grace period. Its end is
    /// reported as [`Outcome::Stopped`].
    fn stop(&self, id: &AttemptId);

    /// Takes back an attempt recorded as queued (`started` false) or running (`started`
    /// true) by a previous server or leader.
    async fn adopt(&self, id: &AttemptId, started: bool) -> Adoption;

    /// Called once every attempt recorded as queued or running was offered to [`Self::adopt`]:
    /// what a previous process left that nothing follows now may be cleared.
    async fn recovered(&self) {}

    /// The reports of every attempt: taken once, by the runtime, when the executor is built.
    fn reports(&self) -> BoxStream<'static, StatusReport>;
}

/// The executor the configuration asks for: remote workers when jobs go to them, else local
/// processes. The only place that tells them apart.
pub(crate) async fn build(
    config: &crate::SchedulerConfig,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<Arc<dyn Executor>, crate::Error> {
    if config.remote
        && let Some(fabric) = &config.fabric
    {
        let remote = crate::remote::RemoteExecutor::start(fabric.clone(), shutdown).await?;
        return Ok(Arc::new(remote));
    }
    let processes = Arc::new(LocalProcesses::new(
        LocalExecutor {
            grace: config.stop_grace,
            log_max_bytes: config.log_max_bytes,
            supervisor: config
                .supervisor
                .clone()
                .map(|program| supervisor::Supervisor { program }),
        },
        config.attempts_root(),
        config.job_env_passthrough.clone(),
    ));
    // Jobs with an image run as containers on the server's engine, beside the processes.
    let containers = routed::Containers::new(
        config.docker_host.clone(),
        config.stop_grace,
        config.log_max_bytes,
    )
    .with_network(config.container_network.clone())
    .logs_under(config.data_dir.join("logs"));
    let gpus = gpus::Gpus::configured_or_discovered(config.gpus);
    Ok(Arc::new(routed::Routed::new(processes, containers, gpus)))
}

/// The attempts an executor follows: each one's stop, by attempt.
pub(crate) type Following = std::sync::Arc<
    std::sync::Mutex<std::collections::HashMap<AttemptId, tokio::sync::watch::Sender<bool>>>,
>;

/// Follows a running attempt for an executor: keeps its stop in `running` while it runs, and
/// sends its start (once its process or container exists) and its end to `tx`.
pub(crate) fn follow(
    running: &Following,
    tx: &tokio::sync::mpsc::UnboundedSender<StatusReport>,
    id: AttemptId,
    mut job: RunningJob,
) {
    running
        .lock()
        .expect("running")
        .insert(id.clone(), job.stopper());
    let (tx, running) = (tx.clone(), running.clone());
    tokio::spawn(async move {
        let report = |status| StatusReport {
            id: id.clone(),
            status,
            by: None,
            ack: None,
        };
        let ran = job.started().await;
        if ran {
            let _ = tx.send(report(Status::Started));
        }
        let outcome = job.wait().await;
        running.lock().expect("running").remove(&id);
        let _ = tx.send(report(Status::Ended { outcome, ran }));
    });
}
