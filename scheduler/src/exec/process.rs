//! The local process executor: runs a job attempt's commands (argv, no shell unless asked) one
//! after another in their own process group, with the job's environment, stdout and stderr into
//! one log file per attempt; kills the whole group on timeout or stop (SIGTERM, then SIGKILL after
//! a grace period). Output passes through the executor, which keeps each log under its size
//! limit: past it, the oldest part is dropped and a marker line says how much.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use std::io::Write as _;
use tokio::process::Command;
use tokio::sync::{oneshot, watch};

/// Everything needed to run one attempt of one job.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct LaunchSpec {
    pub workflow: String,
    pub execution: String,
    pub job: String,
    pub attempt: u32,
    /// Commands run in order; the attempt fails at the first that fails.
    pub commands: Vec<Vec<String>>,
    /// The job's own environment plus the `AIFLOW_*` variables (see INTERFACE.md).
    pub env: BTreeMap<String, String>,
    pub working_dir: Option<PathBuf>,
    pub timeout: Option<Duration>,
    /// Where stdout and stderr go (appended).
    pub log_path: PathBuf,
}

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Outcome {
    Succeeded,
    /// A command died of a signal, or could not start, or the attempt failed otherwise.
    Failed {
        message: String,
    },
    /// A command exited with a non-zero code: the attempt failed, and the code is stored on
    /// its job execution (`exit_code`).
    Exited {
        code: i64,
        message: String,
    },
    /// The attempt ran past its timeout and was killed.
    TimedOut,
    /// Stopped on request.
    Stopped,
}

impl Outcome {
    /// The exit code of the attempt's command: 0 when it succeeded, its code when it exited
    /// non-zero, none when it timed out, was stopped, died of a signal or never started.
    #[must_use]
    pub fn exit_code(&self) -> Option<i64> {
        match self {
            Self::Succeeded => Some(0),
            Self::Exited { code, .. } => Some(*code),
            Self::Failed { .. } | Self::TimedOut | Self::Stopped => None,
        }
    }
}

/// A running attempt: stop it, or wait for its end.
#[derive(Debug)]
pub struct RunningJob {
    /// Process id of the command running now (also its process group id).
    pid: watch::Receiver<Option<u32>>,
    stop: watch::Sender<bool>,
    done: oneshot::Receiver<Outcome>,
}

impl RunningJob {
    /// A handle, and the executor's side of it.
    pub(crate) fn parts() -> (RunningJob, super::supervisor::Parts) {
        let (stop_tx, stop_rx) = watch::channel(false);
        let (done_tx, done_rx) = oneshot::channel();
        let (pid_tx, pid_rx) = watch::channel(None);
        (
            RunningJob {
                pid: pid_rx,
                stop: stop_tx,
                done: done_rx,
            },
            super::supervisor::Parts {
                pid: pid_tx,
                stop: stop_rx,
                done: done_tx,
            },
        )
    }

    /// Process id of the command running now (or last), once one has started.
    #[must_use]
    pub fn pid(&self) -> Option<u32> {
        *self.pid.borrow()
    }

    /// Waits until the first process is spawned; `false` when none could be.
    pub async fn started(&mut self) -> bool {
        self.pid.wait_for(Option::is_some).await.is_ok()
    }

    /// Asks the attempt to stop (SIGTERM to its process group, SIGKILL after the grace period).
    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }

    /// A handle that can stop the attempt from elsewhere.
    #[must_use]
    pub fn stopper(&self) -> watch::Sender<bool> {
        self.stop.clone()
    }

    /// Waits for the attempt to end.
    pub async fn wait(self) -> Outcome {
        self.done.await.unwrap_or(Outcome::Failed {
            message: "the executor task ended without an outcome".into(),
        })
    }
}

/// Runs jobs as local processes.
#[derive(Debug, Clone)]
pub struct LocalExecutor {
    /// Time between SIGTERM and SIGKILL.
    pub grace: Duration,
    /// Largest size of one attempt's log; past it the oldest half is dropped (none: no limit).
    pub log_max_bytes: Option<u64>,
    /// Run each attempt under a supervisor process of its own, so it outlives this process
    /// (none: attempts are tasks of this process and end with it).
    pub supervisor: Option<super::supervisor::Supervisor>,
}

/// Default of [`LocalExecutor::log_max_bytes`]: 64 MiB.
pub const DEFAULT_LOG_MAX_BYTES: u64 = 64 * 1024 * 1024;

