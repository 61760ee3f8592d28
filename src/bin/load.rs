//! `aiflow-load`: load and soak test of an AI Flow server on loopback.
//!
//! Starts `aiflow server` on a temporary data folder (or targets one with `--server`), then N
//! connections each send requests back to back for a bounded time, a mix of event publishing
//! and API reads. Prints per kind the requests sent, errors, p50/p99 latency; the throughput;
//! and the server's resident memory at start, during and at the end (from /proc). Stops by
//! itself.
//!
//! ```sh
//! cargo build --release --bin aiflow --bin aiflow-load
//! target/release/aiflow-load --duration 600s --connections 16
//! ```

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;

/// Load and soak test of an AI Flow server on loopback.
#[derive(Debug, Parser)]
#[command(name = "aiflow-load", version)]
struct Args {
    /// How long to send requests: `20s`, `10m`, `600` (seconds).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    duration: Duration,
    /// Concurrent connections, each sending its next request when the last one is answered.
    #[arg(long, short = 'c', default_value_t = 16)]
    connections: usize,
    /// Target a running server (a loopback URL) instead of starting one.
    #[arg(long)]
    server: Option<String>,
    /// The PID of the targeted server, for its memory figures.
    #[arg(long)]
    server_pid: Option<u32>,
    /// The `aiflow` binary to start (default: the one beside this program).
    #[arg(long)]
    aiflow: Option<PathBuf>,
    /// The dags folder the started server loads.
    #[arg(long, default_value = "dags")]
    dags: PathBuf,
    /// Weights of the request kinds: publish,events,workflows,executions,models.
    #[arg(long, default_value = "50,20,10,10,10")]
    mix: String,
    /// Print progress every this many seconds.
    #[arg(long, default_value_t = 30)]
    progress_s: u64,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("duration {s:?}: expected a number and s, m or h"))?;
    let secs = match unit {
        "s" | "" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => return Err(format!("duration {s:?}: unit must be s, m or h")),
    };
    if secs == 0 {
        return Err("duration must be at least 1 second".into());
    }
    Ok(Duration::from_secs(secs))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Publish,
    Events,
    Workflows,
    Executions,
    Models,
}

impl Kind {
    const ALL: [Kind; 5] = [
        Kind::Publish,
        Kind::Events,
        Kind::Workflows,
        Kind::Executions,
        Kind::Models,
    ];

    fn label(self) -> &'static str {
        match self {
            Kind::Publish => "POST /events",
            Kind::Events => "GET /events?limit=100",
            Kind::Workflows => "GET /workflows",
            Kind::Executions => "GET /executions",
            Kind::Models => "GET /models",
        }
    }
}

/// What one connection measured.
#[derive(Default)]
struct Tally {
    /// Latencies in microseconds, per kind.
    latencies: [Vec<u32>; 5],
    errors: [u64; 5],
    first_errors: Vec<String>,
}

/// The server under test: started here (and stopped at the end) or targeted.
struct Target {
    base: String,
    pid: Option<u32>,
    child: Option<Child>,
    data: Option<PathBuf>,
}

impl Target {
    fn start(aiflow: &Path, dags: &Path) -> anyhow::Result<Target> {
        let data = std::env::temp_dir().join(format!(
            "aiflow-load-{}-{}",
            std::process::id(),
            chrono_like_stamp()
        ));
        std::fs::create_dir_all(&data)?;
        let mut child = Command::new(aiflow)
            .args(["server", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data.join("data"))
            .arg("--dags")
            .arg(dags)
            .env("RUST_LOG", "warn")
            .env_remove("AIFLOW_DATABASE")
            .env_remove("AIFLOW_NATS")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| {
                format!(
                    "cannot start {} (build it: cargo build --release --bin aiflow)",
                    aiflow.display()
                )
            })?;
        let stderr = child.stderr.take().expect("piped");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if let Some(rest) = line.trim().strip_prefix("API") {
                    let _ = tx.send(rest.trim().trim_end_matches("/api/v1").to_string());
                }
            }
        });
        let base = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(b) => b,
            Err(_) => {
                let _ = child.kill();
                bail!("the server printed no banner within 60 s");
            }
        };
        Ok(Target {
            base,
            pid: Some(child.id()),
            child: Some(child),
            data: Some(data),
        })
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(d) = self.data.take() {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        self.stop();
    }
}

fn chrono_like_stamp() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

/// `VmRSS` (and `VmHWM`, the peak) of a process in KiB.
fn rss_kib(pid: u32) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
    };
    Some((field("VmRSS:")?, field("VmHWM:").unwrap_or(0)))
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// The host of a URL is on loopback: this tool never sends load elsewhere.
fn check_loopback(base: &str) -> anyhow::Result<()> {
    let url = reqwest::Url::parse(base).with_context(|| format!("bad server URL {base:?}"))?;
    let host = url.host_str().unwrap_or_default();
    let ok = host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if !ok {
        bail!(
            "{base} is not a loopback address; aiflow-load only targets 127.0.0.0/8, ::1 or localhost"
        );
    }
    Ok(())
}

