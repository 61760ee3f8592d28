//! Scheduler benchmarks on the embedded shape (SQLite, in-process bus, local executor):
//!
//! (a) event published → job process started (its RUNNING status), p50/p99 over N events;
//! (b) a chain of 40 light jobs (~10 ms of work each): total, and overhead per hop;
//! (c) 10,000 no-op jobs through the local executor: job executions completed per second.
//!
//! `cargo run --release -p aiflow-scheduler --bin bench_scheduler [-- --events 1000 --jobs 10000]`
//! (`--metrics` records every metric through the Prometheus recorder, as the server does;
//! `--supervisor target/release/aiflow` runs each job under `aiflow supervise`, as the server
//! does by default, instead of in this process).

use std::sync::Arc;
use std::time::{Duration, Instant};

use aiflow_api::{EventFilter, NewEvent};
use aiflow_db::testing::TestDb;
use aiflow_meta::Store;
use aiflow_notification::{EmbeddedBus, EmbeddedConfig, EventBus};
use aiflow_scheduler::{Scheduler, SchedulerConfig};
use futures::StreamExt;
use serde_json::json;
use tokio::sync::watch;

fn arg(name: &str, default: usize) -> usize {
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
    store: Store,
    scheduler: Scheduler,
    _stop: watch::Sender<bool>,
}

async fn env(max_running: usize) -> Env {
    let db = TestDb::sqlite().await;
    let bus: Arc<dyn EventBus> = Arc::new(
        EmbeddedBus::start(db.db.clone(), EmbeddedConfig::default())
            .await
            .expect("bus"),
    );
    let store = Store::new(db.db.clone());
    let (tx, rx) = watch::channel(false);
    let data_dir = std::env::temp_dir().join(format!("aiflow-bench-{}", uuid_like()));
    let (scheduler, _) = Scheduler::start(
        store.clone(),
        bus.clone(),
        SchedulerConfig {
            data_dir,
            server_url: "http://127.0.0.1:1".into(),
            stop_grace: Duration::from_secs(1),
            aiflow_bin: None,
            max_running,
            node: "test".into(),
            fabric: None,
            remote: false,
            job_tokens: None,
            job_token_ttl: aiflow_scheduler::service::DEFAULT_JOB_TOKEN_TTL,
            log_max_bytes: None,
            supervisor: supervisor(),
            ca_cert: None,
            docker_host: None,
            container_network: None,
            gpus: None,
            job_env_passthrough: Vec::new(),
        },
        rx,
    )
    .await
    .expect("scheduler");
    Env {
        _db: db,
        bus,
        store,
        scheduler,
        _stop: tx,
    }
}

/// `--supervisor PATH`: the `aiflow` binary that supervises each job (none: in-process jobs).
fn supervisor() -> Option<std::path::PathBuf> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == "--supervisor")
        .and_then(|i| args.get(i + 1))
        .map(std::path::PathBuf::from)
}

