//! CPU and memory limits of jobs run as processes (not containers) on a real `aiflow server`
//! (embedded shape, each job under its supervisor): enforced through a cgroup v2 of the attempt
//! where the host allows it; elsewhere the job runs anyway, and its log and the server's say
//! why, once. The CI machine has cgroup v1, so this checks the second path there (the cgroup
//! logic itself is unit-tested against a folder laid out like a cgroup v2 tree:
//! `exec::cgroup` in the scheduler crate).

use crate::common;

use std::io::BufRead as _;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{post, wait_for};
use serde_json::{Value, json};

/// An embedded server whose log lines are kept.
fn server(data_dir: &std::path::Path) -> (common::Proc, String, Arc<Mutex<Vec<String>>>) {
    let mut child = Command::new(common::BIN)
        .args(["server", "--listen", "127.0.0.1:0", "--dags", "none"])
        .arg("--data-dir")
        .arg(data_dir)
        .env("RUST_LOG", "warn")
        .env_remove("AIFLOW_DATABASE")
        .env_remove("AIFLOW_NATS")
        .env_remove("AIFLOW_CGROUP_PARENT")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start aiflow server");
    let stderr = child.stderr.take().unwrap();
    let lines = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    let kept = lines.clone();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if let Some(rest) = line.trim().strip_prefix("API") {
                let _ = tx.send(rest.trim().trim_end_matches("/api/v1").to_string());
            }
            kept.lock().unwrap().push(line);
        }
    });
    let url = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("server printed its banner");
    (
        common::Proc {
            child,
            name: "server".into(),
        },
        url,
        lines,
    )
}

async fn state(http: &reqwest::Client, base: &str, id: &str, name: &str) -> Value {
    common::jobs(http, base, id)
        .await
        .into_iter()
        .find(|j| j["job"] == name)
        .map_or(Value::Null, |j| j["state"].clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_with_limits_runs_and_says_whether_they_are_enforced() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, base, server_log) = server(&dir.path().join("data"));
    let http = aiflow_sdk::tls::http_client_from_env().expect("HTTP client");
    let stored = post(
        &http,
        &format!("{base}/api/v1/workflows"),
        &json!({
            "name": "limited",
            "nodes": [
                {"name": "limited", "job": {"command": ["sh", "-c", "echo limited ran; cat /proc/self/cgroup"],
                    "resources": {"cpus": 0.5, "memory_mb": 128}}},
                {"name": "plain", "job": {"command": ["sh", "-c", "echo plain ran"]}}
            ]
        }),
    )
    .await;
    assert_eq!(stored["workflow"], "limited", "{stored}");
    let started = post(
        &http,
        &format!("{base}/api/v1/workflows/limited/executions"),
        &json!({}),
    )
    .await;
    let id = started["id"].as_str().expect("execution id").to_string();
    wait_for("both jobs to succeed", Duration::from_secs(60), || async {
        state(&http, &base, &id, "limited").await == "SUCCEEDED"
            && state(&http, &base, &id, "plain").await == "SUCCEEDED"
    })
    .await;
    let log = common::job_log(&http, &base, &id, "limited", "").await;
    assert!(log.contains("\nlimited ran\n"), "{log}");
    let refused = limits_said_once(&log);
    let v2 = std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    let plain = common::job_log(&http, &base, &id, "plain", "").await;
    assert!(plain.contains("plain ran"), "{plain}");
    assert!(
        !plain.contains("limits"),
        "no limits asked, nothing said: {plain}"
    );
    if refused == 1 {
        // The server's log says it once too (the supervisor tells the server).
        wait_for(
            "the server to log the refusal",
            Duration::from_secs(10),
            || {
                let n = server_log
                    .lock()
                    .unwrap()
                    .iter()
                    .filter(|l| l.contains("limits not enforced"))
                    .count();
                async move { n >= 1 }
            },
        )
        .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let lines: Vec<String> = server_log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains("limits not enforced"))
            .cloned()
            .collect();
        assert_eq!(lines.len(), 1, "{lines:?}");
        if !v2 {
            assert!(lines[0].contains("not a cgroup v2 mount"), "{lines:?}");
        }
    } else {
        common::report(&format!("limits enforced on this host: {log}"));
    }
}

/// A job run as a process by `aiflow worker` gets its limits on the worker's host the same way
/// (real PostgreSQL and NATS): enforced, or said once in its log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workers_process_with_limits_runs_and_says_whether_they_are_enforced() {
    let Some(c) = common::Cluster::start("limits").await else {
        return;
    };
    let (_s1, u) = c.leading_server("s1").await;
    let http = aiflow_sdk::tls::http_client_from_env().expect("HTTP client");
    let _w = c.worker_on("plainw", &["default"], &u, &[]);
    post(
        &http,
        &format!("{u}/api/v1/workflows"),
        &json!({"name": "wlimited", "nodes": [
            {"name": "limited", "job": {"command": ["sh", "-c", "echo limited ran"],
                "resources": {"cpus": 0.5, "memory_mb": 128}}}
        ]}),
    )
    .await;
    let started = post(
        &http,
        &format!("{u}/api/v1/workflows/wlimited/executions"),
        &json!({}),
    )
    .await;
    let id = started["id"].as_str().expect("execution id").to_string();
    wait_for("the job to succeed", Duration::from_secs(60), || async {
        state(&http, &u, &id, "limited").await == "SUCCEEDED"
    })
    .await;
    let log = common::job_log(&http, &u, &id, "limited", "").await;
    assert!(log.contains("limited ran\n"), "{log}");
    limits_said_once(&log);
}

/// Asserts that a limited job's log says once whether its limits are enforced (on cgroup v1 or
/// hybrid hosts, such as the CI machine, never, naming why); `1` when they were not.
fn limits_said_once(log: &str) -> usize {
    let refused = log.matches("[aiflow] limits not enforced: ").count();
    let enforced = log
        .matches("[aiflow] limits enforced by the cgroup ")
        .count();
    assert_eq!(
        refused + enforced,
        1,
        "said once, one way or the other: {log}"
    );
    if !std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        assert!(
            log.contains("[aiflow] limits not enforced: /sys/fs/cgroup is not a cgroup v2 mount"),
            "{log}"
        );
    }
    refused
}
