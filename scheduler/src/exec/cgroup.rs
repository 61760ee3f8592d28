//! CPU and memory limits for jobs run as local processes, best effort, through cgroup v2.
//!
//! A job with `resources.cpus` or `resources.memory_mb` gets a cgroup of its own for each
//! attempt, when the host allows it: the cgroup v2 hierarchy is mounted at the root
//! (`/sys/fs/cgroup`), and the parent cgroup (`AIFLOW_CGROUP_PARENT`, a path under the root, or
//! else the parent of this process's own cgroup: with systemd, the unit's cgroup when the unit
//! has `Delegate=yes` and `DelegateSubgroup=`) offers the `cpu` and `memory` controllers and
//! may be written to. The attempt's cgroup gets `cpu.max` (quota over a 100 ms period) and
//! `memory.max` (bytes). Under a supervisor (`aiflow supervise`, one per attempt) the supervisor
//! enters the cgroup to start each command of the job and leaves it right after, so every
//! process of the job is born inside and the supervisor itself is neither limited nor counted;
//! a job run in the server's own process is moved in right after its spawn. The cgroup goes
//! when the attempt ends (what is left in it is killed first, through `cgroup.kill`).
//!
//! When the host does not allow it, the attempt runs anyway, without limits, and says why once
//! in its log (`[aiflow] limits not enforced: <reason>`) and once in the server's log.
//! A job without `cpus` and `memory_mb` costs nothing here.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Where the cgroup v2 hierarchy is mounted on a usual host.
pub const DEFAULT_ROOT: &str = "/sys/fs/cgroup";

/// The variable naming the parent cgroup of the attempts' cgroups (a path under the root).
pub const PARENT_VAR: &str = "AIFLOW_CGROUP_PARENT";

/// The period of `cpu.max`, in microseconds (the kernel's default).
const CPU_PERIOD_US: u64 = 100_000;

/// The smallest quota the kernel takes, in microseconds.
const CPU_MIN_QUOTA_US: u64 = 1_000;

/// The limits a job asks for (`resources.cpus`, `resources.memory_mb`).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Limits {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<u64>,
}

impl Limits {
    /// The limits of a job's resources; `None` when it asks for neither (nothing to do).
    #[must_use]
    pub fn of(resources: Option<&aiflow_translator::Resources>) -> Option<Limits> {
        let r = resources?;
        Limits::new(r.cpus, r.memory_mb)
    }

    /// The limits of a CPU count and a memory size; `None` when neither is a positive number.
    #[must_use]
    pub fn new(cpus: Option<f64>, memory_mb: Option<u64>) -> Option<Limits> {
        let limits = Limits {
            cpus: cpus.filter(|c| c.is_finite() && *c > 0.0),
            memory_mb: memory_mb.filter(|m| *m > 0),
        };
        (limits.cpus.is_some() || limits.memory_mb.is_some()).then_some(limits)
    }

    /// `cpu.max`: the quota and the period, in microseconds.
    fn cpu_max(&self) -> Option<String> {
        let cpus = self.cpus?;
        let quota = ((cpus * CPU_PERIOD_US as f64).round() as u64).max(CPU_MIN_QUOTA_US);
        Some(format!("{quota} {CPU_PERIOD_US}"))
    }

    /// `memory.max`: bytes.
    fn memory_max(&self) -> Option<String> {
        Some(self.memory_mb?.saturating_mul(1024 * 1024).to_string())
    }

    /// The controllers these limits need.
    fn controllers(&self) -> Vec<&'static str> {
        let mut c = Vec::new();
        if self.cpus.is_some() {
            c.push("cpu");
        }
        if self.memory_mb.is_some() {
            c.push("memory");
        }
        c
    }
}

impl std::fmt::Display for Limits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts = Vec::new();
        if let (Some(cpus), Some(max)) = (self.cpus, self.cpu_max()) {
            parts.push(format!("cpus {cpus} (cpu.max {max})"));
        }
        if let (Some(mb), Some(max)) = (self.memory_mb, self.memory_max()) {
            parts.push(format!("memory {mb} MB (memory.max {max})"));
        }
        f.write_str(&parts.join(", "))
    }
}

