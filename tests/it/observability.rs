//! Observability end to end, on the real `aiflow server` binary: `/metrics` after a small
//! workflow run (exact counter moves, the format parses, labels stay bounded), the W3C trace
//! parent from the publishing request to the job's `TRACEPARENT` (with and without OTLP export
//! to an in-process receiver), and `aiflow event trace`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_aiflow");

struct Server {
    child: Child,
    url: String,
    host: String,
    /// Every line the server wrote on stderr.
    log: Arc<Mutex<Vec<String>>>,
}

impl Server {
    /// Starts the server in `dir` on a free port (with `extra` flags) and waits for its banner.
    fn start(dir: &Path, extra: &[&str]) -> Server {
        Server::start_logging(dir, extra, "warn")
    }

    fn start_logging(dir: &Path, extra: &[&str], rust_log: &str) -> Server {
        let mut child = Command::new(BIN)
            .args(["server", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.join("data"))
            .args(extra)
            .current_dir(dir)
            .env("RUST_LOG", rust_log)
            .env_remove("AIFLOW_DATABASE")
            .env_remove("AIFLOW_NATS")
            .env_remove("AIFLOW_OTLP_ENDPOINT")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start aiflow server");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let log = Arc::new(Mutex::new(Vec::new()));
        let lines = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.trim().strip_prefix("API") {
                    let _ = tx.send(rest.trim().trim_end_matches("/api/v1").to_string());
                }
                lines.lock().unwrap().push(line);
            }
        });
        let url = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("server printed its banner");
        let host = url.trim_start_matches("http://").to_string();
        Server {
            child,
            url,
            host,
            log,
        }
    }

    fn cli(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .args(["--server", &self.url, "--output", "json"])
            .args(args)
            .output()
            .expect("run aiflow")
    }

    fn table(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .args(["--server", &self.url, "--output", "table"])
            .args(args)
            .output()
            .expect("run aiflow")
    }

    fn json(&self, args: &[&str]) -> serde_json::Value {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "aiflow {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("json output")
    }

    /// A plain HTTP/1.1 request: status and body.
    fn http(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> (u16, String) {
        let mut s = std::net::TcpStream::connect(&self.host).unwrap();
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
            self.host,
            body.len()
        );
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        s.write_all(head.as_bytes()).unwrap();
        s.write_all(body.as_bytes()).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        let status = out[9..12].parse().unwrap();
        let body = out.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
        // Small answers come with Content-Length; chunked ones are not used by these routes.
        (status, body.to_string())
    }

    fn metrics(&self) -> Metrics {
        let (status, text) = self.http("GET", "/metrics", &[], "");
        assert_eq!(status, 200);
        Metrics::parse(&text)
    }

    /// Polls `check` on the metrics until it holds (20 s at most).
    fn wait_metrics(&self, what: &str, check: impl Fn(&Metrics) -> bool) -> Metrics {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let m = self.metrics();
            if check(&m) {
                return m;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn wait_execution(
        &self,
        id: &str,
        check: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let shown = self.json(&["execution", "show", id]);
            if check(&shown) {
                return shown;
            }
            assert!(Instant::now() < deadline, "execution {id}: {shown}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGTERM, then wait for a clean exit.
    fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                assert!(status.success(), "graceful shutdown exits 0, got {status}");
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        panic!("server did not stop within 15 s of SIGTERM");
    }
}

/// A scrape, parsed with `prometheus-parse`.
struct Metrics {
    samples: Vec<prometheus_parse::Sample>,
}

impl Metrics {
    fn parse(text: &str) -> Metrics {
        let lines = text.lines().map(|l| Ok(l.to_string()));
        let scrape = prometheus_parse::Scrape::parse(lines).expect("the Prometheus text format");
        // Every sample line was understood (the parser skips lines it cannot read); the
        // buckets of one histogram series come back as one sample.
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .collect();
        let expected = lines.iter().filter(|l| !l.contains("_bucket{")).count()
            + lines.iter().filter(|l| l.contains("le=\"+Inf\"")).count();
        assert_eq!(
            scrape.samples.len(),
            expected,
            "every sample parses:\n{text}"
        );
        Metrics {
            samples: scrape.samples,
        }
    }

    /// Counter or gauge value (a histogram's count) summed over the series whose labels
    /// include `with`.
    fn value(&self, name: &str, with: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .filter(|s| s.metric == name && with.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .map(|s| match &s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => *v,
                prometheus_parse::Value::Histogram(h) => {
                    h.iter().map(|b| b.count).fold(0.0, f64::max)
                }
                prometheus_parse::Value::Summary(_) => 0.0,
            })
            .sum()
    }
}

fn write(dir: &Path, name: &str, doc: &serde_json::Value) -> String {
    let path = dir.join(name);
    std::fs::write(&path, doc.to_string()).unwrap();
    path.to_str().unwrap().to_string()
}

/// The `aiflow_…` metric names a text uses, without histogram suffixes.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("aiflow_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..end];
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(name);
        out.insert(base.to_string());
        rest = &tail[end..];
    }
    out
}

