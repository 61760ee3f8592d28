//! Jobs with an `image` on a real `aiflow server` (embedded shape) and a real Docker engine:
//! `.ci/docker.sh` starts the engine and builds the local image `aiflow-test/debian:bookworm`.
//! Without an engine these tests say so loudly and pass without checking anything.

use crate::common;

use std::process::Command;
use std::time::Duration;

use common::{embedded, get, post, wait_for};
use serde_json::{Value, json};

pub(crate) const IMAGE: &str = "aiflow-test/debian:bookworm";

/// `true` when the engine answers and has the test image; a loud notice otherwise.
pub(crate) fn engine_ready() -> bool {
    let ok = Command::new("docker")
        .args(["image", "inspect", IMAGE])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!(
            "\n*** SKIPPED: no Docker engine with the image {IMAGE}; run .ci/docker.sh ***\n"
        );
    }
    ok
}

/// `docker` with these arguments; its stdout.
pub(crate) fn docker(args: &[&str]) -> String {
    let out = Command::new("docker").args(args).output().expect("docker");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Ids of the containers (any state) labelled with this execution.
pub(crate) fn containers_of(execution: &str) -> Vec<String> {
    docker(&[
        "ps",
        "-aq",
        "--filter",
        &format!("label=io.aiflow.execution={execution}"),
    ])
    .lines()
    .map(str::to_string)
    .collect()
}

pub(crate) async fn job(http: &reqwest::Client, base: &str, id: &str, name: &str) -> Value {
    common::jobs(http, base, id)
        .await
        .into_iter()
        .filter(|j| j["job"] == name)
        .max_by_key(|j| j["attempt"].as_i64())
        .unwrap_or(Value::Null)
}

pub(crate) async fn start(http: &reqwest::Client, base: &str, workflow: &str) -> String {
    let started = post(
        http,
        &format!("{base}/api/v1/workflows/{workflow}/executions"),
        &json!({}),
    )
    .await;
    started["id"].as_str().expect("execution id").to_string()
}

/// A shell line that POSTs an event to `AIFLOW_URL` with bash's /dev/tcp (the minimal image has
/// no HTTP client), naming the job's execution as a job's event does.
fn publish(key: &str) -> String {
    format!(
        r#"u=${{AIFLOW_URL#http://}}; hp=${{u%%/*}}; body="{{\"key\":\"{key}\",\"value\":\"from $AIFLOW_JOB\",\"context\":{{\"execution\":\"$AIFLOW_EXECUTION\"}}}}"; exec 3<>/dev/tcp/${{hp%:*}}/${{hp##*:}}; printf 'POST /api/v1/events HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %s\r\nConnection: close\r\n\r\n%s' "$hp" "${{#body}}" "$body" >&3; head -1 <&3"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_job_logs_its_exit_code_and_its_event_starts_the_next_job() {
    if !engine_ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (_server, base) = embedded(&dir.path().join("data"), &[]);
    let http = aiflow_sdk::tls::http_client_from_env().expect("HTTP client");
    let script = format!(
        "echo hi; echo job=$AIFLOW_JOB execution=$AIFLOW_EXECUTION in $(pwd); {}; exit 3",
        publish("boxed/trained")
    );
    let stored = post(
        &http,
        &format!("{base}/api/v1/workflows"),
        &json!({
            "name": "boxed",
            "nodes": [
                {"name": "train", "job": {"image": IMAGE, "pull": "never", "working_dir": "/tmp",
                    "command": ["bash", "-c", script], "resources": {"memory_mb": 128}}},
                {"name": "after", "job": {"image": IMAGE, "command": ["sh", "-c", "echo after ran"]}}
            ],
            "control_edges": [{"to": "after", "action": "START",
                "condition": {"event": {"key": "boxed/trained"}}}]
        }),
    )
    .await;
    assert_eq!(stored["workflow"], "boxed", "{stored}");
    let id = start(&http, &base, "boxed").await;
    wait_for("both jobs to end", Duration::from_secs(60), || async {
        job(&http, &base, &id, "train").await["state"] == "FAILED"
            && job(&http, &base, &id, "after").await["state"] == "SUCCEEDED"
    })
    .await;
    let log = common::job_log(&http, &base, &id, "train", "").await;
    assert!(log.contains("\nhi\n"), "{log}");
    assert!(
        log.contains(&format!("job=train execution={id} in /tmp")),
        "the AIFLOW_* variables and working_dir reach the container: {log}"
    );
    assert!(log.contains("HTTP/1.1 20"), "the event was accepted: {log}");
    assert!(log.contains("exited with code 3"), "{log}");
    let events = get(
        &http,
        &format!("{base}/api/v1/events?key=boxed/train&event_type=JOB_STATUS&limit=100"),
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
            .is_some_and(|m| m.ends_with("exited with code 3")),
        "the attempt's exit code: {failed}"
    );
    let after = common::job_log(&http, &base, &id, "after", "").await;
    assert!(after.contains("after ran"), "{after}");
    // The container's exit code is stored on the job execution.
    let (train, after) = (
        job(&http, &base, &id, "train").await,
        job(&http, &base, &id, "after").await,
    );
    assert_eq!(train["exit_code"], 3, "{train}");
    assert_eq!(after["exit_code"], 0, "{after}");
    assert!(
        containers_of(&id).is_empty(),
        "ended containers are removed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_removes_the_container_and_restart_replaces_it() {
    if !engine_ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (_server, base) = embedded(&dir.path().join("data"), &["--stop-jobs-on-exit"]);
    let http = aiflow_sdk::tls::http_client_from_env().expect("HTTP client");
    post(
        &http,
        &format!("{base}/api/v1/workflows"),
        &json!({
            "name": "served",
            "nodes": [{"name": "serve", "job": {"image": IMAGE, "streaming": true,
                "command": ["sh", "-c", "echo serving attempt $AIFLOW_ATTEMPT; exec sleep 300"],
                "resources": {"cpus": 0.5, "memory_mb": 96}}}],
            "control_edges": [{"to": "serve", "action": "RESTART",
                "condition": {"event": {"key": "served/model"}}}]
        }),
    )
    .await;
    let id = start(&http, &base, "served").await;
    wait_for("the container to run", Duration::from_secs(30), || async {
        job(&http, &base, &id, "serve").await["state"] == "RUNNING" && containers_of(&id).len() == 1
    })
    .await;
    let first = containers_of(&id).remove(0);
    assert_eq!(
        docker(&[
            "inspect",
            "-f",
            "{{.HostConfig.Memory}} {{.HostConfig.NanoCpus}} {{.HostConfig.NetworkMode}}",
            &first
        ]),
        format!("{} 500000000 host", 96 * 1024 * 1024),
        "limits and host networking"
    );
    // RESTART: the attempt's container goes, the next attempt's comes.
    post(
        &http,
        &format!("{base}/api/v1/events"),
        &json!({"key": "served/model", "value": "v2", "context": {"execution": id}}),
    )
    .await;
    wait_for("attempt 2 to run", Duration::from_secs(40), || async {
        let j = job(&http, &base, &id, "serve").await;
        j["attempt"] == 2 && j["state"] == "RUNNING"
    })
    .await;
    wait_for(
        "one container, of attempt 2",
        Duration::from_secs(20),
        || async {
            let now = containers_of(&id);
            now.len() == 1
                && now[0] != first
                && docker(&[
                    "inspect",
                    "-f",
                    "{{index .Config.Labels \"io.aiflow.attempt\"}}",
                    &now[0],
                ]) == "2"
        },
    )
    .await;
    // STOP of the execution: the container is stopped and removed.
    let stopped = post(
        &http,
        &format!("{base}/api/v1/executions/{id}/stop"),
        &json!({}),
    )
    .await;
    assert!(stopped.is_object(), "{stopped}");
    wait_for(
        "the container to be removed",
        Duration::from_secs(30),
        || async { containers_of(&id).is_empty() },
    )
    .await;
    wait_for("the job to be STOPPED", Duration::from_secs(20), || async {
        job(&http, &base, &id, "serve").await["state"] == "STOPPED"
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_image_fails_the_attempt_and_a_bad_one_is_refused() {
    if !engine_ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (_server, base) = embedded(&dir.path().join("data"), &[]);
    let http = aiflow_sdk::tls::http_client_from_env().expect("HTTP client");
    // A malformed reference: 422 naming the field.
    let resp = http
        .post(format!("{base}/api/v1/workflows"))
        .json(&json!({"name": "bad", "nodes": [{"name": "a", "job": {"image": "Not Valid", "command": ["true"]}}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 422);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["field"], "nodes[0].job.image", "{body}");
    post(
        &http,
        &format!("{base}/api/v1/workflows"),
        &json!({"name": "absent", "nodes": [{"name": "a", "job": {
            "image": "aiflow-test/not-built:1", "pull": "never", "command": ["true"]}}]}),
    )
    .await;
    let id = start(&http, &base, "absent").await;
    wait_for("the attempt to fail", Duration::from_secs(30), || async {
        job(&http, &base, &id, "a").await["state"] == "FAILED"
    })
    .await;
    let log = common::job_log(&http, &base, &id, "a", "").await;
    assert!(
        log.contains("the image aiflow-test/not-built:1 is not on the engine and pull is never"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_with_an_image_goes_only_to_a_worker_that_offers_containers() {
    if !engine_ready() {
        return;
    }
    let Some(c) = common::Cluster::start("boxes").await else {
        return;
    };
    let (_s1, u) = c.leading_server("s1").await;
    let http = aiflow_sdk::tls::http_client_from_env().expect("HTTP client");
    let _plain = c.worker_on("plain", &["default"], &u, &["--gpus", "2"]);
    post(
        &http,
        &format!("{u}/api/v1/workflows"),
        &json!({
            "name": "boxed",
            "nodes": [
                {"name": "gpu", "job": {"command": ["sh", "-c", "echo devices=$CUDA_VISIBLE_DEVICES/$NVIDIA_VISIBLE_DEVICES on $AIFLOW_WORKER"],
                    "resources": {"gpus": 2}}},
                {"name": "boxed", "job": {"image": IMAGE, "pull": "never",
                    "command": ["sh", "-c", "echo in a container on $AIFLOW_WORKER"]}}
            ]
        }),
    )
    .await;
    let id = start(&http, &u, "boxed").await;
    wait_for(
        "the process job to run",
        Duration::from_secs(30),
        || async { job(&http, &u, &id, "gpu").await["state"] == "SUCCEEDED" },
    )
    .await;
    let log = common::job_log(&http, &u, &id, "gpu", "").await;
    assert!(
        log.contains("devices=0,1/0,1 on plain"),
        "a process gets its assigned GPUs: {log}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        job(&http, &u, &id, "boxed").await["state"],
        "QUEUED",
        "no worker offers containers yet"
    );
    let _boxes = c.worker_on("boxes", &["default"], &u, &["--containers"]);
    wait_for(
        "the container job to run",
        Duration::from_secs(40),
        || async { job(&http, &u, &id, "boxed").await["state"] == "SUCCEEDED" },
    )
    .await;
    let log = common::job_log(&http, &u, &id, "boxed", "").await;
    assert!(log.contains("in a container on boxes"), "{log}");
    let workers = get(&http, &format!("{u}/api/v1/workers")).await;
    let offers = |name: &str| {
        workers["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|w| w["name"] == name)
            .map(|w| w["containers"].clone())
            .unwrap_or(Value::Null)
    };
    assert_eq!(offers("boxes"), true, "{workers}");
    assert_eq!(offers("plain"), false, "{workers}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_outlives_kill_9_of_the_server_and_is_re_adopted_once() {
    if !engine_ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (mut server, base) = embedded(&data, &[]);
    let http = aiflow_sdk::tls::http_client_from_env().expect("HTTP client");
    post(
        &http,
        &format!("{base}/api/v1/workflows"),
        &json!({"name": "lasting", "nodes": [{"name": "slow", "job": {"image": IMAGE, "pull": "never",
            "command": ["sh", "-c", "echo started; sleep 5; echo finished; exit 5"]}}]}),
    )
    .await;
    let id = start(&http, &base, "lasting").await;
    wait_for("the container to run", Duration::from_secs(30), || async {
        job(&http, &base, &id, "slow").await["state"] == "RUNNING"
    })
    .await;
    server.kill9();
    let running = containers_of(&id);
    assert_eq!(running.len(), 1, "the container outlived the server");
    let (_server, base) = embedded(&data, &[]);
    wait_for("the job to end", Duration::from_secs(30), || async {
        job(&http, &base, &id, "slow").await["state"] == "FAILED"
    })
    .await;
    let slow = job(&http, &base, &id, "slow").await;
    assert_eq!(slow["attempt"], 1, "one attempt: {slow}");
    let log = common::job_log(&http, &base, &id, "slow", "").await;
    assert_eq!(log.matches("started\n").count(), 1, "ran once: {log}");
    assert!(log.contains("re-adopted"), "{log}");
    assert!(log.contains("finished\n"), "{log}");
    assert!(
        log.contains("exited with code 5"),
        "the real exit code: {log}"
    );
    assert!(containers_of(&id).is_empty(), "removed once it ended");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_re_adopted_container_still_times_out_when_its_first_server_said() {
    if !engine_ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (mut server, base) = embedded(&data, &[]);
    let http = aiflow_sdk::tls::http_client_from_env().expect("HTTP client");
    post(
        &http,
        &format!("{base}/api/v1/workflows"),
        &json!({"name": "bounded", "nodes": [{"name": "long", "job": {"image": IMAGE, "pull": "never",
            "timeout_s": 6, "command": ["sh", "-c", "echo begun; sleep 300"]}}]}),
    )
    .await;
    let id = start(&http, &base, "bounded").await;
    let began = std::time::Instant::now();
    wait_for("the container to run", Duration::from_secs(30), || async {
        job(&http, &base, &id, "long").await["state"] == "RUNNING"
    })
    .await;
    server.kill9();
    assert_eq!(
        containers_of(&id).len(),
        1,
        "the container outlived the server"
    );
    let (_server, base) = embedded(&data, &[]);
    wait_for(
        "the timeout to end the job",
        Duration::from_secs(40),
        || async { job(&http, &base, &id, "long").await["state"] == "FAILED" },
    )
    .await;
    let took = began.elapsed();
    let log = common::job_log(&http, &base, &id, "long", "").await;
    assert!(log.contains("re-adopted"), "{log}");
    assert!(log.contains("timed out"), "the timeout ended it: {log}");
    assert_eq!(
        log.matches("begun\n").count(),
        1,
        "output copied once: {log}"
    );
    assert!(
        took < Duration::from_secs(40),
        "ended by the 6 s timeout, not by the 300 s sleep ({took:?})"
    );
    assert!(containers_of(&id).is_empty(), "removed once it ended");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_jobs_on_the_server_get_distinct_gpus() {
    // No engine needed: processes only, on a server configured with two GPUs.
    let dir = tempfile::tempdir().unwrap();
    let (_server, base) = embedded(&dir.path().join("data"), &["--gpus", "2"]);
    let http = aiflow_sdk::tls::http_client_from_env().expect("HTTP client");
    let node = |name: &str, gpus: u32| {
        json!({"name": name, "job": {"resources": {"gpus": gpus},
            "command": ["sh", "-c", "echo devices=$CUDA_VISIBLE_DEVICES nvidia=$NVIDIA_VISIBLE_DEVICES; sleep 2"]}})
    };
    post(
        &http,
        &format!("{base}/api/v1/workflows"),
        &json!({"name": "gpus", "nodes": [node("a", 1), node("b", 1), node("c", 1), node("huge", 3)]}),
    )
    .await;
    let id = start(&http, &base, "gpus").await;
    wait_for("the jobs to end", Duration::from_secs(60), || async {
        let js = common::jobs(&http, &base, &id).await;
        js.len() >= 4
            && js
                .iter()
                .all(|j| j["state"] != "RUNNING" && j["state"] != "QUEUED")
    })
    .await;
    let mut devices = Vec::new();
    for name in ["a", "b", "c"] {
        let j = job(&http, &base, &id, name).await;
        let log = common::job_log(&http, &base, &id, name, "").await;
        let line = log
            .lines()
            .find(|l| l.starts_with("devices="))
            .unwrap_or_default()
            .to_string();
        devices.push((j["state"].clone(), line));
    }
    // Two run at once on devices 0 and 1; the third waits for one of them to come back (as for
    // a slot) and runs then.
    assert!(devices.iter().all(|(s, _)| s == "SUCCEEDED"), "{devices:?}");
    let mut got: Vec<&str> = devices.iter().map(|(_, l)| l.as_str()).collect();
    got.sort_unstable();
    got.dedup();
    assert_eq!(
        got,
        ["devices=0 nvidia=0", "devices=1 nvidia=1"],
        "{devices:?}"
    );
    // More GPUs than the executor has at all: failed at once, naming the setting.
    assert_eq!(job(&http, &base, &id, "huge").await["state"], "FAILED");
    let events = get(
        &http,
        &format!("{base}/api/v1/events?key=gpus/huge&event_type=JOB_STATUS&limit=100"),
    )
    .await;
    assert!(
        events
            .to_string()
            .contains("resources.gpus asks for 3 GPUs; this executor has 2"),
        "{events}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_container_of_a_worker_killed_with_9_runs_once_and_is_removed() {
    if !engine_ready() {
        return;
    }
    let Some(c) = common::Cluster::start("boxkill").await else {
        return;
    };
    let (_s1, u) = c.leading_server("s1").await;
    let http = aiflow_sdk::tls::http_client_from_env().expect("HTTP client");
    let mut w1 = c.worker_on("w1", &["default"], &u, &["--containers"]);
    post(
        &http,
        &format!("{u}/api/v1/workflows"),
        &json!({"name": "boxkill", "nodes": [{"name": "long", "job": {"image": IMAGE, "pull": "never",
            "command": ["sh", "-c", "echo started; sleep 300"]}}]}),
    )
    .await;
    let id = start(&http, &u, "boxkill").await;
    wait_for("the container to run", Duration::from_secs(30), || async {
        job(&http, &u, &id, "long").await["state"] == "RUNNING" && containers_of(&id).len() == 1
    })
    .await;
    w1.kill9();
    // w1 never comes back: the task comes back to the next worker once w1 has not heartbeated
    // for the heartbeat timeout; it is lost, not run again, and its container goes. (A worker
    // that comes back under the same name re-adopts its container instead: see below.)
    let _w2 = c.worker_on("w2", &["default"], &u, &["--containers"]);
    wait_for(
        "the attempt to be lost",
        Duration::from_secs(40),
        || async { job(&http, &u, &id, "long").await["state"] == "FAILED" },
    )
    .await;
    let long = job(&http, &u, &id, "long").await;
    assert_eq!(long["attempt"], 1, "{long}");
    wait_for(
        "the container to be removed",
        Duration::from_secs(20),
        || async { containers_of(&id).is_empty() },
    )
    .await;
}

#[test]
fn a_worker_refuses_a_container_network_it_cannot_use() {
    let run = |args: &[&str]| {
        let out = Command::new(common::BIN)
            .args(["worker", "--nats", "nats://127.0.0.1:4222"])
            .args(args)
            .output()
            .expect("aiflow worker");
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        (out.status.success(), err)
    };
    let (ok, err) = run(&["--container-network", "aiflow"]);
    assert!(
        !ok && err.contains("container-network: needs --containers"),
        "{err}"
    );
    let (ok, err) = run(&["--containers", "--container-network", "no good"]);
    assert!(
        !ok && err.contains("container-network: \"no good\" is not a network name"),
        "{err}"
    );
    if !engine_ready() {
        return;
    }
    let (ok, err) = run(&[
        "--containers",
        "--container-network",
        "aiflow-test-no-such-network",
    ]);
    assert!(
        !ok && err.contains("no network \"aiflow-test-no-such-network\" on the engine"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_with_9_and_started_again_re_adopts_its_container() {
    if !engine_ready() {
        return;
    }
    let Some(c) = common::Cluster::start("boxback").await else {
        return;
    };
    let (_s1, u) = c.leading_server("s1").await;
    let http = aiflow_sdk::tls::http_client_from_env().expect("HTTP client");
    let mut w1 = c.worker_on("w1", &["default"], &u, &["--containers"]);
    // `kept` outlives its worker's restart; `gone`'s container is removed while the worker is
    // down.
    let node = |name: &str, script: &str| {
        json!({"name": name, "job": {"image": IMAGE, "pull": "never",
            "command": ["sh", "-c", script]}})
    };
    post(
        &http,
        &format!("{u}/api/v1/workflows"),
        &json!({"name": "boxback", "nodes": [
            node("kept", "echo started; sleep 20; echo finished; exit 7"),
            node("gone", "echo begun; sleep 300")
        ]}),
    )
    .await;
    let id = start(&http, &u, "boxback").await;
    wait_for(
        "both containers to run and log",
        Duration::from_secs(30),
        || async {
            job(&http, &u, &id, "kept").await["state"] == "RUNNING"
                && job(&http, &u, &id, "gone").await["state"] == "RUNNING"
                && containers_of(&id).len() == 2
                && common::job_log(&http, &u, &id, "kept", "")
                    .await
                    .contains("started\n")
        },
    )
    .await;
    // Another worker of the queue: it leaves w1's tasks to w1 once w1 is back (w1 heartbeats).
    let _w2 = c.worker_on("w2", &["default"], &u, &["--containers"]);
    w1.kill9();
    assert_eq!(containers_of(&id).len(), 2, "the containers outlived w1");
    let gone = docker(&[
        "ps",
        "-q",
        "--filter",
        &format!("label=io.aiflow.execution={id}"),
        "--filter",
        "label=io.aiflow.job=gone",
    ]);
    docker(&["rm", "-f", &gone]);
    let began = std::time::Instant::now();
    let _w1 = c.worker_on("w1", &["default"], &u, &["--containers"]);
    wait_for("both jobs to end", Duration::from_secs(60), || async {
        job(&http, &u, &id, "kept").await["state"] == "FAILED"
            && job(&http, &u, &id, "gone").await["state"] == "FAILED"
    })
    .await;
    common::report(&format!(
        "a restarted worker re-adopted its container and reported its end {:.1} s after it came back",
        began.elapsed().as_secs_f64()
    ));
    let kept = job(&http, &u, &id, "kept").await;
    let kept_events = get(
        &http,
        &format!("{u}/api/v1/events?key=boxback/kept&event_type=JOB_STATUS&limit=100"),
    )
    .await;
    let kept = json!({"job": kept, "events": kept_events});
    assert_eq!(kept["job"]["attempt"], 1, "one attempt: {kept}");
    let log = common::job_log(&http, &u, &id, "kept", "").await;
    assert_eq!(
        log.matches("started\n").count(),
        1,
        "ran once, shipped once: {log}"
    );
    assert_eq!(log.matches("finished\n").count(), 1, "{kept}\n{log}");
    assert!(log.contains("re-adopted"), "{kept}\n{log}");
    assert!(
        log.contains("exited with code 7"),
        "the real exit code: {log}"
    );
    let events = get(
        &http,
        &format!("{u}/api/v1/events?key=boxback/kept&event_type=JOB_STATUS&limit=100"),
    )
    .await;
    assert!(
        events.to_string().contains("exited with code 7"),
        "the ended outcome carries the exit code: {events}"
    );
    let gone_job = job(&http, &u, &id, "gone").await;
    assert_eq!(gone_job["attempt"], 1, "never started again: {gone_job}");
    let events = get(
        &http,
        &format!("{u}/api/v1/events?key=boxback/gone&event_type=JOB_STATUS&limit=100"),
    )
    .await;
    assert!(
        events
            .to_string()
            .contains("lost: worker w1 restarted while the attempt ran and its container is gone"),
        "{events}"
    );
    wait_for(
        "the containers to be removed",
        Duration::from_secs(20),
        || async { containers_of(&id).is_empty() },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_removes_at_start_its_containers_whose_attempt_is_over() {
    if !engine_ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let elsewhere = tempfile::tempdir().unwrap();
    let execution = format!("swept-{}", common::uuid_hex());
    // Containers as an attempt leaves them (its labels), of an execution this server has no
    // running attempt of: one with its log under this server's data, one of another server
    // on the same engine, one of a worker.
    let run = |log: &std::path::Path, extra: &[&str]| {
        let labels = [
            format!("io.aiflow.execution={execution}"),
            "io.aiflow.job=old".to_string(),
            "io.aiflow.attempt=1".to_string(),
            format!("io.aiflow.log={}", log.display()),
            "io.aiflow.last=true".to_string(),
        ];
        let mut args = vec!["run", "-d"];
        for l in &labels {
            args.extend(["--label", l.as_str()]);
        }
        args.extend(extra);
        args.extend([IMAGE, "sleep", "300"]);
        let id = docker(&args);
        assert!(!id.is_empty(), "docker run");
        id
    };
    let ours_log = data.join("logs").join(&execution).join("old-1.log");
    let ours = run(&ours_log, &[]);
    let theirs = run(&elsewhere.path().join("logs/x/old-1.log"), &[]);
    let workers = run(&ours_log, &["--label", "io.aiflow.worker=w9"]);
    let exists = |id: &str| !docker(&["ps", "-aq", "--filter", &format!("id={id}")]).is_empty();
    let (_server, _base) = embedded(&data, &[]);
    wait_for(
        "the server to remove its leftover container",
        Duration::from_secs(30),
        || async { !exists(&ours) },
    )
    .await;
    assert!(exists(&theirs), "another server's container is left alone");
    assert!(exists(&workers), "a worker's container is left alone");
    docker(&["rm", "-f", &theirs, &workers]);
}
