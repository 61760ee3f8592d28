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
        Self::start_with_env(dir, args, &[])
    }

    /// [`Server::start`] with more variables in the server's environment.
    fn start_with_env(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Server {
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
            .envs(env.iter().copied())
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

/// A job's environment is built: the base, the operator's passthrough, the job's `env` and
/// `env_from` secrets and the `AIFLOW_*` variables; never the server's own secrets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jobs_environment_is_built_not_inherited() {
    let dir = tempfile::tempdir().unwrap();
    let admin = bootstrap_token(dir.path(), "admin");
    let data = dir.path().join("data");
    let db = format!("sqlite:{}", data.join("aiflow.db").display());
    let secrets = data.join("secrets");
    std::fs::create_dir_all(&secrets).unwrap();
    std::fs::write(secrets.join("db-password"), "hunter2\n").unwrap();
    let server = Server::start_with_env(
        dir.path(),
        &["--auth", "--job-env-passthrough", "LC_SEC_*"],
        &[
            // The server's own database URL, a cloud credential, and a passthrough variable.
            ("AIFLOW_DATABASE", &db),
            ("AWS_SECRET_ACCESS_KEY", "server-cloud-secret"),
            ("NATS_PASSWORD", "server-nats-secret"),
            ("LC_SEC_PASSED", "passed-through"),
            ("HOME", "/home/aiflow-test"),
        ],
    );
    let http = Http::new(&server.url);
    let out_file = dir.path().join("job-env");
    let doc = json!({"name": "envjob", "nodes": [{"name": "a", "job": {
        "command": ["sh", "-c", format!("env > {}", out_file.display())],
        "env": {"MY_SETTING": "mine", "API_KEY": "in-the-document"},
        "env_from": {"DB_PASSWORD": "db-password"},
    }}]});
    let (s, body, _) = http
        .call(M::POST, "/api/v1/workflows", Some(&admin), Some(doc))
        .await;
    assert_eq!(s, 201, "{body}");
    // Read back: `env` values only for admins; the secret is never in the document.
    let (viewer, _) = created_token(&server, &admin, &["--role", "viewer"]);
    for path in [
        "/api/v1/workflows/envjob/versions/1",
        "/api/v1/workflows/envjob/versions",
    ] {
        let (s, v, _) = http.call(M::GET, path, Some(&viewer), None).await;
        assert_eq!(s, 200, "{v}");
        let text = v.to_string();
        assert!(!text.contains("in-the-document"), "{text}");
        assert!(text.contains(r#""API_KEY":"<redacted>""#), "{text}");
        assert!(text.contains(r#""DB_PASSWORD":"db-password""#), "{text}");
        let (_, v, _) = http.call(M::GET, path, Some(&admin), None).await;
        assert!(v.to_string().contains("in-the-document"), "{v}");
        assert!(!v.to_string().contains("hunter2"), "{v}");
    }
    let (s, e, _) = http
        .call(
            M::POST,
            "/api/v1/workflows/envjob/executions",
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(s, 201, "{e}");
    let e = finished(&http, &admin, e["id"].as_str().unwrap()).await;
    assert_eq!(e["state"], "SUCCEEDED", "{e}");
    let env = std::fs::read_to_string(&out_file).unwrap();
    let vars: std::collections::BTreeMap<&str, &str> =
        env.lines().filter_map(|l| l.split_once('=')).collect();
    for secret in [
        "server-cloud-secret",
        "server-nats-secret",
        db.as_str(),
        admin.as_str(),
    ] {
        assert!(!env.contains(secret), "{secret:?} reached the job:\n{env}");
    }
    assert!(!vars.contains_key("AIFLOW_DATABASE"), "{env}");
    assert!(!vars.contains_key("RUST_LOG"), "{env}");
    assert_eq!(vars.get("HOME"), Some(&"/home/aiflow-test"), "{env}");
    assert!(vars.contains_key("PATH"), "{env}");
    assert_eq!(vars.get("LC_SEC_PASSED"), Some(&"passed-through"), "{env}");
    assert_eq!(vars.get("MY_SETTING"), Some(&"mine"), "{env}");
    assert_eq!(vars.get("DB_PASSWORD"), Some(&"hunter2"), "{env}");
    assert_eq!(vars.get("AIFLOW_WORKFLOW"), Some(&"envjob"), "{env}");
    assert!(vars["AIFLOW_TOKEN"].starts_with("afj_"), "{env}");
    // Nothing else: the test's own environment (CARGO_*, RUST_LOG, …) stays out. `sh` adds
    // PWD (and SHLVL, `_` in some shells) itself.
    let allowed = [
        "PATH",
        "HOME",
        "LANG",
        "TZ",
        "TMPDIR",
        "USER",
        "LC_SEC_PASSED",
        "MY_SETTING",
        "API_KEY",
        "DB_PASSWORD",
        "TRACEPARENT",
        "PWD",
        "SHLVL",
        "_",
        "OLDPWD",
    ];
    let extra: Vec<&str> = vars
        .keys()
        .copied()
        .filter(|k| !k.starts_with("AIFLOW_") && !allowed.contains(k))
        .collect();
    assert!(extra.is_empty(), "inherited {extra:?}:\n{env}");
    server.stop();
}

/// Waits for `path` to hold a line, and returns it.
async fn wait_for_file(path: &Path) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(s) = std::fs::read_to_string(path)
            && s.ends_with('\n')
        {
            return s.trim().to_string();
        }
        assert!(
            Instant::now() < deadline,
            "{} never written",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A job's token acts on its own execution: its events carry it, lineage for another
/// execution's job is refused, and it deletes or changes only the meta records it created.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jobs_token_acts_on_its_own_execution_only() {
    let dir = tempfile::tempdir().unwrap();
    let admin = bootstrap_token(dir.path(), "admin");
    let server = Server::start(dir.path(), &["--auth"]);
    let http = Http::new(&server.url);
    // Another execution, finished, whose job execution the job will try to rewrite.
    let g = graph(dir.path(), "other", "true");
    assert!(
        server
            .cli(Some(&admin), &["workflow", "submit", g.to_str().unwrap()])
            .status
            .success()
    );
    let (_, e, _) = http
        .call(
            M::POST,
            "/api/v1/workflows/other/executions",
            Some(&admin),
            None,
        )
        .await;
    let other = e["id"].as_str().unwrap().to_string();
    finished(&http, &admin, &other).await;
    let (_, jobs, _) = http
        .call(
            M::GET,
            &format!("/api/v1/executions/{other}/jobs"),
            Some(&admin),
            None,
        )
        .await;
    let other_run = jobs[0]["id"].as_str().unwrap().to_string();
    let other_state = jobs[0]["state"].clone();
    for (path, body) in [
        ("/api/v1/projects", json!({"name": "adminproj"})),
        ("/api/v1/models", json!({"name": "adminmodel"})),
    ] {
        let (s, b, _) = http.call(M::POST, path, Some(&admin), Some(body)).await;
        assert_eq!(s, 201, "{b}");
    }

    // The job hands its token over and waits to be stopped.
    let token_file = dir.path().join("job-token");
    let g = graph(
        dir.path(),
        "holder",
        &format!(
            "echo \"$AIFLOW_TOKEN\" > {}; sleep 120",
            token_file.display()
        ),
    );
    assert!(
        server
            .cli(Some(&admin), &["workflow", "submit", g.to_str().unwrap()])
            .status
            .success()
    );
    let (_, e, _) = http
        .call(
            M::POST,
            "/api/v1/workflows/holder/executions",
            Some(&admin),
            None,
        )
        .await;
    let mine = e["id"].as_str().unwrap().to_string();
    let job = wait_for_file(&token_file).await;
    assert!(job.starts_with("afj_"), "{job}");
    let job = Some(job.as_str());

    // Events: the server sets the execution; another one, or a non-string one, is refused.
    let (s, b, _) = http
        .call(
            M::POST,
            "/api/v1/events",
            job,
            Some(json!({"key": "scope/none", "value": "1"})),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let (s, b, _) = http
        .call(
            M::POST,
            "/api/v1/events",
            job,
            Some(json!([{"key": "scope/batch", "context": {"note": "x"}}])),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let (_, events, _) = http
        .call(M::GET, "/api/v1/events?key=scope/*", Some(&admin), None)
        .await;
    let items = events["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{events}");
    for e in items {
        assert_eq!(e["context"]["execution"], mine.as_str(), "{e}");
    }
    assert_eq!(items[1]["context"]["note"], "x", "{events}");
    for (body, field) in [
        (
            json!({"key": "scope/x", "context": {"execution": 7}}),
            "context.execution",
        ),
        (
            json!({"key": "scope/x", "context": {"execution": other}}),
            "context.execution",
        ),
        (json!({"key": "scope/x", "context": [1, 2]}), "context"),
        (
            json!([{"key": "scope/x"}, {"key": "scope/y", "context": {"execution": null, "a": 1}}, {"key": "scope/z", "context": {"execution": ["x"]}}]),
            "[2].context.execution",
        ),
    ] {
        let (s, b, _) = http.call(M::POST, "/api/v1/events", job, Some(body)).await;
        assert!(s == 403 || s == 400, "{s} {b}");
        assert_eq!(b["error"]["field"], field, "{b}");
    }

    // Lineage: another execution's job execution is not the job's to report on.
    let lineage = |run: &str| {
        json!({"eventType": "COMPLETE", "eventTime": "2026-01-01T00:00:00Z",
               "run": {"runId": run}, "job": {"namespace": "ns", "name": "j"},
               "outputs": [{"namespace": "aiflow.model", "name": "model/stolen"}]})
    };
    let (s, b, _) = http
        .call(M::POST, "/api/v1/lineage", job, Some(lineage(&other_run)))
        .await;
    assert_eq!(s, 403, "{b}");
    assert_eq!(b["error"]["field"], "run.runId", "{b}");
    let (s, b, _) = http
        .call(
            M::POST,
            "/api/v1/lineage/edges",
            job,
            Some(json!({"job_execution": other_run, "outputs": []})),
        )
        .await;
    assert_eq!(s, 403, "{b}");
    assert_eq!(b["error"]["field"], "job_execution", "{b}");
    let (_, j, _) = http
        .call(
            M::GET,
            &format!("/api/v1/job_executions/{other_run}"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(j["state"], other_state, "{j}");
    // Its own lineage (an outside run id) is accepted.
    let (s, b, _) = http
        .call(
            M::POST,
            "/api/v1/lineage",
            job,
            Some(lineage("outside-run-1")),
        )
        .await;
    assert_eq!(s, 201, "{b}");

    // Meta records: only those it created.
    for (method, path) in [
        (M::DELETE, "/api/v1/projects/adminproj"),
        (M::PATCH, "/api/v1/models/adminmodel"),
        (M::DELETE, "/api/v1/models/adminmodel"),
    ] {
        let body = (method == M::PATCH).then(|| json!({"description": "mine now"}));
        let (s, b, _) = http.call(method, path, job, body).await;
        assert_eq!(s, 403, "{path}: {b}");
        assert_eq!(b["error"]["field"], "name", "{b}");
    }
    let (s, b, _) = http
        .call(
            M::POST,
            "/api/v1/projects",
            job,
            Some(json!({"name": "jobproj"})),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let (s, b, _) = http
        .call(
            M::PATCH,
            "/api/v1/projects/jobproj",
            job,
            Some(json!({"description": "d"})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        http.status(M::DELETE, "/api/v1/projects/jobproj", job, None)
            .await,
        204
    );
    // Admins are not limited.
    assert_eq!(
        http.status(M::DELETE, "/api/v1/projects/adminproj", Some(&admin), None)
            .await,
        204
    );
    assert_eq!(
        http.status(
            M::POST,
            &format!("/api/v1/executions/{mine}/stop"),
            Some(&admin),
            None
        )
        .await,
        202
    );
    server.stop();
}

/// `VmRSS` and `VmHWM` (peak) of a process, in KiB.
fn rss_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap()
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Sends a `POST /events` of `total` bytes (a huge `context` array), declared or chunked,
/// until the server answers; returns the status line's code.
fn send_huge_event(addr: &str, total: usize, chunked: bool) -> u16 {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let framing = if chunked {
        "Transfer-Encoding: chunked".to_string()
    } else {
        format!("Content-Length: {total}")
    };
    let head = format!(
        "POST /api/v1/events HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n{framing}\r\n\r\n"
    );
    s.write_all(head.as_bytes()).unwrap();
    let prefix = br#"{"key":"k","context":["#;
    let piece = b"0,".repeat(32 * 1024);
    let mut sent = 0;
    let mut first = true;
    while sent < total {
        let data: &[u8] = if first { prefix } else { &piece };
        first = false;
        let ok = if chunked {
            s.write_all(format!("{:x}\r\n", data.len()).as_bytes())
                .and_then(|()| s.write_all(data))
                .and_then(|()| s.write_all(b"\r\n"))
        } else {
            s.write_all(data)
        };
        if ok.is_err() {
            break; // The server answered and closed: read its answer.
        }
        sent += data.len();
    }
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while !out.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&out);
    text.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0)
}

/// How long until the server closes `s` (read returns end of file or an error).
fn closed_after(mut s: std::net::TcpStream) -> Duration {
    use std::io::Read;
    let start = Instant::now();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return start.elapsed(),
            Ok(_) => {}
        }
    }
}

/// Opens a streaming `GET` and returns the connection and its status code.
fn open_stream(addr: &str, path: &str) -> (std::net::TcpStream, u16) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
        .unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 1];
    while !out.ends_with(b"\r\n") {
        if s.read(&mut buf).unwrap() == 0 {
            break;
        }
        out.push(buf[0]);
    }
    let code = String::from_utf8_lossy(&out)
        .get(9..12)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (s, code)
}

/// Memory per request is bounded (a 60 MB event is refused early, declared or chunked, and
/// the server's peak RSS stays within 150 MiB of where it started), slow and idle clients
/// are disconnected after the header timeout, and event streams and log follows are capped
/// also with authentication off.
#[test]
fn memory_connections_and_streams_are_bounded() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        dir.path(),
        &["--header-timeout-s", "2", "--max-streams", "3"],
    );
    let addr = server.url.trim_start_matches("http://").to_string();
    let pid = server.child.id();
    // Warm up (the first requests allocate what the server keeps anyway).
    for _ in 0..3 {
        raw(
            &server.url,
            "POST",
            "/api/v1/events",
            &[("Content-Type", "application/json")],
            r#"{"key":"warm","value":"1"}"#,
        );
    }
    let (before, _) = rss_kib(pid);
    const MB60: usize = 60 * 1024 * 1024;
    for chunked in [false, true] {
        let threads: Vec<_> = (0..3)
            .map(|_| {
                let addr = addr.clone();
                std::thread::spawn(move || send_huge_event(&addr, MB60, chunked))
            })
            .collect();
        for t in threads {
            assert_eq!(t.join().unwrap(), 413, "a 60 MB event (chunked: {chunked})");
        }
    }
    let (after, peak) = rss_kib(pid);
    eprintln!("server RSS: before {before} KiB, after {after} KiB, peak {peak} KiB");
    assert!(
        peak < before + 150 * 1024,
        "peak RSS {peak} KiB is over 150 MiB above {before} KiB"
    );
    // The largest event body is 4 MiB by default: a batch just under it is stored, one just
    // over it refused.
    let batch = |n: usize| {
        let one = json!({"key": "big", "value": "x".repeat(n)});
        serde_json::to_string(&vec![one; 4]).unwrap()
    };
    let (s, b) = raw(
        &server.url,
        "POST",
        "/api/v1/events",
        &[("Content-Type", "application/json")],
        &batch(1_000_000),
    );
    assert_eq!(s, 201, "{b}");
    assert_eq!(
        send_huge_event(&addr, 4 * 1024 * 1024 + 1024, false),
        413,
        "just over 4 MiB"
    );

    // A client that sends half a header is disconnected after the 2 s header timeout.
    let mut half = std::net::TcpStream::connect(&addr).unwrap();
    half.write_all(format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\n").as_bytes())
        .unwrap();
    let took = closed_after(half);
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(6),
        "half a request held for {took:?}"
    );
    // So is one that stops sending a request body halfway.
    let mut stalled = std::net::TcpStream::connect(&addr).unwrap();
    stalled
        .write_all(
            format!(
                "POST /api/v1/events HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
                 Content-Length: 100\r\n\r\n{{\"key\": \"half"
            )
            .as_bytes(),
        )
        .unwrap();
    let took = closed_after(stalled);
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(6),
        "a stalled request body held for {took:?}"
    );
    // So is one idle after a request.
    let (mut idle, code) = open_stream(&addr, "/healthz");
    assert_eq!(code, 200);
    idle.flush().unwrap();
    let took = closed_after(idle);
    assert!(
        took < Duration::from_secs(6),
        "an idle connection held for {took:?}"
    );

    // At most 3 event streams and log follows at once, with authentication off.
    let held: Vec<_> = (0..3)
        .map(|_| {
            let (s, code) = open_stream(&addr, "/api/v1/events/stream");
            assert_eq!(code, 200);
            s
        })
        .collect();
    let (_, code) = open_stream(&addr, "/api/v1/events/stream");
    assert_eq!(code, 429, "a fourth stream");
    let (_, code) = open_stream(&addr, "/api/v1/executions/x/jobs/y/logs?follow=true");
    assert_eq!(code, 429, "a log follow over the cap");
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_s, code) = open_stream(&addr, "/api/v1/events/stream");
        if code == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "slots never freed: {code}");
        std::thread::sleep(Duration::from_millis(200));
    }
    server.stop();
}

/// `true` while `pid` exists and is not a zombie.
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let rest = &s[s.rfind(')')? + 1..];
            rest.split_whitespace().next().map(|st| st != "Z")
        })
        .unwrap_or(false)
}

