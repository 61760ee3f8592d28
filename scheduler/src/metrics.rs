//! The scheduler's metrics (through the `metrics` facade; the binary installs the Prometheus
//! recorder) and the job clocks behind the queue-wait and start-latency histograms.
//!
//! Labels stay bounded: states, actions and queue names, never execution ids or event keys.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Instant;

use chrono::{DateTime, Utc};
use metrics::{counter, gauge, histogram};

use crate::rules::Decision;
use crate::state::JobState;

/// Queue label of jobs run by the local executor.
pub const LOCAL_QUEUE: &str = "default";

/// Where the scheduler is in the event log; read by `/metrics` and `aiflow status`.
#[derive(Debug, Default)]
pub struct Progress {
    handled: AtomicI64,
    committed: AtomicI64,
    /// The last commit of scheduler state failed (the store is down or full).
    failing: std::sync::atomic::AtomicBool,
}

impl Progress {
    /// Offset of the last event the loop handled.
    #[must_use]
    pub fn handled(&self) -> i64 {
        self.handled.load(Ordering::Relaxed)
    }

    /// Offset stored as the restart point.
    #[must_use]
    pub fn committed(&self) -> i64 {
        self.committed.load(Ordering::Relaxed)
    }

    /// The scheduler cannot store its state now (it retries; nothing acts until it can).
    #[must_use]
    pub fn commit_failing(&self) -> bool {
        self.failing.load(Ordering::Relaxed)
    }

    pub(crate) fn set_commit_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::Relaxed);
    }

    pub(crate) fn set_handled(&self, offset: i64) {
        self.handled.store(offset, Ordering::Relaxed);
        gauge!("aiflow_scheduler_handled_offset").set(offset as f64);
    }

    pub(crate) fn set_committed(&self, offset: i64) {
        self.committed.store(offset, Ordering::Relaxed);
        gauge!("aiflow_scheduler_committed_offset").set(offset as f64);
    }
}

/// Runs `fut`, catching a panic in it: the panic is logged with `what` was being handled and
/// counted in `aiflow_scheduler_panics_total`, and `None` is returned, so that one bad command
/// (a bug, or an input nothing refused) fails alone instead of stopping the scheduler loop.
pub(crate) async fn guarded<T>(
    what: &'static str,
    fut: impl std::future::Future<Output = T>,
) -> Option<T> {
    use futures::FutureExt as _;
    match std::panic::AssertUnwindSafe(fut).catch_unwind().await {
        Ok(v) => Some(v),
        Err(panic) => {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "(no message)".into());
            tracing::error!(handling = what, panic = %message, "the scheduler caught a panic; what it was handling failed, the loop goes on");
            counter!("aiflow_scheduler_panics_total", "in" => what).increment(1);
            None
        }
    }
}

/// One attempt between QUEUED and its process running.
struct Clock {
    attempt: u32,
    /// When the attempt became QUEUED.
    queued: Instant,
    /// Creation time of the event that caused the start, if an event did.
    origin: Option<DateTime<Utc>>,
    /// `job.start` span, open from launch until the process runs.
    span: Option<tracing::Span>,
}

/// The scheduler loop's metric bookkeeping (owned by the loop; no locks).
#[derive(Default)]
pub(crate) struct Obs {
    progress: Arc<Progress>,
    clocks: HashMap<(String, String), Clock>,
    /// Origin of the next QUEUED state of a job, set by the caller that queues it.
    pending_origin: Option<DateTime<Utc>>,
}

impl Obs {
    pub(crate) fn progress(&self) -> &Progress {
        &self.progress
    }

    pub(crate) fn new(progress: Arc<Progress>, handled: i64) -> Self {
        progress.set_handled(handled);
        progress.set_committed(handled);
        Self {
            progress,
            clocks: HashMap::new(),
            pending_origin: None,
        }
    }

    /// The next attempt of a job is being queued because of an event created at `origin`.
    pub(crate) fn queuing(&mut self, origin: Option<DateTime<Utc>>) {
        self.pending_origin = origin;
    }

