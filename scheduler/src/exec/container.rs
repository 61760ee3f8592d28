//! The container executor: runs a job attempt as containers on a Docker Engine API (Docker, or
//! Podman's compatible socket), through `bollard`.
//!
//! Each of the job's commands runs in a container of its own, one after another (the image's
//! own command when the job gives none), with:
//! - the job's environment (its `env` and every `AIFLOW_*` variable) and `working_dir` (a path
//!   inside the container);
//! - host networking, so `AIFLOW_URL` reaches the server exactly as a host process does, or
//!   the engine network the executor names ([`ContainerExecutor::network`]: a Compose network,
//!   where the servers answer by their service names);
//! - `resources.cpus` as a CPU quota and `resources.memory_mb` as a memory limit;
//! - the GPUs assigned to the attempt as a device request;
//! - the job's `mounts` as bind mounts of the engine's host;
//! - an init process as PID 1 (the engine's `docker-init`), so SIGTERM reaches the command even
//!   when it is a shell, and its children are reaped;
//! - labels naming its workflow, execution, job and attempt.
//!
//! Its stdout and stderr go to the attempt's log as a process's do (same size limit), its exit
//! code decides the attempt, and a timeout or a stop sends SIGTERM, waits the grace period, sends
//! SIGKILL and removes the container. An image the engine lacks is pulled as `pull` says; one
//! that cannot be had fails the attempt with the image and the engine's reason in the log.

use std::collections::HashMap;
use std::time::Duration;

use bollard::Docker;
use bollard::errors::Error as EngineError;
use bollard::models::{ContainerCreateBody, DeviceRequest, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, KillContainerOptions, ListContainersOptions,
    LogsOptions, RemoveContainerOptions, WaitContainerOptions,
};
use futures::StreamExt as _;
use tokio::sync::watch;

use aiflow_translator::Pull;

use crate::exec::process::{note_seen, read_seen, seen_path};
use crate::executor::{LaunchSpec, LogWriter, Outcome, RunningJob, note, open_log};

/// Label keys every container of an attempt carries.
pub const LABEL_WORKFLOW: &str = "io.aiflow.workflow";
pub const LABEL_EXECUTION: &str = "io.aiflow.execution";
pub const LABEL_JOB: &str = "io.aiflow.job";
pub const LABEL_ATTEMPT: &str = "io.aiflow.attempt";
/// The attempt's log file, for a server that re-adopts the container.
pub const LABEL_LOG: &str = "io.aiflow.log";
/// `true` on the container of the attempt's last command (only such a container is re-adopted).
pub const LABEL_LAST: &str = "io.aiflow.last";
/// When the attempt's `timeout_s` runs out, in milliseconds since the Unix epoch, so that a
/// server that re-adopts the container still enforces it.
pub const LABEL_DEADLINE: &str = "io.aiflow.deadline";
/// The worker that runs the container (`aiflow worker --name`), which re-adopts it after its
/// own restart.
pub const LABEL_WORKER: &str = "io.aiflow.worker";
/// The cluster of the worker that started the container: workers of two clusters may share a
/// name and an engine, and each recovers only its own containers.
pub const LABEL_CLUSTER: &str = "io.aiflow.cluster";
/// The worker task of the attempt (`<row>-<attempt>`).
pub const LABEL_TASK: &str = "io.aiflow.task";
/// The GPU device ids assigned to the attempt, joined by commas, so that whoever re-adopts the
/// container counts them busy until it ends.
pub const LABEL_GPUS: &str = "io.aiflow.gpus";

/// What a container attempt needs beyond a process's [`LaunchSpec`].
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ContainerSpec {
    pub image: String,
    /// None: `if_missing`.
    pub pull: Option<Pull>,
    pub cpus: Option<f64>,
    pub memory_mb: Option<u64>,
    /// Device ids assigned to the attempt (see [`crate::exec::gpus`]).
    pub gpus: Vec<String>,
    /// More labels for its containers (a worker's [`LABEL_WORKER`] and [`LABEL_TASK`]).
    pub labels: std::collections::BTreeMap<String, String>,
    /// Bind mounts, `/host/path:/in/container[:ro|rw]` (checked by the translator), of the
    /// engine's host.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<String>,
}

