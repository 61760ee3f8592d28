//! End to end: the real `aiflow server` binary on a temporary data folder, driven by the real
//! CLI. Events and meta records survive a restart.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_aiflow");

struct Server {
    child: Child,
    url: String,
}

impl Server {
    /// Starts the server in `dir` on a free port and waits for its banner.
    fn start(dir: &Path) -> Server {
        let mut child = Command::new(BIN)
            .args(["server", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.join("data"))
            .current_dir(dir)
            .env("RUST_LOG", "warn")
            .env_remove("AIFLOW_DATABASE")
            .env_remove("AIFLOW_NATS")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start aiflow server");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.trim().strip_prefix("API") {
                    let _ = tx.send(rest.trim().trim_end_matches("/api/v1").to_string());
                }
            }
        });
        let url = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("server printed its banner");
        Server { child, url }
    }

    fn cli(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .args(["--server", &self.url, "--output", "json"])
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

    /// SIGTERM, then wait: the server shuts down gracefully.
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

fn offsets(events: &serde_json::Value) -> Vec<i64> {
    events["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["offset"].as_i64().unwrap())
        .collect()
}

#[test]
fn events_and_models_through_the_cli_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());

    let sent = server.json(&[
        "event",
        "send",
        "--key",
        "dataset/raw",
        "--value",
        "v1",
        "--type",
        "DATA_LANDED",
    ]);
    assert_eq!(sent["key"], "dataset/raw");
    let first = sent["offset"].as_i64().unwrap();
    assert!(first >= 1);

    server.json(&["model", "create", "fraud"]);
    let version = server.json(&[
        "model",
        "version",
        "create",
        "fraud",
        "--uri",
        "file:///m/1",
    ]);
    assert_eq!(version["version"], 1);

    // The model version's event arrives through the outbox.
    let deadline = Instant::now() + Duration::from_secs(10);
    let events = loop {
        let events = server.json(&["event", "list", "--key", "model/*"]);
        if !events["items"].as_array().unwrap().is_empty() || Instant::now() > deadline {
            break events;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(events["items"][0]["event_type"], "MODEL_VERSION_CREATED");
    assert_eq!(events["items"][0]["value"], "1");

    // Bad input: a clear one-line error and exit code 1; nothing stored.
    let bad = server.cli(&["event", "send", "--key", ""]);
    assert_eq!(bad.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(stderr.contains("key"), "{stderr}");
    let all_before = offsets(&server.json(&["event", "list"]));

    server.stop();
    let server = Server::start(dir.path());
    let all_after = offsets(&server.json(&["event", "list"]));
    assert_eq!(
        all_before, all_after,
        "events and offsets survive a restart"
    );
    let next = server.json(&["event", "send", "--key", "dataset/raw", "--value", "v2"]);
    assert!(
        next["offset"].as_i64().unwrap() > *all_after.last().unwrap(),
        "offsets are never reused"
    );
    let models = server.json(&["model", "list"]);
    assert_eq!(models["items"][0]["latest_version"], 1);
    server.stop();
}

#[test]
fn health_docs_and_ui_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let host = server.url.trim_start_matches("http://").to_string();
    for (path, expect) in [
        ("/healthz", "\"ok\""),
        ("/readyz", "\"ready\""),
        ("/api/v1/openapi.json", "\"openapi\":\"3.1"),
        ("/docs/", "swagger"),
        ("/", "<title>AI Flow</title>"),
        ("/ui/app.js", "/api/v1"),
    ] {
        let body = http_get(&host, path);
        assert!(body.contains(expect), "{path}: {body:.300}");
    }
    server.stop();
}

/// The served OpenAPI document is complete where validators and client generators look: every
/// response has a description, the name and key rules are in the schemas, the main request bodies
/// have examples, and the writes that can meet a full disk say 507 (.ci/openapi.sh validates the
/// whole document with openapi-spec-validator).
#[test]
fn the_openapi_document_describes_every_response_and_the_name_rules() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let host = server.url.trim_start_matches("http://").to_string();
    let raw = http_get(&host, "/api/v1/openapi.json");
    let body = raw.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let doc: serde_json::Value = serde_json::from_str(body).expect("the document is JSON");
    let mut responses = 0;
    let mut undescribed = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            for (code, r) in op["responses"].as_object().into_iter().flatten() {
                responses += 1;
                if r["description"]
                    .as_str()
                    .is_none_or(|d| d.trim().is_empty())
                {
                    undescribed.push(format!("{method} {path} {code}"));
                }
            }
        }
    }
    assert!(responses > 200, "{responses} responses");
    assert!(
        undescribed.is_empty(),
        "{} responses without a description: {undescribed:?}",
        undescribed.len()
    );
    let schemas = &doc["components"]["schemas"];
    for schema in [
        "NewProject",
        "NewDataset",
        "NewModel",
        "NewMetric",
        "NewArtifact",
    ] {
        let name = &schemas[schema]["properties"]["name"];
        assert_eq!(
            (&name["minLength"], &name["maxLength"]),
            (&serde_json::json!(1), &serde_json::json!(200)),
            "{schema}.name: {name}"
        );
        assert!(name["pattern"].is_string(), "{schema}.name: {name}");
        assert!(
            schemas[schema]["example"].is_object(),
            "{schema} has an example"
        );
    }
    let key = &schemas["NewEvent"]["properties"]["key"];
    assert_eq!(key["maxLength"], 256, "NewEvent.key: {key}");
    assert!(schemas["NewEvent"]["example"]["key"].is_string());
    let codes = |path: &str, method: &str| -> Vec<String> {
        doc["paths"][path][method]["responses"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect()
    };
    assert!(codes("/api/v1/projects", "post").contains(&"507".to_string()));
    assert!(codes("/api/v1/events", "post").contains(&"507".to_string()));
    assert!(!codes("/api/v1/projects", "get").contains(&"507".to_string()));
    // What the pattern leaves out, the server refuses.
    for bad in ["has space", ".hidden", "/rooted", "a?b", "a,b"] {
        let body = serde_json::json!({ "name": bad }).to_string();
        assert_eq!(http_post(&host, "/api/v1/projects", &body), 422, "{bad:?}");
    }
    let body = serde_json::json!({ "name": "x".repeat(201) }).to_string();
    assert_eq!(
        http_post(&host, "/api/v1/projects", &body),
        422,
        "201 characters"
    );
    let body = serde_json::json!({ "name": "ok-name_1.v2" }).to_string();
    assert_eq!(http_post(&host, "/api/v1/projects", &body), 201);
    server.stop();
}