/// Label values that may appear: closed sets, and shapes for the open-but-bounded ones.
fn check_labels_are_bounded(m: &Metrics, forbidden: &[&str]) {
    let states = [
        "WAITING",
        "QUEUED",
        "RUNNING",
        "RETRYING",
        "SUCCEEDED",
        "FAILED",
        "STOPPED",
    ];
    let mut values: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for s in &m.samples {
        assert!(
            s.metric.starts_with("aiflow_"),
            "metric {} is not namespaced",
            s.metric
        );
        for (k, v) in s.labels.iter() {
            for f in forbidden {
                assert!(!v.contains(f), "{}: label {k}={v:?} holds {f:?}", s.metric);
            }
            let ok = match k.as_str() {
                "backend" | "database" | "events" => {
                    ["sqlite", "postgres", "nats"].contains(&v.as_str())
                }
                "state" => states.contains(&v.as_str()),
                "queue" => v == "default",
                "method" => [
                    "GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "OTHER",
                ]
                .contains(&v.as_str()),
                "route" => v == "unmatched" || (v.starts_with('/') && !v.contains(['?', '{', '}'])),
                "status" => {
                    v.len() == 3 && (v.chars().all(|c| c.is_ascii_digit()) || v.ends_with("xx"))
                        || v == "error"
                }
                "store" => ["meta", "events", "scheduler"].contains(&v.as_str()),
                "op" => !v.is_empty() && v.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
                "signal" => ["event", "job_status"].contains(&v.as_str()),
                "action" => ["start", "stop", "restart", "none"].contains(&v.as_str()),
                "cause" => ["event", "other"].contains(&v.as_str()),
                "version" => v == env!("CARGO_PKG_VERSION"),
                other => panic!("{}: unexpected label {other}={v:?}", s.metric),
            };
            assert!(
                ok,
                "{}: label {k}={v:?} is not of its bounded set",
                s.metric
            );
            values.entry(k.clone()).or_default().insert(v.clone());
        }
    }
    for (k, vs) in &values {
        assert!(vs.len() <= 80, "label {k} has {} values: {vs:?}", vs.len());
    }
}

