//! The executor of a server that runs jobs itself (the embedded shape): a job with an `image`
//! runs as containers ([`Containers`]), any other as local processes; both get their GPUs from
//! one [`Gpus`] assignment, held from launch until the attempt's end is reported.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::StreamExt as _;
use futures::stream::BoxStream;
use tokio::sync::{mpsc, watch};

use super::container::{ContainerExecutor, ContainerSpec};
use super::gpus::{GpuError, GpuLease, Gpus};
use super::{Adoption, AttemptId, Executor, LaunchRequest, RunningJob, Status, StatusReport};

/// Container attempts on one Docker engine behind the [`Executor`] trait. The engine is reached
/// on the first container job (a server with no container job needs none), and again after a
/// failure.
pub struct Containers {
    host: Option<String>,
    grace: std::time::Duration,
    log_max_bytes: Option<u64>,
    network: Option<String>,
    engine: tokio::sync::Mutex<Option<ContainerExecutor>>,
    /// Where this server's attempt logs are: its containers are those whose log is there.
    logs: Option<std::path::PathBuf>,
    running: super::Following,
    tx: mpsc::UnboundedSender<StatusReport>,
    rx: Mutex<Option<mpsc::UnboundedReceiver<StatusReport>>>,
}

impl Containers {
    /// Containers on the engine at `host` (none: `DOCKER_HOST`, else the local socket).
    #[must_use]
    pub fn new(
        host: Option<String>,
        grace: std::time::Duration,
        log_max_bytes: Option<u64>,
    ) -> Containers {
        let (tx, rx) = mpsc::unbounded_channel();
        Containers {
            host,
            grace,
            log_max_bytes,
            network: None,
            engine: tokio::sync::Mutex::new(None),
            logs: None,
            running: Arc::default(),
            tx,
            rx: Mutex::new(Some(rx)),
        }
    }

    /// Containers join this engine network instead of the host's (a Compose network, say).
    #[must_use]
    pub fn with_network(mut self, network: Option<String>) -> Containers {
        self.network = network;
        self
    }

    /// Containers whose attempt log is under `root` are this server's (see [`Self::sweep`]).
    #[must_use]
    pub fn logs_under(mut self, root: std::path::PathBuf) -> Containers {
        self.logs = Some(root);
        self
    }

    /// Removes this server's labelled containers that it does not follow (their attempt
    /// ended or was lost while no server ran); a worker's containers, and those of another
    /// server on the same engine (their logs are elsewhere), are left alone. The engine is
    /// reached only when one is named or the local socket exists.
    pub async fn sweep(&self) {
        use super::container::{
            LABEL_ATTEMPT, LABEL_EXECUTION, LABEL_JOB, LABEL_LOG, LABEL_WORKER,
        };
        let Some(root) = &self.logs else {
            return;
        };
        if self.host.is_none() && std::env::var_os("DOCKER_HOST").is_none() {
            // The local socket: reached only when it exists.
            if !std::path::Path::new("/var/run/docker.sock").exists() {
                return;
            }
        }
        let Ok(engine) = self.engine().await else {
            return;
        };
        let found = match engine.labelled_with(LABEL_LOG).await {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list the engine's containers");
                return;
            }
        };
        for (cid, labels) in found {
            let ours = labels
                .get(LABEL_LOG)
                .is_some_and(|l| std::path::Path::new(l).starts_with(root));
            if !ours || labels.contains_key(LABEL_WORKER) {
                continue;
            }
            let id = AttemptId {
                execution: labels.get(LABEL_EXECUTION).cloned().unwrap_or_default(),
                job: labels.get(LABEL_JOB).cloned().unwrap_or_default(),
                attempt: labels
                    .get(LABEL_ATTEMPT)
                    .and_then(|a| a.parse().ok())
                    .unwrap_or_default(),
                row: None,
            };
            let followed =
                self.running.lock().expect("running").keys().any(|k| {
                    k.execution == id.execution && k.job == id.job && k.attempt == id.attempt
                });
            if !followed {
                tracing::warn!(container = %cid, execution = %id.execution, job = %id.job, attempt = id.attempt, "removing a container whose attempt is over");
                engine.remove(&cid).await;
            }
        }
    }

    /// The engine, connected on first use.
    pub async fn engine(&self) -> Result<ContainerExecutor, String> {
        let mut engine = self.engine.lock().await;
        if let Some(e) = engine.as_ref() {
            return Ok(e.clone());
        }
        let mut e = ContainerExecutor::connect(self.host.as_deref())
            .await
            .map_err(|e| format!("cannot run the job in a container: {e}"))?;
        e.grace = self.grace;
        e.log_max_bytes = self.log_max_bytes;
        e.network.clone_from(&self.network);
        *engine = Some(e.clone());
        Ok(e)
    }

    /// Starts an attempt with these GPU devices.
    pub async fn launch_with(
        &self,
        request: LaunchRequest,
        gpus: Vec<String>,
    ) -> Result<(), String> {
        let LaunchRequest { id, job, spec } = request;
        let Some(image) = job.image.clone() else {
            return Err("the job names no image".into());
        };
        let engine = self.engine().await?;
        let resources = job.resources.clone().unwrap_or_default();
        let container = ContainerSpec {
            image,
            pull: job.pull.clone(),
            cpus: resources.cpus,
            memory_mb: resources.memory_mb,
            gpus,
            labels: Default::default(),
            mounts: job.mounts.clone(),
        };
        let running = engine
            .launch(spec, container)
            .await
            .map_err(|e| format!("cannot open the job log: {e}"))?;
        self.follow(id, running);
        Ok(())
    }

    /// Finds again the container of an attempt a previous server started, with the GPU devices
    /// it holds; the caller follows it. `None`: none to follow (one that cannot be is removed,
    /// and the attempt is then unknown here: never run twice at once).
    async fn adopt_holding(&self, id: &AttemptId) -> Option<(RunningJob, Vec<String>)> {
        let engine = self.engine().await.ok()?;
        let (job, devices) = engine.adopt_holding(id).await?;
        tracing::info!(execution = %id.execution, job = %id.job, attempt = id.attempt, gpus = ?devices, "container job attempt re-adopted");
        Some((job, devices))
    }

    fn follow(&self, id: AttemptId, job: RunningJob) {
        super::follow(&self.running, &self.tx, id, job);
    }
}

