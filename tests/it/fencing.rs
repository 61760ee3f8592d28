//! Fencing, on this machine's real PostgreSQL and NATS: the scheduling leader is frozen
//! (SIGSTOP) until the standby takes the lease, events keep coming meanwhile, then it is thawed
//! (SIGCONT). The thawed leader still has its bus subscription and its clock: it receives the
//! events of its frozen time and would start executions for them. It must commit nothing and
//! start nothing (every commit checks the leader epoch); the new leader handles every event
//! exactly once. Skips with a loud notice only when PostgreSQL or NATS is not running.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::common;
use common::*;

fn signal(proc: &Proc, sig: &str) {
    let status = std::process::Command::new("kill")
        .args([sig, &proc.child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success(), "kill {sig} {}", proc.name);
}

/// The jobs that ran so far, by the data folder of the server that started them.
fn marks(dir: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        let node = Path::new(text.trim())
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        out.push((entry.file_name().to_string_lossy().into_owned(), node));
    }
    out
}

async fn send(http: &reqwest::Client, base: &str, i: usize, sent: &mut Vec<i64>) {
    let e = post(
        http,
        &format!("{base}/api/v1/events"),
        &json!({"key": format!("fence/{i}"), "value": i.to_string()}),
    )
    .await;
    sent.push(e["offset"].as_i64().expect("stored event has an offset"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_leader_that_wakes_up_after_a_take_over_commits_and_starts_nothing() {
    let Some(c) = Cluster::start("f").await else {
        return;
    };
    let http = aiflow_sdk::tls::http_client_from_env().expect("HTTP client");
    let marks_dir = c.dir.path().join("marks");
    std::fs::create_dir_all(&marks_dir).unwrap();
    let local = ["--executor", "local"];
    let (s1, u1) = c.server_with("s1", &local);
    wait_for("s1 to lead", Duration::from_secs(15), || async {
        role(&http, &u1).await == "leader"
    })
    .await;
    let (_s2, u2) = c.server_with("s2", &local);
    assert_eq!(role(&http, &u2).await, "standby");

    // Each event starts an execution whose job notes which server started it.
    let graph = json!({
        "name": "fence",
        "nodes": [{"name": "note", "op": "transform", "job": {
            "command": ["sh", "-c", "echo \"$AIFLOW_DATA_DIR\" > \"$MARKS/$AIFLOW_EXECUTION\""],
            "env": {"MARKS": marks_dir.display().to_string()}}}],
        "triggers": [{"event": {"key": "fence/*"}}]
    });
    post(&http, &format!("{u2}/api/v1/workflows"), &graph).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut sent = Vec::new();
    for i in 0..3 {
        send(&http, &u2, i, &mut sent).await;
    }
    wait_for(
        "the first executions to succeed on s1",
        Duration::from_secs(30),
        || async {
            let e = executions(&http, &u2, "fence").await;
            e.len() == 3 && e.iter().all(|x| x["state"] == "SUCCEEDED")
        },
    )
    .await;
    let before = marks(&marks_dir);
    assert!(
        before.iter().all(|(_, node)| node == "s1"),
        "s1 led: {before:?}"
    );

    // Frozen: its lock session ends after the idle timeout and s2 takes the lead. Events sent
    // meanwhile reach both: s2 handles them from the committed offset, s1 finds them in its
    // subscription when it wakes up.
    signal(&s1, "-STOP");
    let frozen = Instant::now();
    let mut i = 3;
    let deadline = Instant::now() + Duration::from_secs(30);
    while role(&http, &u2).await != "leader" {
        assert!(Instant::now() < deadline, "s2 took the lead within 30 s");
        send(&http, &u2, i, &mut sent).await;
        i += 1;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    report(&format!(
        "fencing: the standby took the lead {} ms after the leader froze",
        frozen.elapsed().as_millis()
    ));
    for _ in 0..3 {
        send(&http, &u2, i, &mut sent).await;
        i += 1;
    }
    signal(&s1, "-CONT");
    // Thawed, with the frozen time's events in its subscription and a lease it lost.
    for _ in 0..3 {
        send(&http, &u2, i, &mut sent).await;
        i += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    wait_for("s1 to stand by again", Duration::from_secs(20), || async {
        role(&http, &u1).await == "standby"
    })
    .await;
    let n = sent.len();
    // Every event's execution succeeds (the assertions below say what went wrong otherwise).
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let e = executions(&http, &u2, "fence").await;
        if e.len() >= n && e.iter().all(|x| x["state"] == "SUCCEEDED") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // What s1 might still do after waking up has had time to show.
    tokio::time::sleep(Duration::from_secs(3)).await;

    let all = executions(&http, &u2, "fence").await;
    let mut offsets: Vec<i64> = all
        .iter()
        .map(|x| {
            x["trigger"]["offset"]
                .as_i64()
                .expect("trigger names its event")
        })
        .collect();
    offsets.sort_unstable();
    sent.sort_unstable();
    assert_eq!(
        offsets, sent,
        "each event started exactly one execution: nothing of the old leader was committed"
    );
    let unfinished: Vec<_> = all.iter().filter(|x| x["state"] != "SUCCEEDED").collect();
    assert!(
        unfinished.is_empty(),
        "executions the old leader committed and never ran: {unfinished:?}"
    );
    for x in &all {
        let id = x["id"].as_str().unwrap();
        let js = jobs(&http, &u2, id).await;
        assert_eq!(js.len(), 1, "one job attempt per execution: {js:?}");
        assert_eq!(js[0]["state"], "SUCCEEDED", "{js:?}");
    }
    let after = marks(&marks_dir);
    let by_s1: Vec<_> = after.iter().filter(|(_, node)| node == "s1").collect();
    assert_eq!(
        by_s1.len(),
        before.len(),
        "the old leader started no job after it froze: {after:?}"
    );
    assert_eq!(after.len(), n, "one job run per event: {after:?}");
}
