//! Jobs that outlive the server: each local attempt runs under a small supervisor process
//! (`aiflow supervise DIR`) in a session of its own, so a stop of the server by any means
//! (SIGTERM, SIGINT, kill -9, a crash, an upgrade) leaves the job running.
//!
//! The attempt's folder (`<data_dir>/attempts/<execution>/<row>/`) is the whole protocol:
//! - `spec.json` (0600): what to run, written by the server before it starts the supervisor;
//! - `claim`: the supervisor's identity (pid and start time), created exclusively, so a second
//!   supervisor for the same attempt never runs it (an attempt is never started twice);
//! - `pid`: the job's process, once it exists;
//! - `status.json`: how the attempt ended, written once (atomically) by the supervisor.
//!
//! The supervisor also tells the server that started it on its stdout (`started PID`, then
//! `ended OUTCOME`), so a live server learns of both at once. A server that comes back later re-adopts
//! the attempt from its folder: it reads `status.json` if the job ended meanwhile, or follows
//! the supervisor until it writes it. A stop is a SIGTERM to the supervisor, which stops the
//! job as the in-process executor does (SIGTERM to the job's group, SIGKILL after the grace
//! period) and records `Stopped`.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::AsyncBufReadExt as _;
use tokio::sync::{oneshot, watch};

use super::process::{LaunchSpec, LocalExecutor, Outcome, RunningJob};

const SPEC: &str = "spec.json";
const CLAIM: &str = "claim";
const PID: &str = "pid";
const STATUS: &str = "status.json";

/// How often a supervisor checks that its attempt's folder still exists.
const FOLDER_CHECK: Duration = Duration::from_secs(2);

/// How often an adopted attempt's folder and supervisor are looked at.
const ADOPTED_POLL: Duration = Duration::from_millis(200);

/// The program that supervises attempts (`aiflow supervise DIR`).
#[derive(Debug, Clone)]
pub struct Supervisor {
    /// The `aiflow` binary.
    pub program: PathBuf,
}

/// What the supervisor reads from `spec.json`.
#[derive(Debug, Serialize, Deserialize)]
struct SupervisedSpec {
    spec: LaunchSpec,
    grace_ms: u64,
    log_max_bytes: Option<u64>,
    /// The job's CPU and memory limits, enforced where the host allows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    limits: Option<super::cgroup::Limits>,
}

/// A process, named so that a reused pid is not mistaken for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Identity {
    pid: u32,
    /// Start time in clock ticks since boot (`/proc/PID/stat`, field 22); 0 where unknown.
    start: u64,
}

impl Identity {
    fn of(pid: u32) -> Option<Identity> {
        Some(Identity {
            pid,
            start: start_ticks(pid)?,
        })
    }

    /// The same process still exists (not a zombie, not a new process with the same pid).
    fn alive(&self) -> bool {
        start_ticks(self.pid) == Some(self.start)
    }
}

/// The start time of a live process (`None`: gone, or a zombie).
fn start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which may itself hold spaces and parentheses.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split(' ');
    let state = fields.next()?;
    if state == "Z" || state == "X" {
        return None;
    }
    // `rest` starts at field 3 (state); the start time is field 22.
    fields.nth(18)?.parse().ok()
}

/// The folder of one attempt under `root` (`<data_dir>/attempts`).
#[must_use]
pub fn attempt_dir(root: &Path, execution: &str, row: &str) -> PathBuf {
    root.join(safe(execution)).join(safe(row))
}

/// The folder of an execution's attempts (removed once the execution has finished).
#[must_use]
pub fn execution_dir(root: &Path, execution: &str) -> PathBuf {
    root.join(safe(execution))
}

impl Supervisor {
    /// Starts the attempt under a new supervisor process and returns at once; the handle
    /// reports the job's process when it exists and the outcome when it ends, and stops it.
    pub async fn launch(
        &self,
        executor: &LocalExecutor,
        spec: LaunchSpec,
        dir: PathBuf,
        limits: Option<super::cgroup::Limits>,
    ) -> std::io::Result<RunningJob> {
        let doc = SupervisedSpec {
            spec,
            grace_ms: u64::try_from(executor.grace.as_millis()).unwrap_or(u64::MAX),
            log_max_bytes: executor.log_max_bytes,
            limits,
        };
        let body = serde_json::to_vec(&doc).map_err(std::io::Error::other)?;
        let spec_path = dir.join(SPEC);
        tokio::task::spawn_blocking(move || write_private(&spec_path, &body))
            .await
            .map_err(std::io::Error::other)??;
        let mut child = tokio::process::Command::new(&self.program)
            .arg("supervise")
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            // The supervisor must outlive this process: never killed when the handle drops.
            .kill_on_drop(false)
            .spawn()?;
        let (handle, parts) = RunningJob::parts();
        let stdout = child.stdout.take();
        tokio::spawn(async move {
            let outcome = follow_child(child, stdout, &dir, &parts.pid, parts.stop).await;
            let _ = parts.done.send(outcome);
        });
        Ok(handle)
    }
}