impl Default for LocalExecutor {
    fn default() -> Self {
        Self {
            grace: Duration::from_secs(10),
            log_max_bytes: Some(DEFAULT_LOG_MAX_BYTES),
            supervisor: None,
        }
    }
}

impl LocalExecutor {
    /// Starts the attempt in the background and returns at once: the log file is opened and
    /// the process spawned by the attempt's own task, so a caller launching many jobs never
    /// waits for fork/exec. A log that cannot be opened, or a command that cannot start, fails
    /// the attempt with the reason (in the log when there is one).
    pub async fn launch(&self, spec: LaunchSpec) -> std::io::Result<RunningJob> {
        self.launch_limited(spec, None).await
    }

    /// [`LocalExecutor::launch`], with the job's CPU and memory limits enforced where the host
    /// allows it (a cgroup of its own for the attempt, see [`super::cgroup`]); where it does
    /// not, the attempt runs anyway and its log says why.
    pub async fn launch_limited(
        &self,
        spec: LaunchSpec,
        limited: Option<Limited>,
    ) -> std::io::Result<RunningJob> {
        let (handle, parts) = RunningJob::parts();
        let super::supervisor::Parts {
            pid: pid_tx,
            stop: stop_rx,
            done: done_tx,
        } = parts;
        let grace = self.grace;
        let max = self.log_max_bytes;
        tokio::spawn(async move {
            let outcome = match open_log(&spec.log_path).await {
                Ok(file) => {
                    let (log, writer) = LogWriter::start(file, max, None);
                    let (scope, refused) = match limited {
                        Some(limited) => (limit(&spec, &log, &limited).await, limited.refused),
                        None => (None, warn_refused as Refused),
                    };
                    let outcome =
                        run_attempt(spec, log, stop_rx, grace, pid_tx, scope.as_ref(), refused)
                            .await;
                    if let Some(scope) = scope {
                        let _ = tokio::task::spawn_blocking(move || scope.remove()).await;
                    }
                    let _ = writer.await;
                    outcome
                }
                Err(e) => Outcome::Failed {
                    message: format!("cannot open the log {}: {e}", spec.log_path.display()),
                },
            };
            let _ = done_tx.send(outcome);
        });
        Ok(handle)
    }
}

/// Told why an attempt's limits are not enforced (its log says it too).
pub type Refused = fn(&LaunchSpec, &str);

/// An attempt's CPU and memory limits, and where to make its cgroup.
#[derive(Debug, Clone)]
pub struct Limited {
    pub limits: super::cgroup::Limits,
    /// The cgroup hierarchy (none: this machine's, [`super::cgroup::Host::system`]).
    pub host: Option<super::cgroup::Host>,
    /// Told why, when the limits cannot be enforced.
    pub refused: Refused,
    /// This process enters the attempt's cgroup to spawn each command and leaves it after, so
    /// all of the job is born inside (a supervisor: alone with its attempt, nothing else of it
    /// spawns meanwhile); otherwise each command's process is moved in right after its spawn.
    pub enter: bool,
}

impl Limited {
    /// On this machine's hierarchy; a refusal goes to this process's log.
    #[must_use]
    pub fn system(limits: super::cgroup::Limits) -> Limited {
        Limited {
            limits,
            host: None,
            refused: warn_refused,
            enter: false,
        }
    }
}

/// A refusal in this process's log (the server's, or a worker's).
pub fn warn_refused(spec: &LaunchSpec, reason: &str) {
    tracing::warn!(
        workflow = %spec.workflow,
        execution = %spec.execution,
        job = %spec.job,
        attempt = spec.attempt,
        reason,
        "limits not enforced: the job runs without its CPU and memory limits"
    );
}

/// The attempt's cgroup, or none (the log and `refused` say why).
async fn limit(spec: &LaunchSpec, log: &Log, limited: &Limited) -> Option<super::cgroup::Scope> {
    let name = super::cgroup::name_for(&spec.execution, &spec.job, spec.attempt);
    let (limits, host, enter) = (limited.limits, limited.host.clone(), limited.enter);
    let made = tokio::task::spawn_blocking(move || {
        host.unwrap_or_else(super::cgroup::Host::system)
            .create(&name, &limits, enter)
    })
    .await
    .unwrap_or_else(|e| Err(format!("making the cgroup failed: {e}")));
    match made {
        Ok(scope) => {
            note(
                log,
                format!(
                    "[aiflow] limits enforced by the cgroup {}: {}\n",
                    scope.dir().display(),
                    limited.limits
                )
                .as_bytes(),
            );
            Some(scope)
        }
        Err(reason) => {
            note(
                log,
                format!("[aiflow] limits not enforced: {reason}\n").as_bytes(),
            );
            (limited.refused)(spec, &reason);
            None
        }
    }
}