#[async_trait::async_trait]
impl Executor for Containers {
    fn name(&self) -> &'static str {
        "containers"
    }

    async fn launch(&self, request: LaunchRequest) -> Result<(), String> {
        self.launch_with(request, Vec::new()).await
    }

    fn stop(&self, id: &AttemptId) {
        if let Some(stop) = self.running.lock().expect("running").get(id) {
            let _ = stop.send(true);
        }
    }

    async fn adopt(&self, id: &AttemptId, _started: bool) -> Adoption {
        match self.adopt_holding(id).await {
            Some((job, _)) => {
                self.follow(id.clone(), job);
                Adoption::Following { started: true }
            }
            None => Adoption::Unknown,
        }
    }

    fn reports(&self) -> BoxStream<'static, StatusReport> {
        take_reports(&self.rx)
    }
}

fn take_reports(
    rx: &Mutex<Option<mpsc::UnboundedReceiver<StatusReport>>>,
) -> BoxStream<'static, StatusReport> {
    match rx.lock().expect("reports").take() {
        Some(rx) => Box::pin(futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|r| (r, rx))
        })),
        None => Box::pin(futures::stream::empty()),
    }
}

/// Processes and containers, with GPUs assigned to both. An attempt that asks for more GPUs
/// than are free now waits for them (queued, as for a slot); one that asks for more than the
/// executor has fails at once.
pub struct Routed {
    inner: Arc<Inner>,
}

struct Inner {
    processes: Arc<dyn Executor>,
    containers: Containers,
    gpus: Gpus,
    leases: Arc<Mutex<HashMap<AttemptId, GpuLease>>>,
    /// Attempts waiting for GPUs, and how to stop their wait.
    waiting: Mutex<HashMap<AttemptId, watch::Sender<bool>>>,
    /// Reports of attempts that ended while waiting for GPUs.
    tx: mpsc::UnboundedSender<StatusReport>,
    rx: Mutex<Option<mpsc::UnboundedReceiver<StatusReport>>>,
}

impl Routed {
    #[must_use]
    pub fn new(processes: Arc<dyn Executor>, containers: Containers, gpus: Gpus) -> Routed {
        let (tx, rx) = mpsc::unbounded_channel();
        Routed {
            inner: Arc::new(Inner {
                processes,
                containers,
                gpus,
                leases: Arc::default(),
                waiting: Mutex::default(),
                tx,
                rx: Mutex::new(Some(rx)),
            }),
        }
    }
}

fn holder(id: &AttemptId) -> String {
    format!("{}/{}/{}", id.execution, id.job, id.attempt)
}