/// What the web UI's workflow list reads: each trigger's next time, and the newest execution.
#[test]
fn triggers_tell_their_next_time_and_executions_list_newest_first() {
    use chrono::{DateTime, Timelike, Utc};
    let dir = tempfile::tempdir().unwrap();
    let graph = dir.path().join("ticking.json");
    std::fs::write(
        &graph,
        serde_json::json!({
            "name": "ticking",
            "nodes": [{"name": "a", "job": {"command": ["true"]}}],
            "triggers": [
                {"interval_s": 1},
                {"cron": "30 9 * * *", "timezone": "Asia/Kolkata"},
                {"event": {"key": "ticking/go"}},
                {"all_of": [{"cron": "0 0 * * *", "timezone": "UTC"}, {"event": {"key": "ticking/data"}}]}
            ]
        })
        .to_string(),
    )
    .unwrap();
    let server = Server::start(dir.path());
    server.json(&["workflow", "submit", graph.to_str().unwrap()]);
    let host = server.url.trim_start_matches("http://").to_string();
    let get = |path: &str| -> serde_json::Value {
        let raw = http_get(&host, path);
        let (head, body) = raw.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 200"), "{path}: {raw:.300}");
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{path}: {e}: {body:.300}"))
    };
    // The interval trigger fires every second: wait for two executions.
    let deadline = Instant::now() + Duration::from_secs(20);
    let all = loop {
        let all = get("/api/v1/executions?workflow=ticking");
        if all["items"].as_array().unwrap().len() >= 2 {
            break all;
        }
        assert!(
            Instant::now() < deadline,
            "the interval trigger did not fire twice"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let newest = get("/api/v1/executions?workflow=ticking&order=desc&limit=1");
    let oldest = &all["items"][0]["id"];
    assert_ne!(
        &newest["items"][0]["id"], oldest,
        "desc starts with the newest"
    );
    assert!(newest["next_cursor"].is_string(), "more pages follow");

    let now = Utc::now();
    let t = get("/api/v1/workflows/ticking/triggers");
    let at = |i: usize| -> Option<DateTime<Utc>> {
        t[i]["next_at"].as_str().map(|s| s.parse().unwrap())
    };
    assert_eq!(t[0]["kind"], "interval", "{t}");
    assert_eq!(t[0]["description"], "every 1 s");
    let next = at(0).expect("an interval trigger that fired has a next time");
    assert!(
        next > now - chrono::Duration::seconds(2) && next <= now + chrono::Duration::seconds(2),
        "{next} vs {now}"
    );
    // 09:30 in Kolkata (UTC+5:30, no daylight saving) is 04:00 UTC.
    assert_eq!(t[1]["description"], "cron 30 9 * * * (Asia/Kolkata)");
    let cron = at(1).unwrap();
    assert_eq!(
        (cron.hour(), cron.minute(), cron.second()),
        (4, 0, 0),
        "{cron}"
    );
    assert!(cron > now && cron <= now + chrono::Duration::days(1));
    assert_eq!(t[2]["kind"], "event");
    assert!(t[2]["next_at"].is_null());
    // Time and data: the time part's next tick (the data must arrive too).
    assert_eq!(t[3]["kind"], "all_of");
    let midnight = at(3).expect("the time part of an all_of trigger has a next tick");
    assert_eq!((midnight.hour(), midnight.minute()), (0, 0), "{midnight}");

    server.json(&["workflow", "pause", "ticking"]);
    let paused = get("/api/v1/workflows/ticking/triggers");
    assert!(
        paused
            .as_array()
            .unwrap()
            .iter()
            .all(|x| x["next_at"].is_null()),
        "a paused workflow fires nothing: {paused}"
    );
    server.stop();
}

/// A minimal HTTP/1.1 GET (no client library needed for the test).
fn http_get(host: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(host).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn completion_scripts_for_bash_zsh_and_fish() {
    for (shell, marker, option) in [
        ("bash", "complete -F _aiflow", "--output"),
        ("zsh", "#compdef aiflow", "--output"),
        ("fish", "complete -c aiflow", "-l output"),
    ] {
        let out = Command::new(BIN)
            .args(["completion", shell])
            .output()
            .unwrap();
        assert!(out.status.success(), "{shell}: {out:?}");
        let script = String::from_utf8_lossy(&out.stdout);
        assert!(script.contains(marker), "{shell}: no {marker:?}");
        // Subcommands at every level and their options are in it.
        for word in ["workflow", "execution", "dataset", "completion", option] {
            assert!(script.contains(word), "{shell}: no {word:?}");
        }
    }
    // The bash script is one bash can load.
    let out = Command::new(BIN)
        .args(["completion", "bash"])
        .output()
        .unwrap();
    let check = Command::new("bash")
        .args(["-n", "-c", &String::from_utf8_lossy(&out.stdout)])
        .status();
    if let Ok(status) = check {
        assert!(status.success(), "bash -n refuses the script");
    }
    let bad = Command::new(BIN)
        .args(["completion", "tcsh"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("tcsh"));
}

#[test]
fn print_config_merges_flags_over_the_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("aiflow.toml"),
        "listen = \"127.0.0.1:9001\"\nnats_stream = \"FROM_FILE\"\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["server", "--print-config", "--listen", "127.0.0.1:9002"])
        .current_dir(dir.path())
        .env_remove("AIFLOW_LISTEN")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("listen = \"127.0.0.1:9002\""), "{text}");
    assert!(text.contains("nats_stream = \"FROM_FILE\""), "{text}");
    let bad = Command::new(BIN)
        .args(["server", "--listen", "nowhere"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("listen"));
}

#[test]
fn workflows_run_from_the_cli_with_logs_and_why() {
    let dir = tempfile::tempdir().unwrap();
    let graph = dir.path().join("chain.json");
    std::fs::write(
        &graph,
        serde_json::json!({
            "name": "cli_chain",
            "nodes": [
                {"name": "a", "job": {"command": ["sh", "-c", "echo from $AIFLOW_JOB in $AIFLOW_WORKFLOW"]}},
                {"name": "b", "job": {"command": ["sh", "-c", "echo b"]}}
            ],
            "control_edges": [{"to": "b", "action": "START",
                "condition": {"job_status": {"node": "a", "status": "SUCCEEDED"}}}]
        })
        .to_string(),
    )
    .unwrap();
    let server = Server::start(dir.path());
    let submitted = server.json(&["workflow", "submit", graph.to_str().unwrap()]);
    assert_eq!(submitted["created"], true);
    let again = server.json(&["workflow", "submit", graph.to_str().unwrap()]);
    assert_eq!(again["created"], false, "unchanged documents store nothing");

    let e = server.json(&["execution", "start", "cli_chain", "--wait", "30"]);
    assert_eq!(e["state"], "SUCCEEDED", "{e}");
    let id = e["id"].as_str().unwrap();
    let shown = server.json(&["execution", "show", id]);
    let jobs = shown["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 2);
    assert!(jobs.iter().all(|j| j["state"] == "SUCCEEDED"), "{shown}");

    let log = server.cli(&["execution", "logs", id, "a"]);
    assert!(String::from_utf8_lossy(&log.stdout).contains("from a in cli_chain"));
    let why = server.json(&["execution", "why", id, "b"]);
    assert_eq!(why[0]["decision"], "START", "{why}");
    assert!(
        why[0]["explanation"]
            .as_str()
            .unwrap()
            .contains("job a SUCCEEDED")
    );

    // An invalid graph: exit 1, the problem named, the stored version untouched.
    std::fs::write(
        &graph,
        r#"{"name": "cli_chain", "nodes": [{"name": "a", "job": {"command": ["true"]}}], "triggers": [{"cron": "61 * * * *"}]}"#,
    )
    .unwrap();
    let bad = server.cli(&["workflow", "submit", graph.to_str().unwrap()]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("triggers[0].cron"));
    let w = server.json(&["workflow", "show", "cli_chain"]);
    assert_eq!(w["workflow"]["latest_version"], 1);
    server.stop();
}

/// The README's main command: the demo deploys a model on a fresh data folder; then a server on
/// the same folder shows the final state over HTTP.
#[test]
fn demo_deploys_a_model_and_the_state_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = Command::new(BIN)
        .args([
            "demo",
            "--listen",
            "127.0.0.1:0",
            "--timeout-s",
            "90",
            "--data-dir",
        ])
        .arg(&data)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run aiflow demo");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed: {stderr}");
    assert!(
        stderr.contains("fraud_detector version 1 deployed"),
        "{stderr}"
    );

    let server = Server::start(dir.path());
    let alias = server.json(&["model", "alias", "show", "fraud_detector", "production"]);
    assert_eq!(alias["version"], 1);
    let version = server.json(&["model", "version", "show", "fraud_detector", "1"]);
    assert_eq!(version["stage"], "DEPLOYED", "{version}");
    assert_eq!(
        version["input_dataset_versions"].as_array().map(Vec::len),
        Some(1),
        "{version}"
    );
    let metrics = server.json(&["metric", "list"]);
    let names: Vec<&str> = metrics["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"train_accuracy") && names.contains(&"holdout_accuracy"),
        "{names:?}"
    );
    // Meta events came in the pipeline's order.
    let events = server.json(&[
        "event",
        "list",
        "--key",
        "*/fraud_detector",
        "--limit",
        "100",
    ]);
    let types: Vec<&str> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event_type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "MODEL_VERSION_CREATED",
            "MODEL_VALIDATED",
            "MODEL_ALIAS_MOVED",
            "MODEL_DEPLOYED"
        ]
    );
    server.stop();
}