/// Checks an engine network name for [`ContainerExecutor::network`]: a name as Docker accepts it
/// (`[a-zA-Z0-9][a-zA-Z0-9_.-]*`), which includes `host`, `bridge` and `none`.
pub fn check_network(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    if first_ok && chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c)) {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a network name (letters, digits, '_', '.', '-', starting with a letter or digit)"
        ))
    }
}

/// Runs attempts as containers on one engine.
#[derive(Debug, Clone)]
pub struct ContainerExecutor {
    docker: Docker,
    /// Time between SIGTERM and SIGKILL.
    pub grace: Duration,
    /// Largest size of one attempt's log (none: no limit).
    pub log_max_bytes: Option<u64>,
    /// The engine network the containers join (none: the host's network).
    pub network: Option<String>,
}

/// The engine could not be reached.
#[derive(Debug, thiserror::Error)]
#[error("cannot reach the Docker engine at {host}: {source}")]
pub struct ConnectError {
    pub host: String,
    #[source]
    pub source: EngineError,
}

impl ContainerExecutor {
    /// Connects to the engine at `host` (`unix:///path` or `tcp://host:port`), else at
    /// `DOCKER_HOST`, else at the local socket, and agrees on an API version with it.
    pub async fn connect(host: Option<&str>) -> Result<Self, ConnectError> {
        let name = host
            .map(str::to_string)
            .or_else(|| std::env::var("DOCKER_HOST").ok())
            .unwrap_or_else(|| "unix:///var/run/docker.sock".to_string());
        let err = |source| ConnectError {
            host: name.clone(),
            source,
        };
        let docker = Docker::connect_with_host(&name).map_err(err)?;
        // An older engine (Debian's 20.10 speaks API 1.41) refuses a newer client's version.
        let docker = docker.negotiate_version().await.map_err(err)?;
        docker.ping().await.map_err(err)?;
        tracing::info!(host = %name, version = ?docker.client_version(), "Docker engine reached");
        Ok(Self {
            docker,
            grace: Duration::from_secs(10),
            log_max_bytes: Some(crate::executor::DEFAULT_LOG_MAX_BYTES),
            network: None,
        })
    }

    /// The engine client, for inspection.
    #[must_use]
    pub fn docker(&self) -> &Docker {
        &self.docker
    }

    /// Starts the attempt in the background and returns at once, as the process executor does.
    pub async fn launch(
        &self,
        spec: LaunchSpec,
        container: ContainerSpec,
    ) -> std::io::Result<RunningJob> {
        let (handle, parts) = RunningJob::parts();
        let crate::exec::supervisor::Parts { pid, stop, done } = parts;
        let this = self.clone();
        tokio::spawn(async move {
            let outcome = match open_log(&spec.log_path).await {
                Ok(file) => {
                    let seen = seen_path(&spec.log_path);
                    let (log, writer) =
                        LogWriter::start(file, this.log_max_bytes, Some(seen.clone()));
                    let outcome = this.run_attempt(&spec, &container, &log, stop, &pid).await;
                    drop(log);
                    let _ = writer.await;
                    let _ = std::fs::remove_file(&seen);
                    outcome
                }
                Err(e) => Outcome::Failed {
                    message: format!("cannot open the log {}: {e}", spec.log_path.display()),
                },
            };
            let _ = done.send(outcome);
        });
        Ok(handle)
    }

