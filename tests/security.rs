//! Authentication, roles and limits against the real `aiflow server` binary: every request goes
//! over a socket, tokens are made with the real CLI.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_aiflow");

struct Server {
    child: Child,
    url: String,
    /// Everything the server wrote on stderr so far (banner and logs).
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Server {
    /// Starts `aiflow server` with `args` on a free loopback port and data in `dir/data`.
    fn start(dir: &Path, args: &[&str]) -> Server {
        let mut child = Command::new(BIN)
            .args(["server", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.join("data"))
            .args(args)
            .current_dir(dir)
            .env("RUST_LOG", "info")
            .env_remove("AIFLOW_DATABASE")
            .env_remove("AIFLOW_NATS")
            .env_remove("AIFLOW_AUTH")
            .env_remove("AIFLOW_TOKEN")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start aiflow server");
        let stderr = child.stderr.take().unwrap();
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let keep = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.trim().strip_prefix("API") {
                    let _ = tx.send(rest.trim().trim_end_matches("/api/v1").to_string());
                }
                let mut l = keep.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        let url = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("server printed its banner");
        Server {
            child,
            url,
            stderr: log,
        }
    }

    fn cli(&self, token: Option<&str>, args: &[&str]) -> Output {
        let mut c = Command::new(BIN);
        c.args(["--server", &self.url, "--output", "json"])
            .env_remove("AIFLOW_TOKEN");
        if let Some(t) = token {
            c.args(["--token", t]);
        }
        c.args(args).output().expect("run aiflow")
    }

    fn stop(mut self) -> String {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
        self.stderr.lock().unwrap().clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

/// `aiflow token create` straight into the data folder (no server needed): the bootstrap.
fn bootstrap_token(dir: &Path, role: &str) -> String {
    let out = Command::new(BIN)
        .args([
            "--output",
            "json",
            "token",
            "create",
            "--role",
            role,
            "--data-dir",
        ])
        .arg(dir.join("data"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["role"], role);
    v["token"].as_str().unwrap().to_string()
}

fn created_token(server: &Server, admin: &str, args: &[&str]) -> (String, String) {
    let mut all = vec!["token", "create"];
    all.extend_from_slice(args);
    let out = server.cli(Some(admin), &all);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    (
        v["token"].as_str().unwrap().to_string(),
        v["id"].as_str().unwrap().to_string(),
    )
}

struct Http {
    base: String,
    c: reqwest::Client,
}

impl Http {
    fn new(base: &str) -> Self {
        Self {
            base: base.to_string(),
            c: aiflow_sdk::tls::http_client_from_env().expect("HTTP client"),
        }
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value, reqwest::header::HeaderMap) {
        let mut rb = self.c.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            rb = rb.bearer_auth(t);
        }
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let resp = rb.send().await.unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap();
        let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, v, headers)
    }

    async fn status(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> u16 {
        self.call(method, path, token, body).await.0
    }
}

use reqwest::Method as M;

fn graph(dir: &Path, name: &str, command: &str) -> std::path::PathBuf {
    let path = dir.join(format!("{name}.json"));
    std::fs::write(
        &path,
        json!({"name": name, "nodes": [{"name": "a", "job": {"command": ["sh", "-c", command]}}]})
            .to_string(),
    )
    .unwrap();
    path
}

#[test]
fn a_non_loopback_address_without_auth_is_refused_unless_insecure() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["server", "--listen", "0.0.0.0:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .env_remove("AIFLOW_AUTH")
        .env_remove("AIFLOW_INSECURE")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    assert!(
        stderr.contains("refusing to listen on 0.0.0.0:0 without authentication"),
        "{stderr}"
    );
    assert!(stderr.contains("--insecure"), "{stderr}");
    // With --insecure, or with --auth, it serves.
    for flag in ["--insecure", "--auth"] {
        let mut child = Command::new(BIN)
            .args(["server", "--listen", "0.0.0.0:0", flag, "--data-dir"])
            .arg(dir.path().join("data"))
            .env_remove("AIFLOW_AUTH")
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let ready = BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .any(|l| l.contains("AI Flow is ready"));
        let _ = child.kill();
        let _ = child.wait();
        assert!(ready, "{flag}: the server started");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_expiry_and_revocation() {
    let dir = tempfile::tempdir().unwrap();
    let admin = bootstrap_token(dir.path(), "admin");
    assert!(admin.starts_with("afl_"), "{admin}");
    let server = Server::start(dir.path(), &["--auth"]);
    let http = Http::new(&server.url);

    // Public: health, the UI, the OpenAPI document (which lists the token routes and the
    // bearer scheme).
    assert_eq!(http.status(M::GET, "/healthz", None, None).await, 200);
    assert_eq!(http.status(M::GET, "/", None, None).await, 200);
    let (s, doc, _) = http.call(M::GET, "/api/v1/openapi.json", None, None).await;
    assert_eq!(s, 200);
    assert!(doc["paths"]["/api/v1/tokens"]["post"].is_object());
    assert!(doc["paths"]["/api/v1/tokens/{id}"]["delete"].is_object());
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );

    // No token, a malformed one, an unknown one: 401 with the JSON error body.
    let (s, body, headers) = http.call(M::GET, "/api/v1/workflows", None, None).await;
    assert_eq!(s, 401);
    assert_eq!(body["error"]["code"], "unauthenticated", "{body}");
    assert_eq!(headers["www-authenticate"], "Bearer");
    for bad in ["nonsense", "afl_000000000000_deadbeef", "afj_1_00_x"] {
        let (s, body, _) = http
            .call(M::GET, "/api/v1/workflows", Some(bad), None)
            .await;
        assert_eq!(s, 401, "{bad}: {body}");
        assert_eq!(body["error"]["code"], "unauthenticated");
    }
    assert_eq!(http.status(M::GET, "/metrics", None, None).await, 401);
    assert_eq!(
        http.status(M::GET, "/metrics", Some(&admin), None).await,
        200
    );

    let (viewer, _) = created_token(&server, &admin, &["--role", "viewer", "--name", "dash"]);
    let (operator, operator_id) = created_token(&server, &admin, &["--role", "operator"]);
    let event = json!({"key": "k/1", "value": "1"});
    let wf = json!({"name": "w1", "nodes": [{"name": "a", "job": {"command": ["true"]}}]});

    // viewer: reads only
    assert_eq!(
        http.status(M::GET, "/api/v1/workflows", Some(&viewer), None)
            .await,
        200
    );
    assert_eq!(
        http.status(M::GET, "/api/v1/events", Some(&viewer), None)
            .await,
        200
    );
    let (s, body, _) = http
        .call(
            M::POST,
            "/api/v1/events",
            Some(&viewer),
            Some(event.clone()),
        )
        .await;
    assert_eq!(s, 403, "{body}");
    assert_eq!(body["error"]["code"], "permission_denied");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("operator")
    );
    assert_eq!(
        http.status(
            M::POST,
            "/api/v1/projects",
            Some(&viewer),
            Some(json!({"name": "p"}))
        )
        .await,
        403
    );
    assert_eq!(
        http.status(M::GET, "/api/v1/tokens", Some(&viewer), None)
            .await,
        403
    );

    // operator: also publishes, writes meta, starts executions; no workflow management
    assert_eq!(
        http.status(
            M::POST,
            "/api/v1/events",
            Some(&operator),
            Some(event.clone())
        )
        .await,
        201
    );
    assert_eq!(
        http.status(
            M::POST,
            "/api/v1/projects",
            Some(&operator),
            Some(json!({"name": "p"}))
        )
        .await,
        201
    );
    assert_eq!(
        http.status(
            M::POST,
            "/api/v1/workflows",
            Some(&operator),
            Some(wf.clone())
        )
        .await,
        403
    );
    assert_eq!(
        http.status(M::GET, "/api/v1/tokens", Some(&operator), None)
            .await,
        403
    );

    // admin: manages workflows and tokens
    assert_eq!(
        http.status(M::POST, "/api/v1/workflows", Some(&admin), Some(wf))
            .await,
        201
    );
    assert_eq!(
        http.status(
            M::POST,
            "/api/v1/workflows/w1/executions",
            Some(&operator),
            None
        )
        .await,
        201
    );
    assert_eq!(
        http.status(M::POST, "/api/v1/workflows/w1/pause", Some(&operator), None)
            .await,
        403
    );
    assert_eq!(
        http.status(M::POST, "/api/v1/workflows/w1/pause", Some(&admin), None)
            .await,
        200
    );
    assert_eq!(
        http.status(M::DELETE, "/api/v1/workflows/w1", Some(&operator), None)
            .await,
        403
    );
    let (s, list, _) = http
        .call(M::GET, "/api/v1/tokens", Some(&admin), None)
        .await;
    assert_eq!(s, 200);
    assert_eq!(list.as_array().unwrap().len(), 3, "{list}");
    assert!(
        !list.to_string().contains(&operator[4..]),
        "no secret is listed"
    );

    // The event stream: a token in the header or, for browsers, in `access_token`.
    assert_eq!(
        http.status(M::GET, "/api/v1/events/stream", None, None)
            .await,
        401
    );
    let resp = http
        .c
        .get(format!(
            "{}/api/v1/events/stream?from=1&access_token={viewer}",
            server.url
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    drop(resp);

    // The CLI sends --token; without it, a one-line error and exit 1.
    let out = server.cli(Some(&operator), &["event", "send", "--key", "cli/1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = server.cli(None, &["event", "send", "--key", "cli/2"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("401") && stderr.contains("authentication required"),
        "{stderr}"
    );
    let out = server.cli(Some(&viewer), &["status"]);
    assert!(
        out.status.success(),
        "status reads /metrics with the token: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Expiry.
    let (short, _) = created_token(&server, &admin, &["--role", "viewer", "--expires", "1s"]);
    assert_eq!(
        http.status(M::GET, "/api/v1/workflows", Some(&short), None)
            .await,
        200
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (s, body, _) = http
        .call(M::GET, "/api/v1/workflows", Some(&short), None)
        .await;
    assert_eq!(s, 401);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("expired"),
        "{body}"
    );

    // Revocation through the CLI, effective at once.
    let out = server.cli(Some(&admin), &["token", "revoke", &operator_id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (s, body, _) = http
        .call(M::POST, "/api/v1/events", Some(&operator), Some(event))
        .await;
    assert_eq!(s, 401);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("revoked"),
        "{body}"
    );
    let out = server.cli(Some(&admin), &["token", "list"]);
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    let revoked = list
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == operator_id.as_str())
        .unwrap();
    assert!(revoked["revoked_at"].is_string());

    // No token in the server's output.
    let log = server.stop();
    for t in [&admin, &viewer, &operator, &short] {
        assert!(
            !log.contains(&t[4..]),
            "a token secret reached the log:\n{log}"
        );
    }
    assert!(log.contains("api token created"), "{log}");
}

/// Waits for an execution to end; returns it.
async fn finished(http: &Http, token: &str, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, e, _) = http
            .call(
                M::GET,
                &format!("/api/v1/executions/{id}"),
                Some(token),
                None,
            )
            .await;
        let state = e["state"].as_str().unwrap_or_default().to_string();
        if ["SUCCEEDED", "FAILED", "STOPPED"].contains(&state.as_str()) {
            return e;
        }
        assert!(Instant::now() < deadline, "execution {id} did not end: {e}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jobs_token_publishes_and_writes_meta_but_manages_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let admin = bootstrap_token(dir.path(), "admin");
    let server = Server::start(dir.path(), &["--auth", "--job-log-max-bytes", "4096"]);
    let http = Http::new(&server.url);
    // The job: first a lot of output (the log keeps its newest 2 KiB), then what its token may
    // and may not do, each exit code logged.
    let script = r#"
        i=0; while [ $i -lt 500 ]; do echo "filler line $i"; i=$((i+1)); done
        case "$AIFLOW_TOKEN" in afj_*) echo "token kind: job";; *) echo "token kind: other";; esac
        echo "$AIFLOW_TOKEN" > "$AIFLOW_DATA_DIR/../job-token"
        $AIFLOW_BIN event send --key job/ok --value 1 >/dev/null 2>&1; echo "event send: $?"
        $AIFLOW_BIN model create jobmodel >/dev/null 2>&1; echo "model create: $?"
        $AIFLOW_BIN workflow list >/dev/null 2>&1; echo "workflow list: $?"
        $AIFLOW_BIN workflow pause scoped >/dev/null 2>&1; echo "workflow pause: $?"
        $AIFLOW_BIN execution start scoped >/dev/null 2>&1; echo "execution start: $?"
        $AIFLOW_BIN token list >/dev/null 2>&1; echo "token list: $?"
        $AIFLOW_BIN event send --key job/other --context '{"execution":"someone-else"}' 2>&1 | grep -o 'cannot publish events for execution someone-else'
        $AIFLOW_BIN event send --key job/forged --type MODEL_VERSION_CREATED 2>&1 | grep -o "a job's token may not publish it"
    "#;
    let g = graph(dir.path(), "scoped", script);
    let out = server.cli(Some(&admin), &["workflow", "submit", g.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (s, e, _) = http
        .call(
            M::POST,
            "/api/v1/workflows/scoped/executions",
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(s, 201, "{e}");
    let id = e["id"].as_str().unwrap().to_string();
    let e = finished(&http, &admin, &id).await;
    assert_eq!(e["state"], "SUCCEEDED", "{e}");

    let out = server.cli(Some(&admin), &["execution", "logs", &id, "a"]);
    let log = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        log.len() <= 4096,
        "the log is kept under its limit: {}",
        log.len()
    );
    assert!(
        log.starts_with("[aiflow] log over its limit of 4096 bytes: the oldest"),
        "{log}"
    );
    assert!(!log.contains("filler line 0\n"), "{log}");
    for line in [
        "token kind: job",
        "event send: 0",
        "model create: 0",
        "workflow list: 0",
        "workflow pause: 1",
        "execution start: 1",
        "token list: 1",
        "cannot publish events for execution someone-else",
        "a job's token may not publish it",
    ] {
        assert!(
            log.contains(line),
            "missing {line:?} in the job's log:\n{log}"
        );
    }
    assert!(!log.contains("afj_"), "the token is not in the log");
    let (_, events, _) = http
        .call(M::GET, "/api/v1/events?key=job/*", Some(&admin), None)
        .await;
    let keys: Vec<&str> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["job/ok"], "{events}");

    // The execution has ended: its job's token is refused from now on.
    let job_token = std::fs::read_to_string(dir.path().join("job-token")).unwrap();
    let job_token = job_token.trim();
    assert!(job_token.starts_with("afj_"));
    tokio::time::sleep(Duration::from_millis(2100)).await; // past the lookup cache
    let (s, body, _) = http
        .call(M::GET, "/api/v1/workflows", Some(job_token), None)
        .await;
    assert_eq!(s, 401, "{body}");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("ended"),
        "{body}"
    );
    // A forged one (another execution's id under the same signature) is unknown.
    let forged = format!("{}x", job_token);
    assert_eq!(
        http.status(M::GET, "/api/v1/workflows", Some(&forged), None)
            .await,
        401
    );
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_size_and_page_size_limits() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        dir.path(),
        &["--max-body-bytes", "2048", "--max-page-size", "5"],
    );
    let http = Http::new(&server.url);
    let big = json!({"key": "k", "value": "x".repeat(4000)});
    let (s, body, _) = http.call(M::POST, "/api/v1/events", None, Some(big)).await;
    assert_eq!(s, 413);
    assert_eq!(body["error"]["code"], "payload_too_large", "{body}");
    assert_eq!(body["error"]["field"], "body");
    // Without a declared length (chunked), the body stops being read at the limit.
    let chunks =
        futures::stream::iter((0..10).map(|_| Ok::<_, std::io::Error>(bytes_of(&"y".repeat(500)))));
    let resp = http
        .c
        .post(format!("{}/api/v1/projects", server.url))
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 413);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "payload_too_large", "{body}");
    // Small bodies pass.
    for i in 0..8 {
        let ev = json!({"key": format!("k/{i}")});
        assert_eq!(
            http.status(M::POST, "/api/v1/events", None, Some(ev)).await,
            201
        );
    }
    let (s, body, _) = http
        .call(M::GET, "/api/v1/events?limit=6", None, None)
        .await;
    assert_eq!(s, 400);
    assert_eq!(body["error"]["field"], "limit", "{body}");
    let (s, page, _) = http
        .call(M::GET, "/api/v1/events?limit=5", None, None)
        .await;
    assert_eq!(s, 200);
    assert_eq!(page["items"].as_array().unwrap().len(), 5);
    // Without `limit`, the default page (100) is cut to the largest page size.
    let (s, page, _) = http.call(M::GET, "/api/v1/events", None, None).await;
    assert_eq!(s, 200);
    assert_eq!(page["items"].as_array().unwrap().len(), 5, "{page}");
    assert!(page["next_cursor"].is_string());
    server.stop();
}

fn bytes_of(s: &str) -> Vec<u8> {
    s.as_bytes().to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_rate_and_stream_count_per_token() {
    let dir = tempfile::tempdir().unwrap();
    let admin = bootstrap_token(dir.path(), "admin");
    let other = bootstrap_token(dir.path(), "operator");
    let server = Server::start(
        dir.path(),
        &[
            "--auth",
            "--publish-rate-per-token",
            "1",
            "--publish-burst-per-token",
            "2",
            "--max-streams-per-token",
            "1",
        ],
    );
    let http = Http::new(&server.url);
    let ev = json!({"key": "r"});
    assert_eq!(
        http.status(M::POST, "/api/v1/events", Some(&admin), Some(ev.clone()))
            .await,
        201
    );
    assert_eq!(
        http.status(M::POST, "/api/v1/events", Some(&admin), Some(ev.clone()))
            .await,
        201
    );
    let (s, body, headers) = http
        .call(M::POST, "/api/v1/events", Some(&admin), Some(ev.clone()))
        .await;
    assert_eq!(s, 429, "{body}");
    assert_eq!(body["error"]["code"], "rate_limited");
    let wait: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=2).contains(&wait), "{wait}");
    // Another token has its own budget.
    assert_eq!(
        http.status(M::POST, "/api/v1/events", Some(&other), Some(ev.clone()))
            .await,
        201
    );
    tokio::time::sleep(Duration::from_secs(wait)).await;
    assert_eq!(
        http.status(M::POST, "/api/v1/events", Some(&admin), Some(ev))
            .await,
        201
    );

    // One stream per token: a second is refused while the first is open.
    let stream = |t: &str| {
        http.c
            .get(format!("{}/api/v1/events/stream?from=1", server.url))
            .bearer_auth(t)
            .send()
    };
    let first = stream(&admin).await.unwrap();
    assert_eq!(first.status().as_u16(), 200);
    let second = stream(&admin).await.unwrap();
    assert_eq!(second.status().as_u16(), 429);
    let body: Value = second.json().await.unwrap();
    assert_eq!(body["error"]["code"], "too_many_streams", "{body}");
    let third = stream(&other).await.unwrap();
    assert_eq!(third.status().as_u16(), 200, "per token");
    drop(first);
    // Once the first stream is closed its slot is free again.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let again = stream(&admin).await.unwrap();
        if again.status().as_u16() == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the closed stream's slot was not freed"
        );
        drop(again);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(third);
    server.stop();
}

/// One raw HTTP/1.1 request with the headers given (the `Host` among them, as a DNS-rebound
/// page would send it); returns the status and the body.
fn raw(url: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> (u16, Value) {
    use std::io::{Read, Write};
    let addr = url.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        head.push_str(&format!("Host: {addr}\r\n"));
    }
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out[9..12].parse().unwrap();
    let body = out.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    // A chunked body: the JSON object is between the first `{` and the last `}`.
    let json = match (body.find('{'), body.rfind('}')) {
        (Some(a), Some(b)) => serde_json::from_str(&body[a..=b]).unwrap_or(Value::Null),
        _ => Value::Null,
    };
    (status, json)
}

#[test]
fn cross_site_submits_and_rebound_hosts_are_refused_with_auth_off() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let url = server.url.clone();
    let doc = json!({"name": "pwn", "nodes": [{"name": "a", "job": {"command": ["sh", "-c", "touch pwned"]}}]}).to_string();
    let json_type = ("Content-Type", "application/json");