/// Where attempts' cgroups are made: the hierarchy's root and the parent cgroup under it.
#[derive(Debug, Clone)]
pub struct Host {
    /// The cgroup v2 mount.
    root: PathBuf,
    /// The parent cgroup, a path under the root (`/system.slice/aiflow.service`); `Err`: why
    /// there is none.
    parent: Result<String, String>,
    /// This process's own cgroup (where a supervisor goes back to), if known.
    own: Option<String>,
}

impl Host {
    /// This machine: the hierarchy at [`DEFAULT_ROOT`], the parent from [`PARENT_VAR`] or else
    /// the parent of this process's own cgroup (`/proc/self/cgroup`).
    #[must_use]
    pub fn system() -> Host {
        let own = own_cgroup();
        let parent = match std::env::var(PARENT_VAR) {
            Ok(p) if !p.trim().is_empty() => Ok(p.trim().to_string()),
            _ => own.clone().and_then(|own| parent_of(&own)),
        };
        Host {
            root: PathBuf::from(DEFAULT_ROOT),
            parent,
            own: own.ok(),
        }
    }

    /// A hierarchy at `root`, with `parent` (a path under it) as the attempts' parent cgroup.
    #[must_use]
    pub fn at(root: impl Into<PathBuf>, parent: &str) -> Host {
        Host {
            root: root.into(),
            parent: Ok(parent.to_string()),
            own: None,
        }
    }

    /// A hierarchy at `root` with the parent of `own` (this process's cgroup, a path under
    /// the root) as the attempts' parent, as [`Host::system`] picks it.
    #[must_use]
    pub fn below_parent_of(root: impl Into<PathBuf>, own: &str) -> Host {
        Host {
            root: root.into(),
            parent: parent_of(own),
            own: Some(own.trim().to_string()),
        }
    }

    /// Makes the cgroup `name` with `limits` under the parent, or says why it cannot; `enter`:
    /// this process will enter it to spawn each command and leave it after (a supervisor),
    /// which is tried once here.
    pub fn create(&self, name: &str, limits: &Limits, enter: bool) -> Result<Scope, String> {
        let origin = match (&self.own, enter) {
            (Some(own), true) => Some(self.root.join(own.trim_start_matches('/'))),
            (None, true) => return Err("this process's own cgroup is unknown".into()),
            (_, false) => None,
        };
        if !self.root.join("cgroup.controllers").is_file() {
            return Err(format!(
                "{} is not a cgroup v2 mount (this host has cgroup v1 or a hybrid hierarchy)",
                self.root.display()
            ));
        }
        let parent_name = self.parent.clone()?;
        let parent = self.root.join(parent_name.trim_start_matches('/'));
        let offered = std::fs::read_to_string(parent.join("cgroup.controllers"))
            .map_err(|e| format!("the parent cgroup {} cannot be read: {e}", parent.display()))?;
        let offered: Vec<&str> = offered.split_whitespace().collect();
        let needed = limits.controllers();
        let missing: Vec<&str> = needed
            .iter()
            .copied()
            .filter(|c| !offered.contains(c))
            .collect();
        if !missing.is_empty() {
            return Err(format!(
                "the parent cgroup {} does not offer the {} controller{} (it offers: {}); the service needs them delegated (systemd: Delegate=yes)",
                parent.display(),
                missing.join(" and "),
                if missing.len() > 1 { "s" } else { "" },
                if offered.is_empty() {
                    "none".to_string()
                } else {
                    offered.join(" ")
                }
            ));
        }
        let subtree = parent.join("cgroup.subtree_control");
        let enabled = std::fs::read_to_string(&subtree).unwrap_or_default();
        let enabled: Vec<&str> = enabled.split_whitespace().collect();
        let to_enable: Vec<String> = needed
            .iter()
            .filter(|c| !enabled.contains(c))
            .map(|c| format!("+{c}"))
            .collect();
        if !to_enable.is_empty() {
            std::fs::write(&subtree, to_enable.join(" ")).map_err(|e| {
                format!(
                    "cannot enable {} for the child cgroups of {}: {e}{}",
                    to_enable.join(" "),
                    parent.display(),
                    if e.kind() == ErrorKind::ResourceBusy {
                        " (a cgroup that holds processes cannot hand controllers down: run the server in a sub-cgroup of its delegated one, e.g. systemd's DelegateSubgroup=)"
                    } else {
                        ""
                    }
                )
            })?;
        }
        let dir = parent.join(name);
        std::fs::create_dir(&dir).map_err(|e| {
            format!(
                "cannot create the cgroup {}: {e}{}",
                dir.display(),
                if e.kind() == ErrorKind::PermissionDenied {
                    " (the parent cgroup is not delegated to this user)"
                } else {
                    ""
                }
            )
        })?;
        let scope = Scope { dir, origin: None };
        let write = |file: &str, value: Option<String>| -> Result<(), String> {
            let Some(value) = value else { return Ok(()) };
            let path = scope.dir.join(file);
            std::fs::write(&path, &value)
                .map_err(|e| format!("cannot write {value:?} to {}: {e}", path.display()))
        };
        if let Err(e) = write("cpu.max", limits.cpu_max())
            .and_then(|()| write("memory.max", limits.memory_max()))
        {
            scope.remove();
            return Err(e);
        }
        let scope = Scope { origin, ..scope };
        if scope.born_inside() {
            let me = std::process::id();
            if let Err(e) = scope.enter() {
                scope.remove();
                return Err(scope.unplaced(me, &e));
            }
            if let Err(e) = scope.leave() {
                return Err(format!(
                    "cannot go back to this process's own cgroup {}: {e}",
                    scope.origin.as_deref().unwrap_or(Path::new("?")).display()
                ));
            }
        }
        Ok(scope)
    }
}

