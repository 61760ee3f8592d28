//! OpenLineage RunEvents of the server's own job attempts (`--openlineage-url`), sent to an HTTP
//! receiver inside the test that refuses its first requests (the outbox retries, nothing is
//! lost). A job that records its lineage and succeeds gives START then COMPLETE with one runId,
//! its inputs and outputs, the workflow execution as parent run; a failing job gives START then
//! FAIL. Every event is checked against the required fields and formats of the OpenLineage
//! RunEvent schema (spec 2-0-2), field by field here, as no schema file is at hand offline.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};

mod common;
use common::*;

#[derive(Clone, Default)]
struct Receiver {
    got: Arc<Mutex<Vec<Value>>>,
    refused: Arc<Mutex<u32>>,
}

async fn receive(State(r): State<Receiver>, body: axum::body::Bytes) -> StatusCode {
    {
        let mut refused = r.refused.lock().unwrap();
        if *refused < 2 {
            *refused += 1;
            return StatusCode::SERVICE_UNAVAILABLE;
        }
    }
    let v: Value = serde_json::from_slice(&body).expect("a JSON body");
    r.got.lock().unwrap().push(v);
    StatusCode::CREATED
}

fn is_uuid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.iter().map(|p| p.len()).collect::<Vec<_>>() == [8, 4, 4, 4, 12]
        && parts.iter().all(|p| {
            p.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        })
}

fn is_uri(s: &str) -> bool {
    s.split_once(':').is_some_and(|(scheme, rest)| {
        !scheme.is_empty()
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
            && !rest.is_empty()
    })
}

/// The RunEvent schema's required fields and formats (OpenLineage spec 2-0-2: `RunEvent` =
/// `BaseEvent` + `run`, `job`; `eventTime` date-time, `producer` and `schemaURL` URIs, `runId`
/// a UUID; datasets with `namespace` and `name`; facets with `_producer` and `_schemaURL`).
fn check_run_event(e: &Value) {
    let ctx = e.to_string();
    assert!(
        ["START", "RUNNING", "COMPLETE", "ABORT", "FAIL", "OTHER"]
            .contains(&e["eventType"].as_str().unwrap_or("")),
        "eventType: {ctx}"
    );
    let t = e["eventTime"].as_str().expect("eventTime");
    chrono::DateTime::parse_from_rfc3339(t).expect("eventTime is an RFC 3339 date-time");
    assert!(
        is_uri(e["producer"].as_str().unwrap_or("")),
        "producer: {ctx}"
    );
    assert!(
        is_uri(e["schemaURL"].as_str().unwrap_or("")),
        "schemaURL: {ctx}"
    );
    assert!(
        is_uuid(e["run"]["runId"].as_str().unwrap_or("")),
        "runId: {ctx}"
    );
    assert!(
        e["job"]["namespace"].is_string() && e["job"]["name"].is_string(),
        "job: {ctx}"
    );
    for side in ["inputs", "outputs"] {
        for d in e[side].as_array().expect("inputs and outputs are arrays") {
            assert!(
                d["namespace"].is_string() && d["name"].is_string(),
                "{side}: {ctx}"
            );
        }
    }
    for (name, facet) in e["run"]["facets"].as_object().expect("run facets") {
        assert!(
            is_uri(facet["_producer"].as_str().unwrap_or("")),
            "{name}._producer"
        );
        assert!(
            is_uri(facet["_schemaURL"].as_str().unwrap_or("")),
            "{name}._schemaURL"
        );
    }
    let parent = &e["run"]["facets"]["parent"];
    assert!(
        is_uuid(parent["run"]["runId"].as_str().unwrap_or("")),
        "parent: {ctx}"
    );
    assert!(parent["job"]["namespace"].is_string() && parent["job"]["name"].is_string());
}

/// The receiver: its URL, and what it got.
async fn start_receiver() -> (String, Receiver) {
    let receiver = Receiver::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = axum::Router::new()
        .route("/api/v1/lineage", axum::routing::post(receive))
        .with_state(receiver.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://127.0.0.1:{port}/api/v1/lineage"), receiver)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_attempts_are_reported_to_an_openlineage_backend() {
    let (url, receiver) = start_receiver().await;
    let dir = tempfile::tempdir().unwrap();
    let (_server, base) = embedded(
        dir.path(),
        &[
            "--openlineage-url",
            &url,
            "--openlineage-namespace",
            "ml-platform",
        ],
    );
    exercise(&base, &receiver).await;
}

/// The distributed shape: two replicas (PostgreSQL + NATS) share the outbox, a worker runs the
/// jobs; each event still reaches the backend once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_attempts_are_reported_once_by_two_replicas() {
    let Some(c) = Cluster::start("ol").await else {
        return;
    };
    let (url, receiver) = start_receiver().await;
    let args = [
        "--openlineage-url",
        url.as_str(),
        "--openlineage-namespace",
        "ml-platform",
    ];
    let (_a, a) = c.server_with("a", &args);
    let (_b, _) = c.server_with("b", &args);
    let _w = c.worker("w", &a);
    exercise(&a, &receiver).await;
}