    // What a page on another site can send without asking first: text/plain, a form,
    // multipart. All refused before anything is stored.
    for ty in [
        "text/plain;charset=UTF-8",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
    ] {
        let (s, b) = raw(
            &url,
            "POST",
            "/api/v1/workflows",
            &[("Content-Type", ty)],
            &doc,
        );
        assert_eq!(s, 415, "{ty}: {b}");
        assert_eq!(b["error"]["code"], "unsupported_media_type", "{b}");
        assert_eq!(b["error"]["field"], "content-type", "{b}");
    }
    let (s, _) = raw(&url, "POST", "/api/v1/workflows", &[], &doc);
    assert_eq!(s, 415, "no Content-Type");
    let (s, _) = raw(&url, "GET", "/api/v1/workflows/pwn", &[], "");
    assert_eq!(s, 404, "nothing was stored");

    // A foreign Origin, even with a JSON body (a page cannot send one without a preflight,
    // but a non-browser proxy might relay it), and an empty-bodied start.
    let evil = ("Origin", "http://evil.example");
    let (s, b) = raw(&url, "POST", "/api/v1/workflows", &[evil, json_type], &doc);
    assert_eq!(s, 403, "{b}");
    assert_eq!(b["error"]["field"], "origin", "{b}");
    let (s, _) = raw(
        &url,
        "POST",
        "/api/v1/workflows/pwn/executions",
        &[evil],
        "",
    );
    assert_eq!(s, 403);
    let (s, _) = raw(&url, "GET", "/api/v1/workflows", &[evil], "");
    assert_eq!(s, 403, "reads from a foreign origin too");
    let (s, b) = raw(
        &url,
        "POST",
        "/api/v1/workflows/pwn/executions",
        &[("Sec-Fetch-Site", "cross-site")],
        "",
    );
    assert_eq!(s, 403, "{b}");
    assert_eq!(b["error"]["field"], "sec-fetch-site", "{b}");

