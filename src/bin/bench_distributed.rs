//! Benchmarks of the distributed shape: real `aiflow server` and `aiflow worker` processes of the
//! release binary on this machine's PostgreSQL (127.0.0.1:5432, a fresh database dropped after)
//! and NATS JetStream (127.0.0.1:4222, a fresh `--cluster` whose streams are deleted after).
//!
//! (a) event published (`POST /api/v1/events` to the leader) → the job's process running on a
//!     worker, one event at a time. The job is this binary in `--stamp` mode: its first
//!     instruction reads the wall clock and writes it to a file named after the event, so the
//!     figure ends when the job's own code runs (after fork/exec and the dynamic loader). The
//!     RUNNING status event (sent when the worker reports `started`) is timed too, as seen by a
//!     plain NATS subscriber;
//! (b) a chain of 40 jobs of ~10 ms each (`--stamp … --sleep-ms 10`) linked by `job_status` rules:
//!     total, and overhead per hop = (total − the jobs' own run time by their clocks) / 40, plus
//!     the gaps between one job's end and the next one's start;
//! (c) N independent no-op jobs (`true`) in one execution on 2 workers: jobs completed per second;
//! (d) idle CPU over 60 s of the leader, the standby and each worker: `utime + stime` from
//!     `/proc/PID/stat` before and after, while nothing is asked of them.
//!
//! ```sh
//! cargo build --release --bin aiflow --bin bench_distributed
//! target/release/bench_distributed [--events 1000] [--chain 40] [--chain-runs 3] [--jobs 3000]
//!     [--slots 16] [--idle-s 60] [--aiflow PATH]
//! ```
//!
//! `AIFLOW_TEST_POSTGRES_URL` names the PostgreSQL server (default
//! `postgres://postgres@127.0.0.1:5432/test`), `AIFLOW_BENCH_NATS` the NATS server,
//! `AIFLOW_BENCH_LOG_DIR` a folder to keep the processes' logs in.

use std::io::{BufRead, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use serde_json::{Value, json};

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

fn num(name: &str, default: usize) -> usize {
    arg(name).and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Wall clock in nanoseconds since the epoch (comparable between processes of one machine).
fn now_ns() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos() as i128
}

/// `--stamp DIR [--sleep-ms N] [--by-event]`: the job side. Writes `<start_ns> <end_ns>` to
/// `DIR/<job>` (or `DIR/<job>-<event value>`), the start read before anything else.
fn stamp(dir: &str) {
    let start = now_ns();
    if let Some(ms) = arg("--sleep-ms").and_then(|v| v.parse::<u64>().ok()) {
        std::thread::sleep(Duration::from_millis(ms));
    }
    let end = now_ns();
    let job = std::env::var("AIFLOW_JOB").unwrap_or_else(|_| "job".into());
    let name = if std::env::args().any(|a| a == "--by-event") {
        let value = std::env::var("AIFLOW_EVENT")
            .ok()
            .and_then(|e| serde_json::from_str::<Value>(&e).ok())
            .and_then(|e| e["value"].as_str().map(str::to_string))
            .unwrap_or_default();
        format!("{job}-{value}")
    } else {
        job
    };
    let path = Path::new(dir).join(&name);
    let tmp = Path::new(dir).join(format!(".{name}.tmp"));
    std::fs::write(&tmp, format!("{start} {end}")).expect("write stamp");
    std::fs::rename(&tmp, &path).expect("rename stamp");
}

fn read_stamp(path: &Path) -> Option<(i128, i128)> {
    let text = std::fs::read_to_string(path).ok()?;
    let (a, b) = text.trim().split_once(' ')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// A child process killed when dropped.
struct Proc {
    child: Child,
    name: String,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Deletes the cluster's streams when dropped (also on a panic).
struct Streams {
    nats: String,
    cluster: String,
}

impl Drop for Streams {
    fn drop(&mut self) {
        let (nats, upper) = (self.nats.clone(), self.cluster.to_uppercase());
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                if let Ok(client) = async_nats::connect(&nats).await {
                    let js = async_nats::jetstream::new(client);
                    for what in ["EVENTS", "TASKS", "REPORTS", "LOGS", "CLAIMS", "WORKERS"] {
                        let _ = js.delete_stream(format!("{upper}_{what}")).await;
                    }
                }
            });
        })
        .join();
    }
}