/// Re-adopts an attempt a previous server started, from its folder: `None` when no
/// supervisor ever claimed it (it never started and may be launched now).
#[must_use]
pub fn adopt(dir: PathBuf) -> Option<Adopted> {
    let claim_path = dir.join(CLAIM);
    if !claim_path.exists() {
        return None;
    }
    // An empty claim (written on a full disk) names nobody: its outcome decides.
    let claim = read_json::<Identity>(&claim_path).unwrap_or(Identity { pid: 0, start: 0 });
    let pid = read_pid(&dir);
    let (handle, parts) = RunningJob::parts();
    if let Some(p) = pid {
        let _ = parts.pid.send(Some(p));
    }
    let ended = dir.join(STATUS).exists();
    let alive = claim.alive();
    tokio::spawn(async move {
        let outcome = follow_adopted(claim, &dir, &parts.pid, parts.stop).await;
        let _ = parts.done.send(outcome);
    });
    Some(Adopted {
        job: handle,
        started: pid.is_some(),
        running: alive && !ended,
    })
}

/// A re-adopted attempt.
#[derive(Debug)]
pub struct Adopted {
    pub job: RunningJob,
    /// The job's process had started.
    pub started: bool,
    /// Its supervisor still runs (otherwise the outcome comes at once).
    pub running: bool,
}