/// Small deterministic generator (xorshift), one per connection.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

async fn one_request(
    client: &reqwest::Client,
    api: &str,
    kind: Kind,
    conn: usize,
    seq: u64,
    latest: &AtomicI64,
) -> Result<(), String> {
    let resp = match kind {
        Kind::Publish => {
            client
                .post(format!("{api}/events"))
                .json(&serde_json::json!({
                    "key": format!("load/{conn}"),
                    "value": seq.to_string(),
                    "event_type": "LOAD",
                    "sender": "load-test",
                }))
                .send()
                .await
        }
        Kind::Events => {
            let after = (latest.load(Ordering::Relaxed) - 100).max(0);
            client
                .get(format!("{api}/events"))
                .query(&[("limit", "100".to_string()), ("after", after.to_string())])
                .send()
                .await
        }
        Kind::Workflows => client.get(format!("{api}/workflows")).send().await,
        Kind::Executions => {
            client
                .get(format!("{api}/executions"))
                .query(&[("limit", "50")])
                .send()
                .await
        }
        Kind::Models => client.get(format!("{api}/models")).send().await,
    }
    .map_err(|e| format!("{}: {e}", kind.label()))?;
    let status = resp.status();
    let body = resp
        .bytes()
        .await
        .map_err(|e| format!("{}: reading the body: {e}", kind.label()))?;
    if !status.is_success() {
        return Err(format!(
            "{}: {status}: {}",
            kind.label(),
            String::from_utf8_lossy(&body[..body.len().min(200)])
        ));
    }
    if kind == Kind::Publish
        && let Ok(v) = serde_json::from_slice::<serde_json::Value>(&body)
        && let Some(o) = v["offset"].as_i64()
    {
        latest.fetch_max(o, Ordering::Relaxed);
    }
    Ok(())
}

async fn connection(
    api: String,
    conn: usize,
    weights: [u64; 5],
    stop: Arc<AtomicBool>,
    latest: Arc<AtomicI64>,
) -> Tally {
    let client = aiflow_sdk::tls::http_builder(None)
        .expect("HTTP client")
        .pool_max_idle_per_host(1)
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("http client");
    let total: u64 = weights.iter().sum();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (conn as u64 + 1).wrapping_mul(0x2545_F491));
    let mut tally = Tally::default();
    let mut seq = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let mut pick = rng.next() % total;
        let mut idx = 0;
        while pick >= weights[idx] {
            pick -= weights[idx];
            idx += 1;
        }
        let kind = Kind::ALL[idx];
        seq += 1;
        let start = Instant::now();
        let outcome = one_request(&client, &api, kind, conn, seq, &latest).await;
        let us = u32::try_from(start.elapsed().as_micros()).unwrap_or(u32::MAX);
        tally.latencies[idx].push(us);
        if let Err(e) = outcome {
            tally.errors[idx] += 1;
            if tally.first_errors.len() < 5 {
                tally.first_errors.push(e);
            }
        }
    }
    tally
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    f64::from(sorted[i.min(sorted.len() - 1)]) / 1000.0
}

