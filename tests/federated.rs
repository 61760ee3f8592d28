//! The federated-learning example (`dags/federated_averaging.json`) end to end on this
//! machine's real PostgreSQL (127.0.0.1:5432) and NATS JetStream (127.0.0.1:4222): one
//! `aiflow server`, one `aiflow worker` per site (`--queue site-a`, …) and one for the
//! aggregator's queue, all processes of the real binary, the jobs the example's Python
//! scripts. The rounds must run in order, each aggregation must average exactly its round's
//! update of every site, the run must stop at the target loss (or the last round) and the
//! execution end SUCCEEDED with every attempt SUCCEEDED on the worker of its queue. Skips with
//! a loud notice only when PostgreSQL or NATS is not running.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

mod common;
use common::*;

const SITES: [&str; 3] = ["site-a", "site-b", "site-c"];
const WORKFLOW: &str = "federated_averaging";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn federated_averaging_runs_its_rounds_on_one_worker_per_site() {
    let Some(c) = Cluster::start("fl").await else {
        return;
    };
    run(&c).await;
}

/// The decoded `value` of an event.
fn value(e: &Value) -> Value {
    serde_json::from_str(e["value"].as_str().expect("a value")).expect("the value is JSON")
}

fn offset(e: &Value) -> i64 {
    e["offset"].as_i64().expect("an offset")
}