    async fn run_attempt(
        &self,
        spec: &LaunchSpec,
        container: &ContainerSpec,
        log: &crate::executor::Log,
        mut stop: watch::Receiver<bool>,
        pid: &watch::Sender<Option<u32>>,
    ) -> Outcome {
        let deadline = spec
            .timeout
            .and_then(|t| tokio::time::Instant::now().checked_add(t));
        // The same moment on the wall clock, for the container's label.
        let deadline_ms = spec.timeout.and_then(|t| {
            let at = std::time::SystemTime::now().checked_add(t)?;
            let ms = at.duration_since(std::time::UNIX_EPOCH).ok()?.as_millis();
            u64::try_from(ms).ok()
        });
        if let Err(message) = self.ensure_image(container, log).await {
            note(log, format!("[aiflow] {message}\n").as_bytes());
            return Outcome::Failed { message };
        }
        // No command: one container running the image's own.
        let commands: Vec<Option<&Vec<String>>> = if spec.commands.is_empty() {
            vec![None]
        } else {
            spec.commands.iter().map(Some).collect()
        };
        let total = commands.len();
        for (i, argv) in commands.into_iter().enumerate() {
            let name = container_name(spec, i);
            note(
                log,
                format!(
                    "[aiflow] {} attempt {} command {}/{}: container {name} from {}: {}\n",
                    spec.job,
                    spec.attempt,
                    i + 1,
                    total,
                    container.image,
                    argv.map_or_else(|| "(the image's own command)".to_string(), |a| a.join(" "))
                )
                .as_bytes(),
            );
            let last = i + 1 == total;
            let id = match self
                .create(spec, container, argv, &name, last, deadline_ms)
                .await
            {
                Ok(id) => id,
                Err(e) => {
                    let message = format!(
                        "cannot create a container from {}: {}",
                        container.image,
                        reason(&e)
                    );
                    note(log, format!("[aiflow] {message}\n").as_bytes());
                    return Outcome::Failed { message };
                }
            };
            let ended = self.run_one(&id, log, &mut stop, deadline, pid, None).await;
            self.remove(&id).await;
            match ended {
                Ended::Exited(0) => {}
                Ended::Exited(code) => {
                    let message = format!("container {name} exited with code {code}");
                    note(log, format!("[aiflow] {message}\n").as_bytes());
                    return Outcome::Exited { code, message };
                }
                Ended::Error(message) => {
                    note(log, format!("[aiflow] {message}\n").as_bytes());
                    return Outcome::Failed { message };
                }
                Ended::Stopped(outcome) => return outcome,
            }
        }
        Outcome::Succeeded
    }

    /// Makes sure the engine has the image, pulling it as `pull` says.
    async fn ensure_image(
        &self,
        c: &ContainerSpec,
        log: &crate::executor::Log,
    ) -> Result<(), String> {
        let pull = c.pull.clone().unwrap_or(Pull::IfMissing);
        let present = match self.docker.inspect_image(&c.image).await {
            Ok(_) => true,
            Err(e) if status_of(&e) == Some(404) => false,
            Err(e) => {
                return Err(format!(
                    "cannot inspect the image {}: {}",
                    c.image,
                    reason(&e)
                ));
            }
        };
        let must_pull = match pull {
            Pull::Always => true,
            Pull::Never if !present => {
                return Err(format!(
                    "the image {} is not on the engine and pull is never",
                    c.image
                ));
            }
            _ => !present,
        };
        if !must_pull {
            return Ok(());
        }
        note(
            log,
            format!("[aiflow] pulling the image {}\n", c.image).as_bytes(),
        );
        let options = CreateImageOptions {
            from_image: Some(c.image.clone()),
            ..Default::default()
        };
        let mut progress = self.docker.create_image(Some(options), None, None);
        while let Some(item) = progress.next().await {
            match item {
                Ok(info) => {
                    if let Some(e) = info.error_detail.and_then(|d| d.message) {
                        return Err(format!("cannot pull the image {}: {e}", c.image));
                    }
                }
                Err(e) => {
                    return Err(format!("cannot pull the image {}: {}", c.image, reason(&e)));
                }
            }
        }
        Ok(())
    }