/// Creates a few models so that `GET /models` has something to list.
async fn prepare(client: &reqwest::Client, api: &str) -> anyhow::Result<()> {
    for i in 0..5 {
        let resp = client
            .post(format!("{api}/models"))
            .json(
                &serde_json::json!({"name": format!("load-model-{i}"), "tags": {"bench": "load"}}),
            )
            .send()
            .await?;
        if !(resp.status().is_success() || resp.status() == reqwest::StatusCode::CONFLICT) {
            bail!("creating a model: {}", resp.status());
        }
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let weights: Vec<u64> = args
        .mix
        .split(',')
        .map(|w| w.trim().parse::<u64>())
        .collect::<Result<_, _>>()
        .context("--mix: five whole numbers separated by commas")?;
    let weights: [u64; 5] = weights
        .try_into()
        .map_err(|_| anyhow::anyhow!("--mix: give five weights"))?;
    if weights.iter().sum::<u64>() == 0 {
        bail!("--mix: the weights add up to 0");
    }
    if args.connections == 0 {
        bail!("--connections must be at least 1");
    }

    let mut target = match &args.server {
        Some(url) => {
            check_loopback(url)?;
            Target {
                base: url
                    .trim_end_matches('/')
                    .trim_end_matches("/api/v1")
                    .to_string(),
                pid: args.server_pid,
                child: None,
                data: None,
            }
        }
        None => {
            let aiflow = match &args.aiflow {
                Some(p) => p.clone(),
                None => std::env::current_exe()?
                    .parent()
                    .context("no folder for this program")?
                    .join("aiflow"),
            };
            Target::start(&aiflow, &args.dags)?
        }
    };
    check_loopback(&target.base)?;
    let api = format!("{}/api/v1", target.base);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let result = runtime.block_on(run(&args, &api, target.pid, weights));
    target.stop();
    result
}

async fn run(args: &Args, api: &str, pid: Option<u32>, weights: [u64; 5]) -> anyhow::Result<()> {
    let setup = aiflow_sdk::tls::http_client_from_env().expect("HTTP client");
    prepare(&setup, api).await?;
    let rss_start = pid.and_then(rss_kib);
    println!(
        "aiflow-load: {} connections for {} s against {api} (mix publish,events,workflows,executions,models = {})",
        args.connections,
        args.duration.as_secs(),
        args.mix
    );
    if let Some((rss, _)) = rss_start {
        println!("server RSS at start: {}", mib(rss));
    }

    let stop = Arc::new(AtomicBool::new(false));
    let latest = Arc::new(AtomicI64::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..args.connections)
        .map(|c| {
            tokio::spawn(connection(
                api.to_string(),
                c,
                weights,
                stop.clone(),
                latest.clone(),
            ))
        })
        .collect();

    // Progress and memory while it runs.
    let mut rss_max = rss_start.map_or(0, |r| r.0);
    let mut samples: Vec<(u64, u64)> = Vec::new();
    let step = Duration::from_secs(args.progress_s.max(1));
    let mut last_offset = 0;
    let mut last_at = Instant::now();
    loop {
        let left = args.duration.saturating_sub(started.elapsed());
        if left.is_zero() {
            break;
        }
        tokio::time::sleep(left.min(step)).await;
        let elapsed = started.elapsed().as_secs();
        let offset = latest.load(Ordering::Relaxed);
        let rss = pid.and_then(rss_kib).map(|r| r.0);
        if let Some(r) = rss {
            rss_max = rss_max.max(r);
            samples.push((elapsed, r));
        }
        println!(
            "  {elapsed:>5} s  events stored up to offset {offset} (+{:.0}/s)  server RSS {}",
            (offset - last_offset) as f64 / last_at.elapsed().as_secs_f64().max(0.001),
            rss.map_or("?".to_string(), mib)
        );
        last_offset = offset;
        last_at = Instant::now();
    }
    stop.store(true, Ordering::Relaxed);
    let mut all = Tally::default();
    for t in tasks {
        let t = t.await?;
        for i in 0..5 {
            all.latencies[i].extend_from_slice(&t.latencies[i]);
            all.errors[i] += t.errors[i];
        }
        for e in t.first_errors {
            if all.first_errors.len() < 10 {
                all.first_errors.push(e);
            }
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let rss_end = pid.and_then(rss_kib);

    println!();
    println!(
        "{:<24} {:>10} {:>8} {:>10} {:>10} {:>10}",
        "kind", "requests", "errors", "p50 ms", "p99 ms", "max ms"
    );
    let mut total = 0usize;
    let mut errors = 0u64;
    let mut every: Vec<u32> = Vec::new();
    for (i, kind) in Kind::ALL.iter().enumerate() {
        let l = &mut all.latencies[i];
        l.sort_unstable();
        total += l.len();
        errors += all.errors[i];
        every.extend_from_slice(l);
        println!(
            "{:<24} {:>10} {:>8} {:>10.2} {:>10.2} {:>10.2}",
            kind.label(),
            l.len(),
            all.errors[i],
            percentile(l, 0.50),
            percentile(l, 0.99),
            l.last().map_or(0.0, |m| f64::from(*m) / 1000.0),
        );
    }
    every.sort_unstable();
    println!(
        "{:<24} {:>10} {:>8} {:>10.2} {:>10.2} {:>10.2}",
        "all",
        total,
        errors,
        percentile(&every, 0.50),
        percentile(&every, 0.99),
        every.last().map_or(0.0, |m| f64::from(*m) / 1000.0),
    );
    println!();
    println!(
        "throughput: {:.0} requests/s over {:.1} s ({:.0} events/s published)",
        total as f64 / elapsed,
        elapsed,
        all.latencies[0].len() as f64 / elapsed
    );
    if let (Some((start, _)), Some((end, peak))) = (rss_start, rss_end) {
        println!(
            "server RSS: start {}, end {}, largest sampled {}, peak (VmHWM) {}",
            mib(start),
            mib(end),
            mib(rss_max.max(end)),
            mib(peak)
        );
        if samples.len() >= 4 {
            // Growth over the second half of the run: a leak keeps growing, a cache levels off.
            let half = samples[samples.len() / 2];
            let last = samples[samples.len() - 1];
            println!(
                "server RSS over the second half: {} at {} s -> {} at {} s",
                mib(half.1),
                half.0,
                mib(last.1),
                last.0
            );
        }
    } else {
        println!("server RSS: unknown (give --server-pid for a server started elsewhere)");
    }
    for e in &all.first_errors {
        println!("error: {e}");
    }
    println!("aiflow-load: {total} requests, {errors} errors");
    if errors > 0 {
        bail!("{errors} requests failed");
    }
    Ok(())
}