/// A job's grandchild that left the job's process group (`setsid`) is stopped with the job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grandchild_that_called_setsid_is_stopped_with_its_job() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let http = Http::new(&server.url);
    let pid_file = dir.path().join("grandchild.pid");
    let script = format!(
        "setsid sh -c 'echo $$ > {p}.tmp; mv {p}.tmp {p}; exec sleep 300' & sleep 300",
        p = pid_file.display()
    );
    let g = graph(dir.path(), "escaper", &script);
    let out = server.cli(None, &["workflow", "submit", g.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (s, e, _) = http
        .call(M::POST, "/api/v1/workflows/escaper/executions", None, None)
        .await;
    assert_eq!(s, 201, "{e}");
    let id = e["id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    let grandchild: u32 = loop {
        if let Ok(p) = std::fs::read_to_string(&pid_file)
            && let Ok(p) = p.trim().parse()
        {
            break p;
        }
        assert!(Instant::now() < deadline, "the grandchild never started");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(alive(grandchild));
    let (s, b, _) = http
        .call(
            M::POST,
            &format!("/api/v1/executions/{id}/stop"),
            None,
            None,
        )
        .await;
    assert_eq!(s, 202, "{b}");
    let e = finished(&http, "", &id).await;
    assert_eq!(e["state"], "STOPPED", "{e}");
    let deadline = Instant::now() + Duration::from_secs(15);
    while alive(grandchild) {
        if Instant::now() > deadline {
            let _ = Command::new("kill")
                .args(["-9", &grandchild.to_string()])
                .status();
            panic!("the grandchild {grandchild} outlived its job's stop");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server.stop();
}

/// The dags folder does not follow a symbolic link out of itself, and `load_errors` says why
/// without quoting the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dags_folder_keeps_to_itself() {
    let dir = tempfile::tempdir().unwrap();
    let outside = dir.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    // A JSON file elsewhere whose content a submit error would quote, and a file that is not
    // JSON, whose parse error would too.
    std::fs::write(
        outside.join("secret.json"),
        r#"{"name": "leak", "nodes": "TOPSECRET-VALUE"}"#,
    )
    .unwrap();
    let dags = dir.path().join("dags");
    std::fs::create_dir_all(&dags).unwrap();
    std::os::unix::fs::symlink(outside.join("secret.json"), dags.join("link.json")).unwrap();
    std::fs::write(dags.join("broken.json"), "TOPSECRET-TEXT {").unwrap();
    std::fs::write(
        dags.join("good.json"),
        json!({"name": "good", "nodes": [{"name": "a", "job": {"command": ["true"]}}]}).to_string(),
    )
    .unwrap();
    std::os::unix::fs::symlink(dags.join("good.json"), dags.join("alias.json")).unwrap();
    let server = Server::start(dir.path(), &["--dags", dags.to_str().unwrap()]);
    let http = Http::new(&server.url);
    let deadline = Instant::now() + Duration::from_secs(20);
    let list = loop {
        let (_, list, _) = http.call(M::GET, "/api/v1/workflows", None, None).await;
        if list["load_errors"].as_array().is_some_and(|e| e.len() >= 2) {
            break list;
        }
        assert!(Instant::now() < deadline, "{list}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let text = list.to_string();
    assert!(!text.contains("TOPSECRET"), "{text}");
    let names: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["good"], "{list}");
    let errors = list["load_errors"].as_array().unwrap();
    let link = errors
        .iter()
        .find(|e| e["file"].as_str().unwrap().ends_with("link.json"))
        .unwrap();
    assert!(
        link["error"]
            .as_str()
            .unwrap()
            .contains("leads out of the dags folder"),
        "{link}"
    );
    let broken = errors
        .iter()
        .find(|e| e["file"].as_str().unwrap().ends_with("broken.json"))
        .unwrap();
    assert!(
        broken["error"].as_str().unwrap().contains("line 1"),
        "{broken}"
    );
    server.stop();
}

/// Names that could pass for others (bidirectional overrides, zero-width characters) are
/// refused, naming the field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn look_alike_names_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let http = Http::new(&server.url);
    for bad in ["ad\u{202e}nim", "pro\u{200b}d", "x\u{feff}", "a\u{2066}b"] {
        for path in ["/api/v1/projects", "/api/v1/models", "/api/v1/datasets"] {
            let (s, b, _) = http
                .call(M::POST, path, None, Some(json!({"name": bad})))
                .await;
            assert_eq!(s, 422, "{path} {bad:?}: {b}");
            assert_eq!(b["error"]["field"], "name", "{b}");
        }
        let (s, b, _) = http
            .call(M::POST, "/api/v1/events", None, Some(json!({"key": bad})))
            .await;
        assert_eq!(s, 400, "{bad:?}: {b}");
        assert_eq!(b["error"]["field"], "key", "{b}");
    }
    // Other scripts are names like any.
    let (s, b, _) = http
        .call(
            M::POST,
            "/api/v1/projects",
            None,
            Some(json!({"name": "模型-é"})),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let out = Command::new(BIN)
        .args([
            "token",
            "create",
            "--role",
            "viewer",
            "--name",
            "adm\u{202e}in",
            "--data-dir",
        ])
        .arg(dir.path().join("data2"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bidirectional"), "{err}");
    server.stop();
}
