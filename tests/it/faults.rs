//! Faults, with processes of the real binary: a job that floods its output, a job that forks
//! children and exits, a full disk under the SQLite data folder, and PostgreSQL and NATS
//! restarted under load. The server keeps serving, says what is wrong on `/readyz`, loses no
//! committed event or state, and recovers when the fault ends. Each test prints a summary.
//!
//! The service restarts act on this machine's real PostgreSQL and NATS (the ones CI uses), so
//! they run in one test, one after the other.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common;
use common::*;

async fn ready(http: &reqwest::Client, base: &str) -> (u16, Value) {
    match http
        .get(format!("{base}/readyz"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
    {
        Ok(r) => {
            let code = r.status().as_u16();
            (code, r.json().await.unwrap_or(Value::Null))
        }
        Err(_) => (0, Value::Null),
    }
}

async fn wait_succeeded(http: &reqwest::Client, base: &str, id: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let e = get(http, &format!("{base}/api/v1/executions/{id}")).await;
        if e["state"] == "SUCCEEDED" {
            return;
        }
        assert!(
            e["state"] == "RUNNING" && Instant::now() < deadline,
            "execution {id}: {e}\njobs: {:?}",
            jobs(http, base, id).await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_job_and_a_forking_job_leave_the_server_serving() {
    let dir = tempfile::tempdir().unwrap();
    let limit = 1_000_000u64;
    let (_server, base) = embedded(
        &dir.path().join("data"),
        &["--job-log-max-bytes", &limit.to_string()],
    );
    let http = aiflow_sdk::tls::http_client_from_env().expect("HTTP client");
    let graph = json!({
        "name": "faulty",
        "nodes": [
            {"name": "flood", "op": "transform",
             "job": {"command": ["sh", "-c", "yes 0123456789abcdef0123456789abcdef | head -c 40000000; echo flood-end"]}},
            {"name": "fork", "op": "transform",
             "job": {"command": ["sh", "-c", "sleep 300 & echo child $!"]}}
        ]
    });
    post(&http, &format!("{base}/api/v1/workflows"), &graph).await;
    let e = post(
        &http,
        &format!("{base}/api/v1/workflows/faulty/executions"),
        &json!({}),
    )
    .await;
    let id = e["id"].as_str().unwrap().to_string();
    // The API answers while 40 MB go through the log.
    let mut slowest = Duration::ZERO;
    for _ in 0..20 {
        let t = Instant::now();
        let r = http.get(format!("{base}/healthz")).send().await.unwrap();
        assert!(r.status().is_success());
        slowest = slowest.max(t.elapsed());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    wait_succeeded(&http, &base, &id, Duration::from_secs(60)).await;
    let log = job_log(&http, &base, &id, "flood", "").await;
    assert!(
        (log.len() as u64) <= limit + 4096,
        "the log is kept under its limit: {} bytes",
        log.len()
    );
    assert!(
        log.contains("over its limit"),
        "a marker says output was dropped"
    );
    assert!(
        log.trim_end().ends_with("flood-end"),
        "the newest output is kept"
    );
    // The child the forking job left behind was killed with its process group.
    let fork_log = job_log(&http, &base, &id, "fork", "").await;
    let pid: u32 = fork_log
        .lines()
        .find_map(|l| l.strip_prefix("child "))
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("the fork job printed its child: {fork_log}"));
    wait_gone(
        pid,
        Duration::from_secs(5),
        "the forked child, which outlived its job",
    )
    .await;
    report(&format!(
        "faults: a job wrote 40 MB (log kept at {} bytes with a marker), a job forked a child and exited (child killed); slowest /healthz meanwhile {} ms",
        log.len(),
        slowest.as_millis()
    ));
}

/// A 24 MiB tmpfs as the data folder (needs root to mount; skipped loudly otherwise).
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(dir: &Path) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=24m", "tmpfs"])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!(
                "\n!!!!!!!! SKIPPED: cannot mount a small tmpfs (needs root); the disk-full test did not run !!!!!!!!\n"
            );
            return None;
        }
        Some(Tmpfs(dir.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_new_events_loses_nothing_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let Some(_tmpfs) = Tmpfs::mount(&data) else {
        return;
    };
    let (_server, base) = embedded(&data, &[]);
    let http = aiflow_sdk::tls::http_client_from_env().expect("HTTP client");
    let graph = json!({
        "name": "landed",
        "nodes": [{"name": "load", "op": "read_dataset", "job": {"command": ["true"]}}],
        "triggers": [{"event": {"key": "disk/*"}}]
    });
    post(&http, &format!("{base}/api/v1/workflows"), &graph).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut accepted = Vec::new();
    let send = |i: usize| {
        let http = http.clone();
        let url = format!("{base}/api/v1/events");
        async move {
            http.post(url)
                .json(&json!({"key": format!("disk/{i}"), "value": "x".repeat(2000)}))
                .send()
                .await
                .unwrap()
        }
    };
    for i in 0..5 {
        let r = send(i).await;
        assert!(r.status().is_success());
        accepted.push(r.json::<Value>().await.unwrap()["offset"].as_i64().unwrap());
    }
    // Fill the disk.
    let filler = data.join("filler");
    let _ = Command::new("dd")
        .args(["if=/dev/zero", "bs=1M", "count=64"])
        .arg(format!("of={}", filler.display()))
        .stderr(std::process::Stdio::null())
        .status();
    let mut refused = 0;
    let mut refused_status = 0;
    for i in 5..60 {
        let r = send(i).await;
        if r.status().is_success() {
            accepted.push(r.json::<Value>().await.unwrap()["offset"].as_i64().unwrap());
        } else {
            refused += 1;
            refused_status = r.status().as_u16();
            let body: Value = r.json().await.unwrap_or(Value::Null);
            assert_eq!(
                body["error"]["code"], "storage_full",
                "a refused event gets a JSON error naming the reason: {body}"
            );
        }
    }
    assert!(refused > 0, "a full disk refuses new events");
    assert_eq!(
        refused_status, 507,
        "a full disk answers 507 Insufficient Storage"
    );
    // The meta routes say the same.
    let mut meta_refused = None;
    for i in 0..60 {
        let r = http
            .post(format!("{base}/api/v1/projects"))
            .json(&json!({"name": format!("full-{i}"), "description": "x".repeat(1000)}))
            .send()
            .await
            .unwrap();
        if !r.status().is_success() {
            let status = r.status().as_u16();
            meta_refused = Some((status, r.json::<Value>().await.unwrap_or(Value::Null)));
            break;
        }
    }
    let (meta_status, body) = meta_refused.expect("a full disk refuses new projects");
    assert_eq!(
        (meta_status, &body["error"]["code"]),
        (507, &json!("storage_full")),
        "a meta write on a full disk answers 507 storage_full: {body}"
    );
    let (code, body) = ready(&http, &base).await;
    assert_eq!(code, 503, "/readyz says not ready on a full disk: {body}");
    assert!(
        http.get(format!("{base}/healthz"))
            .send()
            .await
            .unwrap()
            .status()
            .is_success(),
        "the server keeps serving"
    );
    // Reads still answer.
    let listed = get(&http, &format!("{base}/api/v1/events?key=disk/*&limit=500")).await;
    assert!(listed["items"].as_array().unwrap().len() >= 5);
    // The fault ends.
    std::fs::remove_file(&filler).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while ready(&http, &base).await.0 != 200 {
        assert!(
            Instant::now() < deadline,
            "ready again after the disk has room"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for i in 60..65 {
        let r = send(i).await;
        assert!(r.status().is_success(), "events are accepted again");
        accepted.push(r.json::<Value>().await.unwrap()["offset"].as_i64().unwrap());
    }
    // Every accepted event started exactly one execution.
    let deadline = Instant::now() + Duration::from_secs(30);
    let offsets = loop {
        let e = executions(&http, &base, "landed").await;
        let mut offsets: Vec<i64> = e
            .iter()
            .filter_map(|x| x["trigger"]["offset"].as_i64())
            .collect();
        offsets.sort_unstable();
        if offsets.len() >= accepted.len() && e.iter().all(|x| x["state"] == "SUCCEEDED") {
            break offsets;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} accepted events started their execution",
            offsets.len(),
            accepted.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    accepted.sort_unstable();
    assert_eq!(offsets, accepted, "each accepted event handled once");
    report(&format!(
        "faults: disk full: {refused} events refused with {refused_status}, a new project with {meta_status}, {} accepted and handled once, /readyz 503 during, ready again after",
        accepted.len()
    ));
}

fn postgres_restart() {
    let version = std::fs::read_dir("/etc/postgresql")
        .ok()
        .and_then(|mut d| d.next())
        .and_then(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .unwrap_or_else(|| "15".into());
    let ok = Command::new("pg_ctlcluster")
        .args(["--skip-systemctl-redirect", &version, "main", "restart"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "pg_ctlcluster restart");
}

fn nats_stop() {
    let _ = Command::new("start-stop-daemon")
        .args(["--stop", "--retry", "10", "--exec", "/usr/sbin/nats-server"])
        .status();
}

fn nats_start() {
    let ok = Command::new("start-stop-daemon")
        .args([
            "--start",
            "--oknodo",
            "--background",
            "--exec",
            "/usr/sbin/nats-server",
            "--",
            "-a",
            "127.0.0.1",
            "-p",
            "4222",
            "-js",
            "-sd",
            "/var/lib/nats-server",
            "-l",
            "/var/log/nats-server.log",
        ])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "start nats-server");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect("127.0.0.1:4222").is_err() {
        assert!(Instant::now() < deadline, "nats-server is back");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Publishes `key` with an idempotency key until the bus takes it; returns its offset.
async fn publish_until_stored(http: &reqwest::Client, bases: &[String], i: usize) -> i64 {
    let body = json!({"key": format!("load/{i}"), "value": i.to_string(),
                      "idempotency_key": format!("load-{i}")});
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        for base in bases {
            if let Ok(r) = http
                .post(format!("{base}/api/v1/events"))
                .json(&body)
                .timeout(Duration::from_secs(5))
                .send()
                .await
                && r.status().is_success()
                && let Ok(v) = r.json::<Value>().await
                && let Some(o) = v["offset"].as_i64()
            {
                return o;
            }
        }
        assert!(Instant::now() < deadline, "event {i} was never stored");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_and_nats_restarted_under_load() {
    if std::env::var("AIFLOW_TEST_NO_RESTARTS").is_ok() {
        eprintln!(
            "\n!!!!!!!! SKIPPED: AIFLOW_TEST_NO_RESTARTS is set; PostgreSQL and NATS were not restarted !!!!!!!!\n"
        );
        return;
    }
    // No other test may use PostgreSQL or NATS while they restart.
    let Some(c) = Cluster::start_exclusive("f").await else {
        return;
    };
    // Whatever happens, the services are left running.
    struct Restore;
    impl Drop for Restore {
        fn drop(&mut self) {
            if std::net::TcpStream::connect("127.0.0.1:4222").is_err() {
                nats_start();
            }
        }
    }
    let _restore = Restore;
    restarts(&c).await;
}

async fn restarts(c: &Cluster) {
    let http = aiflow_sdk::tls::http_client_from_env().expect("HTTP client");
    let (_s1, base) = c.server("s1");
    wait_for("s1 to lead", Duration::from_secs(15), || async {
        ready(&http, &base).await.1["scheduler"]["role"] == "leader"
    })
    .await;
    let _w1 = c.worker("w1", &base);
    let graph = json!({
        "name": "loaded",
        "nodes": [{"name": "work", "op": "transform",
                   "job": {"command": ["sh", "-c", "sleep 0.2; echo $AIFLOW_EXECUTION"], "retries": 2, "retry_backoff_s": 1}}],
        "triggers": [{"event": {"key": "load/*"}}]
    });
    post(&http, &format!("{base}/api/v1/workflows"), &graph).await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Events flow the whole time, from a task of their own.
    const N: usize = 60;
    let publisher = {
        let (http, bases) = (http.clone(), vec![base.clone()]);
        tokio::spawn(async move {
            let mut offsets = Vec::new();
            for i in 0..N {
                offsets.push(publish_until_stored(&http, &bases, i).await);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            offsets
        })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;

    // PostgreSQL restarts.
    let t = Instant::now();
    postgres_restart();
    let pg_down = t.elapsed();
    wait_for(
        "the leader to lead again after PostgreSQL restarted",
        Duration::from_secs(30),
        || async {
            let (code, v) = ready(&http, &base).await;
            code == 200 && v["scheduler"]["role"] == "leader"
        },
    )
    .await;
    let pg_recovered = t.elapsed();

    // NATS restarts.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let t = Instant::now();
    nats_stop();
    let mut saw_unready = Value::Null;
    let down = Instant::now();
    while down.elapsed() < Duration::from_secs(3) {
        let (code, v) = ready(&http, &base).await;
        if code == 503 && v["events"]["status"] == "unreachable" {
            saw_unready = v;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let saw_unready = !saw_unready.is_null();
    nats_start();
    assert!(
        saw_unready,
        "/readyz says the event bus is unreachable while NATS is down"
    );
    wait_for(
        "ready again after NATS restarted",
        Duration::from_secs(30),
        || async { ready(&http, &base).await.0 == 200 },
    )
    .await;
    let nats_recovered = t.elapsed();

    let mut sent = publisher.await.unwrap();
    sent.sort_unstable();
    let deadline = Instant::now() + Duration::from_secs(120);
    let (offsets, attempts) = loop {
        let e = executions(&http, &base, "loaded").await;
        let mut offsets: Vec<i64> = e
            .iter()
            .filter_map(|x| x["trigger"]["offset"].as_i64())
            .collect();
        offsets.sort_unstable();
        if offsets.len() >= N && e.iter().all(|x| x["state"] == "SUCCEEDED") {
            let mut attempts = 0;
            for x in &e {
                attempts += jobs(&http, &base, x["id"].as_str().unwrap()).await.len();
            }
            break (offsets, attempts);
        }
        if Instant::now() > deadline {
            for x in e.iter().filter(|x| x["state"] != "SUCCEEDED") {
                eprintln!(
                    "unfinished: {x}\n  jobs: {:?}",
                    jobs(&http, &base, x["id"].as_str().unwrap()).await
                );
            }
            let missing: Vec<&i64> = sent.iter().filter(|o| !offsets.contains(o)).collect();
            panic!(
                "{} executions of {N}; events without one: {missing:?}",
                offsets.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert_eq!(
        offsets, sent,
        "every stored event started exactly one execution"
    );
    report(&format!(
        "faults: PostgreSQL restarted ({} ms) and NATS restarted under load: {N} events stored, {N} executions SUCCEEDED ({attempts} job attempts), 0 events lost; ready again {} ms after the PostgreSQL restart began and {} ms after NATS stopped",
        pg_down.as_millis(),
        pg_recovered.as_millis(),
        nats_recovered.as_millis()
    ));
}
