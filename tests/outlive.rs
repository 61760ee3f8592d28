//! Jobs that outlive the server (SIGTERM, kill -9), `max_duration_s`, and events routed to the
//! execution they name, on real `aiflow server` processes (embedded shape).

mod common;

use std::path::Path;
use std::time::Duration;

use common::{embedded, get, post, wait_for};
use serde_json::{Value, json};

async fn execution(http: &reqwest::Client, base: &str, id: &str) -> Value {
    get(http, &format!("{base}/api/v1/executions/{id}")).await
}

async fn job(http: &reqwest::Client, base: &str, id: &str, name: &str) -> Value {
    common::jobs(http, base, id)
        .await
        .into_iter()
        .filter(|j| j["job"] == name)
        .max_by_key(|j| j["attempt"].as_i64())
        .unwrap_or(Value::Null)
}

async fn wait_state(http: &reqwest::Client, base: &str, id: &str, state: &str, timeout: Duration) {
    let what = format!("execution {id} to be {state}");
    wait_for(&what, timeout, || async {
        execution(http, base, id).await["state"] == state
    })
    .await;
}

/// Starts an execution of `workflow` and waits until its `job` runs; returns the execution id.
async fn start_until_running(
    http: &reqwest::Client,
    base: &str,
    workflow: &str,
    job_name: &str,
) -> String {
    let started = post(
        http,
        &format!("{base}/api/v1/workflows/{workflow}/executions"),
        &json!({}),
    )
    .await;
    let id = started["id"].as_str().unwrap().to_string();
    wait_for(
        &format!("job {job_name} to run"),
        Duration::from_secs(20),
        || async { job(http, base, &id, job_name).await["state"] == "RUNNING" },
    )
    .await;
    id
}

fn count_lines(path: &Path) -> usize {
    std::fs::read_to_string(path).map_or(0, |s| s.lines().count())
}

/// The pid of a supervised job's process, from its attempt folder.
fn job_pid(data: &Path) -> Option<u32> {
    let root = data.join("attempts");
    for exec in std::fs::read_dir(root).ok()?.flatten() {
        for attempt in std::fs::read_dir(exec.path()).ok()?.flatten() {
            if let Some(pid) = std::fs::read_to_string(attempt.path().join("pid"))
                .ok()
                .and_then(|p| p.trim().parse().ok())
            {
                return Some(pid);
            }
        }
    }
    None
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "))
}

/// Sends `sig` (`TERM`, `KILL`) to the server and waits for it to exit.
fn signal(server: &mut common::Proc, sig: &str) {
    let ok = std::process::Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(server.child.id().to_string())
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill -{sig}");
    let _ = server.child.wait();
}