fn uuid_like() -> String {
    format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn wait_state(store: &Store, id: &str, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let e = store.get_workflow_execution(id).await.expect("execution");
        if e.state != "RUNNING" || Instant::now() > deadline {
            return e.state;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// (a) Sequential: publish, wait for the job's RUNNING status, wait for it to finish, repeat.
async fn event_to_start(n: usize) {
    let env = env(32).await;
    env.scheduler
        .submit(json!({
            "name": "bench_event",
            "nodes": [{"name": "job", "job": {"command": ["true"]}}],
            "control_edges": [{"to": "job", "action": "START", "condition": {"event": {"key": "bench/go"}}}]
        }))
        .await
        .expect("submit");
    let e = env
        .scheduler
        .start_execution("bench_event", json!({}))
        .await
        .expect("start");
    let filter = EventFilter {
        event_types: vec!["JOB_STATUS".into()],
        ..EventFilter::default()
    };
    let from = env.bus.latest_offset().await.unwrap();
    let mut statuses = env.bus.subscribe(filter, from).await.unwrap();
    let mut latencies = Vec::with_capacity(n);
    for i in 0..n {
        let t0 = Instant::now();
        env.bus
            .publish(NewEvent::new("bench/go", i.to_string()))
            .await
            .unwrap();
        let mut started = None;
        while let Some(Ok(ev)) = statuses.next().await {
            if ev.value == "RUNNING" && started.is_none() {
                started = Some(t0.elapsed());
            }
            if matches!(ev.value.as_str(), "SUCCEEDED" | "FAILED") {
                break;
            }
        }
        latencies.push(started.expect("job started"));
    }
    env.scheduler.stop_execution(&e.id).await.ok();
    latencies.sort();
    println!(
        "(a) event -> job process started, {n} events: p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
        percentile(&latencies, 0.50).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        latencies.last().unwrap().as_secs_f64() * 1e3
    );
}

/// (b) A chain of 40 jobs, each sleeping ~10 ms, linked by job_status rules.
async fn chain(len: usize) {
    let env = env(32).await;
    let nodes: Vec<_> = (0..len)
        .map(|i| json!({"name": format!("j{i}"), "job": {"command": ["sleep", "0.01"]}}))
        .collect();
    let edges: Vec<_> = (1..len)
        .map(|i| {
            json!({"to": format!("j{i}"), "action": "START",
            "condition": {"job_status": {"node": format!("j{}", i - 1), "status": "SUCCEEDED"}}})
        })
        .collect();
    env.scheduler
        .submit(json!({"name": "bench_chain", "nodes": nodes, "control_edges": edges}))
        .await
        .expect("submit");
    let t0 = Instant::now();
    let e = env
        .scheduler
        .start_execution("bench_chain", json!({}))
        .await
        .expect("start");
    let state = wait_state(&env.store, &e.id, Duration::from_secs(120)).await;
    let total = t0.elapsed();
    let jobs = env.store.list_job_executions(&e.id).await.unwrap();
    let work: Duration = jobs
        .iter()
        .filter_map(|j| (j.ended_at? - j.started_at?).to_std().ok())
        .sum();
    let overhead = total.saturating_sub(work);
    println!(
        "(b) chain of {len} jobs (sleep 10 ms each): {state} in {:.0} ms; jobs' own run time {:.0} ms; overhead {:.2} ms per hop",
        total.as_secs_f64() * 1e3,
        work.as_secs_f64() * 1e3,
        overhead.as_secs_f64() * 1e3 / len as f64
    );
}

/// (c) Many independent no-op jobs in one execution.
async fn throughput(n: usize) {
    let env = env(32).await;
    let nodes: Vec<_> = (0..n)
        .map(|i| json!({"name": format!("n{i}"), "job": {"command": ["true"]}}))
        .collect();
    env.scheduler
        .submit(json!({"name": "bench_many", "nodes": nodes}))
        .await
        .expect("submit");
    let t0 = Instant::now();
    let e = env
        .scheduler
        .start_execution("bench_many", json!({}))
        .await
        .expect("start");
    let state = wait_state(&env.store, &e.id, Duration::from_secs(600)).await;
    let secs = t0.elapsed().as_secs_f64();
    println!(
        "(c) {n} no-op jobs, 32 slots: {state} in {secs:.2} s = {:.0} job executions/s",
        n as f64 / secs
    );
}

#[tokio::main]
async fn main() {
    let events = arg("--events", 1000);
    let jobs = arg("--jobs", 10_000);
    let chain_len = arg("--chain", 40);
    if std::env::args().any(|a| a == "--metrics") {
        // As in `aiflow server`: every metric recorded by the Prometheus recorder.
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new()
            .set_buckets(&[0.001, 0.01, 0.1, 1.0, 10.0])
            .expect("buckets")
            .build_recorder();
        metrics::set_global_recorder(recorder).expect("the only recorder");
        println!("metrics: Prometheus recorder installed");
    }
    event_to_start(events).await;
    chain(chain_len).await;
    throughput(jobs).await;
}
