//! Start overhead of a container job beside the same job run as a process, through the real
//! path: an embedded scheduler (SQLite, in-process bus, the server's executors, as
//! `bench_scheduler` builds it), a workflow whose job an event starts, and the time from
//! publishing that event to the job's own process running.
//!
//! The job is the same command for both kinds, `bash -c 'exec 3<>/dev/tcp/127.0.0.1/PORT'`:
//! it connects to a port this benchmark listens on, and the moment the connection is accepted
//! is the moment the job's process runs (containers use the host's network). As a process it
//! runs on the host; as a container, in the local image `aiflow-test/debian:bookworm`
//! (`pull: never`; `.ci/docker.sh` builds it). Rounds are sequential: publish, accept, wait for
//! the job's end, next.
//!
//! `cargo run --release -p aiflow-scheduler --bin bench_containers [-- --process 50
//! --container 30 --warmup 2 --supervisor target/release/aiflow]`
//!
//! With no Docker engine answering (or without the image), the container part is skipped with a
//! message saying so; the process part still runs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aiflow_api::{EventFilter, NewEvent};
use aiflow_db::testing::TestDb;
use aiflow_notification::{EmbeddedBus, EmbeddedConfig, EventBus};
use aiflow_scheduler::exec::container::ContainerExecutor;
use aiflow_scheduler::{Scheduler, SchedulerConfig};
use futures::StreamExt;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;

const IMAGE: &str = "aiflow-test/debian:bookworm";

/// How long one round may take before the benchmark gives up.
const ROUND_TIMEOUT: Duration = Duration::from_secs(60);