    // DNS rebinding: the page's own name arrives as Host.
    let port = url.rsplit(':').next().unwrap().to_string();
    let rebound = format!("evil.example:{port}");
    for path in ["/api/v1/workflows", "/", "/healthz"] {
        let (s, b) = raw(&url, "GET", path, &[("Host", &rebound)], "");
        assert_eq!(s, 403, "{path}: {b}");
    }
    let (s, b) = raw(
        &url,
        "POST",
        "/api/v1/workflows",
        &[("Host", &rebound), json_type],
        &doc,
    );
    assert_eq!(s, 403);
    assert_eq!(b["error"]["field"], "host", "{b}");
    let (s, _) = raw(&url, "GET", "/api/v1/workflows/pwn", &[], "");
    assert_eq!(s, 404, "still nothing stored");

    // The web UI's own requests (same origin) and loopback names are served.
    let own = format!("http://127.0.0.1:{port}");
    let (s, b) = raw(
        &url,
        "POST",
        "/api/v1/workflows",
        &[
            ("Origin", &own),
            json_type,
            ("Sec-Fetch-Site", "same-origin"),
        ],
        &doc.replace("touch pwned", "true"),
    );
    assert_eq!(s, 201, "{b}");
    let localhost = format!("localhost:{port}");
    let (s, _) = raw(
        &url,
        "POST",
        "/api/v1/workflows/pwn/executions",
        &[
            ("Host", &localhost),
            ("Origin", &format!("http://localhost:{port}")),
            json_type,
        ],
        "{}",
    );
    assert_eq!(s, 201);
    for host in [format!("[::1]:{port}"), "127.0.0.1".to_string()] {
        let (s, _) = raw(&url, "GET", "/api/v1/workflows", &[("Host", &host)], "");
        assert_eq!(s, 200, "{host}");
    }
    // A link followed from another site still opens the UI.
    let (s, _) = raw(
        &url,
        "GET",
        "/",
        &[
            ("Sec-Fetch-Site", "cross-site"),
            ("Sec-Fetch-Mode", "navigate"),
        ],
        "",
    );
    assert_eq!(s, 200);
    assert!(!dir.path().join("pwned").exists());
}

