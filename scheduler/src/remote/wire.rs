//! The wire protocol of remote execution: the messages ([`Task`], [`Report`], stop requests,
//! [`WorkerInfo`]) and the NATS streams and buckets they travel on ([`Fabric`]).
//!
//! Subjects and streams (all created on first use by whoever comes first):
//! - `AIFLOW_TASKS` (work queue, `aiflow.tasks.<queue>`): one message per attempt, its
//!   `Nats-Msg-Id` the task id, so a scheduler that hands the same attempt out again after a
//!   take-over adds nothing. Workers of a queue share the durable consumer `workers-<queue>` and
//!   keep a running task's message in progress with a heartbeat; a worker that dies stops
//!   heartbeating and the message is delivered again after [`HEARTBEAT_TIMEOUT`].
//! - `aiflow_task_claims` (key-value): a worker claims a task before it runs it (an atomic
//!   create). A redelivered task that is already claimed is never run a second time: its own
//!   worker, started again, re-adopts its container (or reports it `lost` when there is none);
//!   another worker leaves it alone while its worker heartbeats, and reports it `lost` once that
//!   one has not heartbeated for [`HEARTBEAT_TIMEOUT`] (the scheduler fails the attempt and
//!   retries under the job's policy, as a new attempt). The scheduler claims a task
//!   "cancelled" when it stops it before any worker took it.
//! - `AIFLOW_REPORTS` (work queue, `aiflow.reports`): `started`, `ended` and `lost` reports,
//!   consumed by the scheduling leader and acknowledged only after the state they change is
//!   committed, so a leader change loses none. Reports of an attempt that is not the current
//!   one are ignored (attempt fencing), and a process of such an attempt is told to stop.
//! - `AIFLOW_LOGS` (limits, `aiflow.logs.<execution>.<job>.<attempt>`): log chunks, read by the
//!   log route of any server.
//! - `aiflow.control` (plain NATS): stop requests for running tasks.
//! - `aiflow_workers` (key-value): each worker's registration, refreshed with its heartbeat.

use std::collections::BTreeMap;
use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::exec::Outcome;

/// The default cluster name: the prefix of every subject, stream and bucket below.
pub const DEFAULT_CLUSTER: &str = "aiflow";
/// A running task's worker heartbeats this often.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(2);
/// A task whose worker has not heartbeated for this long is delivered again.
pub const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(8);
/// The claim of the value when the scheduler stopped a task nobody had taken.
pub(super) const CANCELLED: &str = "cancelled";
/// The claim of the value once a worker found the task lost with the worker that held it.
pub(super) const LOST: &str = "lost";

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