    async fn create(
        &self,
        spec: &LaunchSpec,
        c: &ContainerSpec,
        argv: Option<&Vec<String>>,
        name: &str,
        last: bool,
        deadline_ms: Option<u64>,
    ) -> Result<String, EngineError> {
        let mut labels = HashMap::from([
            (LABEL_WORKFLOW.to_string(), spec.workflow.clone()),
            (LABEL_EXECUTION.to_string(), spec.execution.clone()),
            (LABEL_JOB.to_string(), spec.job.clone()),
            (LABEL_ATTEMPT.to_string(), spec.attempt.to_string()),
            (
                LABEL_LOG.to_string(),
                spec.log_path.to_string_lossy().into_owned(),
            ),
            (LABEL_LAST.to_string(), last.to_string()),
        ]);
        if let Some(ms) = deadline_ms {
            labels.insert(LABEL_DEADLINE.to_string(), ms.to_string());
        }
        let mut host = host_config(c);
        if let Some(network) = &self.network {
            host.network_mode = Some(network.clone());
        }
        if !c.gpus.is_empty() {
            labels.insert(LABEL_GPUS.to_string(), c.gpus.join(","));
        }
        labels.extend(c.labels.clone());
        let body = ContainerCreateBody {
            image: Some(c.image.clone()),
            cmd: argv.cloned(),
            env: Some(spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
            working_dir: spec
                .working_dir
                .as_ref()
                .map(|d| d.to_string_lossy().into_owned()),
            labels: Some(labels),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            host_config: Some(host),
            ..Default::default()
        };
        let options = CreateContainerOptions {
            name: Some(name.to_string()),
            ..Default::default()
        };
        let created = match self
            .docker
            .create_container(Some(options.clone()), body.clone())
            .await
        {
            // A container of that name left by an attempt that ended without removing it (the
            // engine's own restart, say) is removed; a running one is never replaced.
            Err(e) if status_of(&e) == Some(409) && !self.running(name).await => {
                self.remove(name).await;
                self.docker.create_container(Some(options), body).await?
            }
            other => other?,
        };
        Ok(created.id)
    }

    async fn running(&self, name: &str) -> bool {
        self.docker
            .inspect_container(name, None)
            .await
            .ok()
            .and_then(|c| c.state)
            .and_then(|s| s.running)
            .unwrap_or(true)
    }

    /// Starts the container, copies its output to the log and waits for its end, a timeout or a
    /// stop.
    async fn run_one(
        &self,
        id: &str,
        log: &crate::executor::Log,
        stop: &mut watch::Receiver<bool>,
        deadline: Option<tokio::time::Instant>,
        pid: &watch::Sender<Option<u32>>,
        adopted_since: Option<Duration>,
    ) -> Ended {
        if adopted_since.is_none()
            && let Err(e) = self.docker.start_container(id, None).await
        {
            return Ended::Error(format!("cannot start the container: {}", reason(&e)));
        }
        if let Some(p) = self
            .docker
            .inspect_container(id, None)
            .await
            .ok()
            .and_then(|c| c.state)
            .and_then(|s| s.pid)
            .and_then(|p| u32::try_from(p).ok())
            .filter(|p| *p > 0)
        {
            let _ = pid.send(Some(p));
        } else {
            // It ended already; the attempt has started all the same.
            let _ = pid.send(Some(0));
        }
        let pump = self.pump_logs(id, log, adopted_since);
        let mut waiting = self.docker.wait_container(
            id,
            Some(WaitContainerOptions {
                condition: "not-running".into(),
            }),
        );
        let sleep_until_deadline = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(sleep_until_deadline);
        let ended = tokio::select! {
            r = waiting.next() => Ok(r),
            () = &mut sleep_until_deadline => Err(Outcome::TimedOut),
            _ = stop.wait_for(|s| *s) => Err(Outcome::Stopped),
        };
        let result = match ended {
            Ok(Some(Ok(r))) => Ended::Exited(r.status_code),
            Ok(Some(Err(EngineError::DockerContainerWaitError { code, .. }))) => {
                Ended::Exited(code)
            }
            Ok(Some(Err(e))) => {
                Ended::Error(format!("waiting for the container failed: {}", reason(&e)))
            }
            Ok(None) => Ended::Error("the engine ended the wait without an exit code".into()),
            Err(outcome) => {
                let why = if outcome == Outcome::TimedOut {
                    "timed out"
                } else {
                    "stop requested"
                };
                note(
                    log,
                    format!("[aiflow] {why}: SIGTERM to the container\n").as_bytes(),
                );
                self.kill(id, "SIGTERM").await;
                if tokio::time::timeout(self.grace, waiting.next())
                    .await
                    .is_err()
                {
                    note(
                        log,
                        b"[aiflow] still running after the grace period: SIGKILL\n",
                    );
                    self.kill(id, "SIGKILL").await;
                    let _ = tokio::time::timeout(Duration::from_secs(10), waiting.next()).await;
                }
                Ended::Stopped(outcome)
            }
        };
        // The log stream ends with the container; a stuck one is not waited for long.
        let abort = pump.abort_handle();
        if tokio::time::timeout(Duration::from_secs(2), pump)
            .await
            .is_err()
        {
            abort.abort();
        }
        result
    }

    /// Follows the container's stdout and stderr into the log.
    fn pump_logs(
        &self,
        id: &str,
        log: &crate::executor::Log,
        after: Option<Duration>,
    ) -> tokio::task::JoinHandle<()> {
        let mut stream = self.docker.logs(
            id,
            Some(LogsOptions {
                follow: true,
                stdout: true,
                stderr: true,
                since: after.map_or(0, |a| i32::try_from(a.as_secs()).unwrap_or(i32::MAX)),
                // Every line comes with the engine's timestamp: the last one written is recorded
                // beside the log, and a server that re-adopts the container starts after it.
                timestamps: true,
                ..Default::default()
            }),
        );
        let log = log.clone();
        tokio::spawn(async move {
            while let Some(Ok(chunk)) = stream.next().await {
                let bytes = chunk.into_bytes();
                match stamped(&bytes) {
                    Some((at, line)) => {
                        if after.is_none_or(|after| at > after) {
                            note(&log, line);
                            note_seen(&log, at);
                        }
                    }
                    None => note(&log, &bytes),
                }
            }
        })
    }

    async fn kill(&self, id: &str, signal: &str) {
        let options = KillContainerOptions {
            signal: signal.to_string(),
        };
        if let Err(e) = self.docker.kill_container(id, Some(options)).await
            && !matches!(status_of(&e), Some(404 | 409))
        {
            tracing::warn!(container = id, signal, error = %e, "cannot signal the container");
        }
    }

    /// Removes a container (killing it if it still runs); a missing one is fine.
    pub async fn remove(&self, id: &str) {
        let options = RemoveContainerOptions {
            force: true,
            ..Default::default()
        };
        if let Err(e) = self.docker.remove_container(id, Some(options)).await
            && status_of(&e) != Some(404)
        {
            tracing::warn!(container = id, error = %e, "cannot remove the container");
        }
    }

    /// Follows again the container of an attempt a previous server started: `None` when there is
    /// none to follow (any container of the attempt that cannot be followed, one of an earlier
    /// command of the job, say, is removed). Its output since the log was last written is
    /// appended to the log; its exit code decides the attempt; a stop stops it as usual, and
    /// the attempt's timeout still ends it at the moment the first server set.
    pub async fn adopt(&self, id: &super::AttemptId) -> Option<RunningJob> {
        self.adopt_holding(id).await.map(|(job, _)| job)
    }

    /// [`Self::adopt`], with the GPU device ids the followed container holds (from its device
    /// request, else its [`LABEL_GPUS`] label), which stay busy until it ends.
    pub async fn adopt_holding(&self, id: &super::AttemptId) -> Option<(RunningJob, Vec<String>)> {
        let found = self.containers_of_attempt(id).await.ok()?;
        let mut followable = None;
        let mut devices = Vec::new();
        for cid in found {
            // A container that cannot be inspected now is left alone (never removed for a
            // slow answer); one gone meanwhile is skipped.
            let mut inspected = None;
            for _ in 0..3 {
                match self.docker.inspect_container(&cid, None).await {
                    Ok(c) => {
                        inspected = Some(c);
                        break;
                    }
                    Err(e) if status_of(&e) == Some(404) => break,
                    Err(e) => {
                        tracing::warn!(container = %cid, error = %e, "cannot inspect a container to re-adopt; trying again");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                }
            }
            let Some(inspected) = inspected else {
                continue;
            };
            let held = devices_held(&inspected);
            let labels = Some(inspected)
                .and_then(|c| c.config)
                .and_then(|c| c.labels)
                .unwrap_or_default();
            match (labels.get(LABEL_LAST), labels.get(LABEL_LOG)) {
                (Some(last), Some(log)) if last == "true" && followable.is_none() => {
                    let deadline_ms = labels
                        .get(LABEL_DEADLINE)
                        .and_then(|ms| ms.parse::<u64>().ok());
                    devices = held;
                    followable = Some((cid, std::path::PathBuf::from(log), deadline_ms));
                }
                _ => {
                    tracing::warn!(container = %cid, "removing a container of an attempt that cannot be re-adopted");
                    self.remove(&cid).await;
                }
            }
        }
        let (cid, log_path, deadline_ms) = followable?;
        // Output after the last line written is new (its timestamp is recorded beside the log;
        // without that record, after the log's last change). The engine's `since` counts whole
        // seconds, so lines of that second are told apart by their timestamps.
        let seen = seen_path(&log_path);
        let since = read_seen(&log_path)
            .or_else(|| {
                std::fs::metadata(&log_path)
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            })
            .unwrap_or_default();
        let deadline = deadline_ms.map(|ms| {
            let left = Duration::from_millis(ms).saturating_sub(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default(),
            );
            tokio::time::Instant::now() + left
        });
        let (handle, parts) = RunningJob::parts();
        let crate::exec::supervisor::Parts {
            pid,
            mut stop,
            done,
        } = parts;
        let this = self.clone();
        tokio::spawn(async move {
            let outcome = match open_log(&log_path).await {
                Ok(file) => {
                    let (log, writer) =
                        LogWriter::start(file, this.log_max_bytes, Some(seen.clone()));
                    note(
                        &log,
                        format!("[aiflow] container {cid} re-adopted after a restart\n").as_bytes(),
                    );
                    let ended = this
                        .run_one(&cid, &log, &mut stop, deadline, &pid, Some(since))
                        .await;
                    this.remove(&cid).await;
                    let outcome = match ended {
                        Ended::Exited(0) => Outcome::Succeeded,
                        Ended::Exited(code) => Outcome::Exited {
                            code,
                            message: format!("container {cid} exited with code {code}"),
                        },
                        Ended::Error(message) => Outcome::Failed { message },
                        Ended::Stopped(outcome) => outcome,
                    };
                    if let Outcome::Failed { message } | Outcome::Exited { message, .. } = &outcome
                    {
                        note(&log, format!("[aiflow] {message}\n").as_bytes());
                    }
                    drop(log);
                    let _ = writer.await;
                    let _ = std::fs::remove_file(&seen);
                    outcome
                }
                Err(e) => {
                    this.remove(&cid).await;
                    Outcome::Failed {
                        message: format!("cannot open the log {}: {e}", log_path.display()),
                    }
                }
            };
            let _ = done.send(outcome);
        });
        Some((handle, devices))
    }

    /// The containers (any state) carrying the label `key=value`, with all their labels.
    pub async fn labelled(
        &self,
        key: &str,
        value: &str,
    ) -> Result<Vec<(String, HashMap<String, String>)>, EngineError> {
        self.listed(vec![format!("{key}={value}")]).await
    }

    /// The containers (any state) carrying the label `key`, whatever its value.
    pub async fn labelled_with(
        &self,
        key: &str,
    ) -> Result<Vec<(String, HashMap<String, String>)>, EngineError> {
        self.listed(vec![key.to_string()]).await
    }

    /// The containers (any state) carrying every label filter (`key` or `key=value`), with
    /// all their labels.
    async fn listed(
        &self,
        labels: Vec<String>,
    ) -> Result<Vec<(String, HashMap<String, String>)>, EngineError> {
        let filters = HashMap::from([("label".to_string(), labels)]);
        let list = self
            .docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(filters),
                ..Default::default()
            }))
            .await?;
        Ok(list
            .into_iter()
            .filter_map(|c| Some((c.id?, c.labels.unwrap_or_default())))
            .collect())
    }

    /// The ids of the containers labelled with this attempt (all states).
    pub async fn containers_of_attempt(
        &self,
        id: &super::AttemptId,
    ) -> Result<Vec<String>, EngineError> {
        let found = self
            .listed(vec![
                format!("{LABEL_EXECUTION}={}", id.execution),
                format!("{LABEL_JOB}={}", id.job),
                format!("{LABEL_ATTEMPT}={}", id.attempt),
            ])
            .await?;
        Ok(found.into_iter().map(|(id, _)| id).collect())
    }

    /// The ids of the containers labelled with this execution (all states).
    pub async fn containers_of(&self, execution: &str) -> Result<Vec<String>, EngineError> {
        let found = self.labelled(LABEL_EXECUTION, execution).await?;
        Ok(found.into_iter().map(|(id, _)| id).collect())
    }
}