pub(crate) async fn open_log(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    if let Some(dir) = path.parent() {
        tokio::fs::create_dir_all(dir).await?;
    }
    let file = tokio::fs::OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .mode(0o600) // a job's output may hold secrets: its owner only
        .open(path)
        .await?;
    Ok(file.into_std().await)
}

/// Where an attempt's output and the executor's own lines go: a channel to the task that owns
/// the log file, so lines keep their order and the file its size limit.
#[derive(Debug, Clone)]
pub(crate) struct Log(tokio::sync::mpsc::UnboundedSender<Entry>);

/// What goes down a [`Log`]'s channel.
#[derive(Debug)]
pub(crate) enum Entry {
    /// Output to append.
    Bytes(Vec<u8>),
    /// The engine's timestamp of the output appended last (since the Unix epoch), recorded in
    /// the log's `.seen` file once that output is written: a server that re-adopts the
    /// container copies only what comes after it.
    Seen(Duration),
}

/// The log file of one attempt and its size.
pub(crate) struct LogWriter {
    file: std::fs::File,
    size: u64,
    max: Option<u64>,
    seen: Option<Seen>,
}

/// The `.seen` file beside a log: the timestamp of the last output written, fixed width, so each
/// record overwrites the one before in place.
struct Seen {
    path: std::path::PathBuf,
    file: Option<std::fs::File>,
}

impl Seen {
    fn record(&mut self, at: Duration) {
        use std::os::unix::fs::{FileExt, OpenOptionsExt};
        if self.file.is_none() {
            self.file = std::fs::OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(false)
                .mode(0o600)
                .open(&self.path)
                .map_err(|e| tracing::warn!(path = %self.path.display(), error = %e, "cannot record the log's last timestamp"))
                .ok();
        }
        if let Some(file) = &self.file {
            let text = format!("{:020}.{:09}\n", at.as_secs(), at.subsec_nanos());
            let _ = file.write_all_at(text.as_bytes(), 0);
        }
    }
}

/// Where the timestamp of a log's last written output is kept (see [`Entry::Seen`]).
pub(crate) fn seen_path(log: &std::path::Path) -> std::path::PathBuf {
    let mut name = log.as_os_str().to_owned();
    name.push(".seen");
    std::path::PathBuf::from(name)
}

/// The timestamp recorded by [`Entry::Seen`], if any.
pub(crate) fn read_seen(log: &std::path::Path) -> Option<Duration> {
    let text = std::fs::read_to_string(seen_path(log)).ok()?;
    let (secs, nanos) = text.trim().split_once('.')?;
    Some(Duration::new(secs.parse().ok()?, nanos.parse().ok()?))
}

impl LogWriter {
    /// Starts the task that writes the log; it ends when every [`Log`] is dropped.
    /// `seen` names the file that keeps the last [`Entry::Seen`] timestamp.
    pub(crate) fn start(
        file: std::fs::File,
        max: Option<u64>,
        seen: Option<std::path::PathBuf>,
    ) -> (Log, tokio::task::JoinHandle<()>) {
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        let seen = seen.map(|path| Seen { path, file: None });
        let mut writer = LogWriter {
            file,
            size,
            max,
            seen,
        };
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Entry>();
        let task = tokio::spawn(async move {
            while let Some(entry) = rx.recv().await {
                let bytes = match entry {
                    Entry::Bytes(bytes) => bytes,
                    Entry::Seen(at) => {
                        if let Some(seen) = writer.seen.as_mut() {
                            seen.record(at);
                        }
                        continue;
                    }
                };
                if writer.append(&bytes) {
                    // Rotating reads and rewrites up to half the limit: off the runtime.
                    writer = match tokio::task::spawn_blocking(move || {
                        writer.rotate();
                        writer
                    })
                    .await
                    {
                        Ok(w) => w,
                        Err(_) => return,
                    };
                }
            }
        });
        (Log(tx), task)
    }