impl Resources {
    /// Why a worker offering `self` (and containers when `containers`) can never run a task
    /// asking `want` (with an image when `image`), naming the job setting; `None` when it can,
    /// now or once its running tasks are done.
    #[must_use]
    pub fn never_fits(&self, want: &Resources, image: bool, containers: bool) -> Option<String> {
        if image && !containers {
            return Some("image: a container job, and the worker offers no containers".into());
        }
        if let (Some(w), Some(c)) = (want.cpus, self.cpus)
            && w > c
        {
            return Some(format!("resources.cpus: {w} asked, {c} offered"));
        }
        if let (Some(w), Some(c)) = (want.memory_mb, self.memory_mb)
            && w > c
        {
            return Some(format!("resources.memory_mb: {w} asked, {c} offered"));
        }
        let (w, c) = (want.gpus.unwrap_or(0), self.gpus.unwrap_or(0));
        (w > c).then(|| format!("resources.gpus: {w} asked, {c} offered"))
    }
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
    /// Run it as a container from this image (only a worker that offers containers takes it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull: Option<aiflow_translator::Pull>,
    /// Bind mounts of the container, `/host/path:/in/container[:ro|rw]`: paths of the worker's
    /// machine.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<String>,
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
        /// The exit code of a command that exited non-zero (absent from older workers).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        exit_code: Option<i64>,
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
            ReportKind::Ended {
                state,
                message,
                exit_code,
            } => Some(match (state.as_str(), exit_code) {
                ("SUCCEEDED", _) => Outcome::Succeeded,
                ("STOPPED", _) => Outcome::Stopped,
                ("TIMED_OUT", _) => Outcome::TimedOut,
                (_, Some(code)) => Outcome::Exited {
                    code: *code,
                    message: message
                        .clone()
                        .unwrap_or_else(|| format!("exited with code {code}")),
                },
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

pub(super) fn ended(outcome: &Outcome) -> ReportKind {
    let (state, message) = match outcome {
        Outcome::Succeeded => ("SUCCEEDED", None),
        Outcome::Stopped => ("STOPPED", None),
        Outcome::TimedOut => ("TIMED_OUT", Some("timed out".to_string())),
        Outcome::Failed { message } | Outcome::Exited { message, .. } => {
            ("FAILED", Some(message.clone()))
        }
    };
    ReportKind::Ended {
        state: state.into(),
        message,
        exit_code: match outcome {
            Outcome::Exited { code, .. } => Some(*code),
            _ => None,
        },
    }
}

/// A stop request on `aiflow.control`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Control {
    pub(super) task: String,
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
    /// It runs jobs with an `image` as containers (`aiflow worker --containers`).
    #[serde(default)]
    pub containers: bool,
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
    pub(super) cluster: String,
    pub js: jetstream::Context,
    claims: stream::Stream,
}

impl std::fmt::Debug for Fabric {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fabric").finish_non_exhaustive()
    }
}

pub(super) fn nats_err(what: &str) -> impl FnOnce(&dyn std::fmt::Display) -> String + '_ {
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
    pub(super) fn stream_name(cluster: &str, what: &str) -> String {
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
    pub(super) async fn claim(&self, task: &str, holder: &str) -> Result<bool, String> {
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

    /// Marks a claimed task lost with its worker, so that worker, when it comes back, knows
    /// the attempt is over.
    pub(super) async fn mark_lost(&self, task: &str) -> Result<(), String> {
        let subject = self.subject(&format!("claims.{}", token(task)));
        self.js
            .publish(subject, LOST.as_bytes().to_vec().into())
            .await
            .map_err(|e| nats_err("claim")(&e))?
            .await
            .map_err(|e| nats_err("claim")(&e))?;
        Ok(())
    }

    /// Who claimed a task first.
    /// `Ok(None)` only when the task has no claim; a claim that cannot be read now is an error
    /// (never taken for "nobody's", which would remove a running container).
    pub(super) async fn claimed_by(&self, task: &str) -> Result<Option<String>, String> {
        let subject = self.subject(&format!("claims.{}", token(task)));
        match self.claims.get_last_raw_message_by_subject(&subject).await {
            Ok(m) => Ok(Some(String::from_utf8_lossy(&m.payload).into_owned())),
            Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => Ok(None),
            Err(e) => Err(format!("cannot read the claim of task {task}: {e}")),
        }
    }

    /// Records a worker's registration (its heartbeat).
    pub(super) async fn register(&self, info: &WorkerInfo) -> Result<(), String> {
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

    /// One worker's registration (`alive` set from its last heartbeat), when it has one.
    pub(super) async fn worker(&self, name: &str) -> Option<WorkerInfo> {
        let stream = self
            .js
            .get_stream(Self::stream_name(&self.cluster, "WORKERS"))
            .await
            .ok()?;
        let m = stream
            .get_last_raw_message_by_subject(&self.subject(&format!("workers.{}", token(name))))
            .await
            .ok()?;
        let mut w: WorkerInfo = serde_json::from_slice(&m.payload).ok()?;
        let age = chrono::Utc::now() - w.last_heartbeat;
        w.alive = age.to_std().unwrap_or_default() < HEARTBEAT_TIMEOUT;
        Some(w)
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

    /// An attempt's log as stored: every chunk up to the last one stored when asked, however
    /// slowly the stream answers (a busy server must not serve half a log, nor a worker that
    /// ships the rest after a restart send a byte twice).
    pub async fn log(&self, execution: &str, job: &str, attempt: u32) -> Result<Vec<u8>, String> {
        let stream = self
            .js
            .get_stream(Self::stream_name(&self.cluster, "LOGS"))
            .await
            .map_err(|e| nats_err("logs stream")(&e))?;
        let subject = self.log_subject(execution, job, attempt);
        let last = match stream.get_last_raw_message_by_subject(&subject).await {
            Ok(m) => m.sequence,
            Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => {
                return Ok(Vec::new());
            }
            Err(e) => return Err(format!("cannot read the stored log {subject}: {e}")),
        };
        let mut chunks = self.log_chunks(execution, job, attempt).await?;
        let mut out = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let m = match tokio::time::timeout_at(deadline, chunks.next()).await {
                Ok(Some(Ok(m))) => m,
                Ok(Some(Err(e))) => {
                    return Err(format!("cannot read the stored log {subject}: {e}"));
                }
                Ok(None) | Err(_) => {
                    return Err(format!(
                        "the stored log {subject} did not come up to its last chunk within 60 s"
                    ));
                }
            };
            out.extend_from_slice(&m.payload);
            let seq = m
                .info()
                .map_err(|e| format!("a chunk of the stored log {subject} has no sequence: {e}"))?
                .stream_sequence;
            if seq >= last {
                return Ok(out);
            }
        }
    }

    /// How many bytes of an attempt's log are stored (see [`Self::log`]).
    pub async fn stored_log_len(
        &self,
        execution: &str,
        job: &str,
        attempt: u32,
    ) -> Result<u64, String> {
        Ok(self.log(execution, job, attempt).await?.len() as u64)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_carries_its_mounts_and_one_without_reads_as_none() {
        let json = serde_json::json!({
            "id": "7-1", "workflow": "wf", "execution": "e1", "job": "train", "attempt": 1,
            "queue": "default", "commands": [["sh", "-c", "ls /data"]], "env": {},
            "working_dir": null, "timeout_s": null,
            "image": "aiflow-test/debian:bookworm",
            "mounts": ["/srv/data:/data:ro"]
        });
        let task: Task = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(task.mounts, ["/srv/data:/data:ro"]);
        let back = serde_json::to_value(&task).unwrap();
        assert_eq!(back["mounts"], json["mounts"]);
        // A task from a server that knows no mounts.
        let mut old = json;
        old.as_object_mut().unwrap().remove("mounts");
        let task: Task = serde_json::from_value(old).unwrap();
        assert!(task.mounts.is_empty());
        assert!(serde_json::to_value(&task).unwrap().get("mounts").is_none());
    }

    fn report(kind: ReportKind) -> Report {
        Report {
            task: "t".into(),
            execution: "e".into(),
            job: "j".into(),
            attempt: 1,
            worker: "w".into(),
            kind,
        }
    }

    /// A worker's report carries the exit code of a command that exited non-zero; a report
    /// of an older worker (no `exit_code`) still reads as a failure.
    #[test]
    fn an_ended_report_carries_the_exit_code() {
        for outcome in [
            Outcome::Exited {
                code: 7,
                message: "exited with code 7".into(),
            },
            Outcome::Succeeded,
            Outcome::TimedOut,
            Outcome::Failed {
                message: "cannot start".into(),
            },
        ] {
            let sent = report(ended(&outcome));
            let text = serde_json::to_string(&sent).unwrap();
            let got: Report = serde_json::from_str(&text).unwrap();
            assert_eq!(got.outcome(), Some(outcome.clone()), "{text}");
        }
        assert_eq!(
            report(ended(&Outcome::Exited {
                code: 7,
                message: "x".into()
            }))
            .outcome()
            .and_then(|o| o.exit_code()),
            Some(7)
        );
        let old: Report = serde_json::from_str(
            r#"{"task":"t","execution":"e","job":"j","attempt":1,"worker":"w","kind":"ended","state":"FAILED","message":"boom"}"#,
        )
        .unwrap();
        assert_eq!(
            old.outcome(),
            Some(Outcome::Failed {
                message: "boom".into()
            })
        );
    }
}