/// This process's cgroup v2 path (`0::/path` in `/proc/self/cgroup`).
fn own_cgroup() -> Result<String, String> {
    let text = std::fs::read_to_string("/proc/self/cgroup")
        .map_err(|e| format!("cannot read /proc/self/cgroup: {e}"))?;
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(str::to_string)
        .ok_or_else(|| "this process is in no cgroup v2 (no 0:: line in /proc/self/cgroup)".into())
}

/// The parent of a cgroup path; none for the root cgroup.
fn parent_of(own: &str) -> Result<String, String> {
    let own = own.trim().trim_end_matches('/');
    match own.rfind('/') {
        Some(i) if !own.is_empty() => Ok(if i == 0 {
            "/".to_string()
        } else {
            own[..i].to_string()
        }),
        _ => Err(format!(
            "this process runs in the root cgroup: name the attempts' parent cgroup with {PARENT_VAR}"
        )),
    }
}

/// An attempt's cgroup: its processes go in, and it goes at the end.
#[derive(Debug)]
pub struct Scope {
    dir: PathBuf,
    /// The cgroup this process left to enter this one (it goes back there at the end).
    origin: Option<PathBuf>,
}

impl Scope {
    /// The cgroup's folder.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// This process enters the cgroup to spawn each command (its children are born inside).
    #[must_use]
    pub fn born_inside(&self) -> bool {
        self.origin.is_some()
    }

    /// This process goes into the cgroup (to spawn a command).
    pub fn enter(&self) -> std::io::Result<()> {
        self.place(std::process::id())
    }

    /// This process goes back to its own cgroup (after a spawn).
    pub fn leave(&self) -> std::io::Result<()> {
        match &self.origin {
            Some(origin) => {
                std::fs::write(origin.join("cgroup.procs"), std::process::id().to_string())
            }
            None => Ok(()),
        }
    }

    /// Moves the process `pid` (all its threads) into the cgroup.
    pub fn place(&self, pid: u32) -> std::io::Result<()> {
        std::fs::write(self.dir.join("cgroup.procs"), pid.to_string())
    }

    /// Why `pid` could not be placed.
    #[must_use]
    pub fn unplaced(&self, pid: u32, e: &std::io::Error) -> String {
        format!(
            "cannot place the process {pid} in the cgroup {}: {e}",
            self.dir.display()
        )
    }

