//! The exit code of a job's command is stored on its job execution: `GET
//! /executions/{id}/jobs` and `aiflow execution show` show it (0 when it succeeded, the code
//! when it exited non-zero, none after a timeout).

use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use crate::common;
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_job_keeps_its_exit_code_and_a_succeeded_one_zero() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, base) = embedded(&dir.path().join("data"), &[]);
    let http = aiflow_sdk::tls::http_client_from_env().expect("HTTP client");
    post(
        &http,
        &format!("{base}/api/v1/workflows"),
        &json!({
            "name": "codes",
            "nodes": [
                {"name": "fails", "job": {"command": ["sh", "-c", "exit 7"]}},
                {"name": "works", "job": {"command": ["true"]}},
                {"name": "slow", "job": {"command": ["sleep", "30"], "timeout_s": 1}}
            ]
        }),
    )
    .await;
    let started = post(
        &http,
        &format!("{base}/api/v1/workflows/codes/executions"),
        &json!({}),
    )
    .await;
    let id = started["id"].as_str().expect("execution id").to_string();
    let by_name = |jobs: &[Value], name: &str| {
        jobs.iter()
            .find(|j| j["job"] == name)
            .cloned()
            .unwrap_or(Value::Null)
    };
    wait_for("the three jobs to end", Duration::from_secs(30), || async {
        let jobs = jobs(&http, &base, &id).await;
        ["fails", "works", "slow"]
            .iter()
            .all(|n| by_name(&jobs, n)["ended_at"].is_string())
    })
    .await;
    let jobs = jobs(&http, &base, &id).await;
    let (fails, works, slow) = (
        by_name(&jobs, "fails"),
        by_name(&jobs, "works"),
        by_name(&jobs, "slow"),
    );
    assert_eq!(
        (&fails["state"], &fails["exit_code"]),
        (&json!("FAILED"), &json!(7)),
        "{fails}"
    );
    assert_eq!(
        (&works["state"], &works["exit_code"]),
        (&json!("SUCCEEDED"), &json!(0)),
        "{works}"
    );
    assert_eq!(
        (&slow["state"], &slow["exit_code"]),
        (&json!("FAILED"), &Value::Null),
        "a timed-out attempt has no exit code: {slow}"
    );
    let single = get(
        &http,
        &format!(
            "{base}/api/v1/job_executions/{}",
            fails["id"].as_str().unwrap()
        ),
    )
    .await;
    assert_eq!(single["exit_code"], 7, "{single}");
    // The CLI shows it.
    let out = Command::new(BIN)
        .args([
            "--server",
            &base,
            "--output",
            "table",
            "execution",
            "show",
            &id,
        ])
        .env_remove("AIFLOW_TOKEN")
        .output()
        .expect("run aiflow");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("EXIT"), "an exit column: {text}");
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with("fails"))
        .unwrap_or_else(|| panic!("a line of job fails: {text}"));
    assert!(
        line.split_whitespace().any(|w| w == "7"),
        "the exit code on the job's line: {line}"
    );
    report(
        "exit codes: a job exiting 7 is stored FAILED with exit_code 7, a succeeded one 0, a timed-out one none",
    );
}