    /// Appends; `true` when the log is now over its limit.
    fn append(&mut self, bytes: &[u8]) -> bool {
        if self.file.write_all(bytes).is_ok() {
            self.size += bytes.len() as u64;
        }
        self.max.is_some_and(|m| self.size > m)
    }

    /// Keeps the newest part (at most half the limit, from a line start) after a marker line
    /// saying how much was dropped.
    fn rotate(&mut self) {
        use std::os::unix::fs::FileExt;
        let Some(max) = self.max else { return };
        let keep = (max / 2).min(self.size);
        let from = self.size - keep;
        let mut tail = vec![0u8; keep as usize];
        if self.file.read_exact_at(&mut tail, from).is_err() {
            return;
        }
        // Start at a line boundary when there is one in the kept part.
        let start = if from == 0 {
            0
        } else {
            tail.iter().position(|b| *b == b'\n').map_or(0, |p| p + 1)
        };
        let dropped = from + start as u64;
        let marker = format!(
            "[aiflow] log over its limit of {max} bytes: the oldest {dropped} bytes were dropped\n"
        );
        if self.file.set_len(0).is_err() {
            return;
        }
        // The file is opened for appending: writes go to its (new) end.
        let _ = self.file.write_all(marker.as_bytes());
        let _ = self.file.write_all(&tail[start..]);
        self.size = (marker.len() + tail.len() - start) as u64;
    }
}

/// Copies one output pipe of a command into the log.
fn pump(
    pipe: Option<impl tokio::io::AsyncRead + Unpin + Send + 'static>,
    log: &Log,
) -> Option<tokio::task::JoinHandle<()>> {
    let mut pipe = pipe?;
    let log = log.clone();
    Some(tokio::spawn(async move {
        use tokio::io::AsyncReadExt;
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match pipe.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if log.0.send(Entry::Bytes(buf[..n].to_vec())).is_err() {
                        break;
                    }
                }
            }
        }
    }))
}

/// Waits for a command's output to be copied (its pipes close when its process group is gone;
/// a process that left the group and holds them open is not waited for long).
async fn drain(pumps: Vec<tokio::task::JoinHandle<()>>) {
    for p in pumps {
        let abort = p.abort_handle();
        if tokio::time::timeout(Duration::from_secs(2), p)
            .await
            .is_err()
        {
            abort.abort();
        }
    }
}