    /// Kills what is left in the cgroup and removes it; waits up to a second for its processes
    /// to go. Blocking: a few system calls, more only when processes linger.
    pub fn remove(&self) {
        if let Err(e) = self.leave() {
            // Still inside: killing what is left would kill this process too.
            tracing::warn!(cgroup = %self.dir.display(), error = %e, "cannot leave the attempt's cgroup; left in place");
            return;
        }
        let kill = self.dir.join("cgroup.kill");
        if kill.is_file() {
            // Kernels from 5.14: every process still in it goes at once.
            let _ = std::fs::write(&kill, "1");
        }
        for _ in 0..50 {
            match std::fs::remove_dir(&self.dir) {
                Ok(()) => return,
                Err(e) if e.kind() == ErrorKind::NotFound => return,
                // Processes still inside (cgroupfs answers EBUSY): they are dying.
                Err(e) if e.kind() == ErrorKind::ResourceBusy => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                // A plain folder (a test's tree laid out like the hierarchy): the files
                // written into it go first.
                Err(e) if e.kind() == ErrorKind::DirectoryNotEmpty => {
                    for f in ["cpu.max", "memory.max", "cgroup.procs", "cgroup.kill"] {
                        let _ = std::fs::remove_file(self.dir.join(f));
                    }
                    if let Err(e) = std::fs::remove_dir(&self.dir) {
                        tracing::warn!(cgroup = %self.dir.display(), error = %e, "cannot remove the attempt's cgroup");
                        return;
                    }
                }
                Err(e) => {
                    tracing::warn!(cgroup = %self.dir.display(), error = %e, "cannot remove the attempt's cgroup");
                    return;
                }
            }
        }
        tracing::warn!(cgroup = %self.dir.display(), "the attempt's cgroup still holds processes; left in place");
    }
}

