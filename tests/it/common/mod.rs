//! What the end-to-end tests of real `aiflow` processes share: servers and workers started
//! from the built binary (killed when dropped), HTTP helpers, and waiting.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_aiflow");
pub(crate) const NATS: &str = "nats://127.0.0.1:4222";

/// A child process killed when dropped.
pub(crate) struct Proc {
    pub(crate) child: Child,
    pub(crate) name: String,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    pub(crate) fn kill9(&mut self) {
        let _ = self.child.kill(); // SIGKILL
        let _ = self.child.wait();
    }
}

/// A distributed deployment under test: a fresh PostgreSQL database, a cluster name of its own
/// on the shared NATS, and a folder for its processes' data. Its NATS streams and database go
/// when it is dropped, also after a failed assertion.
pub(crate) struct Cluster {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) db_url: String,
    pub(crate) cluster: String,
    _db: aiflow_db::testing::TestDb,
    /// Released after the cluster's own cleanup (fields drop after `Drop::drop`).
    _shared: Shared,
}

/// This machine's PostgreSQL and NATS, shared by every test of this binary: a test that
/// restarts them holds this for writing, every other cluster for reading, so no test sees
/// another's restart (the modules of one test binary run at the same time).
pub(crate) static SHARED_SERVICES: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

enum Shared {
    Using(#[allow(dead_code)] tokio::sync::RwLockReadGuard<'static, ()>),
    Restarting(#[allow(dead_code)] tokio::sync::RwLockWriteGuard<'static, ()>),
}

impl Drop for Cluster {
    /// The cluster's NATS streams go with it, also when a test failed.
    fn drop(&mut self) {
        let cluster = self.cluster.clone();
        let _ = std::thread::spawn(move || {
            if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                rt.block_on(delete_streams(&cluster));
            }
        })
        .join();
    }
}

impl Cluster {
    /// A new cluster named `<prefix><unique>`, or `None` (after a loud notice) when
    /// PostgreSQL or NATS is not running here.
    pub(crate) async fn start(prefix: &str) -> Option<Cluster> {
        if !reachable("PostgreSQL", "127.0.0.1:5432") || !reachable("NATS", "127.0.0.1:4222") {
            return None;
        }
        let shared = Shared::Using(SHARED_SERVICES.read().await);
        Self::with(prefix, shared).await
    }

    /// A cluster whose test restarts PostgreSQL and NATS: it waits until no other test uses
    /// them, and keeps them to itself.
    pub(crate) async fn start_exclusive(prefix: &str) -> Option<Cluster> {
        if !reachable("PostgreSQL", "127.0.0.1:5432") || !reachable("NATS", "127.0.0.1:4222") {
            return None;
        }
        let shared = Shared::Restarting(SHARED_SERVICES.write().await);
        Self::with(prefix, shared).await
    }

    async fn with(prefix: &str, shared: Shared) -> Option<Cluster> {
        let db = aiflow_db::testing::TestDb::postgres().await?;
        Some(Cluster {
            dir: tempfile::tempdir().unwrap(),
            db_url: db.url.clone(),
            cluster: format!("{prefix}{}", &uuid_hex()[..10]),
            _db: db,
            _shared: shared,
        })
    }

    /// Starts a server replica and waits for its banner; returns it and its base URL.
    pub(crate) fn server(&self, node: &str) -> (Proc, String) {
        self.server_with(node, &[])
    }

    /// Starts the first server replica and waits until it leads.
    pub(crate) async fn leading_server(&self, node: &str) -> (Proc, String) {
        let (server, base) = self.server(node);
        let http = aiflow_sdk::tls::http_client_from_env().expect("HTTP client");
        wait_for(
            &format!("{node} to lead"),
            std::time::Duration::from_secs(15),
            || async { role(&http, &base).await == "leader" },
        )
        .await;
        (server, base)
    }