/// An event-triggered two-job chain: exact counter moves, parseable format, bounded labels.
#[test]
fn metrics_move_by_exactly_one_workflow_run() {
    let dir = tempfile::tempdir().unwrap();
    let graph = write(
        dir.path(),
        "chain.json",
        &serde_json::json!({
            "name": "obs_chain",
            "nodes": [
                {"name": "a", "job": {"command": ["sh", "-c", "echo a"]}},
                {"name": "b", "job": {"command": ["sh", "-c", "echo b"]}}
            ],
            "control_edges": [{"to": "b", "action": "START",
                "condition": {"job_status": {"node": "a", "status": "SUCCEEDED"}}}],
            "triggers": [{"event": {"key": "obs/data/*"}}]
        }),
    );
    let server = Server::start(dir.path(), &[]);
    server.json(&["workflow", "submit", &graph]);
    let before = server.wait_metrics("the scheduler to catch up", |m| {
        m.value("aiflow_scheduler_handled_offset", &[])
            == m.value("aiflow_events_latest_offset", &[])
    });
    let offset_before = before.value("aiflow_events_latest_offset", &[]) as i64;

    let sent = server.json(&[
        "event",
        "send",
        "--key",
        "obs/data/2026-11-25",
        "--value",
        "v1",
    ]);
    let deadline = Instant::now() + Duration::from_secs(30);
    let id = loop {
        let list = server.json(&["execution", "list", "--workflow", "obs_chain"]);
        if let Some(id) = list["items"][0]["id"].as_str() {
            break id.to_string();
        }
        assert!(Instant::now() < deadline, "no execution started: {list}");
        std::thread::sleep(Duration::from_millis(100));
    };
    server.wait_execution(&id, |e| e["execution"]["state"] == "SUCCEEDED");
    // The final WORKFLOW_STATUS event is stored, and handled by the scheduler.
    let deadline = Instant::now() + Duration::from_secs(20);
    let events = loop {
        let all = server.json(&[
            "event",
            "list",
            "--after",
            &offset_before.to_string(),
            "--limit",
            "1000",
        ]);
        let items = all["items"].as_array().unwrap().clone();
        if items
            .iter()
            .any(|e| e["event_type"] == "WORKFLOW_STATUS" && e["value"] == "SUCCEEDED")
        {
            break items;
        }
        assert!(Instant::now() < deadline, "no final status event: {all}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let latest = events.last().unwrap()["offset"].as_f64().unwrap();
    let after = server.wait_metrics("the scheduler to handle every event", |m| {
        m.value("aiflow_scheduler_handled_offset", &[]) == latest
            && m.value("aiflow_scheduler_committed_offset", &[]) == latest
    });
    let d = |name: &str, with: &[(&str, &str)]| after.value(name, with) - before.value(name, with);

    // Events: the one sent, and the scheduler's status events of the run.
    let stored = events.len() as f64;
    assert_eq!(sent["offset"].as_i64().unwrap(), offset_before + 1);
    assert_eq!(
        d("aiflow_events_published_total", &[("backend", "sqlite")]),
        stored
    );
    assert_eq!(
        d("aiflow_events_delivered_total", &[("backend", "sqlite")]),
        stored,
        "the scheduler is the one subscriber"
    );
    assert_eq!(d("aiflow_scheduler_events_handled_total", &[]), stored);
    assert_eq!(after.value("aiflow_scheduler_lag_events", &[]), 0.0);
    assert_eq!(d("aiflow_scheduler_event_handling_seconds", &[]), stored);
    // Executions and jobs.
    assert_eq!(
        d("aiflow_workflow_executions_total", &[("state", "RUNNING")]),
        1.0
    );
    assert_eq!(
        d(
            "aiflow_workflow_executions_total",
            &[("state", "SUCCEEDED")]
        ),
        1.0
    );
    for state in ["QUEUED", "RUNNING", "SUCCEEDED"] {
        assert_eq!(
            d(
                "aiflow_job_executions_total",
                &[("state", state), ("queue", "default")]
            ),
            2.0,
            "{state}"
        );
    }
    assert_eq!(
        d("aiflow_job_executions_total", &[("state", "FAILED")]),
        0.0
    );
    assert_eq!(d("aiflow_queue_wait_seconds", &[("queue", "default")]), 2.0);
    assert_eq!(
        d("aiflow_job_start_latency_seconds", &[("cause", "event")]),
        1.0,
        "a: started by the trigger event"
    );
    assert_eq!(
        d("aiflow_job_start_latency_seconds", &[("cause", "other")]),
        1.0,
        "b: started by a's status"
    );
    assert_eq!(
        after.value("aiflow_queue_depth", &[("queue", "default")]),
        0.0
    );
    assert_eq!(
        after.value("aiflow_jobs_running", &[("queue", "default")]),
        0.0
    );
    // Rules: every recorded evaluation counted once; one START (b).
    let recorded: usize = ["a", "b"]
        .iter()
        .map(|job| {
            server
                .json(&["execution", "why", &id, job])
                .as_array()
                .unwrap()
                .len()
        })
        .sum();
    assert!(recorded > 0);
    assert_eq!(d("aiflow_rule_evaluations_total", &[]), recorded as f64);
    assert_eq!(d("aiflow_rule_actions_total", &[("action", "start")]), 1.0);
    // HTTP: the one publish, by its route template.
    assert_eq!(
        d(
            "aiflow_http_requests_total",
            &[
                ("method", "POST"),
                ("route", "/api/v1/events"),
                ("status", "201")
            ]
        ),
        1.0
    );
    assert!(
        after
            .samples
            .iter()
            .any(|s| s.metric == "aiflow_http_requests_total"
                && s.labels.get("route") == Some("/api/v1/executions/:id")),
        "routes are labelled by their template"
    );
    // Stores.
    assert!(d("aiflow_store_query_duration_seconds", &[("store", "meta")]) > 0.0);
    assert!(
        d(
            "aiflow_store_query_duration_seconds",
            &[("store", "events"), ("op", "append")]
        ) > 0.0
    );
    // The scheduler's state (evaluations included) goes in one commit per batch.
    assert!(
        d(
            "aiflow_store_query_duration_seconds",
            &[("store", "scheduler"), ("op", "commit_state")]
        ) >= 1.0
    );
    assert_eq!(
        after.value(
            "aiflow_build_info",
            &[("database", "sqlite"), ("events", "sqlite")]
        ),
        1.0
    );

    // No execution id, job row id or event key as a label value.
    let shown = server.json(&["execution", "show", &id]);
    let rows: Vec<String> = shown["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap().to_string())
        .collect();
    let mut forbidden = vec![id.as_str(), "obs/data", "obs_chain"];
    forbidden.extend(rows.iter().map(String::as_str));
    check_labels_are_bounded(&after, &forbidden);

    // `aiflow status` reads the same numbers.
    let status = server.json(&["status", "--interval", "0.2"]);
    assert_eq!(status["scheduler"]["lag_events"], 0.0, "{status}");
    assert_eq!(status["scheduler"]["committed_offset"], latest, "{status}");
    assert_eq!(status["queues"][0]["queue"], "default", "{status}");
    assert_eq!(status["queues"][0]["depth"], 0.0, "{status}");

    // The operations guide describes every metric served; the dashboard and the alert rules
    // use only metrics that exist.
    let served: BTreeSet<String> = after
        .samples
        .iter()
        .map(|s| {
            let m = s.metric.as_str();
            m.strip_suffix("_sum")
                .or_else(|| m.strip_suffix("_count"))
                .unwrap_or(m)
                .to_string()
        })
        .collect();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let guide = std::fs::read_to_string(root.join("docs/operations.md")).unwrap();
    for m in &served {
        assert!(
            guide.contains(&format!("`{m}`")),
            "docs/operations.md does not describe {m}"
        );
    }
    let dashboard = std::fs::read_to_string(root.join("docs/grafana/aiflow.json")).unwrap();
    serde_json::from_str::<serde_json::Value>(&dashboard).expect("the dashboard is JSON");
    let alerts = std::fs::read_to_string(root.join("docs/prometheus/aiflow-alerts.yml")).unwrap();
    for text in [&dashboard, &alerts] {
        for used in metric_names(text) {
            assert!(served.contains(&used), "{used} is used but not served");
        }
    }
    server.stop();
}

const CLIENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

/// A workflow whose job `train` waits for an `obs/traced` event and writes its
/// `TRACEPARENT` to `out`.
fn traced_workflow(dir: &Path, out: &Path) -> String {
    write(
        dir,
        "traced.json",
        &serde_json::json!({
            "name": "obs_traced",
            "nodes": [{"name": "train", "job": {"command": ["sh", "-c", format!("printf %s \"$TRACEPARENT\" > {}", out.display())]}}],
            "control_edges": [{"to": "train", "action": "START",
                "condition": {"event": {"key": "obs/traced"}}}]
        }),
    )
}

fn publish_traced(server: &Server) -> serde_json::Value {
    let tp = format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01");
    let (status, body) = server.http(
        "POST",
        "/api/v1/events",
        &[("traceparent", &tp)],
        r#"{"key": "obs/traced", "value": "1"}"#,
    );
    assert_eq!(status, 201, "{body}");
    serde_json::from_str(&body).unwrap()
}

fn wait_file(path: &Path) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(s) = std::fs::read_to_string(path)
            && !s.is_empty()
        {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "{} was not written",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Without span export, the publisher's `traceparent` reaches the job unchanged.
#[test]
fn traceparent_goes_from_the_request_to_the_job_environment() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("traceparent.txt");
    let graph = traced_workflow(dir.path(), &out);
    let server = Server::start_logging(dir.path(), &["--log-format", "json"], "info");
    server.json(&["workflow", "submit", &graph]);
    let e = server.json(&["execution", "start", "obs_traced"]);
    let id = e["id"].as_str().unwrap();
    let event = publish_traced(&server);
    let tp = format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01");
    assert_eq!(event["context"]["traceparent"], tp.as_str(), "{event}");
    assert_eq!(wait_file(&out), tp);
    // An event naming its own traceparent keeps it; a malformed header is not copied.
    let own = "00-11111111111111111111111111111111-2222222222222222-01";
    let (_, body) = server.http(
        "POST",
        "/api/v1/events",
        &[("traceparent", &tp)],
        &format!(r#"{{"key": "obs/other", "context": {{"traceparent": "{own}"}}}}"#),
    );
    let stored: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(stored["context"]["traceparent"], own);
    let (_, body) = server.http(
        "POST",
        "/api/v1/events",
        &[("traceparent", "nonsense")],
        r#"{"key": "obs/other"}"#,
    );
    let stored: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(stored.get("context").is_none(), "{stored}");
    server.json(&["execution", "stop", id]);
    // JSON log lines; those of a job carry workflow, execution, job and attempt.
    let deadline = Instant::now() + Duration::from_secs(10);
    let job_lines = loop {
        let lines: Vec<serde_json::Value> = server
            .log
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .filter(|l: &serde_json::Value| {
                ["job started", "job state"]
                    .contains(&l["fields"]["message"].as_str().unwrap_or(""))
            })
            .collect();
        // QUEUED, job started, RUNNING, SUCCEEDED at least.
        if lines.len() >= 4 || Instant::now() > deadline {
            break lines;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(job_lines.len() >= 4, "{job_lines:?}");
    for l in &job_lines {
        let f = &l["fields"];
        assert_eq!(f["workflow"], "obs_traced", "{l}");
        assert_eq!(f["execution"], id, "{l}");
        assert_eq!(f["job"], "train", "{l}");
        assert_eq!(f["attempt"], 1, "{l}");
    }
    server.stop();
}

/// An OTLP/HTTP receiver on a local port: the JSON bodies posted to it.
fn otlp_receiver() -> (String, Arc<Mutex<Vec<serde_json::Value>>>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let store = bodies.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            let store = store.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut conn = conn;
                loop {
                    let mut length = 0usize;
                    let mut line = String::new();
                    let mut first = true;
                    loop {
                        line.clear();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        if first {
                            first = false;
                        }
                        let l = line.trim_end();
                        if l.is_empty() {
                            break;
                        }
                        if let Some((k, v)) = l.split_once(':')
                            && k.eq_ignore_ascii_case("content-length")
                        {
                            length = v.trim().parse().unwrap_or(0);
                        }
                    }
                    let mut body = vec![0; length];
                    if reader.read_exact(&mut body).is_err() {
                        return;
                    }
                    if let Ok(v) = serde_json::from_slice(&body) {
                        store.lock().unwrap().push(v);
                    }
                    let _ = conn.write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}",
                    );
                }
            });
        }
    });
    (url, bodies)
}