/// The cgroup name of one attempt: unique on the machine while it runs.
#[must_use]
pub fn name_for(execution: &str, job: &str, attempt: u32) -> String {
    let safe = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .take(80)
            .collect()
    };
    format!(
        "aiflow-{}-{}-{attempt}-{}",
        safe(execution),
        safe(job),
        std::process::id()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A folder laid out like a cgroup v2 hierarchy: the root offers `root_offers`, and
    /// `/svc` (the parent) offers `offers` with nothing enabled for its children yet.
    fn tree(offers: &str) -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(
            t.path().join("cgroup.controllers"),
            "cpuset cpu io memory pids\n",
        )
        .unwrap();
        let svc = t.path().join("svc");
        std::fs::create_dir_all(svc.join("server")).unwrap();
        std::fs::write(svc.join("cgroup.controllers"), format!("{offers}\n")).unwrap();
        std::fs::write(svc.join("cgroup.subtree_control"), "").unwrap();
        t
    }

    fn both() -> Limits {
        Limits {
            cpus: Some(1.5),
            memory_mb: Some(256),
        }
    }

    #[test]
    fn no_cpus_and_no_memory_is_no_limits() {
        assert_eq!(Limits::of(None), None);
        let none = aiflow_translator::Resources {
            cpus: None,
            memory_mb: None,
            gpus: Some(1),
        };
        assert_eq!(Limits::of(Some(&none)), None);
        let cpus = aiflow_translator::Resources {
            cpus: Some(0.5),
            memory_mb: None,
            gpus: None,
        };
        assert_eq!(
            Limits::of(Some(&cpus)),
            Some(Limits {
                cpus: Some(0.5),
                memory_mb: None
            })
        );
    }

    #[test]
    fn the_cgroup_gets_the_quota_and_the_memory_limit() {
        let t = tree("cpu memory pids");
        let host = Host::below_parent_of(t.path(), "/svc/server");
        let scope = host
            .create("aiflow-e-j-1", &both(), false)
            .expect("created");
        let dir = t.path().join("svc/aiflow-e-j-1");
        assert_eq!(scope.dir(), dir);
        assert_eq!(
            std::fs::read_to_string(dir.join("cpu.max")).unwrap(),
            "150000 100000"
        );
        assert_eq!(
            std::fs::read_to_string(dir.join("memory.max")).unwrap(),
            (256u64 * 1024 * 1024).to_string()
        );
        // The controllers are handed down to the parent's children.
        assert_eq!(
            std::fs::read_to_string(t.path().join("svc/cgroup.subtree_control")).unwrap(),
            "+cpu +memory"
        );
        scope.remove();
        assert!(!dir.exists(), "the attempt's cgroup is removed");
        assert!(t.path().join("svc/server").exists());
    }

    #[test]
    fn only_the_limits_asked_for_are_written() {
        let t = tree("memory pids");
        std::fs::write(t.path().join("svc/cgroup.subtree_control"), "memory\n").unwrap();
        let host = Host::at(t.path(), "/svc");
        let limits = Limits {
            cpus: None,
            memory_mb: Some(64),
        };
        let scope = host.create("a", &limits, false).expect("created");
        assert!(!scope.dir().join("cpu.max").exists());
        assert_eq!(
            std::fs::read_to_string(scope.dir().join("memory.max")).unwrap(),
            "67108864"
        );
        // Already enabled: left as it was.
        assert_eq!(
            std::fs::read_to_string(t.path().join("svc/cgroup.subtree_control")).unwrap(),
            "memory\n"
        );
        // A tiny share is the kernel's smallest quota.
        let tiny = Limits {
            cpus: Some(0.001),
            memory_mb: None,
        };
        assert_eq!(tiny.cpu_max().unwrap(), "1000 100000");
        scope.remove();
    }

    #[test]
    fn refusals_say_why() {
        // Not a cgroup v2 mount (no cgroup.controllers at the root).
        let plain = tempfile::tempdir().unwrap();
        let e = Host::at(plain.path(), "/svc")
            .create("a", &both(), false)
            .unwrap_err();
        assert!(e.contains("is not a cgroup v2 mount"), "{e}");

        // A parent that does not offer memory.
        let t = tree("cpu pids");
        let e = Host::at(t.path(), "/svc")
            .create("a", &both(), false)
            .unwrap_err();
        assert!(
            e.contains("does not offer the memory controller") && e.contains("cpu pids"),
            "{e}"
        );
        assert!(!t.path().join("svc/a").exists(), "nothing made");
        // ... which a job asking for CPUs only does not need.
        let cpus = Limits {
            cpus: Some(2.0),
            memory_mb: None,
        };
        Host::at(t.path(), "/svc")
            .create("a", &cpus, false)
            .expect("cpu only")
            .remove();

        // A parent that does not exist.
        let e = Host::at(t.path(), "/nowhere")
            .create("a", &both(), false)
            .unwrap_err();
        assert!(e.contains("cannot be read"), "{e}");

        // The root cgroup has no parent to use.
        let e = Host::below_parent_of(t.path(), "/")
            .create("a", &both(), false)
            .unwrap_err();
        assert!(e.contains(PARENT_VAR), "{e}");

        // An attempt's cgroup that cannot be made (here: one of that name exists).
        std::fs::create_dir(t.path().join("svc/taken")).unwrap();
        let e = Host::at(t.path(), "/svc")
            .create("taken", &cpus, false)
            .unwrap_err();
        assert!(e.contains("cannot create the cgroup"), "{e}");
    }

    #[test]
    fn the_parent_is_the_parent_of_the_own_cgroup() {
        assert_eq!(parent_of("/a/b/server").unwrap(), "/a/b");
        assert_eq!(parent_of("/a\n").unwrap(), "/");
        assert!(parent_of("/").is_err());
    }

    #[test]
    fn a_supervisor_enters_the_cgroup_to_spawn_and_leaves_it() {
        let t = tree("cpu memory");
        let me = std::process::id().to_string();
        let procs = |p: &str| std::fs::read_to_string(t.path().join(p)).unwrap_or_default();
        let scope = Host::below_parent_of(t.path(), "/svc/server")
            .create("s", &both(), true)
            .expect("created");
        assert!(scope.born_inside());
        // Tried once when made: in, and back out.
        assert_eq!(procs("svc/s/cgroup.procs"), me);
        assert_eq!(procs("svc/server/cgroup.procs"), me);
        std::fs::write(t.path().join("svc/server/cgroup.procs"), "").unwrap();
        std::fs::write(t.path().join("svc/s/cgroup.procs"), "").unwrap();
        scope.enter().unwrap();
        assert_eq!(procs("svc/s/cgroup.procs"), me, "in, to spawn");
        scope.leave().unwrap();
        assert_eq!(procs("svc/server/cgroup.procs"), me, "back out after");
        scope.remove();
        assert!(!t.path().join("svc/s").exists());

        // Its own cgroup unknown: it would have nowhere to go back to.
        let e = Host::at(t.path(), "/svc")
            .create("s2", &both(), true)
            .unwrap_err();
        assert!(e.contains("own cgroup is unknown"), "{e}");
        assert!(!t.path().join("svc/s2").exists(), "nothing left behind");
    }

    #[test]
    fn a_process_is_placed_by_its_pid() {
        let t = tree("cpu memory");
        let scope = Host::at(t.path(), "/svc")
            .create("p", &both(), false)
            .expect("created");
        assert!(!scope.born_inside());
        scope.place(4242).expect("placed");
        assert_eq!(
            std::fs::read_to_string(scope.dir().join("cgroup.procs")).unwrap(),
            "4242"
        );
        scope.remove();
        assert!(!t.path().join("svc/p").exists());
    }
}