/// A timestamped log line (`2026-01-02T03:04:05.123456789Z text`) split into its timestamp
/// (since the Unix epoch) and its text; `None` when it has no readable timestamp.
fn stamped(line: &[u8]) -> Option<(Duration, &[u8])> {
    let space = line.iter().position(|b| *b == b' ')?;
    let at = std::str::from_utf8(&line[..space])
        .ok()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())?;
    let at = Duration::new(
        u64::try_from(at.timestamp()).ok()?,
        at.timestamp_subsec_nanos(),
    );
    Some((at, &line[space + 1..]))
}

/// The GPU device ids an inspected container holds: those of its device request, else those of
/// its [`LABEL_GPUS`] label.
fn devices_held(c: &bollard::models::ContainerInspectResponse) -> Vec<String> {
    let requested: Vec<String> = c
        .host_config
        .as_ref()
        .and_then(|h| h.device_requests.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|d| d.device_ids.clone())
        .flatten()
        .collect();
    if !requested.is_empty() {
        return requested;
    }
    c.config
        .as_ref()
        .and_then(|c| c.labels.as_ref())
        .and_then(|l| l.get(LABEL_GPUS))
        .map(|g| {
            g.split(',')
                .map(str::trim)
                .filter(|d| !d.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// How one container ended.
enum Ended {
    Exited(i64),
    Error(String),
    Stopped(Outcome),
}

fn host_config(c: &ContainerSpec) -> HostConfig {
    HostConfig {
        // The container shares the host's network: AIFLOW_URL (often 127.0.0.1) works as is.
        network_mode: Some("host".into()),
        nano_cpus: c.cpus.map(|cpus| (cpus * 1e9).round() as i64),
        memory: c
            .memory_mb
            .map(|mb| i64::try_from(mb.saturating_mul(1024 * 1024)).unwrap_or(i64::MAX)),
        device_requests: (!c.gpus.is_empty()).then(|| {
            vec![DeviceRequest {
                driver: Some("nvidia".into()),
                device_ids: Some(c.gpus.clone()),
                capabilities: Some(vec![vec!["gpu".into()]]),
                ..Default::default()
            }]
        }),
        // Bind mounts in the engine's short syntax, as the job wrote them.
        binds: (!c.mounts.is_empty()).then(|| c.mounts.clone()),
        // PID 1 is the engine's init: a shell command stops on SIGTERM instead of ignoring it.
        init: Some(true),
        ..Default::default()
    }
}

/// `aiflow-<execution>-<job>-<attempt>[-<command>]`, in the characters an engine allows.
#[must_use]
pub fn container_name(spec: &LaunchSpec, command: usize) -> String {
    let raw = if command == 0 {
        format!("aiflow-{}-{}-{}", spec.execution, spec.job, spec.attempt)
    } else {
        format!(
            "aiflow-{}-{}-{}-{}",
            spec.execution,
            spec.job,
            spec.attempt,
            command + 1
        )
    };
    raw.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_.-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The HTTP status of an engine error, when it answered with one.
fn status_of(e: &EngineError) -> Option<u16> {
    match e {
        EngineError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

/// The engine's own words for an error.
fn reason(e: &EngineError) -> String {
    match e {
        EngineError::DockerResponseServerError { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_gpus_and_network_become_the_host_config() {
        let c = ContainerSpec {
            image: "x".into(),
            cpus: Some(1.5),
            memory_mb: Some(256),
            gpus: vec!["1".into(), "3".into()],
            mounts: vec!["/srv/data:/data".into(), "/opt/m:/models:ro".into()],
            ..Default::default()
        };
        let h = host_config(&c);
        assert_eq!(h.network_mode.as_deref(), Some("host"));
        assert_eq!(h.init, Some(true));
        assert_eq!(
            h.binds.as_deref(),
            Some(
                &[
                    "/srv/data:/data".to_string(),
                    "/opt/m:/models:ro".to_string()
                ][..]
            )
        );
        assert_eq!(h.nano_cpus, Some(1_500_000_000));
        assert_eq!(h.memory, Some(256 * 1024 * 1024));
        let d = &h.device_requests.unwrap()[0];
        assert_eq!(
            d.device_ids.as_deref(),
            Some(&["1".to_string(), "3".to_string()][..])
        );
        assert_eq!(d.capabilities, Some(vec![vec!["gpu".to_string()]]));
        let none = host_config(&ContainerSpec::default());
        assert!(
            none.nano_cpus.is_none()
                && none.memory.is_none()
                && none.device_requests.is_none()
                && none.binds.is_none()
        );
    }

    #[test]
    fn network_names_are_checked() {
        for ok in ["aiflow", "aiflow-ci", "my_net.1", "host", "none", "0net"] {
            assert_eq!(check_network(ok), Ok(()), "{ok}");
        }
        for bad in ["", "-net", "a b", "net/1", "container:abc"] {
            let e = check_network(bad).unwrap_err();
            assert!(e.contains("is not a network name"), "{bad}: {e}");
        }
    }

    #[test]
    fn engine_log_lines_split_into_timestamp_and_text() {
        let (at, text) = stamped(b"2025-12-29T09:20:00.400000001Z old\n").unwrap();
        assert_eq!(at, Duration::new(1_767_000_000, 400_000_001));
        assert_eq!(text, b"old\n");
        assert_eq!(stamped(b"no stamp\n"), None);
        assert_eq!(stamped(b"nospace"), None);
    }

    #[tokio::test]
    async fn the_last_written_timestamp_is_recorded_beside_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("job.log");
        let file = open_log(&path).await.unwrap();
        let (log, writer) = LogWriter::start(file, None, Some(seen_path(&path)));
        assert_eq!(read_seen(&path), None);
        note(&log, b"one\n");
        note_seen(&log, Duration::new(1_767_000_000, 5));
        note(&log, b"two\n");
        note_seen(&log, Duration::new(1_767_000_001, 123_456_789));
        drop(log);
        writer.await.unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "one\ntwo\n");
        assert_eq!(
            read_seen(&path),
            Some(Duration::new(1_767_000_001, 123_456_789))
        );
    }

    #[test]
    fn container_names_use_allowed_characters() {
        let spec = LaunchSpec {
            workflow: "wf".into(),
            execution: "e/1".into(),
            job: "train.v2".into(),
            attempt: 3,
            commands: vec![],
            env: Default::default(),
            working_dir: None,
            timeout: None,
            log_path: "/dev/null".into(),
        };
        assert_eq!(container_name(&spec, 0), "aiflow-e_1-train.v2-3");
        assert_eq!(container_name(&spec, 1), "aiflow-e_1-train.v2-3-2");
    }
}