/// The Python example (the `aiflow` package of python/, from the checkout) publishes an event and
/// registers a model version.
#[test]
fn python_example_talks_to_the_api() {
    if Command::new("python3").arg("--version").output().is_err() {
        eprintln!(
            "\n!!!!!!!! SKIPPED: python3 is not installed; the Python example is not tested !!!!!!!!\n"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/examples/python_client.py"
    );
    let out = Command::new("python3")
        .arg(script)
        .env("AIFLOW_URL", &server.url)
        .env("AIFLOW_EXECUTION", "exec-from-python")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let events = server.json(&["event", "list", "--key", "dataset/python_demo"]);
    assert_eq!(
        events["items"][0]["context"]["execution"],
        "exec-from-python"
    );
    let versions = server.json(&["model", "version", "list", "python_model"]);
    assert_eq!(versions["items"].as_array().unwrap().len(), 1);
    server.stop();
}

#[test]
fn status_reports_backends_and_running_executions() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let status = server.json(&["status"]);
    assert_eq!(status["status"], "ready", "{status}");
    assert_eq!(status["database"]["backend"], "sqlite");
    assert_eq!(status["events"]["backend"], "sqlite");
    assert_eq!(status["running_executions"], 0);
    server.stop();
    let gone = Command::new(BIN)
        .args(["--server", &server_url_of_nothing(), "status"])
        .output()
        .unwrap();
    assert_eq!(gone.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&gone.stderr).contains("cannot reach"));
}