struct Setup {
    bin: PathBuf,
    dir: PathBuf,
    db_url: String,
    nats: String,
    cluster: String,
    log_dir: Option<PathBuf>,
}

impl Setup {
    fn log_sink(&self, name: &str) -> Stdio {
        match &self.log_dir {
            Some(d) => std::fs::File::create(d.join(format!("{name}.log")))
                .map_or_else(|_| Stdio::null(), Stdio::from),
            None => Stdio::null(),
        }
    }

    /// Starts a server replica and waits for its banner; returns it and its base URL.
    fn server(&self, node: &str) -> (Proc, String) {
        let mut child = Command::new(&self.bin)
            .args(["server", "--listen", "127.0.0.1:0", "--dags", "none"])
            .arg("--data-dir")
            .arg(self.dir.join(node))
            .args(["--database", &self.db_url, "--nats", &self.nats])
            .args(["--cluster", &self.cluster])
            .args([
                "--nats-stream",
                &format!("{}_EVENTS", self.cluster.to_uppercase()),
            ])
            .env("AIFLOW_NODE", node)
            .env(
                "RUST_LOG",
                std::env::var("AIFLOW_BENCH_RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .current_dir(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start aiflow server");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        let name = node.to_string();
        let mut keep = self
            .log_dir
            .as_ref()
            .and_then(|d| std::fs::File::create(d.join(format!("{name}.log"))).ok());
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(f) = keep.as_mut() {
                    let _ = writeln!(f, "{line}");
                }
                if let Some(rest) = line.trim().strip_prefix("API") {
                    let _ = tx.send(rest.trim().trim_end_matches("/api/v1").to_string());
                } else if line.contains("ERROR") || line.contains("error:") {
                    eprintln!("[{name}] {line}");
                }
            }
        });
        let url = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("server printed its banner");
        (
            Proc {
                child,
                name: node.to_string(),
            },
            url,
        )
    }

    /// Starts a worker on the default queue, its jobs talking to `server`.
    fn worker(&self, name: &str, server: &str, slots: usize) -> Proc {
        let child = Command::new(&self.bin)
            .args(["--server", server, "worker", "--nats", &self.nats])
            .args(["--cluster", &self.cluster, "--name", name])
            .args(["--slots", &slots.to_string()])
            .arg("--data-dir")
            .arg(self.dir.join(name))
            .env(
                "RUST_LOG",
                std::env::var("AIFLOW_BENCH_RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::null())
            .stderr(self.log_sink(name))
            .spawn()
            .expect("start aiflow worker");
        Proc {
            child,
            name: name.to_string(),
        }
    }
}

async fn get(http: &reqwest::Client, url: &str) -> Value {
    let r = http.get(url).send().await.expect("GET");
    assert!(r.status().is_success(), "GET {url}: {}", r.status());
    r.json().await.expect("json")
}

async fn post(http: &reqwest::Client, url: &str, body: &Value) -> Value {
    let r = http.post(url).json(body).send().await.expect("POST");
    let status = r.status();
    let v: Value = r.json().await.unwrap_or(Value::Null);
    assert!(status.is_success(), "POST {url}: {status} {v}");
    v
}

async fn wait_for<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out after {timeout:?} waiting for {what}");
}

/// Status events as a plain NATS subscriber sees them: (event type, key, value, arrival ns).
struct Statuses {
    sub: async_nats::Subscriber,
}

impl Statuses {
    async fn next(&mut self, timeout: Duration) -> (String, String, String, i128) {
        loop {
            let m = tokio::time::timeout(timeout, self.sub.next())
                .await
                .expect("a status event within the timeout")
                .expect("subscription open");
            let at = now_ns();
            let Ok(body) = serde_json::from_slice::<Value>(&m.payload) else {
                continue;
            };
            let kind = body["event_type"].as_str().unwrap_or_default().to_string();
            if kind != "JOB_STATUS" && kind != "WORKFLOW_STATUS" {
                continue;
            }
            // `<cluster>.events.<namespace>.<key>`
            let key = m
                .subject
                .as_str()
                .splitn(4, '.')
                .nth(3)
                .unwrap_or_default()
                .to_string();
            let value = body["value"].as_str().unwrap_or_default().to_string();
            return (kind, key, value, at);
        }
    }

