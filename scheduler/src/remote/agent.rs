//! The worker agent (`aiflow worker`): takes tasks from its queues' work-queue stream, claims
//! each before it runs it (so a task is never run twice), runs it with the local process
//! handling of [`crate::exec::process`], heartbeats, ships its log and reports back.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{self, AckKind, consumer};
use futures::StreamExt;
use tokio::sync::watch;

use super::wire::{
    CANCELLED, Control, Fabric, HEARTBEAT_EVERY, HEARTBEAT_TIMEOUT, LOST, Report, ReportKind,
    Resources, Task, WorkerInfo, ended, nats_err, stopped, token,
};

use crate::exec::container::{LABEL_CLUSTER, LABEL_TASK, LABEL_WORKER};
use crate::exec::gpus::{GpuLease, Gpus};
use crate::exec::{LaunchSpec, LocalExecutor, Outcome};

/// How long one pull of a worker waits for tasks. Short enough that a pull NATS forgot (it
/// restarted) is made again within seconds (the client gives up 5 s after this), long enough
/// that an idle worker costs nothing.
const PULL_WAIT: Duration = Duration::from_secs(5);
/// `aiflow worker` settings.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub name: String,
    pub queues: Vec<String>,
    pub slots: usize,
    pub resources: Resources,
    pub labels: BTreeMap<String, String>,
    /// Logs of the attempts run here: `<data_dir>/logs/<execution>/<job>-<attempt>.log`.
    pub data_dir: PathBuf,
    /// `AIFLOW_URL` given to jobs (the API they publish events to).
    pub server_url: String,
    /// `AIFLOW_CA_CERT` given to jobs: the CA to trust for an https:// `server_url`.
    pub ca_cert: Option<PathBuf>,
    pub aiflow_bin: Option<PathBuf>,
    pub grace: Duration,
    /// Largest log of one attempt (older output dropped past it).
    pub log_max_bytes: Option<u64>,
    /// Variables of this worker's environment that jobs get besides the base (see
    /// [`crate::jobenv`]).
    pub job_env_passthrough: Vec<String>,
    /// The engine this worker runs container jobs on (none: it takes no job with an image).
    pub containers: Option<crate::exec::container::ContainerExecutor>,
}

struct Running {
    stop: watch::Sender<bool>,
    acker: Arc<jetstream::message::Acker>,
    /// The scheduler asked for the stop (not this worker's own shutdown).
    asked: Arc<std::sync::atomic::AtomicBool>,
}

struct WorkerState {
    config: WorkerConfig,
    fabric: Fabric,
    running: Mutex<HashMap<String, Running>>,
    /// The GPUs of `resources.gpus`, assigned to the tasks that run here.
    gpus: Gpus,
    /// The devices of containers this worker ran before its restart, held until their task
    /// comes back and is re-adopted (or the container is gone).
    reserved: Mutex<HashMap<String, GpuLease>>,
    started_at: chrono::DateTime<chrono::Utc>,
}

impl WorkerState {
    fn info(&self) -> WorkerInfo {
        WorkerInfo {
            name: self.config.name.clone(),
            queues: self.config.queues.clone(),
            slots: self.config.slots,
            busy: self.running.lock().expect("running").len(),
            resources: self.config.resources.clone(),
            labels: self.config.labels.clone(),
            started_at: self.started_at,
            last_heartbeat: chrono::Utc::now(),
            alive: true,
            containers: self.config.containers.is_some(),
        }
    }

