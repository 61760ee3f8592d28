//! The local executor: attempts run as processes of this machine, each under a supervisor of
//! its own when one is configured (they outlive the server and the next one re-adopts them from
//! their folders), or as tasks of this process.

use std::path::PathBuf;
use std::sync::Mutex;

use futures::stream::BoxStream;
use tokio::sync::mpsc;

use super::process::Limited;
use super::supervisor::{adopt, attempt_dir};
use super::{
    Adoption, AttemptId, Executor, LaunchRequest, LocalExecutor, RunningJob, StatusReport,
};

/// Local processes behind the [`Executor`] trait.
pub struct LocalProcesses {
    executor: LocalExecutor,
    /// `<data_dir>/attempts`: the supervised attempts' folders.
    root: PathBuf,
    /// Variables of this process that jobs also get besides the base ([`crate::jobenv`]).
    passthrough: Vec<String>,
    /// Stops of the attempts that run now.
    running: super::Following,
    tx: mpsc::UnboundedSender<StatusReport>,
    rx: Mutex<Option<mpsc::UnboundedReceiver<StatusReport>>>,
}

impl LocalProcesses {
    #[must_use]
    pub fn new(executor: LocalExecutor, root: PathBuf, passthrough: Vec<String>) -> LocalProcesses {
        let (tx, rx) = mpsc::unbounded_channel();
        LocalProcesses {
            executor,
            root,
            passthrough,
            running: std::sync::Arc::default(),
            tx,
            rx: Mutex::new(Some(rx)),
        }
    }

    /// Reports a running attempt's start and end; the caller never waits for fork/exec.
    fn follow(&self, id: AttemptId, job: RunningJob) {
        super::follow(&self.running, &self.tx, id, job);
    }
}

#[async_trait::async_trait]
impl Executor for LocalProcesses {
    fn name(&self) -> &'static str {
        "local"
    }

    async fn launch(&self, request: LaunchRequest) -> Result<(), String> {
        let LaunchRequest { id, mut spec, job } = request;
        // CPU and memory limits, where the job asks for them (none: nothing to do).
        let limits = super::cgroup::Limits::of(job.resources.as_ref());
        // A built environment, not this process's: the base and passthrough variables, then the
        // job's own (docs/security.md).
        spec.env = crate::jobenv::build(crate::jobenv::current(), &self.passthrough, &spec.env);
        let launched = match (&self.executor.supervisor, &id.row) {
            (Some(sup), Some(row)) => {
                let dir = attempt_dir(&self.root, &id.execution, row);
                match sup.launch(&self.executor, spec.clone(), dir, limits).await {
                    Ok(running) => Ok(running),
                    Err(e) => {
                        // A full disk, say: the attempt runs in this process instead (it ends
                        // with the server) rather than not at all.
                        tracing::warn!(execution = %id.execution, job = %id.job, attempt = id.attempt, error = %e, "cannot start the job's supervisor; running the job in the server's process");
                        self.executor
                            .launch_limited(spec, limits.map(Limited::system))
                            .await
                    }
                }
            }
            _ => {
                self.executor
                    .launch_limited(spec, limits.map(Limited::system))
                    .await
            }
        };
        match launched {
            Ok(job) => {
                self.follow(id, job);
                Ok(())
            }
            Err(e) => Err(format!("cannot open the job log: {e}")),
        }
    }

    fn stop(&self, id: &AttemptId) {
        if let Some(stop) = self.running.lock().expect("running").get(id) {
            let _ = stop.send(true);
        }
    }

    async fn adopt(&self, id: &AttemptId, _started: bool) -> Adoption {
        let Some(row) = &id.row else {
            return Adoption::Unknown;
        };
        if let Some(adopted) = adopt(attempt_dir(&self.root, &id.execution, row)) {
            // The attempt outlived the previous process: follow it again (its outcome comes at
            // once when it ended meanwhile).
            tracing::info!(execution = %id.execution, job = %id.job, attempt = id.attempt, started = adopted.started, running = adopted.running, "job attempt re-adopted");
            let started = adopted.started;
            self.follow(id.clone(), adopted.job);
            return Adoption::Following { started };
        }
        // No supervisor ever claimed it: what may be left of an unsupervised run goes.
        let killed = crate::durable::kill_leftovers(row);
        if killed > 0 {
            tracing::warn!(execution = %id.execution, job = %id.job, attempt = id.attempt, processes = killed, "killed what was left of a job attempt");
        }
        Adoption::Unknown
    }

    fn reports(&self) -> BoxStream<'static, StatusReport> {
        let rx = self.rx.lock().expect("reports").take();
        match rx {
            Some(rx) => Box::pin(futures::stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|r| (r, rx))
            })),
            None => Box::pin(futures::stream::empty()),
        }
    }
}