    /// Waits for the workflow status of `workflow` to be a final one; returns it and when.
    async fn workflow_done(&mut self, workflow: &str, timeout: Duration) -> (String, i128) {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let (kind, key, value, at) = self.next(left).await;
            if kind == "WORKFLOW_STATUS"
                && key == workflow
                && matches!(value.as_str(), "SUCCEEDED" | "FAILED" | "STOPPED")
            {
                return (value, at);
            }
        }
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(ns: i128) -> f64 {
    ns as f64 / 1e6
}

/// (a) One event at a time: publish, wait for the job's SUCCEEDED status, read its stamp.
async fn event_to_start(
    http: &reqwest::Client,
    api: &str,
    statuses: &mut Statuses,
    exe: &str,
    stamps: &Path,
    n: usize,
) {
    let dir = stamps.join("a");
    std::fs::create_dir_all(&dir).expect("stamp dir");
    let graph = json!({
        "name": "bench_event",
        "nodes": [{"name": "job", "op": "transform",
                   "job": {"command": [exe, "--stamp", dir.to_str().unwrap(), "--by-event"]}}],
        "control_edges": [{"to": "job", "action": "START", "condition": {"event": {"key": "bench/go"}}}]
    });
    post(http, &format!("{api}/workflows"), &graph).await;
    post(
        http,
        &format!("{api}/workflows/bench_event/executions"),
        &json!({}),
    )
    .await;
    let warm = 20;
    let mut started = Vec::with_capacity(n);
    let mut running = Vec::with_capacity(n);
    for i in 0..warm + n {
        let t0 = now_ns();
        post(
            http,
            &format!("{api}/events"),
            &json!({"key": "bench/go", "value": i.to_string()}),
        )
        .await;
        let mut running_at = None;
        loop {
            let (kind, key, value, at) = statuses.next(Duration::from_secs(30)).await;
            if kind != "JOB_STATUS" || key != "bench_event/job" {
                continue;
            }
            if value == "RUNNING" && running_at.is_none() {
                running_at = Some(at);
            }
            if matches!(value.as_str(), "SUCCEEDED" | "FAILED") {
                assert_eq!(value, "SUCCEEDED", "event {i}: the job failed");
                break;
            }
        }
        let (start, _) = read_stamp(&dir.join(format!("job-{i}")))
            .unwrap_or_else(|| panic!("event {i}: the job wrote no stamp"));
        if i >= warm {
            started.push(ms(start - t0));
            if let Some(r) = running_at {
                running.push(ms(r - t0));
            }
        }
    }
    started.sort_by(f64::total_cmp);
    running.sort_by(f64::total_cmp);
    println!(
        "(a) event -> job process running on a worker ({n} events, after {warm} unmeasured): \
         p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
        percentile(&started, 0.5),
        percentile(&started, 0.9),
        percentile(&started, 0.99),
        started.last().unwrap()
    );
    if !running.is_empty() {
        println!(
            "    RUNNING status event at a NATS subscriber: p50 {:.2} ms  p99 {:.2} ms  ({} of {n} seen)",
            percentile(&running, 0.5),
            percentile(&running, 0.99),
            running.len()
        );
    }
}

/// (b) A chain of `len` jobs (~10 ms each) linked by job_status rules.
async fn chain(
    http: &reqwest::Client,
    api: &str,
    statuses: &mut Statuses,
    exe: &str,
    stamps: &Path,
    len: usize,
    run: usize,
) {
    let dir = stamps.join(format!("b{run}"));
    std::fs::create_dir_all(&dir).expect("stamp dir");
    let name = format!("bench_chain_{run}");
    let nodes: Vec<_> = (0..len)
        .map(|i| {
            json!({"name": format!("j{i}"), "op": "transform",
                   "job": {"command": [exe, "--stamp", dir.to_str().unwrap(), "--sleep-ms", "10"]}})
        })
        .collect();
    let edges: Vec<_> = (1..len)
        .map(|i| {
            json!({"to": format!("j{i}"), "action": "START",
            "condition": {"job_status": {"node": format!("j{}", i - 1), "status": "SUCCEEDED"}}})
        })
        .collect();
    post(
        http,
        &format!("{api}/workflows"),
        &json!({"name": name, "nodes": nodes, "control_edges": edges}),
    )
    .await;
    let t0 = now_ns();
    post(
        http,
        &format!("{api}/workflows/{name}/executions"),
        &json!({}),
    )
    .await;
    let (state, t_end) = statuses
        .workflow_done(&name, Duration::from_secs(120))
        .await;
    let total = t_end - t0;
    let mut work = 0i128;
    let mut gaps = Vec::new();
    let mut prev_end = None;
    let mut first_start = 0;
    for i in 0..len {
        let (s, e) = read_stamp(&dir.join(format!("j{i}")))
            .unwrap_or_else(|| panic!("chain job j{i} wrote no stamp"));
        work += e - s;
        match prev_end {
            Some(p) => gaps.push(ms(s - p)),
            None => first_start = s,
        }
        prev_end = Some(e);
    }
    let last_gap = t_end - prev_end.unwrap_or(t_end);
    gaps.sort_by(f64::total_cmp);
    println!(
        "(b) chain of {len} jobs (10 ms sleep each), run {run}: {state} in {:.0} ms; jobs' own run time {:.0} ms; \
         overhead {:.2} ms per hop",
        ms(total),
        ms(work),
        ms(total - work) / len as f64
    );
    println!(
        "    end of job i -> start of job i+1: median {:.2} ms  p90 {:.2} ms  max {:.2} ms; \
         start -> first job {:.2} ms; last job -> workflow SUCCEEDED seen {:.2} ms",
        percentile(&gaps, 0.5),
        percentile(&gaps, 0.9),
        gaps.last().copied().unwrap_or_default(),
        ms(first_start - t0),
        ms(last_gap)
    );
}

/// (c) `n` independent no-op jobs in one execution; with the CPU time each process spent on them.
async fn throughput(
    http: &reqwest::Client,
    api: &str,
    statuses: &mut Statuses,
    n: usize,
    procs: &[&Proc],
) {
    let nodes: Vec<_> = (0..n)
        .map(|i| json!({"name": format!("n{i}"), "op": "transform", "job": {"command": ["true"]}}))
        .collect();
    post(
        http,
        &format!("{api}/workflows"),
        &json!({"name": "bench_many", "nodes": nodes}),
    )
    .await;
    let cpu0: Vec<u64> = procs.iter().map(|p| cpu_ticks(p.child.id())).collect();
    let t0 = now_ns();
    let e = post(
        http,
        &format!("{api}/workflows/bench_many/executions"),
        &json!({}),
    )
    .await;
    assert!(e["id"].is_string(), "execution started: {e}");
    let (state, t_end) = statuses
        .workflow_done("bench_many", Duration::from_secs(900))
        .await;
    let secs = ms(t_end - t0) / 1e3;
    println!(
        "(c) {n} no-op jobs on 2 workers: {state} in {secs:.2} s = {:.0} jobs/s",
        n as f64 / secs
    );
    let tck = clk_tck();
    let per_job: Vec<String> = procs
        .iter()
        .zip(cpu0)
        .map(|(p, c0)| {
            let used = (cpu_ticks(p.child.id()) - c0) as f64 / tck;
            format!("{} {:.0} µs", p.name, used * 1e6 / n as f64)
        })
        .collect();
    println!(
        "    CPU time per job (utime+stime, job processes not counted): {}",
        per_job.join(", ")
    );
}

fn clk_tck() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// `utime + stime` of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("proc stat");
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = &stat[stat.rfind(')').expect("stat") + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state): utime is field 14, stime 15.
    f[11].parse::<u64>().unwrap_or(0) + f[12].parse::<u64>().unwrap_or(0)
}

fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// (d) Idle CPU of each process over `secs` seconds.
async fn idle(procs: &[&Proc], secs: u64) {
    let tck = clk_tck();
    let before: Vec<u64> = procs.iter().map(|p| cpu_ticks(p.child.id())).collect();
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let wall = t0.elapsed().as_secs_f64();
    for (p, b) in procs.iter().zip(before) {
        let used = (cpu_ticks(p.child.id()) - b) as f64 / tck;
        println!(
            "(d) idle {:<8} {:.3} s of CPU in {wall:.0} s = {:.3} % of a core  (RSS {:.1} MB)",
            p.name,
            used,
            100.0 * used / wall,
            rss_kb(p.child.id()) as f64 / 1024.0
        );
    }
}

fn main() {
    if let Some(dir) = arg("--stamp") {
        stamp(&dir);
        return;
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(bench());
}

async fn bench() {
    let exe = std::env::current_exe().expect("own path");
    let bin = arg("--aiflow").map_or_else(|| exe.with_file_name("aiflow"), PathBuf::from);
    assert!(
        bin.is_file(),
        "{} not found: `cargo build --release --bin aiflow` first, or pass --aiflow PATH",
        bin.display()
    );
    let nats =
        std::env::var("AIFLOW_BENCH_NATS").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    let nats_addr = nats.trim_start_matches("nats://").to_string();
    if !aiflow_db::testing::server_reachable("NATS", &nats_addr) {
        std::process::exit(1);
    }
    let Some(db) = aiflow_db::testing::TestDb::postgres().await else {
        std::process::exit(1);
    };
    let events = num("--events", 1000);
    let chain_len = num("--chain", 40);
    let chain_runs = num("--chain-runs", 3);
    let jobs = num("--jobs", 3000);
    let slots = num("--slots", 16);
    let idle_s = num("--idle-s", 60) as u64;
    let nanos = now_ns();
    let cluster = format!("b{:x}", (nanos as u64) ^ u64::from(std::process::id()));
    let dir = std::env::temp_dir().join(format!("aiflow-dbench-{cluster}"));
    std::fs::create_dir_all(&dir).expect("bench dir");
    let log_dir = std::env::var("AIFLOW_BENCH_LOG_DIR")
        .ok()
        .map(PathBuf::from);
    if let Some(d) = &log_dir {
        std::fs::create_dir_all(d).expect("log dir");
    }
    let _streams = Streams {
        nats: nats.clone(),
        cluster: cluster.clone(),
    };
    let setup = Setup {
        bin: bin.clone(),
        dir: dir.clone(),
        db_url: db.url.clone(),
        nats: nats.clone(),
        cluster: cluster.clone(),
        log_dir,
    };
    println!(
        "aiflow: {}\ncluster {cluster} on {nats}; database {}\n2 workers x {slots} slots; \
         machine: {} cores, load average {}",
        bin.display(),
        aiflow_db::redact(&db.url),
        std::thread::available_parallelism().map_or(0, std::num::NonZero::get),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );

    let http = aiflow_sdk::tls::http_client_from_env().expect("HTTP client");
    let (s1, u1) = setup.server("s1");
    wait_for("s1 to lead", Duration::from_secs(20), || async {
        let r = get(&http, &format!("{u1}/readyz")).await;
        r["scheduler"]["role"] == "leader"
    })
    .await;
    let (s2, _u2) = setup.server("s2");
    let w1 = setup.worker("w1", &u1, slots);
    let w2 = setup.worker("w2", &u1, slots);
    let api = format!("{u1}/api/v1");
    wait_for(
        "both workers to register",
        Duration::from_secs(20),
        || async {
            let w = get(&http, &format!("{api}/workers")).await;
            w["items"]
                .as_array()
                .is_some_and(|i| i.iter().filter(|w| w["alive"] == true).count() == 2)
        },
    )
    .await;
    let client = async_nats::connect(&nats).await.expect("NATS");
    let mut statuses = Statuses {
        sub: client
            .subscribe(format!("{cluster}.events.>"))
            .await
            .expect("subscribe"),
    };
    let exe_s = exe.to_str().expect("utf-8 path").to_string();
    let stamps = dir.join("stamps");

    if events > 0 {
        event_to_start(&http, &api, &mut statuses, &exe_s, &stamps, events).await;
    }
    if chain_len > 1 {
        for run in 1..=chain_runs {
            chain(&http, &api, &mut statuses, &exe_s, &stamps, chain_len, run).await;
        }
    }
    if jobs > 0 {
        throughput(&http, &api, &mut statuses, jobs, &[&s1, &w1, &w2]).await;
    }
    if idle_s > 0 {
        // Let the last reports, log chunks and status events settle first.
        tokio::time::sleep(Duration::from_secs(3)).await;
        idle(&[&s1, &s2, &w1, &w2], idle_s).await;
    }
    drop((w1, w2, s1, s2));
    let _ = std::fs::remove_dir_all(&dir);
}