    async fn report(&self, task: &Task, kind: ReportKind) -> Result<(), String> {
        let report = Report {
            task: task.id.clone(),
            execution: task.execution.clone(),
            job: task.job.clone(),
            attempt: task.attempt,
            worker: self.config.name.clone(),
            kind,
        };
        let body = serde_json::to_vec(&report).expect("report serialises");
        let mut backoff =
            aiflow_api::backoff::Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        // A report is never dropped: the scheduler's state depends on it.
        loop {
            let sent = async {
                self.fabric
                    .js
                    .publish(self.fabric.subject("reports"), body.clone().into())
                    .await
                    .map_err(|e| e.to_string())?
                    .await
                    .map_err(|e| e.to_string())
            };
            match sent.await {
                Ok(_) => return Ok(()),
                Err(e) => {
                    let delay = backoff.next_delay();
                    tracing::warn!(task = %task.id, error = %e, retry_in_ms = delay.as_millis() as u64, "cannot send a report");
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    /// Whether the task fits this worker now (`None`: never; a job with an image never fits
    /// a worker that offers no containers).
    fn fits(&self, task: &Task) -> Option<bool> {
        let r = &task.resources;
        if self
            .config
            .resources
            .never_fits(r, task.image.is_some(), self.config.containers.is_some())
            .is_some()
        {
            return None;
        }
        Some(r.gpus.unwrap_or(0) as usize <= self.gpus.free())
    }
}

/// Runs a worker until `shutdown`: registers, takes tasks from its queues while it has free
/// slots, runs them, reports, and heartbeats. Running tasks are stopped on shutdown and
/// reported FAILED (interrupted), so the scheduler retries them under their job's policy.
pub async fn run_worker(
    client: async_nats::Client,
    cluster: &str,
    config: WorkerConfig,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), String> {
    let fabric = Fabric::new(client.clone(), cluster).await?;
    let state = Arc::new(WorkerState {
        config: config.clone(),
        fabric,
        running: Mutex::new(HashMap::new()),
        gpus: Gpus::new(config.resources.gpus.unwrap_or(0)),
        reserved: Mutex::new(HashMap::new()),
        started_at: chrono::Utc::now(),
    });
    // Registered (alive) before it looks at its containers: other workers leave its tasks to it.
    if let Err(e) = state.fabric.register(&state.info()).await {
        tracing::warn!(error = %e, "cannot register the worker");
    }
    recover_containers(&state).await;
    let slots = Arc::new(tokio::sync::Semaphore::new(config.slots.max(1)));
    // Stops for tasks running here.
    let mut control = client
        .subscribe(state.fabric.subject("control"))
        .await
        .map_err(|e| nats_err("subscribe control")(&e))?;
    {
        let state = state.clone();
        tokio::spawn(async move {
            while let Some(m) = control.next().await {
                if let Ok(c) = serde_json::from_slice::<Control>(&m.payload)
                    && let Some(r) = state.running.lock().expect("running").get(&c.task)
                {
                    tracing::info!(task = %c.task, "stop asked");
                    r.asked.store(true, std::sync::atomic::Ordering::Relaxed);
                    let _ = r.stop.send(true);
                }
            }
        });
    }
    // Heartbeat: the registration and every running task's message.
    {
        let state = state.clone();
        let mut stop = shutdown.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(HEARTBEAT_EVERY);
            loop {
                tokio::select! {
                    _ = every.tick() => {}
                    () = stopped(&mut stop) => break,
                }
                if let Err(e) = state.fabric.register(&state.info()).await {
                    tracing::warn!(error = %e, "cannot register the worker");
                }
                let ackers: Vec<_> = state
                    .running
                    .lock()
                    .expect("running")
                    .values()
                    .map(|r| r.acker.clone())
                    .collect();
                for a in ackers {
                    let _ = a.ack_with(AckKind::Progress).await;
                }
            }
        });
    }
    tracing::info!(worker = %config.name, queues = ?config.queues, slots = config.slots, "worker ready");
    eprintln!(
        "AI Flow worker {} ready: queues {}, {} slots",
        config.name,
        config.queues.join(", "),
        config.slots
    );
    // One long poll per queue at a time, for as many tasks as there are free slots (a queue's
    // share of them when there are several queues, so one idle queue does not hold them all).
    let per_pull = if config.queues.len() > 1 {
        (config.slots / config.queues.len()).max(1)
    } else {
        config.slots.max(1)
    };
    let mut pullers = Vec::new();
    for queue in &config.queues {
        let consumer = tasks_consumer(&state.fabric, queue).await?;
        let (state, slots, queue) = (state.clone(), slots.clone(), queue.clone());
        let mut stop = shutdown.clone();
        pullers.push(tokio::spawn(async move {
            'pull: loop {
                let first = tokio::select! {
                    p = slots.clone().acquire_owned() => p.expect("semaphore"),
                    () = stopped(&mut stop) => break,
                };
                let mut permits = vec![first];
                while permits.len() < per_pull {
                    match slots.clone().try_acquire_owned() {
                        Ok(p) => permits.push(p),
                        Err(_) => break,
                    }
                }
                // NATS answers as tasks come, up to one per permit, or at the end of PULL_WAIT.
                let batch = consumer
                    .batch()
                    .max_messages(permits.len())
                    .expires(PULL_WAIT)
                    .messages();
                let next = tokio::select! {
                    b = batch => b,
                    () = stopped(&mut stop) => break,
                };
                let mut msgs = match next {
                    Ok(m) => m,
                    Err(e) => {
                        tracing::warn!(queue, error = %e, "cannot pull tasks");
                        drop(permits);
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                };
                loop {
                    let msg = tokio::select! {
                        m = msgs.next() => m,
                        () = stopped(&mut stop) => break 'pull,
                    };
                    match msg {
                        Some(Ok(m)) => {
                            let Some(permit) = permits.pop() else {
                                // More than asked for: another worker (or this one) takes it.
                                let _ = m.ack_with(AckKind::Nak(None)).await;
                                continue;
                            };
                            let state = state.clone();
                            tokio::spawn(async move {
                                take(state, m).await;
                                drop(permit);
                            });
                        }
                        Some(Err(e)) => {
                            tracing::debug!(queue, error = %e, "pull");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            break;
                        }
                        None => break,
                    }
                }
            }
        }));
    }
    stopped(&mut shutdown).await;
    for p in pullers {
        p.abort();
    }
    // Running tasks stop and report; their messages are acknowledged after the report.
    let stops: Vec<_> = state
        .running
        .lock()
        .expect("running")
        .values()
        .map(|r| r.stop.clone())
        .collect();
    for s in &stops {
        let _ = s.send(true);
    }
    let deadline = tokio::time::Instant::now() + config.grace + Duration::from_secs(2);
    while !state.running.lock().expect("running").is_empty()
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = client.flush().await;
    Ok(())
}

async fn tasks_consumer(
    fabric: &Fabric,
    queue: &str,
) -> Result<consumer::Consumer<consumer::pull::Config>, String> {
    let stream = fabric
        .js
        .get_stream(Fabric::stream_name(&fabric.cluster, "TASKS"))
        .await
        .map_err(|e| nats_err("tasks stream")(&e))?;
    let name = format!("workers-{}", token(queue));
    stream
        .get_or_create_consumer(
            &name,
            consumer::pull::Config {
                durable_name: Some(name.clone()),
                filter_subject: fabric.subject(&format!("tasks.{}", token(queue))),
                ack_policy: consumer::AckPolicy::Explicit,
                ack_wait: HEARTBEAT_TIMEOUT,
                max_ack_pending: 100_000,
                ..Default::default()
            },
        )
        .await
        .map_err(|e| nats_err("tasks consumer")(&e))
}

/// One task message: claim it, run it, report it.
async fn take(state: Arc<WorkerState>, msg: jetstream::Message) {
    let delivered = msg.info().map_or(1, |i| i.delivered);
    let (msg, acker) = msg.split();
    let acker = Arc::new(acker);
    let task: Task = match serde_json::from_slice(&msg.payload) {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(error = %e, "dropping an unreadable task");
            let _ = acker.ack_with(AckKind::Term).await;
            return;
        }
    };
    // A task delivered again may be one this worker or another already claimed: it is never
    // started a second time.
    if delivered > 1 {
        match state.fabric.claimed_by(&task.id).await {
            Ok(Some(holder)) => {
                claimed_before(state, task, acker, &holder).await;
                return;
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(task = %task.id, error = %e, "a task came again; it comes back later");
                let _ = acker
                    .ack_with(AckKind::Nak(Some(Duration::from_secs(1))))
                    .await;
                return;
            }
        }
    }
    let gpus = task.resources.gpus.unwrap_or(0);
    match state.fits(&task) {
        Some(true) => {}
        Some(false) => {
            // Busy GPUs: another worker, or this one later.
            let _ = acker
                .ack_with(AckKind::Nak(Some(Duration::from_millis(500))))
                .await;
            return;
        }
        None => {
            tracing::debug!(task = %task.id, "task does not fit this worker");
            let _ = acker
                .ack_with(AckKind::Nak(Some(Duration::from_secs(2))))
                .await;
            return;
        }
    }
    // The devices are assigned before the claim, so a won claim always has them.
    let Ok(lease) = state.gpus.acquire(gpus, &task.id) else {
        let _ = acker
            .ack_with(AckKind::Nak(Some(Duration::from_millis(500))))
            .await;
        return;
    };
    let claim = match state.fabric.claim(&task.id, &state.config.name).await {
        Ok(won) => won,
        Err(e) => {
            tracing::warn!(task = %task.id, error = %e, "cannot claim a task; it comes back later");
            let _ = acker
                .ack_with(AckKind::Nak(Some(Duration::from_secs(1))))
                .await;
            return;
        }
    };
    if !claim {
        drop(lease);
        match state.fabric.claimed_by(&task.id).await {
            Ok(Some(holder)) => claimed_before(state, task, acker, &holder).await,
            other => {
                if let Err(e) = other {
                    tracing::warn!(task = %task.id, error = %e, "a claimed task comes back later");
                }
                let _ = acker
                    .ack_with(AckKind::Nak(Some(Duration::from_secs(1))))
                    .await;
            }
        }
        return;
    }
    supervise(state, task, acker, lease, None).await;
}

/// A task already claimed when it came: cancelled, this worker's own from before its restart
/// (its container is re-adopted), or another worker's. The latter is left to its worker while
/// that one heartbeats (it came back, and re-adopts its container); it is lost once that worker
/// has not heartbeated for [`HEARTBEAT_TIMEOUT`], and its container goes.
async fn claimed_before(
    state: Arc<WorkerState>,
    task: Task,
    acker: Arc<jetstream::message::Acker>,
    holder: &str,
) {
    let me = state.config.name.clone();
    if holder == CANCELLED || holder == LOST {
        let _ = acker.ack_with(AckKind::Term).await;
        return;
    }
    if holder == me {
        let known = {
            let mut running = state.running.lock().expect("running");
            running.get_mut(&task.id).map(|r| r.acker = acker.clone())
        };
        if known.is_some() {
            // It runs here and its message came back (a heartbeat missed the ack wait): the
            // heartbeat keeps this delivery in progress from now on.
            tracing::info!(task = %task.id, "a running task's message came back; still running it");
            return;
        }
        readopt(state, task, acker).await;
        return;
    }
    if task.image.is_some()
        && let Some(w) = state.fabric.worker(holder).await
        && w.alive
        && w.containers
        && w.queues.contains(&task.queue)
    {
        // Its worker heartbeats (it came back after a restart): it re-adopts its container.
        tracing::debug!(task = %task.id, worker = %holder, "task of a live worker; handed back");
        let _ = acker
            .ack_with(AckKind::Nak(Some(Duration::from_secs(1))))
            .await;
        return;
    }
    tracing::warn!(task = %task.id, previous = %holder, "task came back: its worker stopped heartbeating");
    let message = format!(
        "lost: worker {holder} stopped heartbeating while the attempt ran (no heartbeat for {} s)",
        HEARTBEAT_TIMEOUT.as_secs()
    );
    // The worker, should it come back, finds its attempt over.
    if let Err(e) = state.fabric.mark_lost(&task.id).await {
        tracing::warn!(task = %task.id, error = %e, "cannot mark a lost task");
    }
    let _ = state.report(&task, ReportKind::Lost { message }).await;
    // Its container, when the lost worker ran it on this engine, goes too.
    if let Some(engine) = &state.config.containers {
        for c in engine
            .containers_of_attempt(&attempt_of(&task))
            .await
            .unwrap_or_default()
        {
            tracing::warn!(task = %task.id, container = %c, "removing the container of a lost task");
            engine.remove(&c).await;
        }
    }
    let _ = acker.ack_with(AckKind::Term).await;
}

fn attempt_of(task: &Task) -> crate::exec::AttemptId {
    crate::exec::AttemptId {
        execution: task.execution.clone(),
        job: task.job.clone(),
        attempt: task.attempt,
        row: None,
    }
}

/// A task this worker claimed before its restart: its container is followed again to its end
/// (never started a second time); when it is gone, the attempt is reported lost.
async fn readopt(state: Arc<WorkerState>, task: Task, acker: Arc<jetstream::message::Acker>) {
    let me = state.config.name.clone();
    let adopted = match (&task.image, &state.config.containers) {
        (Some(_), Some(engine)) => engine.adopt_holding(&attempt_of(&task)).await,
        _ => None,
    };
    let reserved = state.reserved.lock().expect("reserved").remove(&task.id);
    let Some((job, devices)) = adopted else {
        drop(reserved);
        let message = if task.image.is_some() {
            format!("lost: worker {me} restarted while the attempt ran and its container is gone")
        } else {
            format!("lost: worker {me} restarted while the attempt ran")
        };
        tracing::warn!(task = %task.id, "{message}");
        let _ = state.report(&task, ReportKind::Lost { message }).await;
        let _ = acker.ack_with(AckKind::Term).await;
        return;
    };
    // The devices it was given stay busy until it ends.
    let lease = reserved.unwrap_or_else(|| state.gpus.hold(&devices, &task.id));
    tracing::info!(task = %task.id, job = %task.job, gpus = ?lease.ids(), "container re-adopted after a restart of the worker");
    supervise(state, task, acker, lease, Some(job)).await;
}

/// At start, the containers this worker ran before a restart: those of a task it still claims
/// keep their GPUs until the task comes back to be re-adopted; the others' attempts are over
/// (lost to another worker, or stopped), and they are removed.
async fn recover_containers(state: &Arc<WorkerState>) {
    use crate::exec::container::{LABEL_GPUS, LABEL_LAST};
    let Some(engine) = state.config.containers.clone() else {
        return;
    };
    let me = state.config.name.clone();
    let found = match engine.labelled(LABEL_WORKER, &me).await {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!(error = %e, "cannot list this worker's containers");
            return;
        }
    };
    for (cid, labels) in found {
        if labels.get(LABEL_CLUSTER) != Some(&state.fabric.cluster) {
            // A worker of the same name in another cluster started it: not ours to touch.
            continue;
        }
        let task = labels.get(LABEL_TASK).cloned().unwrap_or_default();
        let holder = if task.is_empty() {
            None
        } else {
            match state.fabric.claimed_by(&task).await {
                Ok(holder) => holder,
                // Unknown for now: kept as if still held (the check below tries again).
                Err(e) => {
                    tracing::warn!(container = %cid, task, error = %e, "cannot tell whether this worker still holds a container's task; keeping it");
                    Some(me.clone())
                }
            }
        };
        if holder.as_deref() != Some(me.as_str()) {
            tracing::warn!(container = %cid, task, holder = ?holder, "removing a container whose attempt is over");
            engine.remove(&cid).await;
            continue;
        }
        if labels.get(LABEL_LAST).map(String::as_str) != Some("true") {
            continue;
        }
        let devices: Vec<String> = labels
            .get(LABEL_GPUS)
            .map(|g| {
                g.split(',')
                    .filter(|d| !d.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        tracing::info!(container = %cid, task, gpus = ?devices, "a container of this worker outlived it; it is re-adopted when its task comes back");
        let lease = state.gpus.hold(&devices, &task);
        state
            .reserved
            .lock()
            .expect("reserved")
            .insert(task.clone(), lease);
        // Its devices come back when it is gone without being re-adopted, or when another
        // worker found its task lost meanwhile (it goes then).
        let (state, engine) = (state.clone(), engine.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(2)).await;
                if !state.reserved.lock().expect("reserved").contains_key(&task) {
                    break;
                }
                if engine.docker().inspect_container(&cid, None).await.is_err() {
                    state.reserved.lock().expect("reserved").remove(&task);
                    break;
                }
                // An unreadable claim says nothing yet.
                let holder = state.fabric.claimed_by(&task).await.ok().flatten();
                let lost = holder.as_deref().is_some_and(|h| h != state.config.name);
                if lost
                    && state
                        .reserved
                        .lock()
                        .expect("reserved")
                        .remove(&task)
                        .is_some()
                {
                    tracing::warn!(container = %cid, task, holder = ?holder, "removing a container whose task was found lost");
                    engine.remove(&cid).await;
                    break;
                }
            }
        });
    }
}