async fn exercise(base: &str, receiver: &Receiver) {
    let http = aiflow_sdk::tls::http_client_from_env().expect("HTTP client");
    // What the job reads (from another system, through OpenLineage) and writes (an AI Flow
    // dataset).
    post(
        &http,
        &format!("{base}/api/v1/lineage"),
        &json!({"eventType": "COMPLETE", "eventTime": "2026-12-01T00:00:00Z",
                "run": {"runId": "ext-1"}, "job": {"namespace": "spark", "name": "export"},
                "outputs": [{"namespace": "s3://b", "name": "orders"}]}),
    )
    .await;
    post(
        &http,
        &format!("{base}/api/v1/datasets"),
        &json!({"name": "features"}),
    )
    .await;
    post(
        &http,
        &format!("{base}/api/v1/datasets/features/versions"),
        &json!({"uri": "file:///tmp/features"}),
    )
    .await;
    let record = "import json,os,urllib.request as u; \
        u.urlopen(u.Request(os.environ['AIFLOW_URL'] + '/api/v1/lineage/edges', method='POST', \
        headers={'Content-Type': 'application/json'}, data=json.dumps({'job_execution': \
        os.environ['AIFLOW_JOB_EXECUTION'], 'inputs': ['dataset:s3://b/orders@1'], \
        'outputs': ['dataset:features@1']}).encode()))";
    let graph = json!({
        "name": "nightly",
        "nodes": [
            {"name": "prep", "op": "transform", "job": {"command": ["python3", "-c", record]}},
            {"name": "bad", "op": "transform", "job": {"command": ["sh", "-c", "exit 3"]}}
        ],
        "control_edges": [{"to": "bad", "action": "START",
                           "condition": {"job_status": {"node": "prep", "status": "SUCCEEDED"}}}]
    });
    post(&http, &format!("{base}/api/v1/workflows"), &graph).await;
    let execution = post(
        &http,
        &format!("{base}/api/v1/workflows/nightly/executions"),
        &json!({}),
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    wait_for("the execution to end", Duration::from_secs(60), || async {
        get(&http, &format!("{base}/api/v1/executions/{execution}")).await["state"] != "RUNNING"
    })
    .await;
    wait_for(
        "four run events at the receiver",
        Duration::from_secs(30),
        || async { receiver.got.lock().unwrap().len() >= 4 },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got = receiver.got.lock().unwrap().clone();
    assert_eq!(
        *receiver.refused.lock().unwrap(),
        2,
        "the first two were refused"
    );
    assert_eq!(got.len(), 4, "retried, each once: {got:#?}");
    for e in &got {
        check_run_event(e);
        assert_eq!(e["job"]["namespace"], "ml-platform");
        assert_eq!(e["run"]["facets"]["parent"]["job"]["name"], "nightly");
    }
    let of = |job: &str| -> Vec<&Value> {
        got.iter()
            .filter(|e| e["job"]["name"] == format!("nightly.{job}"))
            .collect()
    };
    let prep = of("prep");
    assert_eq!(
        prep.iter()
            .map(|e| e["eventType"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["START", "COMPLETE"]
    );
    assert_eq!(
        prep[0]["run"]["runId"], prep[1]["run"]["runId"],
        "one runId per attempt"
    );
    assert_eq!(
        prep[1]["inputs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| (
                d["namespace"].as_str().unwrap(),
                d["name"].as_str().unwrap()
            ))
            .collect::<Vec<_>>(),
        [("s3://b", "orders")]
    );
    assert_eq!(
        prep[1]["outputs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| (
                d["namespace"].as_str().unwrap(),
                d["name"].as_str().unwrap()
            ))
            .collect::<Vec<_>>(),
        [("ml-platform", "features")]
    );
    let bad = of("bad");
    assert_eq!(
        bad.iter()
            .map(|e| e["eventType"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["START", "FAIL"]
    );
    assert_eq!(bad[0]["run"]["runId"], bad[1]["run"]["runId"]);
    assert_ne!(bad[0]["run"]["runId"], prep[0]["run"]["runId"]);
    assert_eq!(
        bad[0]["run"]["facets"]["parent"]["run"]["runId"],
        prep[0]["run"]["facets"]["parent"]["run"]["runId"],
        "one parent run: the workflow execution"
    );
}