#[test]
fn allowed_origins_and_hosts_are_honoured() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        dir.path(),
        &[
            "--allowed-origin",
            "https://dash.example.org",
            "--allowed-host",
            "aiflow.internal",
        ],
    );
    let url = server.url.clone();
    let port = url.rsplit(':').next().unwrap().to_string();
    let doc =
        json!({"name": "ok", "nodes": [{"name": "a", "job": {"command": ["true"]}}]}).to_string();
    let json_type = ("Content-Type", "application/json");
    let (s, b) = raw(
        &url,
        "POST",
        "/api/v1/workflows",
        &[("Origin", "https://dash.example.org"), json_type],
        &doc,
    );
    assert_eq!(s, 201, "{b}");
    let (s, _) = raw(
        &url,
        "POST",
        "/api/v1/workflows",
        &[("Origin", "https://other.example.org"), json_type],
        &doc,
    );
    assert_eq!(s, 403);
    let internal = format!("aiflow.internal:{port}");
    let (s, _) = raw(&url, "GET", "/api/v1/workflows", &[("Host", &internal)], "");
    assert_eq!(s, 200);
    let (s, _) = raw(
        &url,
        "GET",
        "/api/v1/workflows",
        &[("Host", &format!("elsewhere.internal:{port}"))],
        "",
    );
    assert_eq!(s, 403);
    drop(server);

    // With authentication on, any Host is served (the token is what protects), and the
    // config file's lists add to the flags'.
    let admin = bootstrap_token(dir.path(), "admin");
    std::fs::write(
        dir.path().join("aiflow.toml"),
        "allowed_origins = [\"http://ui.example\"]\n",
    )
    .unwrap();
    let server = Server::start(dir.path(), &["--auth"]);
    let url = server.url.clone();
    let bearer = format!("Bearer {admin}");
    let auth = ("Authorization", bearer.as_str());
    let (s, _) = raw(
        &url,
        "GET",
        "/api/v1/workflows",
        &[auth, ("Host", &format!("aiflow.example.net:{port}"))],
        "",
    );
    assert_eq!(s, 200);
    let (s, _) = raw(
        &url,
        "GET",
        "/api/v1/workflows",
        &[auth, ("Origin", "http://ui.example")],
        "",
    );
    assert_eq!(s, 200, "allowed in the config file");
    let (s, _) = raw(
        &url,
        "GET",
        "/api/v1/workflows",
        &[auth, ("Origin", "http://evil.example")],
        "",
    );
    assert_eq!(s, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absurd_numbers_are_refused_with_422_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let admin = bootstrap_token(dir.path(), "admin");
    let server = Server::start(dir.path(), &["--auth"]);
    let http = Http::new(&server.url);
    let huge = 10_000_000_000_000_u64;
    for (job, trigger, field) in [
        (
            json!({"command": ["true"], "retries": 1, "retry_backoff_s": huge}),
            None,
            "nodes[0].job.retry_backoff_s",
        ),
        (
            json!({"command": ["true"], "timeout_s": u64::MAX}),
            None,
            "nodes[0].job.timeout_s",
        ),
        (
            json!({"command": ["true"], "resources": {"cpus": 1e308}}),
            None,
            "nodes[0].job.resources.cpus",
        ),
        (
            json!({"command": ["true"]}),
            Some(json!({"event": {"key": "k"}, "delay_s": huge})),
            "triggers[0].delay_s",
        ),
    ] {
        let mut doc = json!({"name": "absurd", "nodes": [{"name": "a", "job": job}]});
        if let Some(t) = trigger {
            doc["triggers"] = json!([t]);
        }
        let (s, b, _) = http
            .call(M::POST, "/api/v1/workflows", Some(&admin), Some(doc))
            .await;
        assert_eq!(s, 422, "{field}: {b}");
        assert_eq!(b["error"]["field"], field, "{b}");
    }
    // `aiflow graph validate` says the same, without a server.
    let path = dir.path().join("absurd.json");
    std::fs::write(
        &path,
        json!({"name": "absurd", "nodes": [{"name": "a", "job": {"command": ["true"], "retries": 1, "retry_backoff_s": huge}}]}).to_string(),
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["graph", "validate"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("nodes[0].job.retry_backoff_s") && stderr.contains("largest allowed"),
        "{stderr}"
    );

    // A token's lifetime too.
    let (s, b, _) = http
        .call(
            M::POST,
            "/api/v1/tokens",
            Some(&admin),
            Some(json!({"role": "viewer", "expires_in_s": 99_999_999_999_999_u64})),
        )
        .await;
    assert_eq!(s, 422, "{b}");
    assert_eq!(b["error"]["field"], "expires_in_s", "{b}");
    let (s, b, _) = http
        .call(
            M::POST,
            "/api/v1/tokens",
            Some(&admin),
            Some(json!({"role": "viewer", "expires_in_s": 86_400})),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let expires: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(b["expires_at"].clone()).unwrap();
    assert!(expires > chrono::Utc::now(), "{b}");
}

/// An older server stored what this one refuses: a job with a retry backoff of 10^13 s and an
/// event trigger delayed as long, with an attempt of it running when the server died. The
/// server starts anyway, reports the workflow under `load_errors`, and keeps running others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_workflow_with_absurd_numbers_does_not_stop_the_server() {
    let dir = tempfile::tempdir().unwrap();
    // Jobs end with the server here, so its attempt is lost and retried under the backoff.
    let server = Server::start(dir.path(), &["--stop-jobs-on-exit"]);
    let http = Http::new(&server.url);
    let bad = json!({"name": "old", "nodes": [{"name": "a", "job": {"command": ["sh", "-c", "sleep 30; exit 1"], "retries": 1, "retry_backoff_s": 1}}],
        "triggers": [{"event": {"key": "go"}, "delay_s": 1}]});
    let good = json!({"name": "good", "nodes": [{"name": "a", "job": {"command": ["true"]}}]});
    for doc in [bad, good] {
        let (s, b, _) = http
            .call(M::POST, "/api/v1/workflows", None, Some(doc))
            .await;
        assert_eq!(s, 201, "{b}");
    }
    let (s, e, _) = http
        .call(M::POST, "/api/v1/workflows/old/executions", None, None)
        .await;
    assert_eq!(s, 201, "{e}");
    let old_id = e["id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, jobs, _) = http
            .call(
                M::GET,
                &format!("/api/v1/executions/{old_id}/jobs"),
                None,
                None,
            )
            .await;
        if jobs[0]["state"] == "RUNNING" {
            break;
        }
        assert!(Instant::now() < deadline, "{jobs}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The server dies with the attempt running (SIGKILL: nothing is tidied up).
    let mut server = server;
    let _ = server.child.kill();
    let _ = server.child.wait();
    drop(server);

    // The database now holds what an older server accepted.
    let db_path = dir.path().join("data").join("aiflow.db");
    {
        use sqlx::Connection as _;
        let mut c = sqlx::SqliteConnection::connect(&format!("sqlite:{}", db_path.display()))
            .await
            .unwrap();
        let (id, text): (i64, String) = sqlx::query_as(
            "SELECT v.id, v.workflow FROM workflow_versions v JOIN workflows w ON w.id = v.workflow_id WHERE w.name = 'old'",
        )
        .fetch_one(&mut c)
        .await
        .unwrap();
        let mut wf: Value = serde_json::from_str(&text).unwrap();
        wf["jobs"][0]["retry_backoff_s"] = json!(10_000_000_000_000_u64);
        wf["triggers"][0]["delay_s"] = json!(10_000_000_000_000_u64);
        sqlx::query("UPDATE workflow_versions SET workflow = $1 WHERE id = $2")
            .bind(wf.to_string())
            .bind(id)
            .execute(&mut c)
            .await
            .unwrap();
        c.close().await.unwrap();
    }

    // It starts, twice (the second start sees what the first one stored).
    for round in 0..2 {
        let server = Server::start(dir.path(), &["--stop-jobs-on-exit"]);
        let http = Http::new(&server.url);
        let (s, r, _) = http.call(M::GET, "/readyz", None, None).await;
        assert_eq!(s, 200, "round {round}: {r}");
        // The lost attempt is retried after the (cut) backoff: it waits RETRYING.
        let (_, jobs, _) = http
            .call(
                M::GET,
                &format!("/api/v1/executions/{old_id}/jobs"),
                None,
                None,
            )
            .await;
        assert!(
            jobs.as_array()
                .unwrap()
                .iter()
                .any(|j| j["state"] == "RETRYING"),
            "round {round}: {jobs}"
        );
        // `limit` is honoured on the list of its attempts (two: the lost one and the retry).
        assert_eq!(jobs.as_array().unwrap().len(), 2, "{jobs}");
        let (s, first, _) = http
            .call(
                M::GET,
                &format!("/api/v1/executions/{old_id}/jobs?limit=1"),
                None,
                None,
            )
            .await;
        assert_eq!(s, 200);
        assert_eq!(first.as_array().unwrap().len(), 1, "{first}");
        assert_eq!(first[0]["attempt"], 1, "oldest first: {first}");
        for bad in ["0", "1001"] {
            let (s, b, _) = http
                .call(
                    M::GET,
                    &format!("/api/v1/executions/{old_id}/jobs?limit={bad}"),
                    None,
                    None,
                )
                .await;
            assert_eq!(s, 400, "{b}");
            assert_eq!(b["error"]["field"], "limit", "{b}");
        }
        // Its trigger is not armed, and it says why.
        let (_, list, _) = http.call(M::GET, "/api/v1/workflows", None, None).await;
        let errors = list["load_errors"].as_array().unwrap();
        assert!(
            errors.iter().any(|e| e["file"] == "(stored workflow old)"
                && e["error"].as_str().unwrap().contains("triggers[0].delay_s")),
            "round {round}: {list}"
        );
        let (s, _, _) = http
            .call(
                M::POST,
                "/api/v1/events",
                None,
                Some(json!({"key": "go", "value": "x"})),
            )
            .await;
        assert_eq!(s, 201);
        // Other workflows run.
        let (s, e, _) = http
            .call(M::POST, "/api/v1/workflows/good/executions", None, None)
            .await;
        assert_eq!(s, 201, "{e}");
        let e = finished(&http, "", e["id"].as_str().unwrap()).await;
        assert_eq!(e["state"], "SUCCEEDED", "{e}");
        let (s, r, _) = http.call(M::GET, "/readyz", None, None).await;
        assert_eq!(s, 200, "round {round}: {r}");
        let log = server.stop();
        assert!(!log.contains("panicked"), "{log}");
    }
}

/// Waits for the meta outbox relay's `MODEL_VERSION_CREATED` of `model`; returns it.
async fn model_version_created(http: &Http, token: Option<&str>, model: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, events, _) = http
            .call(
                M::GET,
                &format!("/api/v1/events?event_type=MODEL_VERSION_CREATED&key=model/{model}"),
                token,
                None,
            )
            .await;
        if let Some(e) = events["items"]
            .as_array()
            .and_then(|a| a.iter().find(|e| e["sender"] == "aiflow-meta"))
        {
            return e.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no MODEL_VERSION_CREATED: {events}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_servers_own_events_cannot_be_forged() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let http = Http::new(&server.url);

    // 200 events under the keys the outbox relay will use next: refused, one by one and as a
    // batch, so the real MODEL_VERSION_CREATED still goes out.
    for i in 1..=200 {
        let (s, b, _) = http
            .call(
                M::POST,
                "/api/v1/events",
                None,
                Some(
                    json!({"key": "model/fraud", "value": "forged", "event_type": "UNDEFINED",
                    "idempotency_key": format!("meta-outbox-{i}")}),
                ),
            )
            .await;
        assert_eq!(s, 403, "{b}");
        assert_eq!(b["error"]["field"], "idempotency_key", "{b}");
    }
    let batch: Vec<Value> = (1..=200)
        .map(|i| json!({"key": "k", "idempotency_key": format!("meta-outbox-{i}")}))
        .collect();
    let (s, b, _) = http
        .call(M::POST, "/api/v1/events", None, Some(Value::Array(batch)))
        .await;
    assert_eq!(s, 403, "{b}");
    assert_eq!(b["error"]["field"], "[0].idempotency_key", "{b}");
    for key in ["sched-0123", "aiflow-x"] {
        let (s, _, _) = http
            .call(
                M::POST,
                "/api/v1/events",
                None,
                Some(json!({"key": "k", "idempotency_key": key})),
            )
            .await;
        assert_eq!(s, 403, "{key}");
    }
    let (s, b, _) = http
        .call(
            M::POST,
            "/api/v1/models",
            None,
            Some(json!({"name": "fraud"})),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let (s, b, _) = http
        .call(
            M::POST,
            "/api/v1/models/fraud/versions",
            None,
            Some(json!({"uri": "s3://real/v1"})),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let real = model_version_created(&http, None, "fraud").await;
    assert!(real["context"].get("published_by").is_none(), "{real}");

    // With authentication off, a client's event of the server's kinds is stored, marked.
    let (s, b, _) = http
        .call(
            M::POST,
            "/api/v1/events",
            None,
            Some(json!({"key": "model/fraud", "value": "s3://evil", "event_type": "MODEL_VERSION_CREATED",
                "sender": "aiflow-meta", "context": {"run": 1}})),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(
        b["context"],
        json!({"run": 1, "published_by": "client"}),
        "{b}"
    );
    let (s, b, _) = http
        .call(
            M::POST,
            "/api/v1/events",
            None,
            Some(json!({"key": "k", "event_type": "JOB_STATUS"})),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(b["context"], json!({"published_by": "client"}), "{b}");
    let (s, b, _) = http
        .call(
            M::POST,
            "/api/v1/events",
            None,
            Some(json!({"key": "k", "event_type": "WORKFLOW_STATUS", "context": [1]})),
        )
        .await;
    assert_eq!(s, 400, "{b}");
    assert_eq!(b["error"]["field"], "context", "{b}");
    let (s, b, _) = http
        .call(
            M::POST,
            "/api/v1/events",
            None,
            Some(json!({"key": "k", "event_type": "TRAINED", "sender": "trainer"})),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    assert!(
        b.get("context").is_none_or(Value::is_null),
        "untouched: {b}"
    );
    drop(server);

    // With authentication on: refused below admin (a job's token: see
    // a_jobs_token_publishes_and_writes_meta_but_manages_nothing), marked for an admin.
    let admin = bootstrap_token(dir.path(), "admin");
    let server = Server::start(dir.path(), &["--auth"]);
    let http = Http::new(&server.url);
    let (operator, _) = created_token(&server, &admin, &["--role", "operator"]);
    for (event, field) in [
        (
            json!({"key": "model/fraud", "event_type": "MODEL_VERSION_CREATED"}),
            "event_type",
        ),
        (
            json!({"key": "dataset/x", "event_type": "dataset_updated"}),
            "event_type",
        ),
        (json!({"key": "k", "sender": "aiflow-scheduler"}), "sender"),
        (
            json!({"key": "k", "idempotency_key": "meta-outbox-7"}),
            "idempotency_key",
        ),
    ] {
        let (s, b, _) = http
            .call(M::POST, "/api/v1/events", Some(&operator), Some(event))
            .await;
        assert_eq!(s, 403, "{b}");
        assert_eq!(b["error"]["code"], "permission_denied", "{b}");
        assert_eq!(b["error"]["field"], field, "{b}");
    }
    let (s, _, _) = http
        .call(
            M::POST,
            "/api/v1/events",
            Some(&operator),
            Some(json!({"key": "k", "event_type": "TRAINED"})),
        )
        .await;
    assert_eq!(s, 201);
    let (s, b, _) = http
        .call(
            M::POST,
            "/api/v1/events",
            Some(&admin),
            Some(json!({"key": "model/fraud", "event_type": "MODEL_DEPLOYED"})),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(b["context"]["published_by"], "client", "{b}");
    // The relay goes on with its own keys after the restart.
    let (s, b, _) = http
        .call(
            M::POST,
            "/api/v1/models",
            Some(&operator),
            Some(json!({"name": "churn"})),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let (s, b, _) = http
        .call(
            M::POST,
            "/api/v1/models/churn/versions",
            Some(&operator),
            Some(json!({"uri": "s3://real/churn"})),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    model_version_created(&http, Some(&admin), "churn").await;
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_data_folder_database_and_logs_are_private() {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");

    // The first token, before any server: the folder and the database are made private.
    bootstrap_token(dir.path(), "admin");
    assert_eq!(mode(&data), 0o700, "data folder");
    assert_eq!(mode(&data.join("aiflow.db")), 0o600, "database");
    std::fs::remove_dir_all(&data).unwrap();

    let server = Server::start(dir.path(), &[]);
    let http = Http::new(&server.url);
    assert_eq!(mode(&data), 0o700, "data folder");
    for f in ["aiflow.db", "aiflow.db-wal", "aiflow.db-shm"] {
        let p = data.join(f);
        if p.exists() {
            assert_eq!(mode(&p), 0o600, "{f}");
        }
    }
    assert!(data.join("aiflow.db-wal").exists(), "WAL mode");
    let g = graph(dir.path(), "logged", "echo secret-output");
    let (s, b, _) = http
        .call(
            M::POST,
            "/api/v1/workflows",
            None,
            Some(serde_json::from_str(&std::fs::read_to_string(g).unwrap()).unwrap()),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let (s, e, _) = http
        .call(M::POST, "/api/v1/workflows/logged/executions", None, None)
        .await;
    assert_eq!(s, 201, "{e}");
    let id = e["id"].as_str().unwrap().to_string();
    assert_eq!(finished(&http, "", &id).await["state"], "SUCCEEDED");
    let log = data.join("logs").join(&id).join("a-1.log");
    assert!(
        std::fs::read_to_string(&log)
            .unwrap()
            .contains("secret-output"),
        "{}",
        log.display()
    );
    assert_eq!(mode(&log), 0o600, "job log");
    drop(server);

    // A database an older server left readable by all is narrowed at the next start.
    std::fs::set_permissions(
        data.join("aiflow.db"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let _server = Server::start(dir.path(), &[]);
    assert_eq!(mode(&data.join("aiflow.db")), 0o600, "narrowed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_shows_terminal_escapes_instead_of_obeying_them() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let http = Http::new(&server.url);
    let nasty = "\u{1b}]0;pwned\u{7}\u{1b}[2J\u{9b}31mred\rover\u{202e}txt";
    let (s, b, _) = http
        .call(
            M::POST,
            "/api/v1/events",
            None,
            Some(json!({"key": "nasty", "value": nasty})),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let out = Command::new(BIN)
        .args(["--server", &server.url, "--output", "table"])
        .args(["event", "list", "--key", "nasty"])
        .env_remove("AIFLOW_TOKEN")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(
        !table.contains(['\u{1b}', '\u{7}', '\u{9b}', '\r', '\u{202e}']),
        "{table:?}"
    );
    assert!(table.contains("\\u001b]0;pwned\\u0007"), "{table}");
    // JSON output keeps the value, escaped.
    let out = server.cli(None, &["event", "list", "--key", "nasty"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["items"][0]["value"], nasty, "{v}");
    // So do error messages naming it.
    let out = server.cli(None, &["workflow", "show", "\u{1b}[2Jnope"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(!stderr.contains('\u{1b}'), "{stderr:?}");
}