/// Runs (or, `adopted`, follows again) a claimed task to its end and reports it.
async fn supervise(
    state: Arc<WorkerState>,
    task: Task,
    acker: Arc<jetstream::message::Acker>,
    lease: GpuLease,
    adopted: Option<crate::exec::RunningJob>,
) {
    let (stop_tx, stop_rx) = watch::channel(false);
    let asked = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readopted = adopted.is_some();
    state.running.lock().expect("running").insert(
        task.id.clone(),
        Running {
            stop: stop_tx,
            acker: acker.clone(),
            asked: asked.clone(),
        },
    );
    // The claim is won: the process starts while the `started` report is on its way (it is not
    // on the path to the process); the `ended` report goes only after it was stored, so the
    // scheduler always gets them in order. A re-adopted attempt was reported started before.
    let started = (!readopted).then(|| {
        let (state, task) = (state.clone(), task.clone());
        tokio::spawn(async move { state.report(&task, ReportKind::Started).await })
    });
    let mut outcome = run_task(&state, &task, &lease, stop_rx, adopted).await;
    if let Some(started) = started {
        let _ = started.await;
    }
    if outcome == Outcome::Stopped && !asked.load(std::sync::atomic::Ordering::Relaxed) {
        // This worker is shutting down: the attempt was interrupted, and is retried under the
        // job's policy rather than counted as stopped by a user.
        outcome = Outcome::Failed {
            message: format!(
                "interrupted: worker {} shut down while the attempt ran",
                state.config.name
            ),
        };
    }
    let _ = state.report(&task, ended(&outcome)).await;
    // The delivery the heartbeat keeps in progress (a newer one when the message came back).
    let acker = state
        .running
        .lock()
        .expect("running")
        .remove(&task.id)
        .map_or(acker, |r| r.acker);
    let _ = acker.ack().await;
    // The task's GPUs are free again.
    drop(lease);
    tracing::info!(task = %task.id, job = %task.job, outcome = ?outcome, "task ended");
}

