//! Remote execution over NATS JetStream: the scheduler hands job attempts ("tasks") to a
//! work-queue stream, `aiflow worker` agents take them, run them with the local process
//! handling of [`crate::executor`], and report back.
//!
//! Subjects and streams (all created on first use by whoever comes first):
//! - `AIFLOW_TASKS` (work queue, `aiflow.tasks.<queue>`): one message per attempt, its
//!   `Nats-Msg-Id` the task id, so a scheduler that hands the same attempt out again after a
//!   take-over adds nothing. Workers of a queue share the durable consumer `workers-<queue>` and
//!   keep a running task's message in progress with a heartbeat; a worker that dies stops
//!   heartbeating and the message is delivered again after [`HEARTBEAT_TIMEOUT`].
//! - `aiflow_task_claims` (key-value): a worker claims a task before it runs it (an atomic
//!   create). A redelivered task that is already claimed was lost with its worker: the worker
//!   that gets it reports it `lost` (the scheduler fails the attempt and retries under the
//!   job's policy, as a new attempt) instead of running it a second time. The scheduler claims
//!   a task "cancelled" when it stops it before any worker took it.
//! - `AIFLOW_REPORTS` (work queue, `aiflow.reports`): `started`, `ended` and `lost` reports,
//!   consumed by the scheduling leader and acknowledged only after the state they change is
//!   committed, so a leader change loses none. Reports of an attempt that is not the current
//!   one are ignored (attempt fencing), and a process of such an attempt is told to stop.
//! - `AIFLOW_LOGS` (limits, `aiflow.logs.<execution>.<job>.<attempt>`): log chunks, read by the
//!   log route of any server.
//! - `aiflow.control` (plain NATS): stop requests for running tasks.
//! - `aiflow_workers` (key-value): each worker's registration, refreshed with its heartbeat.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{self, AckKind, consumer, stream};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::executor::{LaunchSpec, LocalExecutor, Outcome};

/// The default cluster name: the prefix of every subject, stream and bucket below.
pub const DEFAULT_CLUSTER: &str = "aiflow";
/// A running task's worker heartbeats this often.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(2);
/// A task whose worker has not heartbeated for this long is delivered again.
pub const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(8);
/// How long one pull of a worker waits for tasks. Short enough that a pull NATS forgot (it
/// restarted) is made again within seconds (the client gives up 5 s after this), long enough
/// that an idle worker costs nothing.
const PULL_WAIT: Duration = Duration::from_secs(5);
/// The claim of the value when the scheduler stopped a task nobody had taken.
const CANCELLED: &str = "cancelled";

/// What a job asks of the machine it runs on.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Resources {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpus: Option<u32>,
}

/// One attempt of one job, as handed to a worker.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Task {
    /// `<job execution row>-<attempt>`: unique per attempt.
    pub id: String,
    pub workflow: String,
    pub execution: String,
    pub job: String,
    pub attempt: u32,
    pub queue: String,
    pub commands: Vec<Vec<String>>,
    pub env: BTreeMap<String, String>,
    pub working_dir: Option<String>,
    pub timeout_s: Option<u64>,
    #[serde(default)]
    pub resources: Resources,
}

/// How a task went, from its worker.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum ReportKind {
    /// The claim succeeded and the process is being started.
    Started,
    /// The attempt ended.
    Ended {
        state: String,
        #[serde(default)]
        message: Option<String>,
    },
    /// The task came back after its worker stopped heartbeating.
    Lost { message: String },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub task: String,
    pub execution: String,
    pub job: String,
    pub attempt: u32,
    pub worker: String,
    #[serde(flatten)]
    pub kind: ReportKind,
}

impl Report {
    /// The attempt's outcome, for `ended` and `lost` reports.
    #[must_use]
    pub fn outcome(&self) -> Option<Outcome> {
        match &self.kind {
            ReportKind::Started => None,
            ReportKind::Ended { state, message } => Some(match state.as_str() {
                "SUCCEEDED" => Outcome::Succeeded,
                "STOPPED" => Outcome::Stopped,
                "TIMED_OUT" => Outcome::TimedOut,
                _ => Outcome::Failed {
                    message: message.clone().unwrap_or_else(|| "failed".into()),
                },
            }),
            ReportKind::Lost { message } => Some(Outcome::Failed {
                message: message.clone(),
            }),
        }
    }
}

fn ended(outcome: &Outcome) -> ReportKind {
    let (state, message) = match outcome {
        Outcome::Succeeded => ("SUCCEEDED", None),
        Outcome::Stopped => ("STOPPED", None),
        Outcome::TimedOut => ("TIMED_OUT", Some("timed out".to_string())),
        Outcome::Failed { message } => ("FAILED", Some(message.clone())),
    };
    ReportKind::Ended {
        state: state.into(),
        message,
    }
}