/// With export on: one trace from the publishing request through the rule evaluation to the
/// job start, and the job's `TRACEPARENT` names it (its parent is the `job.start` span).
#[test]
fn one_trace_spans_the_request_the_rule_and_the_job_start() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("traceparent.txt");
    let graph = traced_workflow(dir.path(), &out);
    let (endpoint, bodies) = otlp_receiver();
    let server = Server::start(
        dir.path(),
        &["--otlp-endpoint", &endpoint, "--otlp-protocol", "http/json"],
    );
    server.json(&["workflow", "submit", &graph]);
    let e = server.json(&["execution", "start", "obs_traced"]);
    let id = e["id"].as_str().unwrap().to_string();
    publish_traced(&server);
    let job_tp = wait_file(&out);
    server.json(&["execution", "stop", &id]);
    server.stop(); // flushes the spans
    let parts: Vec<&str> = job_tp.split('-').collect();
    assert_eq!(parts.len(), 4, "{job_tp}");
    assert_eq!(
        parts[1], CLIENT_TRACE,
        "the job's TRACEPARENT names the caller's trace"
    );

    // Every exported span, by name, within the caller's trace.
    let mut spans: Vec<serde_json::Value> = Vec::new();
    for body in bodies.lock().unwrap().iter() {
        for rs in body["resourceSpans"].as_array().into_iter().flatten() {
            for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
                spans.extend(ss["spans"].as_array().into_iter().flatten().cloned());
            }
        }
    }
    let in_trace: Vec<&serde_json::Value> = spans
        .iter()
        .filter(|s| s["traceId"] == CLIENT_TRACE)
        .collect();
    let by_name: HashMap<&str, &serde_json::Value> = in_trace
        .iter()
        .map(|s| (s["name"].as_str().unwrap(), *s))
        .collect();
    let names: BTreeSet<&str> = by_name.keys().copied().collect();
    for want in [
        "POST /api/v1/events",
        "scheduler.event",
        "rule.evaluate",
        "rule.action",
        "job.start",
    ] {
        assert!(
            names.contains(want),
            "{want} missing from the trace: {names:?}"
        );
    }
    let request = by_name["POST /api/v1/events"];
    assert_eq!(
        request["parentSpanId"], CLIENT_SPAN,
        "the request span continues the caller's"
    );
    let request_id = request["spanId"].as_str().unwrap();
    assert_eq!(by_name["scheduler.event"]["parentSpanId"], request_id);
    assert_eq!(by_name["job.start"]["parentSpanId"], request_id);
    assert_eq!(
        by_name["job.start"]["spanId"], parts[2],
        "the job's parent span is its job.start span"
    );
    let event_span = by_name["scheduler.event"]["spanId"].clone();
    assert!(
        in_trace
            .iter()
            .any(|s| s["name"] == "rule.evaluate" && s["parentSpanId"] == event_span),
        "the event's rule evaluation is a child of its handling"
    );
}