async fn run_task(
    state: &WorkerState,
    task: &Task,
    gpus: &GpuLease,
    mut stop: watch::Receiver<bool>,
    adopted: Option<crate::exec::RunningJob>,
) -> Outcome {
    let config = &state.config;
    let log_path = config
        .data_dir
        .join("logs")
        .join(&task.execution)
        .join(format!("{}-{}.log", task.job, task.attempt));
    let mut env = task.env.clone();
    env.insert("AIFLOW_URL".into(), config.server_url.clone());
    if let Some(ca) = &config.ca_cert {
        env.insert("AIFLOW_CA_CERT".into(), ca.display().to_string());
    }
    env.insert("AIFLOW_WORKER".into(), config.name.clone());
    env.insert(
        "AIFLOW_DATA_DIR".into(),
        config.data_dir.display().to_string(),
    );
    if let Some(bin) = &config.aiflow_bin {
        env.insert("AIFLOW_BIN".into(), bin.display().to_string());
    }
    if task.image.is_none() {
        env.extend(gpus.process_env());
        // A process gets a built environment, not the worker's (a container, its image's).
        env = crate::jobenv::build(crate::jobenv::current(), &config.job_env_passthrough, &env);
    }
    let spec = LaunchSpec {
        workflow: task.workflow.clone(),
        execution: task.execution.clone(),
        job: task.job.clone(),
        attempt: task.attempt,
        commands: task.commands.clone(),
        env,
        working_dir: task.working_dir.as_ref().map(PathBuf::from),
        timeout: task.timeout_s.map(Duration::from_secs),
        log_path: log_path.clone(),
    };
    let executor = LocalExecutor {
        grace: config.grace,
        log_max_bytes: config.log_max_bytes,
        supervisor: None,
    };
    // What was shipped of a re-adopted attempt's log before the restart is not sent again.
    let mut shipped = 0;
    let launched = match (adopted, &task.image, &config.containers) {
        (Some(job), _, _) => {
            shipped = match state
                .fabric
                .stored_log_len(&task.execution, &task.job, task.attempt)
                .await
            {
                Ok(n) => n,
                Err(e) => {
                    // Shipping it all again repeats lines; losing them would be worse.
                    tracing::warn!(task = %task.id, error = %e, "cannot tell how much of the log was shipped");
                    0
                }
            };
            Ok(job)
        }
        (None, Some(image), Some(engine)) => {
            let container = crate::exec::container::ContainerSpec {
                image: image.clone(),
                pull: task.pull.clone(),
                cpus: task.resources.cpus,
                memory_mb: task.resources.memory_mb,
                gpus: gpus.ids(),
                labels: BTreeMap::from([
                    (LABEL_WORKER.to_string(), config.name.clone()),
                    (LABEL_CLUSTER.to_string(), state.fabric.cluster.clone()),
                    (LABEL_TASK.to_string(), task.id.clone()),
                ]),
                mounts: task.mounts.clone(),
            };
            engine.launch(spec, container).await
        }
        (None, Some(_), None) => {
            return Outcome::Failed {
                message: format!("worker {} offers no containers", config.name),
            };
        }
        // CPU and memory limits where the worker's host allows them (docs/containers.md).
        (None, None, _) => {
            let limits =
                crate::exec::cgroup::Limits::new(task.resources.cpus, task.resources.memory_mb);
            executor
                .launch_limited(spec, limits.map(crate::exec::process::Limited::system))
                .await
        }
    };
    let running = match launched {
        Ok(r) => r,
        Err(e) => {
            return Outcome::Failed {
                message: format!("cannot start: {e}"),
            };
        }
    };
    let stopper = running.stopper();
    tokio::spawn(async move {
        if stop.wait_for(|s| *s).await.is_ok() {
            let _ = stopper.send(true);
        }
    });
    let (done_tx, done_rx) = watch::channel(false);
    let shipper = tokio::spawn(ship_log(
        state.fabric.js.clone(),
        log_path,
        shipped,
        state
            .fabric
            .log_subject(&task.execution, &task.job, task.attempt),
        done_rx,
    ));
    let outcome = running.wait().await;
    let _ = done_tx.send(true);
    let _ = shipper.await;
    outcome
}

