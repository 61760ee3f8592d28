//! A job's processes that left its process group (`setsid`, `setpgid`) are still stopped with
//! it: the supervisor of an attempt makes itself a child subreaper, so such orphans become its
//! children instead of init's, and on STOP or timeout it kills every process below it.
//! (Linux only; elsewhere, and for jobs run in the server's or a worker's own process, only
//! the job's process group is signalled.)

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Makes this process the reaper of its orphaned descendants (Linux `PR_SET_CHILD_SUBREAPER`).
pub fn become_subreaper() {
    #[cfg(target_os = "linux")]
    if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
        tracing::warn!(error = %e, "cannot become the child subreaper; a job's processes that leave its group survive its stop");
    }
}

/// The parent of every process, from `/proc/<pid>/stat` (field 4).
fn parents() -> Vec<(i32, i32)> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| {
        let pid: i32 = e.ok()?.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        Some((pid, parent_of(&stat)?))
    })
    .collect()
}

/// The parent pid in a `/proc/<pid>/stat` line (after the command name, which may hold
/// spaces and parentheses).
fn parent_of(stat: &str) -> Option<i32> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// Every process below `root` in `tree` (pid, parent), nearest first.
fn descendants_in(tree: &[(i32, i32)], root: i32) -> Vec<i32> {
    let mut out = Vec::new();
    let mut frontier = vec![root];
    while let Some(p) = frontier.pop() {
        for &(pid, parent) in tree {
            if parent == p && pid != root && !out.contains(&pid) {
                out.push(pid);
                frontier.push(pid);
            }
        }
    }
    out
}

/// Kills (SIGKILL) every process below this one and reaps those that were its children.
/// Returns how many were signalled.
pub fn kill_descendants() -> usize {
    let me = std::process::id() as i32;
    let mut killed = 0;
    // Killing a parent can reparent its children to us: look again until none is left.
    for _ in 0..10 {
        let below = descendants_in(&parents(), me);
        if below.is_empty() {
            break;
        }
        for &pid in &below {
            if kill(Pid::from_raw(pid), Signal::SIGKILL).is_ok() {
                killed += 1;
            }
        }
        for pid in below {
            let _ = nix::sys::wait::waitpid(
                Pid::from_raw(pid),
                Some(nix::sys::wait::WaitPidFlag::WNOHANG),
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // Reap the rest that died meanwhile.
    for (pid, parent) in parents() {
        if parent == me {
            let _ = nix::sys::wait::waitpid(
                Pid::from_raw(pid),
                Some(nix::sys::wait::WaitPidFlag::WNOHANG),
            );
        }
    }
    killed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_parent_is_read_after_the_command_name() {
        assert_eq!(parent_of("42 (my (odd) cmd) S 7 42 42 0"), Some(7));
        assert_eq!(parent_of("1 (init) S 0 1 1"), Some(0));
        assert_eq!(parent_of("garbage"), None);
    }

    #[test]
    fn descendants_follow_the_tree() {
        let tree = [(2, 1), (3, 2), (4, 3), (5, 1), (6, 9), (7, 6)];
        let mut d = descendants_in(&tree, 1);
        d.sort_unstable();
        assert_eq!(d, [2, 3, 4, 5]);
        assert!(descendants_in(&tree, 4).is_empty());
    }

    #[test]
    fn this_process_is_found_under_its_parent() {
        let me = std::process::id() as i32;
        let parent = nix::unistd::getppid().as_raw();
        assert!(descendants_in(&parents(), parent).contains(&me));
    }
}
