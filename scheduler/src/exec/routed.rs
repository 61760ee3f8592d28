//! The executor of a server that runs jobs itself (the embedded shape): a job with an `image`
//! runs as containers ([`Containers`]), any other as local processes; both get their GPUs from
//! one [`Gpus`] assignment, held from launch until the attempt's end is reported.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::StreamExt as _;
use futures::stream::BoxStream;
use tokio::sync::mpsc;

use super::container::{ContainerExecutor, ContainerSpec};
use super::gpus::{GpuLease, Gpus};
use super::{Adoption, AttemptId, Executor, LaunchRequest, RunningJob, Status, StatusReport};

/// Container attempts on one Docker engine behind the [`Executor`] trait. The engine is reached
/// on the first container job (a server with no container job needs none), and again after a
/// failure.
pub struct Containers {
    host: Option<String>,
    grace: std::time::Duration,
    log_max_bytes: Option<u64>,
    engine: tokio::sync::Mutex<Option<ContainerExecutor>>,
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
            engine: tokio::sync::Mutex::new(None),
            running: Arc::default(),
            tx,
            rx: Mutex::new(Some(rx)),
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
            mounts: job.mounts.clone(),
        };
        let running = engine
            .launch(spec, container)
            .await
            .map_err(|e| format!("cannot open the job log: {e}"))?;
        self.follow(id, running);
        Ok(())
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
        // A container a previous server started is followed again; one that cannot be is
        // removed, and the attempt is then unknown here (never run twice at once).
        let Ok(engine) = self.engine().await else {
            return Adoption::Unknown;
        };
        match engine.adopt(id).await {
            Some(job) => {
                tracing::info!(execution = %id.execution, job = %id.job, attempt = id.attempt, "container job attempt re-adopted");
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

/// Processes and containers, with GPUs assigned to both.
pub struct Routed {
    processes: Arc<dyn Executor>,
    containers: Containers,
    gpus: Gpus,
    leases: Arc<Mutex<HashMap<AttemptId, GpuLease>>>,
}

impl Routed {
    #[must_use]
    pub fn new(processes: Arc<dyn Executor>, containers: Containers, gpus: Gpus) -> Routed {
        Routed {
            processes,
            containers,
            gpus,
            leases: Arc::default(),
        }
    }
}

#[async_trait::async_trait]
impl Executor for Routed {
    fn name(&self) -> &'static str {
        "local"
    }

    async fn launch(&self, mut request: LaunchRequest) -> Result<(), String> {
        let wanted = request
            .job
            .resources
            .as_ref()
            .and_then(|r| r.gpus)
            .unwrap_or(0);
        let lease = if wanted > 0 {
            let holder = format!(
                "{}/{}/{}",
                request.id.execution, request.id.job, request.id.attempt
            );
            Some(
                self.gpus
                    .acquire(wanted, &holder)
                    .map_err(|e| format!("cannot assign GPUs: {e}"))?,
            )
        } else {
            None
        };
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

    fn stop(&self, id: &AttemptId) {
        // Each ignores an attempt it does not run.
        self.processes.stop(id);
        self.containers.stop(id);
    }

    async fn adopt(&self, id: &AttemptId, started: bool) -> Adoption {
        // Containers first: the host's leftover-process sweep of an unknown process attempt
        // would otherwise also kill a container's processes (they carry the attempt's variables).
        match self.containers.adopt(id, started).await {
            Adoption::Unknown => self.processes.adopt(id, started).await,
            following => following,
        }
    }

    fn reports(&self) -> BoxStream<'static, StatusReport> {
        let leases = self.leases.clone();
        futures::stream::select(self.processes.reports(), self.containers.reports())
            .inspect(move |r| {
                if matches!(r.status, Status::Ended { .. }) {
                    // The attempt's GPUs are free again.
                    leases.lock().expect("leases").remove(&r.id);
                }
            })
            .boxed()
    }
}
