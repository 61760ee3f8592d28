//! The scheduler side of remote execution: attempts become tasks on their queue's work-queue
//! stream, stops go out on the control subject, and the workers' reports come back as the
//! executor's status reports (acknowledged once the state they change is committed).

use std::sync::Mutex;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::BoxStream;
use tokio::sync::{mpsc, watch};

use super::wire::{Fabric, Report, ReportKind, Resources, Task};
use crate::exec::{
    Ack, Adoption, AttemptId, Executor, LaunchRequest, Outcome, Status, StatusReport,
};

/// Remote workers behind the [`Executor`] trait.
pub struct RemoteExecutor {
    fabric: Fabric,
    tx: mpsc::UnboundedSender<StatusReport>,
    rx: Mutex<Option<mpsc::UnboundedReceiver<StatusReport>>>,
}

impl RemoteExecutor {
    /// Starts reading the workers' reports (the durable consumer of the scheduling leader)
    /// until `shutdown`.
    pub async fn start(
        fabric: Fabric,
        shutdown: watch::Receiver<bool>,
    ) -> Result<RemoteExecutor, crate::Error> {
        let (tx, rx) = mpsc::unbounded_channel();
        spawn_report_feed(fabric.clone(), tx.clone(), shutdown).await?;
        Ok(RemoteExecutor {
            fabric,
            tx,
            rx: Mutex::new(Some(rx)),
        })
    }
}

/// The attempt a worker's report is about, from its task id (`<row>-<attempt>`).
fn attempt_of(r: &Report) -> AttemptId {
    let row = r
        .task
        .rsplit_once('-')
        .filter(|(row, n)| !row.contains('-') && n.parse() == Ok(r.attempt))
        .map(|(row, _)| row.to_string());
    AttemptId {
        execution: r.execution.clone(),
        job: r.job.clone(),
        attempt: r.attempt,
        row,
    }
}

fn status_of(r: &Report) -> Status {
    match (&r.kind, r.outcome()) {
        (ReportKind::Started, _) | (_, None) => Status::Started,
        (ReportKind::Ended { .. }, Some(outcome)) => Status::Ended { outcome, ran: true },
        (ReportKind::Lost { .. }, Some(outcome)) => Status::Ended {
            outcome,
            ran: false,
        },
    }
}

/// Remote workers' reports into `tx` (each acknowledged once its changes are committed).
async fn spawn_report_feed(
    fabric: Fabric,
    tx: mpsc::UnboundedSender<StatusReport>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), crate::Error> {
    let mut reports = fabric.reports().await.map_err(crate::Error::Nats)?;
    tokio::spawn(async move {
        loop {
            tokio::select! {
                next = reports.next() => match next {
                    Some(Ok(m)) => {
                        let (m, acker) = m.split();
                        match serde_json::from_slice::<Report>(&m.payload) {
                            Ok(r) => {
                                let report = StatusReport {
                                    id: attempt_of(&r),
                                    status: status_of(&r),
                                    by: Some(r.worker.clone()),
                                    ack: Some(Ack::new(move || {
                                        Box::pin(async move {
                                            let _ = acker.ack().await;
                                        })
                                    })),
                                };
                                if tx.send(report).is_err() {
                                    break;
                                }
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, "dropping an unreadable worker report");
                                let _ = acker.ack().await;
                            }
                        }
                    }
                    Some(Err(e)) => tracing::warn!(error = %e, "worker reports"),
                    None => {
                        // NATS restarted: pull again (unacknowledged reports come again).
                        loop {
                            tokio::select! {
                                () = tokio::time::sleep(Duration::from_secs(1)) => {}
                                () = super::stopped(&mut shutdown) => return,
                            }
                            match fabric.reports().await {
                                Ok(r) => {
                                    reports = r;
                                    break;
                                }
                                Err(e) => tracing::warn!(error = %e, "cannot read worker reports yet"),
                            }
                        }
                    }
                },
                () = super::stopped(&mut shutdown) => break,
            }
        }
    });
    Ok(())
}

/// Why no registered worker of the task's queue can run it (each one's reason, naming the job
/// setting); `None` when one can, or when the workers cannot be read.
async fn nobody_fits(fabric: &Fabric, task: &Task) -> Option<String> {
    let workers = fabric.workers().await.ok()?;
    why_nobody_fits(&workers, task)
}

fn why_nobody_fits(workers: &[super::wire::WorkerInfo], task: &Task) -> Option<String> {
    let mut why = Vec::new();
    for w in workers.iter().filter(|w| w.queues.contains(&task.queue)) {
        let problem =
            w.resources
                .never_fits(&task.resources, task.image.is_some(), w.containers)?;
        why.push(format!("{}: {problem}", w.name));
    }
    Some(if why.is_empty() {
        format!("no worker serves queue {:?}", task.queue)
    } else {
        format!(
            "no worker of queue {:?} offers what the job asks ({})",
            task.queue,
            why.join("; ")
        )
    })
}