fn arg<T: std::str::FromStr>(name: &str, default: T) -> T {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Env {
    _db: TestDb,
    bus: Arc<dyn EventBus>,
    scheduler: Scheduler,
    _stop: watch::Sender<bool>,
}

async fn env(data_dir: std::path::PathBuf) -> Env {
    let db = TestDb::sqlite().await;
    let bus: Arc<dyn EventBus> = Arc::new(
        EmbeddedBus::start(db.db.clone(), EmbeddedConfig::default())
            .await
            .expect("bus"),
    );
    let store = aiflow_meta::Store::new(db.db.clone());
    let (tx, rx) = watch::channel(false);
    let supervisor = arg("--supervisor", String::new());
    let (scheduler, _) = Scheduler::start(
        store,
        bus.clone(),
        SchedulerConfig {
            data_dir,
            server_url: "http://127.0.0.1:1".into(),
            stop_grace: Duration::from_secs(1),
            aiflow_bin: None,
            max_running: 32,
            node: "test".into(),
            fabric: None,
            remote: false,
            job_tokens: None,
            job_token_ttl: aiflow_scheduler::service::DEFAULT_JOB_TOKEN_TTL,
            log_max_bytes: None,
            // `--supervisor PATH`: each job under `aiflow supervise`, as the server runs them.
            supervisor: (!supervisor.is_empty()).then(|| std::path::PathBuf::from(supervisor)),
            ca_cert: None,
            docker_host: None,
            gpus: None,
            container_network: None,
            job_env_passthrough: Vec::new(),
        },
        rx,
    )
    .await
    .expect("scheduler");
    Env {
        _db: db,
        bus,
        scheduler,
        _stop: tx,
    }
}

/// One kind of job: its figures.
struct Figures {
    /// Event published → the job's process accepted on the port.
    running: Vec<Duration>,
    /// Event published → the scheduler's RUNNING status for the job.
    status: Vec<Duration>,
}

/// Runs `rounds` (after `warmup` uncounted ones) of the workflow `name`, whose job `job` an event
/// with key `key` starts, and whose command connects to `listener`.
async fn measure(
    env: &Env,
    listener: &TcpListener,
    name: &str,
    job: serde_json::Value,
    warmup: usize,
    rounds: usize,
) -> Figures {
    let key = format!("bench/{name}");
    env.scheduler
        .submit(json!({
            "name": name,
            "nodes": [{"name": "job", "job": job}],
            "control_edges": [{"to": "job", "action": "START", "condition": {"event": {"key": key}}}]
        }))
        .await
        .expect("submit");
    let execution = env
        .scheduler
        .start_execution(name, json!({}))
        .await
        .expect("start");
    let filter = EventFilter {
        event_types: vec!["JOB_STATUS".into()],
        ..EventFilter::default()
    };
    let from = env.bus.latest_offset().await.expect("offset");
    let mut statuses = env.bus.subscribe(filter, from).await.expect("subscribe");
    let mut figures = Figures {
        running: Vec::with_capacity(rounds),
        status: Vec::with_capacity(rounds),
    };
    for i in 0..warmup + rounds {
        let t0 = Instant::now();
        env.bus
            .publish(NewEvent::new(&key, i.to_string()))
            .await
            .expect("publish");
        // The job's process connects: it runs.
        let (conn, _) = tokio::time::timeout(ROUND_TIMEOUT, listener.accept())
            .await
            .unwrap_or_else(|_| panic!("{name} round {i}: the job did not connect in time"))
            .expect("accept");
        let running = t0.elapsed();
        drop(conn);
        // Its RUNNING status, then its end, before the next round.
        let mut status = None;
        let ended = tokio::time::timeout(ROUND_TIMEOUT, async {
            while let Some(Ok(ev)) = statuses.next().await {
                if ev.value == "RUNNING" && status.is_none() {
                    status = Some(t0.elapsed());
                }
                if matches!(ev.value.as_str(), "SUCCEEDED" | "FAILED") {
                    return ev.value;
                }
            }
            "no status".to_string()
        })
        .await
        .unwrap_or_else(|_| panic!("{name} round {i}: the job did not end in time"));
        assert_eq!(
            ended, "SUCCEEDED",
            "{name} round {i}: the job ended {ended}"
        );
        if i >= warmup {
            figures.running.push(running);
            figures
                .status
                .push(status.expect("a RUNNING status before the end"));
        }
    }
    env.scheduler.stop_execution(&execution.id).await.ok();
    figures
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// (p50, p99, mean) in ms.
fn stats(mut v: Vec<Duration>) -> (f64, f64, f64) {
    v.sort();
    let mean = v.iter().map(|d| ms(*d)).sum::<f64>() / v.len() as f64;
    (ms(percentile(&v, 0.5)), ms(percentile(&v, 0.99)), mean)
}

fn print(kind: &str, rounds: usize, f: Figures) -> (f64, f64, f64) {
    let run = stats(f.running);
    let st = stats(f.status);
    println!(
        "{kind:<9} {rounds:>3} rounds | event -> job process running: p50 {:>7.1} ms  p99 {:>7.1} ms  mean {:>7.1} ms | event -> RUNNING status: p50 {:>7.1} ms  p99 {:>7.1} ms",
        run.0, run.1, run.2, st.0, st.1
    );
    run
}

/// A Docker engine answers and holds the image, or why not.
async fn engine() -> Result<(), String> {
    let engine = ContainerExecutor::connect(None)
        .await
        .map_err(|e| format!("no Docker engine answers: {e}"))?;
    engine.docker().inspect_image(IMAGE).await.map_err(|e| {
        format!("the engine lacks the image {IMAGE} (build it with .ci/docker.sh): {e}")
    })?;
    Ok(())
}

#[tokio::main]
async fn main() {
    let process_rounds: usize = arg("--process", 50);
    let container_rounds: usize = arg("--container", 30);
    let warmup: usize = arg("--warmup", 2);
    let data_dir =
        std::env::temp_dir().join(format!("aiflow-bench-containers-{}", std::process::id()));
    let env = env(data_dir.clone()).await;
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("listen");
    let port = listener.local_addr().expect("port").port();
    // The same command for both kinds: the connection is the job's process running.
    let command = json!(["bash", "-c", format!("exec 3<>/dev/tcp/127.0.0.1/{port}")]);
    println!(
        "job: {command}; {warmup} uncounted warm-up rounds per kind; supervisor: {}",
        arg(
            "--supervisor",
            String::from("none (jobs are tasks of this process)")
        )
    );

    let process = measure(
        &env,
        &listener,
        "bench_process",
        json!({"command": command}),
        warmup,
        process_rounds,
    )
    .await;
    let process = print("process", process_rounds, process);

    match engine().await {
        Err(why) => {
            eprintln!();
            eprintln!("################################################################");
            eprintln!("# CONTAINER PART SKIPPED: {why}");
            eprintln!("# No container figures were measured.");
            eprintln!("################################################################");
        }
        Ok(()) => {
            let container = measure(
                &env,
                &listener,
                "bench_container",
                json!({"image": IMAGE, "pull": "never", "command": command}),
                warmup,
                container_rounds,
            )
            .await;
            let container = print("container", container_rounds, container);
            println!(
                "container - process: p50 +{:.1} ms  p99 +{:.1} ms  mean +{:.1} ms",
                container.0 - process.0,
                container.1 - process.1,
                container.2 - process.2
            );
        }
    }
    let _ = std::fs::remove_dir_all(&data_dir);
}