async fn run_attempt(
    spec: LaunchSpec,
    log: Log,
    mut stop: watch::Receiver<bool>,
    grace: Duration,
    pid_tx: watch::Sender<Option<u32>>,
    scope: Option<&super::cgroup::Scope>,
    refused: Refused,
) -> Outcome {
    // Each command goes into the attempt's cgroup, while that works.
    let mut scope = scope;
    // A timeout too far to reach (a stored document from before its maximum) is none.
    let deadline = spec
        .timeout
        .and_then(|t| tokio::time::Instant::now().checked_add(t));
    for (i, argv) in spec.commands.iter().enumerate() {
        let header = format!(
            "[aiflow] {} attempt {} command {}/{}: {}\n",
            spec.job,
            spec.attempt,
            i + 1,
            spec.commands.len(),
            shell_words(argv)
        );
        note(&log, header.as_bytes());
        let Some((program, args)) = argv.split_first() else {
            continue;
        };
        // Looked up here in the job's own PATH: with a program to look up and a PATH of its own,
        // the standard library would fork this whole process instead of using posix_spawn.
        let mut cmd = Command::new(resolve_program(
            program,
            &spec.env,
            spec.working_dir.as_deref(),
        ));
        cmd.arg0(program);
        // The environment is the spec's alone (built by `jobenv`), never this process's.
        cmd.args(args)
            .env_clear()
            .envs(&spec.env)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        if let Some(dir) = &spec.working_dir {
            cmd.current_dir(dir);
        }
        // Under a supervisor, the job is born in its cgroup: the supervisor goes in to spawn it
        // and back out after.
        let inside = match scope {
            Some(cgroup) if cgroup.born_inside() => match cgroup.enter() {
                Ok(()) => true,
                Err(e) => {
                    let reason = cgroup.unplaced(std::process::id(), &e);
                    note(
                        &log,
                        format!("[aiflow] limits not enforced: {reason}\n").as_bytes(),
                    );
                    refused(&spec, &reason);
                    scope = None;
                    false
                }
            },
            _ => false,
        };
        let spawned = cmd.spawn();
        if inside
            && let Some(cgroup) = scope
            && let Err(e) = cgroup.leave()
        {
            tracing::warn!(cgroup = %cgroup.dir().display(), error = %e, "cannot leave the job's cgroup after its spawn");
        }
        let mut child = match spawned {
            Ok(c) => c,
            Err(e) => {
                let message = format!("cannot start {program:?}: {e}");
                note(&log, format!("[aiflow] {message}\n").as_bytes());
                return Outcome::Failed { message };
            }
        };
        // A job run in this process enters its cgroup now (under a supervisor it was born
        // there); what it started in between stays out.
        if let Some(cgroup) = scope
            && !cgroup.born_inside()
            && let Some(pid) = child.id()
            && let Err(e) = cgroup.place(pid)
            // A command that already ended has nothing left to limit.
            && e.raw_os_error() != Some(nix::errno::Errno::ESRCH as i32)
        {
            let reason = cgroup.unplaced(pid, &e);
            note(
                &log,
                format!("[aiflow] limits not enforced: {reason}\n").as_bytes(),
            );
            refused(&spec, &reason);
            scope = None;
        }
        let pumps: Vec<_> = [
            pump(child.stdout.take(), &log),
            pump(child.stderr.take(), &log),
        ]
        .into_iter()
        .flatten()
        .collect();
        let pid = child.id();
        let _ = pid_tx.send(pid);
        let pgid = pid.map(|p| Pid::from_raw(p as i32));
        let sleep_until_deadline = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(sleep_until_deadline);
        let ended = tokio::select! {
            status = child.wait() => Ok(status),
            _ = &mut sleep_until_deadline => Err(Outcome::TimedOut),
            _ = stop.wait_for(|s| *s) => Err(Outcome::Stopped),
        };
        match ended {
            Ok(Ok(status)) if status.success() => {}
            Ok(Ok(status)) => {
                let code = status.code();
                let message = match code {
                    Some(code) => format!("{program:?} exited with code {code}"),
                    None => format!("{program:?} was killed by a signal"),
                };
                kill_group(pgid, Signal::SIGKILL);
                drain(pumps).await;
                note(&log, format!("[aiflow] {message}\n").as_bytes());
                return match code {
                    Some(code) => Outcome::Exited {
                        code: i64::from(code),
                        message,
                    },
                    None => Outcome::Failed { message },
                };
            }
            Ok(Err(e)) => {
                pumps.iter().for_each(tokio::task::JoinHandle::abort);
                return Outcome::Failed {
                    message: format!("waiting for {program:?} failed: {e}"),
                };
            }
            Err(outcome) => {
                let why = if outcome == Outcome::TimedOut {
                    "timed out"
                } else {
                    "stop requested"
                };
                note(
                    &log,
                    format!("[aiflow] {why}: SIGTERM to the process group\n").as_bytes(),
                );
                kill_group(pgid, Signal::SIGTERM);
                if tokio::time::timeout(grace, child.wait()).await.is_err() {
                    note(
                        &log,
                        b"[aiflow] still running after the grace period: SIGKILL\n",
                    );
                }
                // Children that ignored SIGTERM, or outlived their parent, go too.
                kill_group(pgid, Signal::SIGKILL);
                let _ = child.wait().await;
                drain(pumps).await;
                return outcome;
            }
        }
        // Children left behind by a command that exited are not part of the job any more.
        kill_group(pgid, Signal::SIGKILL);
        drain(pumps).await;
    }
    Outcome::Succeeded
}

/// Appends one line of the executor's own to the attempt's log.
pub(crate) fn note(log: &Log, bytes: &[u8]) {
    let _ = log.0.send(Entry::Bytes(bytes.to_vec()));
}

/// Records the engine's timestamp of the output noted last (see [`Entry::Seen`]).
pub(crate) fn note_seen(log: &Log, at: Duration) {
    let _ = log.0.send(Entry::Seen(at));
}

fn kill_group(pgid: Option<Pid>, signal: Signal) {
    if let Some(pgid) = pgid {
        // ESRCH (group already gone) is the usual, harmless answer.
        let _ = killpg(pgid, signal);
    }
}