#[async_trait::async_trait]
impl Executor for RemoteExecutor {
    fn name(&self) -> &'static str {
        "remote"
    }

    /// Hands the task to its queue in the background; a hand-out that keeps failing ends the
    /// attempt FAILED with the reason.
    async fn launch(&self, request: LaunchRequest) -> Result<(), String> {
        let LaunchRequest { id, job, spec } = request;
        let task = Task {
            id: id.key(),
            workflow: spec.workflow,
            execution: spec.execution,
            job: spec.job,
            attempt: spec.attempt,
            queue: job.queue.clone(),
            commands: spec.commands,
            env: spec.env,
            working_dir: job.working_dir.clone(),
            timeout_s: job.timeout_s,
            resources: job
                .resources
                .as_ref()
                .map(|r| Resources {
                    cpus: r.cpus,
                    memory_mb: r.memory_mb,
                    gpus: r.gpus,
                })
                .unwrap_or_default(),
            image: job.image.clone(),
            pull: job.pull.clone(),
            mounts: job.mounts.clone(),
        };
        let (fabric, tx) = (self.fabric.clone(), self.tx.clone());
        tokio::spawn(async move {
            // Only a task that asks for something can be more than every worker offers. It
            // waits for a worker that fits (one may be started); the log says why meanwhile.
            let asks = task.image.is_some() || task.resources != Resources::default();
            if asks && let Some(why) = nobody_fits(&fabric, &task).await {
                tracing::warn!(task = %task.id, workflow = %task.workflow, job = %task.job, queue = %task.queue, reason = %why, "the task waits for a worker that can run it");
            }
            let mut backoff = aiflow_api::backoff::Backoff::new(
                Duration::from_millis(100),
                Duration::from_secs(5),
            );
            let mut last = String::new();
            for _ in 0..8 {
                match fabric.hand_out(&task).await {
                    Ok(()) => return,
                    Err(e) => {
                        tracing::warn!(task = %task.id, queue = %task.queue, error = %e, "cannot hand out a task; retrying");
                        last = e;
                        tokio::time::sleep(backoff.next_delay()).await;
                    }
                }
            }
            let _ = tx.send(StatusReport {
                id,
                status: Status::Ended {
                    outcome: Outcome::Failed {
                        message: format!(
                            "cannot hand the task to the work queue {}: {last}",
                            task.queue
                        ),
                    },
                    ran: false,
                },
                by: None,
                ack: None,
            });
        });
        Ok(())
    }

    /// A worker running the task gets SIGTERM to its process group; a worker that takes it
    /// later finds it cancelled.
    fn stop(&self, id: &AttemptId) {
        let (fabric, task) = (self.fabric.clone(), id.key());
        tokio::spawn(async move { fabric.stop(&task).await });
    }

    /// A running attempt lives on its worker: its reports and heartbeats say how it goes. A
    /// queued one is handed out again (NATS drops it when it is still in the queue).
    async fn adopt(&self, _id: &AttemptId, started: bool) -> Adoption {
        if started {
            Adoption::Following { started }
        } else {
            Adoption::Unknown
        }
    }

    fn reports(&self) -> BoxStream<'static, StatusReport> {
        let rx = self.rx.lock().expect("reports").take();
        match rx {
            Some(rx) => Box::pin(futures::stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|r| (r, rx))
            })),
            None => Box::pin(futures::stream::empty()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::why_nobody_fits;
    use crate::remote::wire::{Task, WorkerInfo};

    fn task(resources: serde_json::Value, image: Option<&str>) -> Task {
        serde_json::from_value(serde_json::json!({
            "id": "t-1", "workflow": "w", "execution": "e", "job": "train", "attempt": 1,
            "queue": "default", "commands": [["true"]], "env": {}, "working_dir": null,
            "timeout_s": null, "resources": resources, "image": image,
        }))
        .unwrap()
    }

    fn worker(
        name: &str,
        queue: &str,
        resources: serde_json::Value,
        containers: bool,
    ) -> WorkerInfo {
        serde_json::from_value(serde_json::json!({
            "name": name, "queues": [queue], "slots": 4, "busy": 0, "resources": resources,
            "started_at": "2026-01-01T00:00:00Z", "last_heartbeat": "2026-01-01T00:00:00Z",
            "alive": true, "containers": containers,
        }))
        .unwrap()
    }

    #[test]
    fn the_reason_a_task_waits_names_each_workers_shortfall() {
        let gpus2 = task(serde_json::json!({"gpus": 2}), None);
        let workers = [
            worker(
                "cpu",
                "default",
                serde_json::json!({"cpus": 8.0, "gpus": 0}),
                false,
            ),
            worker("small", "default", serde_json::json!({"gpus": 1}), true),
            worker("big", "other", serde_json::json!({"gpus": 8}), true),
        ];
        assert_eq!(
            why_nobody_fits(&workers, &gpus2).as_deref(),
            Some(
                "no worker of queue \"default\" offers what the job asks \
                 (cpu: resources.gpus: 2 asked, 0 offered; small: resources.gpus: 2 asked, 1 offered)"
            )
        );
        // One worker of the queue that fits (even busy) is enough.
        let mut more = workers.to_vec();
        more.push(worker(
            "gpu",
            "default",
            serde_json::json!({"gpus": 2}),
            false,
        ));
        assert_eq!(why_nobody_fits(&more, &gpus2), None);
        // Memory, CPUs and containers are named too.
        let image = task(
            serde_json::json!({"memory_mb": 4096, "cpus": 2.0}),
            Some("img"),
        );
        let why = why_nobody_fits(
            &[
                worker("a", "default", serde_json::json!({"memory_mb": 1024}), true),
                worker("b", "default", serde_json::json!({"cpus": 1.0}), true),
                worker("c", "default", serde_json::json!({}), false),
            ],
            &image,
        )
        .unwrap();
        assert!(
            why.contains("a: resources.memory_mb: 4096 asked, 1024 offered"),
            "{why}"
        );
        assert!(
            why.contains("b: resources.cpus: 2 asked, 1 offered"),
            "{why}"
        );
        assert!(
            why.contains("c: image: a container job, and the worker offers no containers"),
            "{why}"
        );
        // No worker on the queue at all.
        assert_eq!(
            why_nobody_fits(&[], &gpus2).as_deref(),
            Some("no worker serves queue \"default\"")
        );
    }
}