impl Inner {
    /// Starts the attempt with its devices (none when it asked for none).
    async fn start(
        &self,
        mut request: LaunchRequest,
        lease: Option<GpuLease>,
    ) -> Result<(), String> {
        let ids = lease.as_ref().map(GpuLease::ids).unwrap_or_default();
        let id = request.id.clone();
        if let Some(lease) = lease {
            if request.job.image.is_none() {
                request.spec.env.extend(lease.process_env());
            }
            self.leases
                .lock()
                .expect("leases")
                .insert(id.clone(), lease);
        }
        let launched = if request.job.image.is_some() {
            self.containers.launch_with(request, ids).await
        } else {
            self.processes.launch(request).await
        };
        if launched.is_err() {
            self.leases.lock().expect("leases").remove(&id);
        }
        launched
    }

    fn ended(&self, id: AttemptId, outcome: super::Outcome) {
        let _ = self.tx.send(StatusReport {
            id,
            status: Status::Ended {
                outcome,
                ran: false,
            },
            by: None,
            ack: None,
        });
    }
}

#[async_trait::async_trait]
impl Executor for Routed {
    fn name(&self) -> &'static str {
        "local"
    }

    async fn launch(&self, request: LaunchRequest) -> Result<(), String> {
        let wanted = request
            .job
            .resources
            .as_ref()
            .and_then(|r| r.gpus)
            .unwrap_or(0);
        if wanted == 0 {
            return self.inner.start(request, None).await;
        }
        let id = request.id.clone();
        let holder = holder(&id);
        match self.inner.gpus.acquire(wanted, &holder) {
            Ok(lease) => self.inner.start(request, Some(lease)).await,
            Err(e @ GpuError::TooMany { .. }) => Err(format!("cannot assign GPUs: {e}")),
            Err(e @ GpuError::Busy { .. }) => {
                // Queued until enough devices come back (or a stop).
                tracing::info!(execution = %id.execution, job = %id.job, attempt = id.attempt, reason = %e, "waiting for GPUs");
                let (stop_tx, mut stop_rx) = watch::channel(false);
                self.inner
                    .waiting
                    .lock()
                    .expect("waiting")
                    .insert(id.clone(), stop_tx);
                let inner = self.inner.clone();
                tokio::spawn(async move {
                    let got = tokio::select! {
                        lease = inner.gpus.acquire_when_free(wanted, &holder) => Some(lease),
                        _ = stop_rx.wait_for(|s| *s) => None,
                    };
                    inner.waiting.lock().expect("waiting").remove(&id);
                    match got {
                        None => inner.ended(id, super::Outcome::Stopped),
                        Some(Err(e)) => inner.ended(
                            id,
                            super::Outcome::Failed {
                                message: format!("cannot assign GPUs: {e}"),
                            },
                        ),
                        Some(Ok(lease)) => {
                            tracing::info!(execution = %id.execution, job = %id.job, attempt = id.attempt, gpus = ?lease.ids(), "GPUs free: starting");
                            if let Err(message) = inner.start(request, Some(lease)).await {
                                inner.ended(id, super::Outcome::Failed { message });
                            }
                        }
                    }
                });
                Ok(())
            }
        }
    }

    fn stop(&self, id: &AttemptId) {
        if let Some(waiting) = self.inner.waiting.lock().expect("waiting").get(id) {
            let _ = waiting.send(true);
        }
        // Each ignores an attempt it does not run.
        self.inner.processes.stop(id);
        self.inner.containers.stop(id);
    }

    async fn adopt(&self, id: &AttemptId, started: bool) -> Adoption {
        // Containers first: the host's leftover-process sweep of an unknown process attempt
        // would otherwise also kill a container's processes (they carry the attempt's variables).
        match self.inner.containers.adopt_holding(id).await {
            Some((job, devices)) => {
                // The devices the container was given stay busy until it ends (held before it
                // is followed, so its end report always finds the lease).
                if !devices.is_empty() {
                    let lease = self.inner.gpus.hold(&devices, &holder(id));
                    self.inner
                        .leases
                        .lock()
                        .expect("leases")
                        .insert(id.clone(), lease);
                }
                self.inner.containers.follow(id.clone(), job);
                Adoption::Following { started: true }
            }
            None => self.inner.processes.adopt(id, started).await,
        }
    }

    async fn recovered(&self) {
        self.inner.processes.recovered().await;
        // In the background: an engine slow to answer does not hold up the start.
        let inner = self.inner.clone();
        tokio::spawn(async move { inner.containers.sweep().await });
    }

    fn reports(&self) -> BoxStream<'static, StatusReport> {
        let leases = self.inner.leases.clone();
        let waited = take_reports(&self.inner.rx);
        futures::stream::select(
            futures::stream::select(
                self.inner.processes.reports(),
                self.inner.containers.reports(),
            ),
            waited,
        )
        .inspect(move |r| {
            if matches!(r.status, Status::Ended { .. }) {
                // The attempt's GPUs are free again.
                leases.lock().expect("leases").remove(&r.id);
            }
        })
        .boxed()
    }
}
