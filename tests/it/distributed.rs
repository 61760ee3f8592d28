//! The distributed shape end to end, on this machine's real PostgreSQL (127.0.0.1:5432) and
//! NATS JetStream (127.0.0.1:4222): two `aiflow server` replicas and two `aiflow worker`
//! agents, all processes of the real binary. The leader is killed (-9) while events and jobs
//! flow, then a worker is killed mid-task, then restarted. Every event must be handled once,
//! every attempt accounted for, and the final states equal an undisturbed run's. Skips with a
//! loud notice only when PostgreSQL or NATS is not running.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::common;
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_and_worker_die_mid_flight_and_nothing_is_lost_or_repeated() {
    let Some(c) = Cluster::start("t").await else {
        return;
    };
    run(&c).await;
}

async fn run(c: &Cluster) {
    let http = aiflow_sdk::tls::http_client_from_env().expect("HTTP client");
    let (mut s1, u1) = c.server("s1");
    wait_for("s1 to lead", Duration::from_secs(15), || async {
        role(&http, &u1).await == "leader"
    })
    .await;
    let (_s2, u2) = c.server("s2");
    assert_eq!(role(&http, &u2).await, "standby");
    let mut w1 = c.worker("w1", &u2);
    let mut w2 = c.worker("w2", &u2);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let w = get(&http, &format!("{u2}/api/v1/workers")).await;
        if w["items"]
            .as_array()
            .is_some_and(|i| i.iter().filter(|w| w["alive"] == true).count() == 2)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "both workers register: {w}; NATS: {}",
            nats_state(&c.cluster).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // `aiflow status` on the standby names its role, the leader and the workers.
    let out = std::process::Command::new(BIN)
        .args([
            "--server",
            &u2,
            "--output",
            "json",
            "status",
            "--interval",
            "0",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["scheduler"]["role"], "standby", "{status}");
    assert_eq!(status["scheduler"]["leader"]["node"], "s1", "{status}");
    assert_eq!(status["database"]["backend"], "postgres");
    assert_eq!(status["events"]["backend"], "nats");
    assert_eq!(
        status["workers"].as_array().map(Vec::len),
        Some(2),
        "{status}"
    );

    // An event-triggered two-job workflow, submitted through the standby.
    let graph = json!({
        "name": "ingest",
        "nodes": [
            {"name": "work", "op": "transform", "job": {"command": ["sh", "-c", "sleep 0.3; echo work $AIFLOW_JOB $AIFLOW_ATTEMPT"]}},
            {"name": "after", "op": "transform", "job": {"command": ["sh", "-c", "echo after on $AIFLOW_WORKER"]}}
        ],
        "control_edges": [{"to": "after", "action": "START",
                           "condition": {"job_status": {"node": "work", "status": "SUCCEEDED"}}}],
        "triggers": [{"event": {"key": "data/*"}}]
    });
    post(&http, &format!("{u2}/api/v1/workflows"), &graph).await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    // 24 events; the leader dies after the 12th.
    const N: usize = 24;
    let mut takeover = None;
    let mut sent = Vec::new();
    for i in 0..N {
        let e = post(
            &http,
            &format!("{u2}/api/v1/events"),
            &json!({"key": format!("data/{i}"), "value": i.to_string()}),
        )
        .await;
        sent.push(e["offset"].as_i64().expect("stored event has an offset"));
        if i == N / 2 {
            let killed = Instant::now();
            s1.kill9();
            eprintln!("killed the leader {} (-9)", s1.name);
            wait_for("s2 to take over", Duration::from_secs(5), || async {
                role(&http, &u2).await == "leader"
            })
            .await;
            takeover = Some(killed.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    let takeover = takeover.unwrap();
    report(&format!(
        "distributed: the standby took the lead {} ms after the leader was killed (-9)",
        takeover.as_millis()
    ));
    assert!(takeover < Duration::from_secs(5), "take over within 5 s");

    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let e = executions(&http, &u2, "ingest").await;
        if e.len() >= N && e.iter().all(|x| x["state"] == "SUCCEEDED") {
            break;
        }
        if Instant::now() > deadline {
            for x in e.iter().filter(|x| x["state"] != "SUCCEEDED") {
                let id = x["id"].as_str().unwrap();
                eprintln!("unfinished: {x}\n  jobs: {:?}", jobs(&http, &u2, id).await);
            }
            panic!(
                "timed out: {} executions of {N}, not all SUCCEEDED",
                e.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let all = executions(&http, &u2, "ingest").await;
    assert_eq!(all.len(), N, "one execution per event, none twice");
    let mut offsets: Vec<i64> = all
        .iter()
        .map(|x| {
            x["trigger"]["offset"]
                .as_i64()
                .unwrap_or_else(|| panic!("trigger names its event: {}", x["trigger"]))
        })
        .collect();
    offsets.sort_unstable();
    sent.sort_unstable();
    assert_eq!(offsets, sent, "each event started exactly one execution");
    for x in &all {
        let id = x["id"].as_str().unwrap();
        let js = jobs(&http, &u2, id).await;
        assert_eq!(js.len(), 2, "two job attempts, none repeated: {js:?}");
        for j in &js {
            assert_eq!(j["state"], "SUCCEEDED", "{j}");
            assert_eq!(j["attempt"], 1, "no job started twice: {j}");
        }
    }
    // Logs of remote attempts are served by any replica.
    let first = all[0]["id"].as_str().unwrap();
    let log = job_log(&http, &u2, first, "after", "").await;
    assert!(log.contains("after on w"), "remote log: {log}");

    // A worker dies mid-task: after the heartbeat timeout the attempt is lost and retried.
    let slow = json!({
        "name": "slow",
        "nodes": [{"name": "long", "op": "train",
                   "job": {"command": ["sh", "-c", "echo running on $AIFLOW_WORKER; sleep 3; echo trained"], "retries": 1, "retry_backoff_s": 1}}]
    });
    post(&http, &format!("{u2}/api/v1/workflows"), &slow).await;
    let exec = post(
        &http,
        &format!("{u2}/api/v1/workflows/slow/executions"),
        &json!({}),
    )
    .await;
    let id = exec["id"].as_str().unwrap().to_string();
    wait_for("the slow job to run", Duration::from_secs(15), || async {
        jobs(&http, &u2, &id)
            .await
            .iter()
            .any(|j| j["state"] == "RUNNING")
    })
    .await;
    // The job names its worker first thing; its log (shipped from the worker) tells which.
    let deadline = Instant::now() + Duration::from_secs(15);
    let victim = loop {
        let log = job_log(&http, &u2, &id, "long", "").await;
        if let Some(w) = log.lines().find_map(|l| l.strip_prefix("running on ")) {
            break w.trim().to_string();
        }
        assert!(
            Instant::now() < deadline,
            "the slow job's log never named its worker: {log}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let killed_at = Instant::now();
    let restarted_name = victim.clone();
    if victim == "w2" {
        w2.kill9();
    } else {
        w1.kill9();
    }
    eprintln!("({} and {} were started)", w1.name, w2.name);
    eprintln!("killed worker {victim} (-9) while it ran the slow job");
    wait_for(
        "the lost attempt to be retried and succeed",
        Duration::from_secs(60),
        || async {
            get(&http, &format!("{u2}/api/v1/executions/{id}")).await["state"] == "SUCCEEDED"
        },
    )
    .await;
    report(&format!(
        "distributed: worker {victim} killed mid-task; its attempt was failed as lost and the retry succeeded {} ms later",
        killed_at.elapsed().as_millis()
    ));
    let mut js = jobs(&http, &u2, &id).await;
    js.sort_by_key(|j| j["attempt"].as_i64());
    let states: Vec<(i64, String)> = js
        .iter()
        .map(|j| {
            (
                j["attempt"].as_i64().unwrap(),
                j["state"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        states,
        vec![(1, "FAILED".to_string()), (2, "SUCCEEDED".to_string())],
        "the attempt on the dead worker is FAILED (lost), the retry succeeded"
    );

    // The worker comes back (a new consumer connection) and takes work again.
    let _back = c.worker(&restarted_name, &u2);
    wait_for(
        "the restarted worker to register",
        Duration::from_secs(15),
        || async { alive_workers(&http, &u2).await == 2 },
    )
    .await;
    let again = post(
        &http,
        &format!("{u2}/api/v1/workflows/ingest/executions"),
        &json!({}),
    )
    .await;
    let again = again["id"].as_str().unwrap().to_string();
    wait_for(
        "an execution after the restarts",
        Duration::from_secs(30),
        || async {
            get(&http, &format!("{u2}/api/v1/executions/{again}")).await["state"] == "SUCCEEDED"
        },
    )
    .await;
}

/// STOP and RESTART reach the worker that runs the task; a job asking for GPUs waits for a
/// worker that has them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_restart_and_resources_reach_remote_workers() {
    let Some(c) = Cluster::start("t").await else {
        return;
    };
    control(&c).await;
}

async fn control(c: &Cluster) {
    let http = aiflow_sdk::tls::http_client_from_env().expect("HTTP client");
    let (_s1, u) = c.server("s1");
    wait_for("s1 to lead", Duration::from_secs(15), || async {
        role(&http, &u).await == "leader"
    })
    .await;
    let _cpu = c.worker("cpu", &u);
    let graph = json!({
        "name": "serving",
        "nodes": [
            {"name": "serve", "op": "predict",
             "job": {"command": ["sh", "-c", "echo serving attempt $AIFLOW_ATTEMPT pid $$; exec sleep 300"], "streaming": true}},
            {"name": "train", "op": "train",
             "job": {"command": ["sh", "-c", "echo trained on $AIFLOW_WORKER"], "resources": {"gpus": 1}}}
        ],
        "control_edges": [
            {"to": "serve", "action": "RESTART",
             "condition": {"event": {"key": "model/deployed"}}}
        ]
    });
    post(&http, &format!("{u}/api/v1/workflows"), &graph).await;
    let e = post(
        &http,
        &format!("{u}/api/v1/workflows/serving/executions"),
        &json!({}),
    )
    .await;
    let id = e["id"].as_str().unwrap().to_string();
    let attempt_state = |attempt: i64| {
        let (http, u, id) = (http.clone(), u.clone(), id.clone());
        async move {
            jobs(&http, &u, &id)
                .await
                .iter()
                .find(|j| j["job"] == "serve" && j["attempt"] == attempt)
                .map(|j| j["state"].as_str().unwrap_or_default().to_string())
                .unwrap_or_default()
        }
    };
    wait_for(
        "serve to run on the worker",
        Duration::from_secs(15),
        || async { attempt_state(1).await == "RUNNING" },
    )
    .await;
    // No worker has a GPU: the training job waits, QUEUED.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let train = jobs(&http, &u, &id).await;
    let train = train.iter().find(|j| j["job"] == "train").unwrap();
    assert_eq!(
        train["state"], "QUEUED",
        "no worker fits a GPU job: {train}"
    );
    // A worker with one GPU comes up.
    let _gpu = c.worker_on("gpu", &["default"], &u, &["--gpus", "1"]);
    wait_for(
        "the GPU job to run on the GPU worker",
        Duration::from_secs(20),
        || async {
            jobs(&http, &u, &id)
                .await
                .iter()
                .any(|j| j["job"] == "train" && j["state"] == "SUCCEEDED")
        },
    )
    .await;
    let log = job_log(&http, &u, &id, "train", "").await;
    assert!(
        log.contains("trained on gpu"),
        "ran on the worker with a GPU: {log}"
    );

    // RESTART on an event: the running attempt is stopped on its worker, a new one starts.
    post(
        &http,
        &format!("{u}/api/v1/events"),
        &json!({"key": "model/deployed", "value": "v2"}),
    )
    .await;
    wait_for(
        "serve attempt 2 to run",
        Duration::from_secs(20),
        || async { attempt_state(2).await == "RUNNING" },
    )
    .await;
    assert_eq!(attempt_state(1).await, "STOPPED", "attempt 1 was stopped");

    // STOP: the execution and its running job end STOPPED; the process is gone.
    let r = http
        .post(format!("{u}/api/v1/executions/{id}/stop"))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "stop: {}", r.status());
    wait_for("the execution to stop", Duration::from_secs(20), || async {
        get(&http, &format!("{u}/api/v1/executions/{id}")).await["state"] == "STOPPED"
    })
    .await;
    assert_eq!(attempt_state(2).await, "STOPPED");
    let log = http
        .get(format!(
            "{u}/api/v1/executions/{id}/jobs/serve/logs?attempt=2"
        ))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let pid: u32 = log
        .lines()
        .filter(|l| l.starts_with("serving attempt"))
        .find_map(|l| l.split(" pid ").nth(1)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("serve printed its pid: {log}"));
    wait_gone(pid, Duration::from_secs(15), "the stopped serve process").await;
    report(
        "distributed: RESTART and STOP reached the worker running the task; a GPU job waited for a GPU worker",
    );
}

/// A manual start sent to a standby while no replica leads (the leader was just killed -9, the
/// standby has not taken the lease yet) waits for the next leader instead of failing with 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_sent_between_two_leaders_waits_for_the_next_one() {
    let Some(c) = Cluster::start("between").await else {
        return;
    };
    let http = aiflow_sdk::tls::http_client_from_env().expect("HTTP client");
    let (mut s1, _u1) = c.leading_server("s1").await;
    let (_s2, u2) = c.server("s2");
    assert_eq!(role(&http, &u2).await, "standby");
    let graph = json!({"name": "between", "nodes": [
        {"name": "only", "op": "transform", "job": {"command": ["true"]}}]});
    post(&http, &format!("{u2}/api/v1/workflows"), &graph).await;
    s1.kill9();
    let r = http
        .post(format!("{u2}/api/v1/workflows/between/executions"))
        .json(&json!({}))
        .send()
        .await
        .expect("POST");
    let status = r.status();
    let body: serde_json::Value = r.json().await.unwrap_or_default();
    assert!(
        status.is_success(),
        "a start between two leaders: {status} {body}"
    );
    assert!(body["id"].is_string(), "{body}");
    assert_eq!(role(&http, &u2).await, "leader");
}