/// A stop request on `aiflow.control`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Control {
    task: String,
}

/// A registered worker, as listed by `GET /api/v1/workers`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WorkerInfo {
    pub name: String,
    pub queues: Vec<String>,
    pub slots: usize,
    /// Tasks running now.
    pub busy: usize,
    pub resources: Resources,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub started_at: chrono::DateTime<chrono::Utc>,
    pub last_heartbeat: chrono::DateTime<chrono::Utc>,
    /// The last heartbeat is recent (within the heartbeat timeout).
    #[serde(default)]
    pub alive: bool,
}

/// A NATS subject token for a free-form name (`.`, `*`, `>` and spaces are not allowed).
#[must_use]
pub fn token(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The JetStream streams and buckets of remote execution, created when missing.
#[derive(Clone)]
pub struct Fabric {
    pub client: async_nats::Client,
    /// Cluster name: subjects `<cluster>.…`, streams `<CLUSTER>_…`.
    cluster: String,
    pub js: jetstream::Context,
    claims: stream::Stream,
}

impl std::fmt::Debug for Fabric {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fabric").finish_non_exhaustive()
    }
}

fn nats_err(what: &str) -> impl FnOnce(&dyn std::fmt::Display) -> String + '_ {
    move |e| format!("nats {what}: {e}")
}

async fn ensure_stream(js: &jetstream::Context, config: stream::Config) -> Result<(), String> {
    let name = config.name.clone();
    if js.get_stream(&name).await.is_ok() {
        return Ok(());
    }
    match js.create_stream(config).await {
        Ok(_) => Ok(()),
        // Another process created it in between.
        Err(_) if js.get_stream(&name).await.is_ok() => Ok(()),
        Err(e) => Err(nats_err("create stream")(&e)),
    }
}

impl Fabric {
    /// A subject of this cluster: `<cluster>.<rest>`.
    #[must_use]
    pub fn subject(&self, rest: &str) -> String {
        format!("{}.{rest}", self.cluster)
    }

    /// A stream of this cluster: `<CLUSTER>_<what>`.
    fn stream_name(cluster: &str, what: &str) -> String {
        format!("{}_{what}", token(cluster).to_uppercase())
    }

    /// The subject of one attempt's log chunks.
    #[must_use]
    pub fn log_subject(&self, execution: &str, job: &str, attempt: u32) -> String {
        self.subject(&format!(
            "logs.{}.{}.{attempt}",
            token(execution),
            token(job)
        ))
    }

    /// Sets up (or finds) the streams and buckets of `cluster` on `client`'s server.
    pub async fn new(client: async_nats::Client, cluster: &str) -> Result<Fabric, String> {
        let cluster = token(cluster);
        if cluster.is_empty() {
            return Err("cluster: the name must not be empty".into());
        }
        let js = jetstream::new(client.clone());
        ensure_stream(
            &js,
            stream::Config {
                name: Self::stream_name(&cluster, "TASKS"),
                subjects: vec![format!("{cluster}.tasks.>")],
                retention: stream::RetentionPolicy::WorkQueue,
                storage: stream::StorageType::File,
                // A re-handed attempt within this window is recognised and dropped.
                duplicate_window: Duration::from_secs(6 * 3600),
                ..Default::default()
            },
        )
        .await?;
        ensure_stream(
            &js,
            stream::Config {
                name: Self::stream_name(&cluster, "REPORTS"),
                subjects: vec![format!("{cluster}.reports")],
                retention: stream::RetentionPolicy::WorkQueue,
                storage: stream::StorageType::File,
                ..Default::default()
            },
        )
        .await?;
        ensure_stream(
            &js,
            stream::Config {
                name: Self::stream_name(&cluster, "LOGS"),
                subjects: vec![format!("{cluster}.logs.>")],
                storage: stream::StorageType::File,
                max_age: Duration::from_secs(7 * 86_400),
                max_bytes: 1 << 30,
                ..Default::default()
            },
        )
        .await?;
        // Key-value shaped streams (one message kept per subject), which NATS 2.9 serves too.
        for (what, age) in [("CLAIMS", 7 * 86_400), ("WORKERS", 86_400)] {
            ensure_stream(
                &js,
                stream::Config {
                    name: Self::stream_name(&cluster, what),
                    subjects: vec![format!("{cluster}.{}.*", what.to_lowercase())],
                    max_messages_per_subject: 1,
                    storage: stream::StorageType::File,
                    max_age: Duration::from_secs(age),
                    allow_direct: true,
                    ..Default::default()
                },
            )
            .await?;
        }
        let claims = js
            .get_stream(Self::stream_name(&cluster, "CLAIMS"))
            .await
            .map_err(|e| nats_err("claims stream")(&e))?;
        Ok(Fabric {
            client,
            cluster,
            js,
            claims,
        })
    }