/// `aiflow event trace`: one event matched the rules of two running executions and started a
/// third through a workflow trigger; all of them, and the jobs, are listed.
#[test]
fn event_trace_lists_every_execution_and_job_an_event_touched() {
    let dir = tempfile::tempdir().unwrap();
    let ruled = write(
        dir.path(),
        "ruled.json",
        &serde_json::json!({
            "name": "obs_ruled",
            "nodes": [{"name": "train", "job": {"command": ["true"]}}],
            "control_edges": [{"to": "train", "action": "START",
                "condition": {"event": {"key": "obs/both"}}}]
        }),
    );
    let triggered = write(
        dir.path(),
        "triggered.json",
        &serde_json::json!({
            "name": "obs_triggered",
            "nodes": [{"name": "ingest", "job": {"command": ["true"]}}],
            "triggers": [{"event": {"key": "obs/both"}}]
        }),
    );
    let server = Server::start(dir.path(), &[]);
    server.json(&["workflow", "submit", &ruled]);
    server.json(&["workflow", "submit", &triggered]);
    let one = server.json(&["execution", "start", "obs_ruled"])["id"]
        .as_str()
        .unwrap()
        .to_string();
    let two = server.json(&["execution", "start", "obs_ruled"])["id"]
        .as_str()
        .unwrap()
        .to_string();
    let sent = server.json(&["event", "send", "--key", "obs/both"]);
    let offset = sent["offset"].as_i64().unwrap().to_string();
    for id in [&one, &two] {
        server.wait_execution(id, |e| {
            e["jobs"]
                .as_array()
                .is_some_and(|j| j.iter().any(|j| j["state"] == "SUCCEEDED"))
        });
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let trace = loop {
        let t = server.json(&["event", "trace", &offset]);
        let started = &t["started_executions"];
        if started[0]["jobs"][0]["state"] == "SUCCEEDED" {
            break t;
        }
        assert!(Instant::now() < deadline, "{t}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(trace["event"]["key"], "obs/both");
    let evaluations = trace["evaluations"].as_array().unwrap();
    let started: BTreeSet<&str> = evaluations
        .iter()
        .filter(|e| e["decision"] == "START")
        .map(|e| {
            assert_eq!(e["workflow"], "obs_ruled");
            assert_eq!(e["job"], "train");
            assert_eq!(e["attempt"]["attempt"], 1);
            assert_eq!(e["attempt"]["state"], "SUCCEEDED");
            e["execution"].as_str().unwrap()
        })
        .collect();
    assert_eq!(
        started,
        BTreeSet::from([one.as_str(), two.as_str()]),
        "{trace}"
    );
    let by_trigger = trace["started_executions"].as_array().unwrap();
    assert_eq!(by_trigger.len(), 1, "{trace}");
    assert_eq!(by_trigger[0]["workflow"], "obs_triggered");
    assert_eq!(by_trigger[0]["jobs"][0]["job"], "ingest");

    // The table names both executions; a missing event and a bad offset are errors.
    let table = server.table(&["event", "trace", &offset]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(table.status.success());
    assert!(
        text.contains(&one) && text.contains(&two) && text.contains("train #1 SUCCEEDED"),
        "{text}"
    );
    let missing = server.cli(&["event", "trace", "999999"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("event 999999 is not stored"));
    let bad = server.cli(&["event", "trace", "0"]);
    assert_eq!(bad.status.code(), Some(2));
    let (status, body) = server.http("GET", "/api/v1/events/abc/trace", &[], "");
    assert_eq!(status, 400);
    assert!(body.contains("\"field\":\"offset\""), "{body}");
    for id in [&one, &two] {
        server.json(&["execution", "stop", id]);
    }
    server.stop();
}

/// `aiflow worker --log-format json` logs one JSON object per line, as the server does.
#[test]
fn a_worker_logs_json_lines_when_asked() {
    if !crate::common::reachable("NATS", "127.0.0.1:4222") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cluster = format!("logjson{}", &crate::common::uuid_hex()[..10]);
    let mut worker = crate::common::Proc {
        child: Command::new(BIN)
            .args([
                "worker",
                "--nats",
                crate::common::NATS,
                "--cluster",
                &cluster,
            ])
            .args(["--name", "wjson", "--log-format", "json", "--data-dir"])
            .arg(dir.path().join("worker"))
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start aiflow worker"),
        name: "wjson".into(),
    };
    let stderr = worker.child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    let ready = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(line) = rx.recv_timeout(left) else {
            break None;
        };
        let parsed: serde_json::Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("a worker log line is not JSON ({e}): {line}"));
        if parsed["fields"]["message"] == "worker ready" {
            break Some(parsed);
        }
        seen.push(line);
    };
    drop(worker);
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(crate::common::delete_streams(&cluster));
    let ready = ready.unwrap_or_else(|| panic!("no `worker ready` line: {seen:?}"));
    assert_eq!(ready["fields"]["worker"], "wjson", "{ready}");
    assert_eq!(ready["level"], "INFO", "{ready}");
}