    /// [`Cluster::server`] with more arguments of `aiflow server`.
    pub(crate) fn server_with(&self, node: &str, extra: &[&str]) -> (Proc, String) {
        let mut child = Command::new(BIN)
            .args(["server", "--listen", "127.0.0.1:0", "--dags", "none"])
            .args(extra)
            .arg("--data-dir")
            .arg(self.dir.path().join(node))
            .args(["--database", &self.db_url, "--nats", NATS])
            .args(["--cluster", &self.cluster])
            .args([
                "--nats-stream",
                &format!("{}_EVENTS", self.cluster.to_uppercase()),
            ])
            .env("AIFLOW_NODE", node)
            .env(
                "RUST_LOG",
                std::env::var("AIFLOW_TEST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .current_dir(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start aiflow server");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let name = node.to_string();
        std::thread::spawn(move || {
            let mut keep = std::env::var("AIFLOW_TEST_LOG_DIR").ok().map(|d| {
                std::fs::File::create(Path::new(&d).join(format!("{name}.log"))).expect("log file")
            });
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(f) = keep.as_mut() {
                    use std::io::Write as _;
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
    pub(crate) fn worker(&self, name: &str, server: &str) -> Proc {
        self.worker_on(name, &["default"], server, &[])
    }

    /// Starts a worker on `queues` with extra flags (`--gpus 1`, …), in the repository (where
    /// the examples' commands are), with a data folder of its own.
    pub(crate) fn worker_on(
        &self,
        name: &str,
        queues: &[&str],
        server: &str,
        extra: &[&str],
    ) -> Proc {
        let child = Command::new(BIN)
            .args(["--server", server, "worker", "--nats", NATS])
            .args(["--cluster", &self.cluster, "--name", name, "--slots", "4"])
            .args(["--queue", &queues.join(",")])
            .args(extra)
            .arg("--data-dir")
            .arg(self.dir.path().join(name))
            .env(
                "RUST_LOG",
                std::env::var("AIFLOW_TEST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .stdout(Stdio::null())
            .stderr(log_file(name))
            .spawn()
            .expect("start aiflow worker");
        Proc {
            child,
            name: name.to_string(),
        }
    }
}

/// Starts an embedded server (SQLite in `data_dir`) with extra flags; returns it and its URL.
pub(crate) fn embedded(data_dir: &Path, extra: &[&str]) -> (Proc, String) {
    let mut child = Command::new(BIN)
        .args([
            "server",
            "--listen",
            "127.0.0.1:0",
            "--dags",
            "none",
            "--data-dir",
        ])
        .arg(data_dir)
        .args(extra)
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
    (
        Proc {
            child,
            name: "server".into(),
        },
        url,
    )
}

/// Where a process's output goes: a file in `AIFLOW_TEST_LOG_DIR` when set, else nowhere.
pub(crate) fn log_file(name: &str) -> Stdio {
    std::env::var("AIFLOW_TEST_LOG_DIR")
        .ok()
        .and_then(|d| std::fs::File::create(Path::new(&d).join(format!("{name}.log"))).ok())
        .map_or_else(Stdio::null, Stdio::from)
}

/// The plain-text log of a job (`logs_query` like `?attempt=2`, or empty).
pub(crate) async fn job_log(
    http: &reqwest::Client,
    base: &str,
    execution: &str,
    job: &str,
    logs_query: &str,
) -> String {
    http.get(format!(
        "{base}/api/v1/executions/{execution}/jobs/{job}/logs{logs_query}"
    ))
    .send()
    .await
    .unwrap()
    .text()
    .await
    .unwrap_or_default()
}

/// How many registered workers are alive.
pub(crate) async fn alive_workers(http: &reqwest::Client, base: &str) -> usize {
    get(http, &format!("{base}/api/v1/workers")).await["items"]
        .as_array()
        .map_or(0, |i| i.iter().filter(|w| w["alive"] == true).count())
}

/// Waits until process `pid` is gone (or a zombie); fails after `timeout`.
pub(crate) async fn wait_gone(pid: u32, timeout: Duration, what: &str) {
    let deadline = Instant::now() + timeout;
    while Path::new(&format!("/proc/{pid}")).exists()
        && std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "))
    {
        assert!(
            Instant::now() < deadline,
            "{what} (pid {pid}) is still running"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub(crate) async fn get(http: &reqwest::Client, url: &str) -> Value {
    let r = http.get(url).send().await.expect("GET");
    assert!(r.status().is_success(), "GET {url}: {}", r.status());
    r.json().await.expect("json")
}

pub(crate) async fn post(http: &reqwest::Client, url: &str, body: &Value) -> Value {
    let r = http.post(url).json(body).send().await.expect("POST");
    let status = r.status();
    let v: Value = r.json().await.unwrap_or(Value::Null);
    assert!(status.is_success(), "POST {url}: {status} {v}");
    v
}

pub(crate) async fn role(http: &reqwest::Client, base: &str) -> String {
    match http.get(format!("{base}/readyz")).send().await {
        Ok(r) => r.json::<Value>().await.map_or(String::new(), |v| {
            v["scheduler"]["role"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        }),
        Err(_) => String::new(),
    }
}

pub(crate) async fn wait_for<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out after {timeout:?} waiting for {what}");
}

pub(crate) async fn executions(http: &reqwest::Client, base: &str, workflow: &str) -> Vec<Value> {
    get(
        http,
        &format!("{base}/api/v1/executions?workflow={workflow}&limit=500"),
    )
    .await["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

pub(crate) async fn jobs(http: &reqwest::Client, base: &str, execution: &str) -> Vec<Value> {
    let v = get(http, &format!("{base}/api/v1/executions/{execution}/jobs")).await;
    v.as_array()
        .cloned()
        .or_else(|| v["items"].as_array().cloned())
        .unwrap_or_default()
}

/// A line for the CI log even when the test passes (the harness captures `eprintln!`).
pub(crate) fn report(line: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "{line}");
}

pub(crate) fn reachable(what: &str, hostport: &str) -> bool {
    let ok = std::net::TcpStream::connect_timeout(
        &hostport.parse().expect("address"),
        Duration::from_secs(2),
    )
    .is_ok();
    if !ok {
        eprintln!(
            "\n!!!!!!!! SKIPPED: {what} is not reachable at {hostport}; the distributed-shape test needs the real server !!!!!!!!\n"
        );
    }
    ok
}

/// What NATS holds of a cluster (for failure messages).
pub(crate) async fn nats_state(cluster: &str) -> String {
    let mut out = String::new();
    if let Ok(client) = async_nats::connect(NATS).await {
        let js = async_nats::jetstream::new(client);
        let upper = cluster.to_uppercase();
        for what in ["EVENTS", "TASKS", "REPORTS", "CLAIMS", "WORKERS"] {
            match js.get_stream(format!("{upper}_{what}")).await {
                Ok(mut s) => match s.info().await {
                    Ok(i) => out.push_str(&format!(
                        "{what}: {} messages, {} consumers; ",
                        i.state.messages, i.state.consumer_count
                    )),
                    Err(e) => out.push_str(&format!("{what}: info failed {e}; ")),
                },
                Err(e) => out.push_str(&format!("{what}: {e}; ")),
            }
        }
    }
    out
}

pub(crate) async fn delete_streams(cluster: &str) {
    if let Ok(client) = async_nats::connect(NATS).await {
        let js = async_nats::jetstream::new(client);
        let upper = cluster.to_uppercase();
        for what in ["EVENTS", "TASKS", "REPORTS", "LOGS", "CLAIMS", "WORKERS"] {
            let _ = js.delete_stream(format!("{upper}_{what}")).await;
        }
    }
}

/// A name no other test (of this run or another) uses: the low bits of the clock, the process
/// and a counter, so names taken in the same instant by two tests differ.
pub(crate) fn uuid_hex() -> String {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!(
        "{:x}{:04x}{:06x}",
        n & 0xf,
        std::process::id() & 0xffff,
        (nanos >> 10) & 0xff_ffff
    )
}