    /// Hands a task to its queue; a second hand-out of the same attempt is dropped by NATS.
    pub async fn hand_out(&self, task: &Task) -> Result<(), String> {
        let payload = serde_json::to_vec(task).expect("task serialises");
        self.js
            .send_publish(
                self.subject(&format!("tasks.{}", token(&task.queue))),
                jetstream::message::PublishMessage::build()
                    .payload(payload.into())
                    .message_id(&task.id),
            )
            .await
            .map_err(|e| nats_err("publish task")(&e))?
            .await
            .map_err(|e| nats_err("task ack")(&e))?;
        Ok(())
    }

    /// Stops a task: a worker running it gets SIGTERM to the process group; a worker that takes
    /// it later finds it cancelled.
    pub async fn stop(&self, task: &str) {
        let _ = self.claim(task, CANCELLED).await;
        let body = serde_json::to_vec(&Control {
            task: task.to_string(),
        })
        .expect("control serialises");
        if let Err(e) = self
            .client
            .publish(self.subject("control"), body.into())
            .await
        {
            tracing::warn!(task, error = %e, "cannot send a stop to the workers");
        }
    }

    /// The durable consumer of reports (one for the scheduling leader).
    pub async fn reports(&self) -> Result<consumer::pull::Stream, String> {
        let stream = self
            .js
            .get_stream(Self::stream_name(&self.cluster, "REPORTS"))
            .await
            .map_err(|e| nats_err("reports stream")(&e))?;
        let consumer = stream
            .get_or_create_consumer(
                "scheduler",
                consumer::pull::Config {
                    durable_name: Some("scheduler".into()),
                    ack_policy: consumer::AckPolicy::Explicit,
                    // A report delivered to a leader that died is delivered again soon.
                    ack_wait: Duration::from_secs(3),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| nats_err("reports consumer")(&e))?;
        consumer
            .messages()
            .await
            .map_err(|e| nats_err("reports")(&e))
    }

    /// Claims a task for `holder`: `Ok(true)` when this is the first claim, else `Ok(false)`.
    async fn claim(&self, task: &str, holder: &str) -> Result<bool, String> {
        let subject = self.subject(&format!("claims.{}", token(task)));
        let sent = self
            .js
            .send_publish(
                subject,
                jetstream::message::PublishMessage::build()
                    .payload(holder.as_bytes().to_vec().into())
                    .header("Nats-Expected-Last-Subject-Sequence", "0"),
            )
            .await
            .map_err(|e| nats_err("claim")(&e))?
            .await;
        match sent {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == jetstream::context::PublishErrorKind::WrongLastSequence => {
                Ok(false)
            }
            Err(e) => Err(nats_err("claim")(&e)),
        }
    }

    /// Who claimed a task first.
    async fn claimed_by(&self, task: &str) -> Option<String> {
        let subject = self.subject(&format!("claims.{}", token(task)));
        let m = self
            .claims
            .get_last_raw_message_by_subject(&subject)
            .await
            .ok()?;
        Some(String::from_utf8_lossy(&m.payload).into_owned())
    }

    /// Records a worker's registration (its heartbeat).
    async fn register(&self, info: &WorkerInfo) -> Result<(), String> {
        let body = serde_json::to_vec(info).expect("info serialises");
        self.js
            .publish(
                self.subject(&format!("workers.{}", token(&info.name))),
                body.into(),
            )
            .await
            .map_err(|e| nats_err("register")(&e))?
            .await
            .map_err(|e| nats_err("register")(&e))?;
        Ok(())
    }

    /// The registered workers, newest heartbeat first.
    pub async fn workers(&self) -> Result<Vec<WorkerInfo>, String> {
        let stream = self
            .js
            .get_stream(Self::stream_name(&self.cluster, "WORKERS"))
            .await
            .map_err(|e| nats_err("workers stream")(&e))?;
        let consumer = stream
            .create_consumer(consumer::pull::OrderedConfig {
                filter_subject: self.subject("workers.*"),
                deliver_policy: consumer::DeliverPolicy::LastPerSubject,
                ..Default::default()
            })
            .await
            .map_err(|e| nats_err("workers consumer")(&e))?;
        let pending = consumer.cached_info().num_pending;
        let mut messages = consumer
            .messages()
            .await
            .map_err(|e| nats_err("workers")(&e))?;
        let mut out = Vec::new();
        for _ in 0..pending {
            let Ok(Some(Ok(m))) =
                tokio::time::timeout(Duration::from_secs(2), messages.next()).await
            else {
                break;
            };
            if let Ok(mut w) = serde_json::from_slice::<WorkerInfo>(&m.payload) {
                let age = chrono::Utc::now() - w.last_heartbeat;
                w.alive = age.to_std().unwrap_or_default() < HEARTBEAT_TIMEOUT;
                out.push(w);
            }
        }
        out.sort_by_key(|w| std::cmp::Reverse(w.last_heartbeat));
        Ok(out)
    }

    /// Everything stored of one attempt's log, in order.
    pub async fn log(&self, execution: &str, job: &str, attempt: u32) -> Result<Vec<u8>, String> {
        let mut out = Vec::new();
        let mut chunks = self.log_chunks(execution, job, attempt).await?;
        while let Ok(Some(Ok(m))) = tokio::time::timeout(Duration::from_millis(500), chunks.next())
            .await
            .map(|n| n.map(|r| r.map(|m| m.payload.to_vec())))
        {
            out.extend_from_slice(&m);
            if is_last_chunk(&m) {
                break;
            }
        }
        Ok(out)
    }

    /// The log chunks of one attempt from the first, then live ones as they come.
    pub async fn log_chunks(
        &self,
        execution: &str,
        job: &str,
        attempt: u32,
    ) -> Result<consumer::pull::Ordered, String> {
        let stream = self
            .js
            .get_stream(Self::stream_name(&self.cluster, "LOGS"))
            .await
            .map_err(|e| nats_err("logs stream")(&e))?;
        let c = stream
            .create_consumer(consumer::pull::OrderedConfig {
                filter_subject: self.log_subject(execution, job, attempt),
                deliver_policy: consumer::DeliverPolicy::All,
                ..Default::default()
            })
            .await
            .map_err(|e| nats_err("logs consumer")(&e))?;
        c.messages().await.map_err(|e| nats_err("logs")(&e))
    }
}

/// Resolves when `rx` says stop (or its sender is gone).
pub(crate) async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

/// The last chunk of a log is empty (a marker that the attempt ended).
#[must_use]
pub fn is_last_chunk(chunk: &[u8]) -> bool {
    chunk.is_empty()
}

// ---------------------------------------------------------------------------------------------
// The worker.

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
    gpus_used: Mutex<u32>,
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
        let mut backoff = Duration::from_millis(100);
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
                    tracing::warn!(task = %task.id, error = %e, retry_in_ms = backoff.as_millis() as u64, "cannot send a report");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// Whether the task fits this worker's resources now (`None`: never).
    fn fits(&self, r: &Resources) -> Option<bool> {
        let have = &self.config.resources;
        let over = |want: Option<f64>, cap: Option<f64>| match (want, cap) {
            (Some(w), Some(c)) => w > c,
            _ => false,
        };
        if over(r.cpus, have.cpus)
            || over(
                r.memory_mb.map(|m| m as f64),
                have.memory_mb.map(|m| m as f64),
            )
            || r.gpus.unwrap_or(0) > have.gpus.unwrap_or(0)
        {
            return None;
        }
        let used = *self.gpus_used.lock().expect("gpus");
        Some(used + r.gpus.unwrap_or(0) <= have.gpus.unwrap_or(0))
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
        gpus_used: Mutex::new(0),
        started_at: chrono::Utc::now(),
    });
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
    let gpus = task.resources.gpus.unwrap_or(0);
    match state.fits(&task.resources) {
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
        let holder = state.fabric.claimed_by(&task.id).await.unwrap_or_default();
        if holder != CANCELLED {
            tracing::warn!(task = %task.id, previous = %holder, "task came back: its worker stopped heartbeating");
            let message = format!(
                "lost: worker {holder} stopped heartbeating while the attempt ran (no heartbeat for {} s)",
                HEARTBEAT_TIMEOUT.as_secs()
            );
            let _ = state.report(&task, ReportKind::Lost { message }).await;
        }
        let _ = acker.ack_with(AckKind::Term).await;
        return;
    }
    *state.gpus_used.lock().expect("gpus") += gpus;
    let (stop_tx, stop_rx) = watch::channel(false);
    let asked = Arc::new(std::sync::atomic::AtomicBool::new(false));
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
    // scheduler always gets them in order.
    let started = {
        let (state, task) = (state.clone(), task.clone());
        tokio::spawn(async move { state.report(&task, ReportKind::Started).await })
    };
    let mut outcome = run_task(&state, &task, stop_rx).await;
    let _ = started.await;
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
    let _ = acker.ack().await;
    state.running.lock().expect("running").remove(&task.id);
    *state.gpus_used.lock().expect("gpus") -= gpus;
    tracing::info!(task = %task.id, job = %task.job, outcome = ?outcome, "task ended");
}

async fn run_task(state: &WorkerState, task: &Task, mut stop: watch::Receiver<bool>) -> Outcome {
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
    let running = match executor.launch(spec).await {
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

/// Sends what the attempt writes to its log as chunks on its log subject, then an empty
/// chunk when it has ended.
async fn ship_log(
    js: jetstream::Context,
    path: PathBuf,
    subject: String,
    mut done: watch::Receiver<bool>,
) {
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    let mut sent: u64 = 0;
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