/// A URL where nothing listens.
fn server_url_of_nothing() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    drop(l);
    url
}

/// A minimal HTTP/1.1 POST of a JSON body; returns the status code.
fn http_post(host: &str, path: &str, body: &str) -> u16 {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(host).unwrap();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// Publishes `tick/{from..to}` in one request; returns their offsets.
fn publish_ticks(server: &Server, from: usize, to: usize) -> Vec<i64> {
    let host = server.url.trim_start_matches("http://");
    let events: Vec<serde_json::Value> = (from..to)
        .map(|i| serde_json::json!({"key": format!("tick/{i}"), "value": i.to_string()}))
        .collect();
    assert_eq!(
        http_post(
            host,
            "/api/v1/events",
            &serde_json::Value::Array(events).to_string()
        ),
        201
    );
    let listed = server.json(&["event", "list", "--key", "tick/*", "--limit", "1000"]);
    let all = offsets(&listed);
    all[all.len() - (to - from)..].to_vec()
}

/// kill -9 of the server while events flow and jobs run: after a restart, every event is
/// handled exactly once (one execution per event, one rule evaluation per event), lost
/// attempts are retried, and the status events tell one consistent story.
#[test]
fn a_killed_server_handles_every_event_exactly_once_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let marks = dir.path().join("marks");
    std::fs::create_dir_all(&marks).unwrap();
    let per_event = dir.path().join("per_event.json");
    std::fs::write(
        &per_event,
        serde_json::json!({
            "name": "per_event",
            "nodes": [{"name": "mark", "job": {
                "command": ["sh", "-c", "sleep 0.3; touch \"$MARKS/$AIFLOW_EXECUTION-$AIFLOW_ATTEMPT\""],
                "env": {"MARKS": marks.display().to_string()},
                "retries": 3, "retry_backoff_s": 0}}],
            "triggers": [{"event": {"key": "tick/*"}}]
        })
        .to_string(),
    )
    .unwrap();
    let watcher = dir.path().join("watcher.json");
    std::fs::write(
        &watcher,
        serde_json::json!({
            "name": "watcher",
            "nodes": [{"name": "w", "job": {"command": ["sh", "-c", "sleep 0.05"]}}],
            "control_edges": [{"to": "w", "action": "START", "life": "REPEATED",
                "condition": {"event": {"key": "tick/*"}}}]
        })
        .to_string(),
    )
    .unwrap();
    let mut server = Server::start(dir.path());
    server.json(&["workflow", "submit", per_event.to_str().unwrap()]);
    server.json(&["workflow", "submit", watcher.to_str().unwrap()]);
    let watch = server.json(&["execution", "start", "watcher"]);
    let watch_id = watch["id"].as_str().unwrap().to_string();

    let mut published = publish_ticks(&server, 0, 40);
    // Once some of them are handled and their jobs run, kill -9 mid-flight.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let list = server.json(&["execution", "list", "--workflow", "per_event"]);
        if !list["items"].as_array().unwrap().is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "no event was handled");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(100));
    server.child.kill().unwrap();
    server.child.wait().unwrap();

    server = Server::start(dir.path());
    published.extend(publish_ticks(&server, 40, 80));

    // Every event started exactly one execution, and each of them finished.
    let deadline = Instant::now() + Duration::from_secs(120);
    let runs = loop {
        let list = server.json(&[
            "execution",
            "list",
            "--workflow",
            "per_event",
            "--limit",
            "1000",
        ]);
        let items = list["items"].as_array().unwrap().clone();
        let done = items.iter().all(|e| e["state"] != "RUNNING");
        if items.len() >= published.len() && done {
            break items;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} executions, done: {done}",
            items.len(),
            published.len()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let mut triggered: Vec<i64> = runs
        .iter()
        .map(|e| e["trigger"]["offset"].as_i64().unwrap())
        .collect();
    triggered.sort_unstable();
    assert_eq!(
        triggered, published,
        "one execution per event, none missing"
    );
    let mut lost = 0;
    for e in &runs {
        assert_eq!(e["state"], "SUCCEEDED", "{e}");
        let id = e["id"].as_str().unwrap();
        let shown = server.json(&["execution", "show", id]);
        let mut attempts: Vec<(i64, String)> = shown["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| {
                (
                    j["attempt"].as_i64().unwrap(),
                    j["state"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        attempts.sort();
        // Attempts are numbered 1..n; only the last succeeded; a lost one is FAILED.
        let n = attempts.len() as i64;
        for (i, (attempt, state)) in attempts.iter().enumerate() {
            assert_eq!(*attempt, i as i64 + 1, "{attempts:?}");
            let last = *attempt == n;
            assert_eq!(state == "SUCCEEDED", last, "{attempts:?}");
        }
        assert!(
            marks.join(format!("{id}-{n}")).exists(),
            "the last attempt ran"
        );
        lost += usize::try_from(n - 1).unwrap();
    }
    eprintln!(
        "{} executions, {lost} attempts lost in the crash and retried",
        runs.len()
    );

    // The watcher evaluated every event once: none lost, none repeated.
    let why = server.json(&["execution", "why", &watch_id, "w"]);
    let mut evaluated: Vec<i64> = why
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["event_offset"].as_i64())
        .collect();
    evaluated.sort_unstable();
    assert_eq!(evaluated, published, "one evaluation per event");

    // Status events: per execution, each (attempt, state) once.
    let statuses = server.json(&[
        "event",
        "list",
        "--type",
        "JOB_STATUS",
        "--key",
        "per_event/*",
        "--limit",
        "1000",
    ]);
    let mut seen = std::collections::HashSet::new();
    for e in statuses["items"].as_array().unwrap() {
        let c = &e["context"];
        let key = (
            c["execution"].as_str().unwrap().to_string(),
            c["attempt"].as_i64().unwrap(),
            e["value"].as_str().unwrap().to_string(),
        );
        assert!(seen.insert(key.clone()), "status published twice: {key:?}");
    }
    for e in &runs {
        let id = e["id"].as_str().unwrap();
        assert!(
            seen.iter().any(|(x, _, s)| x == id && s == "SUCCEEDED"),
            "no SUCCEEDED status for {id}"
        );
    }
    server.json(&["execution", "stop", &watch_id]);
    server.stop();
}

fn demo_command(data: &Path) -> Command {
    let mut c = Command::new(BIN);
    c.args([
        "demo",
        "--listen",
        "127.0.0.1:0",
        "--timeout-s",
        "90",
        "--data-dir",
    ])
    .arg(data)
    .current_dir(env!("CARGO_MANIFEST_DIR"));
    c
}

/// kill -9 of the demo while `train` runs; the next `aiflow demo` resumes the same execution
/// and ends in the same state: a deployed model version that the predictor serves.
#[test]
fn a_demo_killed_midway_resumes_and_still_deploys() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut first = demo_command(&data)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("run aiflow demo");
    let stderr = first.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = Vec::new();
    loop {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|_| panic!("train never ran: {seen:?}"));
        let train_runs = line.contains("train") && line.contains("RUNNING");
        seen.push(line);
        if train_runs {
            break;
        }
    }
    first.kill().unwrap();
    first.wait().unwrap();

    let out = demo_command(&data).output().expect("run aiflow demo");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "resumed demo failed: {stderr}");
    assert!(stderr.contains("Resuming online_learning"), "{stderr}");
    assert!(stderr.contains("deployed (alias production)"), "{stderr}");

    let server = Server::start(dir.path());
    let runs = server.json(&["execution", "list", "--workflow", "online_learning"]);
    let runs = runs["items"].as_array().unwrap();
    assert_eq!(runs.len(), 1, "the same execution went on: {runs:?}");
    let id = runs[0]["id"].as_str().unwrap();
    let shown = server.json(&["execution", "show", id]);
    let jobs = shown["jobs"].as_array().unwrap();
    for job in ["train", "evaluate", "deploy"] {
        assert!(
            jobs.iter()
                .any(|j| j["job"] == job && j["state"] == "SUCCEEDED"),
            "{job} never succeeded: {shown}"
        );
    }
    let alias = server.json(&["model", "alias", "show", "fraud_detector", "production"]);
    let version = alias["version"].as_i64().unwrap().to_string();
    let shown = server.json(&["model", "version", "show", "fraud_detector", &version]);
    assert_eq!(shown["stage"], "DEPLOYED", "{shown}");
    server.stop();
}