/// The file `program` names, looked up as `execvp` would in the job's `PATH` (this process's
/// when the job has none), relative folders from the job's working folder. A name with a `/`,
/// or one found nowhere, is left as it is (the spawn then says why it cannot start).
fn resolve_program(
    program: &str,
    env: &BTreeMap<String, String>,
    working_dir: Option<&std::path::Path>,
) -> PathBuf {
    use std::os::unix::fs::PermissionsExt as _;
    if program.is_empty() || program.contains('/') {
        return PathBuf::from(program);
    }
    let path = env
        .get("PATH")
        .cloned()
        .or_else(|| std::env::var("PATH").ok())
        .unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    for dir in path.split(':') {
        let dir = std::path::Path::new(if dir.is_empty() { "." } else { dir });
        let candidate = match working_dir {
            Some(w) if dir.is_relative() => w.join(dir).join(program),
            _ => dir.join(program),
        };
        if std::fs::metadata(&candidate)
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        {
            return candidate;
        }
    }
    PathBuf::from(program)
}

fn shell_words(argv: &[String]) -> String {
    argv.iter()
        .map(|a| {
            if a.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./=:,".contains(c))
                && !a.is_empty()
            {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn programs_are_looked_up_in_the_jobs_own_path() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let (first, second) = (dir.path().join("first"), dir.path().join("second"));
        std::fs::create_dir_all(&first).unwrap();
        std::fs::create_dir_all(&second).unwrap();
        // Not executable in the first folder: skipped, as execvp skips it.
        std::fs::write(first.join("tool"), "#!/bin/sh\n").unwrap();
        std::fs::write(second.join("tool"), "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(second.join("tool"), std::fs::Permissions::from_mode(0o755))
            .unwrap();
        let env = BTreeMap::from([(
            "PATH".to_string(),
            format!("{}:{}", first.display(), second.display()),
        )]);
        assert_eq!(resolve_program("tool", &env, None), second.join("tool"));
        // Relative folders of PATH count from the job's working folder.
        let env = BTreeMap::from([("PATH".to_string(), "second".to_string())]);
        assert_eq!(
            resolve_program("tool", &env, Some(dir.path())),
            dir.path().join("second").join("tool")
        );
        // Names with a slash, and names found nowhere, are left to the spawn.
        assert_eq!(
            resolve_program("./tool", &env, None),
            PathBuf::from("./tool")
        );
        assert_eq!(
            resolve_program("absent-tool", &env, None),
            PathBuf::from("absent-tool")
        );
    }

    fn spec(dir: &std::path::Path, commands: Vec<Vec<&str>>) -> LaunchSpec {
        LaunchSpec {
            workflow: "wf".into(),
            execution: "e1".into(),
            job: "j".into(),
            attempt: 1,
            commands: commands
                .into_iter()
                .map(|c| c.into_iter().map(String::from).collect())
                .collect(),
            env: [("AIFLOW_JOB".to_string(), "j".to_string())].into(),
            working_dir: Some(dir.to_path_buf()),
            timeout: None,
            log_path: dir.join("logs/j-1.log"),
        }
    }

    fn tempdir() -> PathBuf {
        let d = std::env::temp_dir()
            .join(format!("aiflow-exec-{}", std::process::id()))
            .join(
                format!("{:?}", std::time::Instant::now()).replace([' ', '{', '}', ':', ','], ""),
            );
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[tokio::test]
    async fn commands_run_in_order_with_env_and_log() {
        let dir = tempdir();
        let s = spec(
            &dir,
            vec![
                vec!["sh", "-c", "echo first $AIFLOW_JOB; echo oops >&2"],
                vec!["sh", "-c", "echo second; pwd"],
            ],
        );
        let log = s.log_path.clone();
        let out = LocalExecutor::default()
            .launch(s)
            .await
            .unwrap()
            .wait()
            .await;
        assert_eq!(out, Outcome::Succeeded);
        let text = std::fs::read_to_string(log).unwrap();
        let first = text.find("first j").expect("first output");
        let second = text.find("second").expect("second output");
        assert!(first < second, "{text}");
        assert!(text.contains("oops"), "stderr goes to the same log: {text}");
        assert!(
            text.contains(dir.to_str().unwrap()),
            "runs in working dir: {text}"
        );
    }

    #[tokio::test]
    async fn a_log_over_its_limit_keeps_the_newest_part_after_a_marker() {
        let dir = tempdir();
        // 4000 numbered lines of 12 bytes (48 000 bytes) into a log limited to 10 000 bytes.
        let s = spec(
            &dir,
            vec![vec![
                "sh",
                "-c",
                "i=0; while [ $i -lt 4000 ]; do printf 'line %06d\\n' $i; i=$((i+1)); done; echo done >&2",
            ]],
        );
        let log = s.log_path.clone();
        let exec = LocalExecutor {
            log_max_bytes: Some(10_000),
            ..LocalExecutor::default()
        };
        let out = exec.launch(s).await.unwrap().wait().await;
        assert_eq!(out, Outcome::Succeeded);
        let text = std::fs::read_to_string(log).unwrap();
        assert!(
            text.len() <= 10_000,
            "log kept under its limit: {} bytes",
            text.len()
        );
        let first = text.lines().next().unwrap();
        assert!(
            first.starts_with("[aiflow] log over its limit of 10000 bytes: the oldest"),
            "{first}"
        );
        assert!(text.contains("line 003999\n"), "the newest output is kept");
        assert!(
            !text.contains("line 000000"),
            "the oldest output is dropped"
        );
        assert!(text.ends_with("done\n"), "{}", &text[text.len() - 40..]);
        // Whole lines only after the marker, consecutive to the end.
        let numbers: Vec<u32> = text
            .lines()
            .filter_map(|l| l.strip_prefix("line "))
            .map(|n| n.parse().unwrap())
            .collect();
        assert!(numbers.len() > 300, "{}", numbers.len());
        assert!(numbers.windows(2).all(|w| w[1] == w[0] + 1));
        assert_eq!(*numbers.last().unwrap(), 3999);
    }

    /// A folder laid out like a cgroup v2 tree whose `/svc` offers cpu and memory.
    fn cgroup_tree() -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("cgroup.controllers"), "cpu memory pids\n").unwrap();
        std::fs::create_dir_all(t.path().join("svc")).unwrap();
        std::fs::write(t.path().join("svc/cgroup.controllers"), "cpu memory\n").unwrap();
        t
    }

    fn limited(host: super::super::cgroup::Host) -> Limited {
        Limited {
            host: Some(host),
            ..Limited::system(super::super::cgroup::Limits {
                cpus: Some(0.5),
                memory_mb: Some(64),
            })
        }
    }

    /// Runs `s` under `limits` to its end: the outcome and the job's log.
    async fn run_limited(s: LaunchSpec, limits: Limited) -> (Outcome, String) {
        let log = s.log_path.clone();
        let out = LocalExecutor::default()
            .launch_limited(s, Some(limits))
            .await
            .unwrap()
            .wait()
            .await;
        (out, std::fs::read_to_string(log).unwrap())
    }

    #[tokio::test]
    async fn a_limited_job_runs_in_its_cgroup_which_goes_at_the_end() {
        let dir = tempdir();
        let t = cgroup_tree();
        // The job, moved in right after its spawn, reads whom its cgroup holds.
        let script = format!(
            "sleep 1; echo self $$; echo holds $(cat {}/svc/aiflow-*/cgroup.procs)",
            t.path().display()
        );
        let s = spec(&dir, vec![vec!["sh", "-c", &script]]);
        let host = super::super::cgroup::Host::at(t.path(), "/svc");
        let (out, text) = run_limited(s, limited(host)).await;
        assert_eq!(out, Outcome::Succeeded);
        let me = text
            .lines()
            .find_map(|l| l.strip_prefix("self "))
            .expect("the job ran");
        assert!(text.contains(&format!("\nholds {me}\n")), "{text}");
        assert!(
            text.contains("[aiflow] limits enforced by the cgroup ")
                && text.contains(
                    "cpus 0.5 (cpu.max 50000 100000), memory 64 MB (memory.max 67108864)"
                ),
            "{text}"
        );
        let left: Vec<_> = std::fs::read_dir(t.path().join("svc"))
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.path().is_dir())
            .collect();
        assert!(left.is_empty(), "the attempt's cgroup is removed: {left:?}");
    }

    #[tokio::test]
    async fn a_supervisor_goes_into_the_cgroup_to_spawn_and_comes_back() {
        let dir = tempdir();
        let t = cgroup_tree();
        std::fs::create_dir_all(t.path().join("svc/server")).unwrap();
        let s = spec(&dir, vec![vec!["sh", "-c", "echo ran"]]);
        let host = super::super::cgroup::Host::below_parent_of(t.path(), "/svc/server");
        let (out, text) = run_limited(
            s,
            Limited {
                enter: true,
                ..limited(host)
            },
        )
        .await;
        assert_eq!(out, Outcome::Succeeded);
        assert!(
            text.contains("\nran\n") && text.contains("limits enforced"),
            "{text}"
        );
        assert_eq!(
            std::fs::read_to_string(t.path().join("svc/server/cgroup.procs")).unwrap(),
            std::process::id().to_string(),
            "back in its own cgroup"
        );
        let left = std::fs::read_dir(t.path().join("svc"))
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.path().is_dir() && e.file_name() != "server")
            .count();
        assert_eq!(left, 0, "the attempt's cgroup is removed");
    }

    #[tokio::test]
    async fn a_job_whose_limits_cannot_be_enforced_runs_and_says_why() {
        let dir = tempdir();
        let plain = tempfile::tempdir().unwrap();
        let s = spec(&dir, vec![vec!["sh", "-c", "echo ran"]]);
        let host = super::super::cgroup::Host::at(plain.path(), "/svc");
        let (out, text) = run_limited(s, limited(host)).await;
        assert_eq!(out, Outcome::Succeeded);
        assert!(text.contains("\nran\n"), "{text}");
        assert_eq!(
            text.matches("[aiflow] limits not enforced: ").count(),
            1,
            "{text}"
        );
        assert!(text.contains("is not a cgroup v2 mount"), "{text}");
    }

    #[tokio::test]
    async fn failure_stops_the_sequence_and_names_the_code() {
        let dir = tempdir();
        let s = spec(
            &dir,
            vec![vec!["sh", "-c", "exit 3"], vec!["sh", "-c", "echo never"]],
        );
        let log = s.log_path.clone();
        let out = LocalExecutor::default()
            .launch(s)
            .await
            .unwrap()
            .wait()
            .await;
        assert!(
            matches!(&out, Outcome::Exited { code: 3, message } if message.contains("code 3")),
            "{out:?}"
        );
        assert!(!std::fs::read_to_string(log).unwrap().contains("never"));
    }

    #[tokio::test]
    async fn missing_program_fails_with_a_clear_message() {
        let dir = tempdir();
        let s = spec(&dir, vec![vec!["/no/such/program-aiflow"]]);
        let log = s.log_path.clone();
        let out = LocalExecutor::default()
            .launch(s)
            .await
            .unwrap()
            .wait()
            .await;
        assert!(
            matches!(&out, Outcome::Failed { message } if message.contains("cannot start")),
            "{out:?}"
        );
        assert!(
            std::fs::read_to_string(log)
                .unwrap()
                .contains("cannot start")
        );
    }

    #[tokio::test]
    async fn timeout_kills_the_whole_process_group() {
        let dir = tempdir();
        let marker = dir.join("child-alive");
        let script = format!("(sleep 2; touch {}) & sleep 30", marker.display());
        let mut s = spec(&dir, vec![vec!["sh", "-c", &script]]);
        s.timeout = Some(Duration::from_millis(300));
        let exec = LocalExecutor {
            grace: Duration::from_millis(200),
            ..LocalExecutor::default()
        };
        let started = std::time::Instant::now();
        let out = exec.launch(s).await.unwrap().wait().await;
        assert_eq!(out, Outcome::TimedOut);
        assert!(started.elapsed() < Duration::from_secs(5));
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert!(
            !marker.exists(),
            "the background child was killed with its group"
        );
    }

    #[tokio::test]
    async fn stop_sends_sigterm_then_sigkill() {
        let dir = tempdir();
        let mut s = spec(
            &dir,
            vec![vec!["sh", "-c", "trap '' TERM; echo ready; sleep 30"]],
        );
        s.timeout = None;
        let log = s.log_path.clone();
        let exec = LocalExecutor {
            grace: Duration::from_millis(300),
            ..LocalExecutor::default()
        };
        let job = exec.launch(s).await.unwrap();
        let mut ready = false;
        for _ in 0..500 {
            ready = std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains("\nready\n");
            if ready {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(ready, "the job printed ready");
        assert!(job.pid().is_some());
        job.stop();
        let out = job.wait().await;
        assert_eq!(out, Outcome::Stopped);
        let text = std::fs::read_to_string(log).unwrap();
        assert!(text.contains("SIGKILL"), "{text}");
    }
}