/// Sends what the attempt writes to its log as chunks on its log subject (from byte `sent`:
/// what was shipped before), then an empty chunk when it has ended.
async fn ship_log(
    js: jetstream::Context,
    path: PathBuf,
    mut sent: u64,
    subject: String,
    mut done: watch::Receiver<bool>,
) {
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    loop {
        let finished = *done.borrow();
        if let Ok(meta) = tokio::fs::metadata(&path).await
            && meta.len() < sent
        {
            // The log was cut to its newest part (over its size limit): ship it from the top.
            sent = 0;
        }
        if let Ok(mut f) = tokio::fs::File::open(&path).await
            && f.seek(std::io::SeekFrom::Start(sent)).await.is_ok()
        {
            let mut buf = Vec::new();
            if f.read_to_end(&mut buf).await.is_ok() && !buf.is_empty() {
                // The chunks go out back to back; their acknowledgements are awaited together.
                let mut acks = Vec::new();
                for chunk in buf.chunks(64 * 1024) {
                    match js.publish(subject.clone(), chunk.to_vec().into()).await {
                        Ok(ack) => acks.push(ack),
                        Err(e) => tracing::warn!(error = %e, "cannot ship a log chunk"),
                    }
                }
                for ack in acks {
                    if let Err(e) = ack.await {
                        tracing::warn!(error = %e, "a log chunk was not stored");
                    }
                }
                sent += buf.len() as u64;
            }
        }
        if finished {
            break;
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = done.changed() => {}
        }
    }
    // The end marker is sent, not waited for: the `ended` report that follows on the same
    // connection is stored after it, and a reader that misses it stops at its timeout.
    if let Err(e) = js.publish(subject, Vec::<u8>::new().into()).await {
        tracing::warn!(error = %e, "cannot send the end of a log");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::container::{
        ContainerExecutor, LABEL_ATTEMPT, LABEL_EXECUTION, LABEL_GPUS, LABEL_JOB, LABEL_LAST,
        LABEL_LOG,
    };

    const IMAGE: &str = "aiflow-test/debian:bookworm";

    fn docker(args: &[&str]) -> String {
        let out = std::process::Command::new("docker")
            .args(args)
            .output()
            .expect("docker");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// A worker that comes back finds its containers on the engine (real NATS and Docker): the
    /// one of a task it still claims keeps its GPU busy until the task is re-adopted or the
    /// container is gone; the one of a task another worker took over is removed.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_restarted_worker_keeps_the_gpus_of_its_containers_and_removes_the_lost_ones() {
        let Ok(client) = async_nats::connect("nats://127.0.0.1:4222").await else {
            eprintln!("\n*** SKIPPED: no NATS on 127.0.0.1:4222 ***\n");
            return;
        };
        let engine = match ContainerExecutor::connect(None).await {
            Ok(e) if e.docker().inspect_image(IMAGE).await.is_ok() => e,
            _ => {
                eprintln!("\n*** SKIPPED: no Docker engine with the image {IMAGE} ***\n");
                return;
            }
        };
        let unique = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let cluster = format!("agentgpus{unique}");
        let fabric = Fabric::new(client.clone(), &cluster).await.unwrap();
        let (mine, later, lost) = (
            format!("m{unique}-1"),
            format!("n{unique}-1"),
            format!("l{unique}-1"),
        );
        assert!(fabric.claim(&mine, "w1").await.unwrap());
        assert!(fabric.claim(&later, "w1").await.unwrap());
        assert!(fabric.claim(&lost, "w2").await.unwrap());
        let dir = tempfile::tempdir().unwrap();
        let run = |task: &str, job: &str, gpus: &str| {
            let labels = [
                format!("{LABEL_EXECUTION}=e{unique}"),
                format!("{LABEL_JOB}={job}"),
                format!("{LABEL_ATTEMPT}=1"),
                format!(
                    "{LABEL_LOG}={}",
                    dir.path().join(format!("{job}.log")).display()
                ),
                format!("{LABEL_LAST}=true"),
                format!("{LABEL_WORKER}=w1"),
                format!("{LABEL_CLUSTER}={cluster}"),
                format!("{LABEL_TASK}={task}"),
                format!("{LABEL_GPUS}={gpus}"),
            ];
            let mut args = vec!["run", "-d"];
            for l in &labels {
                args.extend(["--label", l.as_str()]);
            }
            args.extend([IMAGE, "sleep", "300"]);
            docker(&args)
        };
        let kept = run(&mine, "kept", "1");
        let marked = run(&later, "marked", "0");
        let gone = run(&lost, "gone", "");
        let exists = |id: &str| !docker(&["ps", "-aq", "--filter", &format!("id={id}")]).is_empty();
        let gpus = Gpus::new(2);
        let state = Arc::new(WorkerState {
            config: WorkerConfig {
                name: "w1".into(),
                queues: vec!["default".into()],
                slots: 2,
                resources: Resources {
                    gpus: Some(2),
                    ..Default::default()
                },
                labels: BTreeMap::new(),
                data_dir: dir.path().to_path_buf(),
                server_url: "http://127.0.0.1:1".into(),
                ca_cert: None,
                aiflow_bin: None,
                grace: Duration::from_millis(500),
                log_max_bytes: None,
                job_env_passthrough: Vec::new(),
                containers: Some(engine),
            },
            fabric: fabric.clone(),
            running: Mutex::new(HashMap::new()),
            gpus: gpus.clone(),
            reserved: Mutex::new(HashMap::new()),
            started_at: chrono::Utc::now(),
        });
        recover_containers(&state).await;
        let held = gpus.holders();
        let removed = !exists(&gone);
        let still = exists(&kept) && exists(&marked);
        // Once a container is gone without its task coming back, or its task was found lost by
        // another worker meanwhile (its container then goes too), its device is free again.
        docker(&["rm", "-f", &kept]);
        fabric.mark_lost(&later).await.unwrap();
        let mut freed = false;
        for _ in 0..50 {
            if gpus.free() == 2 && !exists(&marked) {
                freed = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        docker(&["rm", "-f", &marked]);
        let js = async_nats::jetstream::new(client);
        let upper = token(&cluster).to_uppercase();
        for what in ["TASKS", "REPORTS", "LOGS", "CLAIMS", "WORKERS"] {
            let _ = js.delete_stream(format!("{upper}_{what}")).await;
        }
        assert_eq!(
            held,
            BTreeMap::from([
                ("0".to_string(), later.clone()),
                ("1".to_string(), mine.clone())
            ]),
            "the devices of the containers of tasks it still claims are busy"
        );
        assert!(
            removed,
            "the container of a task another worker took over goes"
        );
        assert!(
            still,
            "the containers of its own tasks are left to be re-adopted"
        );
        assert!(
            freed,
            "devices come back once their container is gone or their task lost"
        );
    }
}