/// Folder and file names from ids: nothing that climbs out of the attempts folder.
fn safe(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn write_private(path: &Path, body: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    // No fsync: these files only need to survive a crash of a process (the page cache keeps
    // them); a crash of the machine ends the job and its supervisor too.
    f.write_all(body)?;
    std::fs::rename(&tmp, path)
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Option<T> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

fn read_pid(dir: &Path) -> Option<u32> {
    std::fs::read_to_string(dir.join(PID))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The recorded outcome, or a failure saying why there is none.
fn recorded(dir: &Path, otherwise: &str) -> Outcome {
    read_json::<Outcome>(&dir.join(STATUS)).unwrap_or_else(|| Outcome::Failed {
        message: otherwise.to_string(),
    })
}

fn terminate(pid: u32) {
    // 0 (a supervisor that could not record itself) would signal this whole process group.
    if let Ok(pid) = i32::try_from(pid)
        && pid > 0
    {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
}

/// Follows a supervisor this server started: its stdout says when the job started and ended.
async fn follow_child(
    mut child: tokio::process::Child,
    stdout: Option<tokio::process::ChildStdout>,
    dir: &Path,
    pid_tx: &watch::Sender<Option<u32>>,
    mut stop: watch::Receiver<bool>,
) -> Outcome {
    let Some(stdout) = stdout else {
        return Outcome::Failed {
            message: "the job's supervisor has no output pipe".into(),
        };
    };
    let supervisor = child.id().unwrap_or(0);
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let mut stop_sent = false;
    loop {
        let line = tokio::select! {
            line = lines.next_line() => line.ok().flatten(),
            changed = stop.wait_for(|s| *s), if !stop_sent => {
                if changed.is_ok() {
                    stop_sent = true;
                    terminate(supervisor);
                }
                continue;
            }
        };
        let Some(line) = line else { break };
        if let Some(pid) = line
            .strip_prefix("started ")
            .and_then(|p| p.trim().parse().ok())
        {
            let _ = pid_tx.send(Some(pid));
        } else if let Some(reason) = line.strip_prefix("unlimited ") {
            tracing::warn!(
                attempt = %dir.display(),
                reason,
                "limits not enforced: the job runs without its CPU and memory limits"
            );
        } else if line == "claimed" {
            // Another supervisor holds this attempt (started by a previous server just
            // before it stopped): follow that one instead.
            let _ = child.wait().await;
            let Some(claim) = read_json::<Identity>(&dir.join(CLAIM)).or_else(|| {
                dir.join(CLAIM)
                    .exists()
                    .then_some(Identity { pid: 0, start: 0 })
            }) else {
                return Outcome::Failed {
                    message: "the attempt is claimed by a supervisor that left no record".into(),
                };
            };
            if let Some(p) = read_pid(dir) {
                let _ = pid_tx.send(Some(p));
            }
            if stop_sent {
                terminate(claim.pid);
            }
            return follow_adopted(claim, dir, pid_tx, stop).await;
        } else if let Some(outcome) = line.strip_prefix("ended ") {
            let _ = child.wait().await;
            if let Ok(outcome) = serde_json::from_str(outcome) {
                return outcome;
            }
            break;
        }
    }
    let _ = child.wait().await;
    recorded(
        dir,
        "the job's supervisor ended without recording an outcome",
    )
}

/// Follows a supervisor a previous server started, by its folder and process.
async fn follow_adopted(
    claim: Identity,
    dir: &Path,
    pid_tx: &watch::Sender<Option<u32>>,
    mut stop: watch::Receiver<bool>,
) -> Outcome {
    let mut stop_sent = false;
    loop {
        if dir.join(STATUS).exists() {
            break;
        }
        if !claim.alive() {
            // It may have written its status just before it went.
            break;
        }
        if pid_tx.borrow().is_none()
            && let Some(p) = read_pid(dir)
        {
            let _ = pid_tx.send(Some(p));
        }
        tokio::select! {
            () = tokio::time::sleep(ADOPTED_POLL) => {}
            changed = stop.wait_for(|s| *s), if !stop_sent => {
                if changed.is_ok() {
                    stop_sent = true;
                    terminate(claim.pid);
                }
            }
        }
    }
    recorded(
        dir,
        "lost: the job's supervisor ended without recording an outcome",
    )
}

/// `aiflow supervise DIR`: runs one attempt in a session of its own and records how it ended.
/// Exits 0 once the outcome is recorded (whatever it is), non-zero when it cannot run at all.
pub async fn supervise(dir: &Path) -> std::io::Result<()> {
    // A session and process group of its own: signals sent to the server's group (Ctrl-C in a
    // terminal, a service manager's stop) do not reach the job.
    let _ = nix::unistd::setsid();
    // Orphans of the job (processes that left its group) become this process's children.
    crate::reaper::become_subreaper();
    let me = std::process::id();
    let identity = Identity::of(me).unwrap_or(Identity { pid: me, start: 0 });
    let claim = {
        use std::os::unix::fs::OpenOptionsExt as _;
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(dir.join(CLAIM))
    };
    match claim {
        Ok(mut f) => {
            // The file's existence is the claim; its content (who holds it) is best effort: on
            // a full disk it stays empty, and an adopting server then relies on the outcome.
            let _ = f.write_all(&serde_json::to_vec(&identity).map_err(std::io::Error::other)?);
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            say("claimed");
            return Ok(());
        }
        Err(e) => return Err(e),
    }
    let doc: SupervisedSpec = serde_json::from_slice(&std::fs::read(dir.join(SPEC))?)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
    let executor = LocalExecutor {
        grace: Duration::from_millis(doc.grace_ms),
        log_max_bytes: doc.log_max_bytes,
        supervisor: None,
    };
    // Limits that cannot be enforced: the job's log says why, and the server learns it here.
    // The supervisor enters the attempt's cgroup to spawn each command (and leaves it after),
    // so every process of the job is born inside.
    let limited = doc.limits.map(|limits| super::process::Limited {
        refused: tell_unlimited,
        enter: true,
        ..super::process::Limited::system(limits)
    });
    let mut running = executor.launch_limited(doc.spec, limited).await?;
    let stopper = running.stopper();
    let mut terms = Vec::new();
    for kind in [
        tokio::signal::unix::SignalKind::terminate(),
        tokio::signal::unix::SignalKind::interrupt(),
        tokio::signal::unix::SignalKind::hangup(),
    ] {
        terms.push(tokio::signal::unix::signal(kind)?);
    }
    let claim_path = dir.join(CLAIM);
    tokio::spawn(async move {
        let [term, int, hup] = &mut terms[..] else {
            return;
        };
        let mut check = tokio::time::interval(FOLDER_CHECK);
        loop {
            tokio::select! {
                _ = term.recv() => break,
                _ = int.recv() => break,
                // A closed terminal is no reason to stop a job.
                _ = hup.recv() => {}
                // The attempt's folder was deleted (its data folder removed): nobody can
                // adopt the job any more, so it stops.
                _ = check.tick() => if !claim_path.exists() { break },
            }
        }
        let _ = stopper.send(true);
    });
    if running.started().await
        && let Some(pid) = running.pid()
    {
        let _ = write_private(&dir.join(PID), pid.to_string().as_bytes());
        say(&format!("started {pid}"));
    }
    let outcome = running.wait().await;
    if matches!(outcome, Outcome::Stopped | Outcome::TimedOut) {
        let n = tokio::task::spawn_blocking(crate::reaper::kill_descendants)
            .await
            .unwrap_or(0);
        if n > 0 {
            tracing::info!(
                processes = n,
                "killed the job's processes outside its group"
            );
        }
    }
    let body = serde_json::to_vec(&outcome).map_err(std::io::Error::other)?;
    let stored = write_private(&dir.join(STATUS), &body);
    // The server that started this supervisor, if it still runs, learns the outcome here even
    // when it could not be stored (a full disk).
    say(&format!("ended {}", String::from_utf8_lossy(&body)));
    stored
}

/// Tells the server why the job's limits are not enforced (`unlimited REASON`).
fn tell_unlimited(_spec: &LaunchSpec, reason: &str) {
    say(&format!("unlimited {}", reason.replace(['\n', '\r'], " ")));
}

/// One line to the server that started this supervisor; nobody may be listening any more.
fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// The executor's side of a [`RunningJob`].
pub(crate) struct Parts {
    pub(crate) pid: watch::Sender<Option<u32>>,
    pub(crate) stop: watch::Receiver<bool>,
    pub(crate) done: oneshot::Sender<Outcome>,
}