    /// A job attempt entered `state`.
    pub(crate) fn job_state(&mut self, execution: &str, job: &str, attempt: u32, state: JobState) {
        counter!("aiflow_job_executions_total", "state" => state.as_str(), "queue" => LOCAL_QUEUE)
            .increment(1);
        let key = (execution.to_string(), job.to_string());
        match state {
            JobState::Queued => {
                let origin = self.pending_origin.take();
                let clock = self.clocks.entry(key).or_insert_with(|| Clock {
                    attempt,
                    queued: Instant::now(),
                    origin,
                    span: None,
                });
                if clock.attempt != attempt {
                    *clock = Clock {
                        attempt,
                        queued: Instant::now(),
                        origin,
                        span: None,
                    };
                }
            }
            JobState::Running => {
                if let Some(clock) = self.clocks.remove(&key)
                    && clock.attempt == attempt
                {
                    let latency = match clock.origin {
                        Some(t) => (Utc::now() - t).to_std().unwrap_or_default().as_secs_f64(),
                        None => clock.queued.elapsed().as_secs_f64(),
                    };
                    let cause = if clock.origin.is_some() {
                        "event"
                    } else {
                        "other"
                    };
                    histogram!("aiflow_job_start_latency_seconds", "queue" => LOCAL_QUEUE, "cause" => cause)
                        .record(latency);
                }
            }
            s if !s.is_active() => {
                self.clocks.remove(&key);
            }
            _ => {}
        }
    }

    /// A QUEUED attempt got a slot and its process is being started; `span` stays open until
    /// the process runs.
    pub(crate) fn launched(&mut self, execution: &str, job: &str, span: tracing::Span) {
        let key = (execution.to_string(), job.to_string());
        if let Some(clock) = self.clocks.get_mut(&key) {
            histogram!("aiflow_queue_wait_seconds", "queue" => LOCAL_QUEUE)
                .record(clock.queued.elapsed().as_secs_f64());
            clock.span = Some(span);
        }
    }

    /// Attempts waiting for a slot, and processes holding one.
    pub(crate) fn slots(waiting: usize, running: usize) {
        gauge!("aiflow_queue_depth", "queue" => LOCAL_QUEUE).set(waiting as f64);
        gauge!("aiflow_jobs_running", "queue" => LOCAL_QUEUE).set(running as f64);
    }

    /// One rule evaluation that was recorded, and the action it led to.
    pub(crate) fn evaluation(event_signal: bool, decision: &Decision) {
        let signal = if event_signal { "event" } else { "job_status" };
        counter!("aiflow_rule_evaluations_total", "signal" => signal).increment(1);
        let action = match decision {
            Decision::Start => "start",
            Decision::Stop => "stop",
            Decision::Restart => "restart",
            Decision::Ignore(_) => "none",
        };
        counter!("aiflow_rule_actions_total", "action" => action).increment(1);
    }

    /// One event handled by the loop, `started` when it began.
    pub(crate) fn event_handled(&self, offset: i64, created: DateTime<Utc>, started: Instant) {
        histogram!("aiflow_scheduler_event_handling_seconds")
            .record(started.elapsed().as_secs_f64());
        histogram!("aiflow_scheduler_event_delay_seconds").record(
            (Utc::now() - created)
                .to_std()
                .unwrap_or_default()
                .as_secs_f64(),
        );
        counter!("aiflow_scheduler_events_handled_total").increment(1);
        self.progress.set_handled(offset);
    }

    /// The offset was stored as the restart point.
    pub(crate) fn committed(&self, offset: i64) {
        self.progress.set_committed(offset);
    }

    /// A workflow execution entered `state` (`RUNNING`, `SUCCEEDED`, …).
    pub(crate) fn execution_state(state: &str) {
        counter!("aiflow_workflow_executions_total", "state" => state.to_string()).increment(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panic_in_one_command_is_caught_and_the_next_runs() {
        let mut handled = Vec::new();
        for i in 0..3 {
            let r = guarded("test", async {
                if i == 1 {
                    let huge = std::hint::black_box(u64::MAX);
                    let _ = std::time::Instant::now() + std::time::Duration::from_secs(huge);
                }
                i
            })
            .await;
            handled.push(r);
        }
        assert_eq!(handled, [Some(0), None, Some(2)]);
    }
}