async fn run(c: &Cluster) {
    let python = Command::new("python3").arg("--version").output();
    assert!(
        python.is_ok_and(|o| o.status.success()),
        "the example's jobs need python3 on the PATH"
    );
    let http = aiflow_sdk::tls::http_client_from_env().expect("HTTP client");
    let (_server, url) = c.server("server");
    let mut workers = Vec::new();
    for site in SITES {
        workers.push(c.worker_on(&format!("{site}-agent"), &[site], &url, &[]));
    }
    workers.push(c.worker_on("controller", &["aggregator"], &url, &[]));
    wait_for(
        "the four workers to register",
        Duration::from_secs(20),
        || async { alive_workers(&http, &url).await == 4 },
    )
    .await;

    // The checked-in example, as `aiflow server --dags dags` would load it.
    let graph: Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("dags/federated_averaging.json")).unwrap(),
    )
    .unwrap();
    post(&http, &format!("{url}/api/v1/workflows"), &graph).await;
    let started = Instant::now();
    let exec = post(
        &http,
        &format!("{url}/api/v1/workflows/{WORKFLOW}/executions"),
        &json!({}),
    )
    .await;
    let id = exec["id"].as_str().unwrap().to_string();
    // About 5 s on a quiet machine; the margin is for a machine busy with builds.
    let deadline = Instant::now() + Duration::from_secs(90);
    let state = loop {
        let e = get(&http, &format!("{url}/api/v1/executions/{id}")).await;
        let state = e["state"].as_str().unwrap_or_default().to_string();
        if !matches!(state.as_str(), "RUNNING" | "QUEUED" | "CREATED" | "") {
            break state;
        }
        if Instant::now() > deadline {
            let jobs = get(&http, &format!("{url}/api/v1/executions/{id}/jobs")).await;
            panic!("the run did not end within 90 s: {e}\njobs: {jobs}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let took = started.elapsed();
    assert_eq!(state, "SUCCEEDED", "fl/done finishes the execution");

    // This execution's events, in offset order.
    let page = get(&http, &format!("{url}/api/v1/events?key=fl/*&limit=1000")).await;
    let events: Vec<Value> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["context"]["execution"] == id.as_str())
        .cloned()
        .collect();
    let models: Vec<&Value> = events.iter().filter(|e| e["key"] == "fl/model").collect();
    let done: Vec<&Value> = events.iter().filter(|e| e["key"] == "fl/done").collect();
    assert_eq!(done.len(), 1, "one fl/done: {events:?}");
    let done = done[0];
    let last = value(done);
    let rounds = last["round"].as_i64().unwrap();
    assert!(rounds >= 2, "more than one round ran: {last}");

    // Rounds in order: round r's model, then its three updates, then round r+1's model (or
    // fl/done), nothing of another round in between.
    let model_rounds: Vec<i64> = models
        .iter()
        .map(|m| value(m)["round"].as_i64().unwrap())
        .collect();
    assert_eq!(
        model_rounds,
        (1..=rounds).collect::<Vec<_>>(),
        "one global model per round, in order"
    );
    let target = 0.02;
    for r in 1..=rounds {
        let start = offset(models[(r - 1) as usize]);
        let (end, aggregation) = if r < rounds {
            (offset(models[r as usize]), value(models[r as usize]))
        } else {
            (offset(done), last.clone())
        };
        let mut updates: BTreeMap<String, (i64, Value)> = BTreeMap::new();
        for e in events.iter().filter(|e| {
            e["key"].as_str().unwrap().starts_with("fl/update/")
                && offset(e) > start
                && offset(e) < end
        }) {
            let u = value(e);
            assert_eq!(
                u["round"], r,
                "an update of another round inside round {r}: {e}"
            );
            assert_eq!(
                u["model_offset"], start,
                "learners start from the round's model: {e}"
            );
            assert_eq!(e["context"]["round"], r);
            let site = u["site"].as_str().unwrap().to_string();
            assert_eq!(e["key"], format!("fl/update/{site}"));
            assert!(
                updates.insert(site, (offset(e), u)).is_none(),
                "one update per site in round {r}"
            );
        }
        assert_eq!(
            updates.keys().map(String::as_str).collect::<Vec<_>>(),
            SITES,
            "round {r} has every site's update"
        );
        // The aggregation averaged exactly these updates, weighted by sample counts.
        let used: Vec<i64> = aggregation["updates"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o.as_i64().unwrap())
            .collect();
        let mut expected: Vec<i64> = updates.values().map(|(o, _)| *o).collect();
        expected.sort_unstable();
        assert_eq!(used, expected, "round {r} aggregated its own updates");
        let n: f64 = updates
            .values()
            .map(|(_, u)| u["n"].as_f64().unwrap())
            .sum();
        for (i, w) in aggregation["weights"]
            .as_array()
            .unwrap()
            .iter()
            .enumerate()
        {
            let avg: f64 = updates
                .values()
                .map(|(_, u)| u["n"].as_f64().unwrap() * u["weights"][i].as_f64().unwrap())
                .sum::<f64>()
                / n;
            assert!(
                (w.as_f64().unwrap() - avg).abs() < 1e-9,
                "round {r}: weight {i} is {w}, the average {avg}"
            );
        }
        let loss = aggregation["loss"].as_f64().unwrap();
        if r < rounds {
            assert!(
                loss > target,
                "round {r} reached the target ({loss}) yet the run went on"
            );
        }
        report(&format!(
            "federated: round {r}: w={:.4} b={:.4} loss={loss:.5}",
            aggregation["weights"][0].as_f64().unwrap(),
            aggregation["weights"][1].as_f64().unwrap()
        ));
    }
    match last["reason"].as_str() {
        Some("target") => assert!(last["loss"].as_f64().unwrap() <= target, "{last}"),
        Some("rounds") => assert_eq!(rounds, 10, "{last}"),
        other => panic!("fl/done says why: {other:?}"),
    }
    assert_eq!(
        last["reason"], "target",
        "this data reaches the target loss: {last}"
    );
    // The learned line is close to the truth (y = 2x - 1).
    assert!(
        (last["weights"][0].as_f64().unwrap() - 2.0).abs() < 0.5,
        "{last}"
    );

    // Every attempt ended SUCCEEDED, once per round.
    let jobs = get(&http, &format!("{url}/api/v1/executions/{id}/jobs")).await;
    let jobs = jobs
        .as_array()
        .cloned()
        .or_else(|| jobs["items"].as_array().cloned())
        .unwrap();
    let mut count: BTreeMap<String, i64> = BTreeMap::new();
    for j in &jobs {
        assert_eq!(j["state"], "SUCCEEDED", "{j}");
        *count
            .entry(j["job"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    let mut expected = BTreeMap::from([("init".to_string(), 1), ("aggregate".to_string(), rounds)]);
    for site in SITES {
        expected.insert(format!("learn_{}", site.replace('-', "_")), rounds);
    }
    assert_eq!(count, expected, "attempts per job");
    // Each round's learner of a site ran on that site's worker (its log, shipped from there,
    // names it).
    for site in SITES {
        let job = format!("learn_{}", site.replace('-', "_"));
        for attempt in 1..=rounds {
            let log = http
                .get(format!(
                    "{url}/api/v1/executions/{id}/jobs/{job}/logs?attempt={attempt}"
                ))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            assert!(
                log.contains(&format!("round {attempt} at {site} on {site}-agent")),
                "{job} attempt {attempt}: {log}"
            );
        }
    }

    // A site's data stays at the site: only its worker's folder holds it.
    for site in SITES {
        for holder in SITES
            .iter()
            .map(|s| format!("{s}-agent"))
            .chain(["controller".into()])
        {
            let file = c
                .dir
                .path()
                .join(&holder)
                .join("fl")
                .join(format!("{site}.csv"));
            assert_eq!(
                file.exists(),
                holder == format!("{site}-agent"),
                "{}",
                file.display()
            );
        }
    }
    report(&format!(
        "federated: {rounds} rounds of federated averaging over {} sites took {} ms (server + {} workers on PostgreSQL and NATS)",
        SITES.len(),
        took.as_millis(),
        workers.len()
    ));
}
