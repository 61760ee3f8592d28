//! Event bus benchmark: `cargo bench -p aiflow-notification --bench events`.
//!
//! Per backend (embedded SQLite, embedded PostgreSQL, NATS JetStream): publish throughput for
//! single events (64 concurrent publishers) and for batches of 100 (8 concurrent publishers),
//! single events over HTTP with 32 concurrent clients, and publish→listener latency (p50/p99)
//! under a steady 5,000 events/s. PostgreSQL and NATS are skipped when not reachable.
//! `BENCH_BACKENDS=sqlite,nats` picks backends, `BENCH_PARTS=single,batch,http,latency` the
//! measurements; `BENCH_SCALE=0.2` shrinks the run.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aiflow_api::{EventFilter, NewEvent};
use aiflow_db::testing::{TestDb, server_reachable};
use aiflow_notification::{EmbeddedBus, EmbeddedConfig, EventBus, NatsBus, NatsConfig, routes};
use futures::StreamExt;

const NATS_URL: &str = "nats://127.0.0.1:4222";

fn main() {
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_ansi(false)
            .init();
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run());
}

fn scale() -> f64 {
    std::env::var("BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0)
}

fn scaled(n: usize) -> usize {
    ((n as f64 * scale()) as usize).max(100)
}

async fn run() {
    let wanted = std::env::var("BENCH_BACKENDS").unwrap_or_else(|_| "sqlite,postgres,nats".into());
    println!(
        "{:<10} {:>16} {:>16} {:>18} {:>12} {:>12}",
        "backend", "single ev/s", "batch100 ev/s", "http single ev/s", "p50 ms", "p99 ms"
    );
    for backend in wanted.split(',') {
        let (bus, _guard): (Arc<dyn EventBus>, Option<TestDb>) = match backend {
            "sqlite" => {
                let db = TestDb::sqlite().await;
                let bus = EmbeddedBus::start(db.db.clone(), EmbeddedConfig::default())
                    .await
                    .expect("bus");
                (Arc::new(bus), Some(db))
            }
            "postgres" => {
                let Some(db) = TestDb::postgres().await else {
                    continue;
                };
                let bus = EmbeddedBus::start(db.db.clone(), EmbeddedConfig::default())
                    .await
                    .expect("bus");
                (Arc::new(bus), Some(db))
            }
            "nats" => {
                if !server_reachable("NATS", NATS_URL) {
                    continue;
                }
                let name = format!("BENCH_{}", std::process::id());
                let bus = NatsBus::connect(
                    NatsConfig::new(NATS_URL)
                        .stream(&name)
                        .subject_prefix(format!("bench.{}", std::process::id())),
                )
                .await
                .expect("nats");
                (Arc::new(bus), None)
            }
            other => panic!("unknown backend {other}"),
        };
        let parts =
            std::env::var("BENCH_PARTS").unwrap_or_else(|_| "single,batch,http,latency".into());
        let on = |p: &str| parts.split(',').any(|x| x == p);
        let single = if on("single") {
            single(&bus, 64, scaled(40_000)).await
        } else {
            0.0
        };
        let batch = if on("batch") {
            batches(&bus, 8, scaled(300_000)).await
        } else {
            0.0
        };
        let http = if on("http") {
            over_http(&bus, 32, scaled(40_000)).await
        } else {
            0.0
        };
        let (p50, p99) = if on("latency") {
            latency(&bus, 5000, scaled(20_000)).await
        } else {
            (0.0, 0.0)
        };
        println!("{backend:<10} {single:>16.0} {batch:>16.0} {http:>18.0} {p50:>12.2} {p99:>12.2}");
        if backend == "nats" {
            // Clean the stream up.
            let client = async_nats::connect(NATS_URL).await.expect("nats");
            let _ = async_nats::jetstream::new(client)
                .delete_stream(format!("BENCH_{}", std::process::id()))
                .await;
        }
    }
}

/// `tasks` publishers each publishing single events one after the other.
async fn single(bus: &Arc<dyn EventBus>, tasks: usize, total: usize) -> f64 {
    let per = total / tasks;
    let started = Instant::now();
    let mut handles = Vec::new();
    for t in 0..tasks {
        let bus = bus.clone();
        handles.push(tokio::spawn(async move {
            for i in 0..per {
                bus.publish(NewEvent::new(format!("bench/single/{t}"), i.to_string()))
                    .await
                    .expect("publish");
            }
        }));
    }
    for h in handles {
        h.await.expect("task");
    }
    (per * tasks) as f64 / started.elapsed().as_secs_f64()
}

/// `tasks` publishers each publishing batches of 100.
async fn batches(bus: &Arc<dyn EventBus>, tasks: usize, total: usize) -> f64 {
    let per = total / tasks / 100;
    let started = Instant::now();
    let mut handles = Vec::new();
    for t in 0..tasks {
        let bus = bus.clone();
        handles.push(tokio::spawn(async move {
            for b in 0..per {
                let batch = (0..100)
                    .map(|i| NewEvent::new(format!("bench/batch/{t}"), format!("{b}-{i}")))
                    .collect();
                bus.publish_batch(batch).await.expect("publish batch");
            }
        }));
    }
    for h in handles {
        h.await.expect("task");
    }
    (per * tasks * 100) as f64 / started.elapsed().as_secs_f64()
}

/// Single events through `POST /api/v1/events` from `clients` concurrent HTTP clients
/// (keep-alive), the server in this process.
async fn over_http(bus: &Arc<dyn EventBus>, clients: usize, total: usize) -> f64 {
    let (router, _) = routes(bus.clone()).split_for_parts();
    let app = axum::Router::new().nest("/api/v1", router);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    // Small request/response exchanges: no Nagle delay (the server should do the same).
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let url = format!("http://{addr}/api/v1/events");
    let per = total / clients;
    let started = Instant::now();
    let mut handles = Vec::new();
    for c in 0..clients {
        let url = url.clone();
        handles.push(tokio::spawn(async move {
            let http = aiflow_sdk::tls::http_builder(None)
                .expect("HTTP client")
                .tcp_nodelay(true)
                .build()
                .expect("http client");
            for i in 0..per {
                let resp = http
                    .post(&url)
                    .json(&NewEvent::new(format!("bench/http/{c}"), i.to_string()))
                    .send()
                    .await
                    .expect("post");
                assert_eq!(resp.status(), 201);
                let _ = resp.bytes().await;
            }
        }));
    }
    for h in handles {
        h.await.expect("client");
    }
    let rate = (per * clients) as f64 / started.elapsed().as_secs_f64();
    server.abort();
    rate
}

/// Publishes at a steady `rate` events/s (each event carries its send time) with one live
/// listener; returns p50 and p99 of publish→receive in milliseconds.
async fn latency(bus: &Arc<dyn EventBus>, rate: u64, total: usize) -> (f64, f64) {
    let origin = Instant::now();
    let filter = EventFilter {
        key: Some("bench/latency".into()),
        ..EventFilter::default()
    };
    let after = bus.latest_offset().await.expect("latest");
    let mut stream = bus.subscribe(filter, after).await.expect("subscribe");
    let listener = tokio::spawn(async move {
        let mut lat = Vec::with_capacity(total);
        while lat.len() < total {
            let e = tokio::time::timeout(Duration::from_secs(30), stream.next())
                .await
                .expect("listener stalled")
                .expect("stream ended")
                .expect("event");
            let sent: u64 = e.value.parse().expect("timestamp");
            let now = origin.elapsed().as_nanos() as u64;
            lat.push(now.saturating_sub(sent));
        }
        lat
    });
    // Ticks of 1 ms, `rate / 1000` events each, every publish its own task.
    let per_tick = (rate / 1000).max(1) as usize;
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut sent = 0;
    while sent < total {
        tick.tick().await;
        for _ in 0..per_tick.min(total - sent) {
            let bus = bus.clone();
            tokio::spawn(async move {
                let stamp = origin.elapsed().as_nanos() as u64;
                bus.publish(NewEvent::new("bench/latency", stamp.to_string()))
                    .await
                    .expect("publish");
            });
            sent += 1;
        }
    }
    let mut lat = listener.await.expect("listener");
    lat.sort_unstable();
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)] as f64 / 1e6;
    (pct(0.50), pct(0.99))
}