/// The dags folder is watched: a changed file becomes a new version, a broken one is listed
/// under `load_errors` by `GET /workflows` and keeps the last good version.
#[test]
fn the_dags_folder_is_watched_and_load_errors_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let dags = dir.path().join("dags");
    std::fs::create_dir_all(&dags).unwrap();
    let file = dags.join("watched.json");
    let graph = |cmd: &str| {
        serde_json::json!({"name": "watched", "nodes": [{"name": "a", "job": {"command": ["sh", "-c", cmd]}}]})
            .to_string()
    };
    std::fs::write(&file, graph("echo one")).unwrap();
    let server = Server::start(dir.path());
    let host = server.url.trim_start_matches("http://").to_string();
    let version =
        || server.json(&["workflow", "show", "watched"])["workflow"]["latest_version"].as_i64();
    assert_eq!(version(), Some(1));

    let wait_for = |what: &str, ok: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !ok() {
            assert!(Instant::now() < deadline, "{what} never happened");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    std::fs::write(&file, graph("echo two")).unwrap();
    wait_for("the changed file loaded", &|| version() == Some(2));

    std::fs::write(&file, "{\"name\": \"watched\", \"nodes\": [").unwrap();
    let errors = || {
        let body = http_get(&host, "/api/v1/workflows");
        let json = body.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
        serde_json::from_str::<serde_json::Value>(&json).unwrap_or_default()["load_errors"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    wait_for("the load error listed", &|| !errors().is_empty());
    let listed = errors();
    assert!(
        listed[0]["file"]
            .as_str()
            .unwrap()
            .ends_with("watched.json"),
        "{listed:?}"
    );
    assert!(
        listed[0]["error"].as_str().unwrap().contains("not JSON"),
        "{listed:?}"
    );
    assert_eq!(version(), Some(2), "the last good version stays");
    let out = server.cli(&["workflow", "list"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("did not load"));

    std::fs::write(&file, graph("echo three")).unwrap();
    wait_for("the fixed file loaded", &|| version() == Some(3));
    assert!(errors().is_empty());
    server.stop();
}

/// The SDK submits a graph built in Rust, starts it, streams its job states live to the end,
/// and waits for it with a timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sdk_streams_an_executions_job_states() {
    use aiflow_sdk::graph::GraphBuilder;
    use futures::StreamExt;
    let dir = tempfile::tempdir().unwrap();
    let server = tokio::task::spawn_blocking({
        let path = dir.path().to_path_buf();
        move || Server::start(&path)
    })
    .await
    .unwrap();
    let client = aiflow_sdk::Client::new(server.url.clone());
    let mut g = GraphBuilder::new("sdk_stream");
    g.node("a").command(["sh", "-c", "sleep 0.2"]);
    g.node("b").command(["sh", "-c", "exit 3"]);
    g.after("a").succeeded().start("b");
    client.submit_graph(&g.build().unwrap()).await.unwrap();
    let e = client.start_execution("sdk_stream").await.unwrap();
    let changes: Vec<_> = tokio::time::timeout(
        Duration::from_secs(30),
        client
            .execution_states(&e.id)
            .await
            .unwrap()
            .map(Result::unwrap)
            .collect(),
    )
    .await
    .expect("the stream ends with the execution");
    let seen: Vec<(Option<&str>, &str)> = changes
        .iter()
        .map(|c| (c.job.as_deref(), c.state.as_str()))
        .collect();
    assert_eq!(
        seen,
        [
            (None, "RUNNING"),
            (Some("a"), "QUEUED"),
            (Some("a"), "RUNNING"),
            (Some("a"), "SUCCEEDED"),
            (Some("b"), "QUEUED"),
            (Some("b"), "RUNNING"),
            (Some("b"), "FAILED"),
            (None, "FAILED"),
        ]
    );
    assert!(
        changes[6].message.as_deref().unwrap().contains('3'),
        "{changes:?}"
    );
    assert!(changes.windows(2).all(|w| w[0].offset < w[1].offset));
    let waited = client
        .wait_execution(&e.id, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(waited.state, "FAILED");
    tokio::task::spawn_blocking(move || server.stop())
        .await
        .unwrap();
}