/// A job running when the server stops (by `sig`) keeps running; the next server re-adopts it,
/// records its real outcome once, and runs the job after it.
async fn survives(sig: &str, exit_code: i32, wait_before_restart: Duration) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let runs = dir.path().join("runs");
    let after = dir.path().join("after");
    let (mut server, base) = embedded(&data, &[]);
    let http = aiflow_sdk::tls::http_client_from_env().expect("HTTP client");
    let then = if exit_code == 0 {
        "SUCCEEDED"
    } else {
        "FAILED"
    };
    post(
        &http,
        &format!("{base}/api/v1/workflows"),
        &json!({
            "name": "outlive",
            "nodes": [
                {"name": "slow", "job": {"command": ["sh", "-c", format!(
                    "echo run >> {}; sleep 3; echo finished; exit {exit_code}", runs.display())]}},
                {"name": "after", "job": {"command": ["sh", "-c", format!("echo ran >> {}", after.display())]}}
            ],
            "control_edges": [{"to": "after", "action": "START",
                "condition": {"job_status": {"node": "slow", "status": then}}}]
        }),
    )
    .await;
    let id = start_until_running(&http, &base, "outlive", "slow").await;
    let pid = job_pid(&data).expect("the job's pid in its attempt folder");
    signal(&mut server, sig);
    assert!(
        alive(pid),
        "the job (pid {pid}) outlived the server (SIG{sig})"
    );
    tokio::time::sleep(wait_before_restart).await;
    let (_server, base) = embedded(&data, &[]);
    let end = if exit_code == 0 {
        "SUCCEEDED"
    } else {
        "FAILED"
    };
    wait_state(&http, &base, &id, end, Duration::from_secs(30)).await;
    let slow = job(&http, &base, &id, "slow").await;
    assert_eq!(slow["attempt"], 1, "one attempt: {slow}");
    assert_eq!(slow["state"], end, "{slow}");
    assert_eq!(count_lines(&runs), 1, "the job ran exactly once");
    assert_eq!(job(&http, &base, &id, "after").await["state"], "SUCCEEDED");
    assert_eq!(count_lines(&after), 1, "the job after it ran once");
    let log = common::job_log(&http, &base, &id, "slow", "").await;
    assert!(
        log.contains("finished"),
        "the log kept the job's output: {log}"
    );
    if exit_code != 0 {
        assert!(
            log.contains(&format!("exited with code {exit_code}")),
            "the real exit code is recorded: {log}"
        );
        let events = get(
            &http,
            &format!("{base}/api/v1/events?key=outlive/slow&event_type=JOB_STATUS&limit=100"),
        )
        .await;
        let failed = events["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["value"] == "FAILED")
            .cloned()
            .unwrap_or(Value::Null);
        assert!(
            failed["context"]["message"]
                .as_str()
                .is_some_and(|m| m.contains(&format!("code {exit_code}"))),
            "JOB_STATUS FAILED names the exit code: {failed}"
        );
    }
    common::wait_gone(pid, Duration::from_secs(5), "the job").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_outlives_a_sigterm_of_the_server_and_is_adopted() {
    survives("TERM", 0, Duration::ZERO).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_outlives_kill_9_ends_while_no_server_runs_and_its_exit_code_is_kept() {
    // The job ends (exit 3) while no server runs; the next one finds its recorded outcome.
    survives("KILL", 3, Duration::from_secs(4)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_jobs_on_exit_keeps_the_old_behaviour() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (mut server, base) = embedded(&data, &["--stop-jobs-on-exit"]);
    let http = aiflow_sdk::tls::http_client_from_env().expect("HTTP client");
    post(
        &http,
        &format!("{base}/api/v1/workflows"),
        &json!({"name": "ends", "nodes": [{"name": "forever", "job": {"command": ["sleep", "1000"]}}]}),
    )
    .await;
    let id = start_until_running(&http, &base, "ends", "forever").await;
    assert!(job_pid(&data).is_none(), "no supervisor folder");
    signal(&mut server, "TERM");
    let (_server, base) = embedded(&data, &["--stop-jobs-on-exit"]);
    // The attempt was lost with the server: failed (and not retried: no retries).
    wait_state(&http, &base, &id, "FAILED", Duration::from_secs(30)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_duration_ends_a_run_forever_execution_failed_and_its_process_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (_server, base) = embedded(&data, &[]);
    let http = aiflow_sdk::tls::http_client_from_env().expect("HTTP client");
    post(
        &http,
        &format!("{base}/api/v1/workflows"),
        &json!({"name": "bounded", "max_duration_s": 2,
                "nodes": [{"name": "forever", "job": {"command": ["sleep", "1000"]}}]}),
    )
    .await;
    let t0 = std::time::Instant::now();
    let id = start_until_running(&http, &base, "bounded", "forever").await;
    let pid = job_pid(&data).expect("the job's pid");
    wait_state(&http, &base, &id, "FAILED", Duration::from_secs(20)).await;
    let took = t0.elapsed();
    assert!(
        took < Duration::from_secs(15),
        "ended within a few seconds of its limit: {took:?}"
    );
    let e = execution(&http, &base, &id).await;
    let reason = e["properties"]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("max_duration_s"), "reason: {e}");
    assert_eq!(job(&http, &base, &id, "forever").await["state"], "STOPPED");
    common::wait_gone(pid, Duration::from_secs(5), "the job's process").await;
    let why = get(
        &http,
        &format!("{base}/api/v1/executions/{id}/jobs/forever/why"),
    )
    .await;
    assert!(
        why.to_string().contains("max_duration_s"),
        "why names the limit: {why}"
    );
    let out = std::process::Command::new(common::BIN)
        .args([
            "--server",
            &base,
            "execution",
            "show",
            &id,
            "--output",
            "table",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("reason: max_duration_s"),
        "execution show prints the reason: {text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_naming_an_execution_reaches_that_one_only() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, base) = embedded(&dir.path().join("data"), &[]);
    let http = aiflow_sdk::tls::http_client_from_env().expect("HTTP client");
    post(
        &http,
        &format!("{base}/api/v1/workflows"),
        &json!({"name": "routed",
                "nodes": [{"name": "step", "job": {"command": ["true"]}}],
                "control_edges": [{"to": "step", "action": "START",
                    "condition": {"event": {"key": "routed/go"}}}]}),
    )
    .await;
    let mut ids = Vec::new();
    for _ in 0..2 {
        let e = post(
            &http,
            &format!("{base}/api/v1/workflows/routed/executions"),
            &json!({}),
        )
        .await;
        ids.push(e["id"].as_str().unwrap().to_string());
    }
    // An execution that is not running (made up): nothing starts anywhere.
    post(
        &http,
        &format!("{base}/api/v1/events"),
        &json!({"key": "routed/go", "value": "0", "context": {"execution": "0123456789abcdef"}}),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    for id in &ids {
        assert!(
            common::jobs(&http, &base, id).await.is_empty(),
            "an event naming an execution that is not running started nothing"
        );
    }
    post(
        &http,
        &format!("{base}/api/v1/events"),
        &json!({"key": "routed/go", "value": "1", "context": {"execution": ids[0]}}),
    )
    .await;
    wait_for(
        "the named execution's job",
        Duration::from_secs(20),
        || async { job(&http, &base, &ids[0], "step").await["state"] == "SUCCEEDED" },
    )
    .await;
    // Events are handled in order: the other execution saw both events by now.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        job(&http, &base, &ids[1], "step").await,
        Value::Null,
        "the other execution started nothing"
    );
    // No execution named: every running execution sees it.
    post(
        &http,
        &format!("{base}/api/v1/events"),
        &json!({"key": "routed/go", "value": "2"}),
    )
    .await;
    wait_for(
        "the other execution's job",
        Duration::from_secs(20),
        || async { job(&http, &base, &ids[1], "step").await["state"] == "SUCCEEDED" },
    )
    .await;
}
