//! ingest → train → model version → deploy: the lineage graph at depth 1 and 3, and an
//! OpenLineage START/COMPLETE pair in it. Also the read routes of workflows and runs.

use std::collections::BTreeSet;

use aiflow_meta::{NewJobExecution, NewWorkflowExecution, NewWorkflowVersion};
use axum::http::Method;
use serde_json::{Value, json};

use crate::{App, assert_error, both};

both!(pipeline_lineage);
both!(openlineage_namespaces_and_facets);

fn ids(g: &Value) -> BTreeSet<String> {
    g["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_str().unwrap().to_string())
        .collect()
}

fn edges(g: &Value) -> BTreeSet<(String, String)> {
    g["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["from"].as_str().unwrap().to_string(),
                e["to"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn set<const N: usize>(a: [&str; N]) -> BTreeSet<String> {
    a.iter().map(|s| s.to_string()).collect()
}

fn pairs<const N: usize>(a: [(&str, &str); N]) -> BTreeSet<(String, String)> {
    a.iter()
        .map(|(x, y)| (x.to_string(), y.to_string()))
        .collect()
}

async fn pipeline_lineage(app: App) {
    let s = &app.store;
    s.submit_workflow_version(&NewWorkflowVersion {
        name: "pipeline".into(),
        graph: Some(json!({"name": "pipeline"})),
        workflow: json!({"kind": "workflow", "name": "pipeline"}),
        ..NewWorkflowVersion::default()
    })
    .await
    .unwrap();
    s.create_workflow_execution(&NewWorkflowExecution {
        id: "e1".into(),
        workflow: "pipeline".into(),
        state: "RUNNING".into(),
        ..NewWorkflowExecution::default()
    })
    .await
    .unwrap();
    for job in ["ingest", "train", "deploy"] {
        s.create_job_execution(&NewJobExecution {
            id: format!("e1-{job}"),
            workflow_execution: Some("e1".into()),
            job: job.into(),
            attempt: 1,
            state: "SUCCEEDED".into(),
            ..NewJobExecution::default()
        })
        .await
        .unwrap();
    }
    app.ok_post("/datasets", json!({"name": "raw"})).await;
    app.ok_post(
        "/datasets/raw/versions",
        json!({"produced_by": "e1-ingest"}),
    )
    .await;
    app.ok_post("/models", json!({"name": "fraud"})).await;
    app.ok_post(
        "/models/fraud/versions",
        json!({"source_job_execution": "e1-train", "input_dataset_versions": [{"dataset": "raw", "version": 1}]}),
    )
    .await;
    let (st, b) = app
        .post(
            "/lineage/edges",
            json!({"job_execution": "e1-deploy", "inputs": ["model:fraud@1"]}),
        )
        .await;
    assert_eq!(st.as_u16(), 204, "{b}");
    let (st, b) = app
        .call(
            Method::PATCH,
            "/models/fraud/versions/1",
            Some(json!({"stage": "DEPLOYED"})),
        )
        .await;
    assert_eq!(st.as_u16(), 200, "{b}");

    let g1 = app.ok_get("/lineage?node=model:fraud@1&depth=1").await;
    assert_eq!(g1["root"], "model:fraud@1");
    assert_eq!(
        ids(&g1),
        set([
            "model:fraud@1",
            "job_execution:e1-train",
            "job_execution:e1-deploy"
        ])
    );
    assert_eq!(
        edges(&g1),
        pairs([
            ("job_execution:e1-train", "model:fraud@1"),
            ("model:fraud@1", "job_execution:e1-deploy")
        ])
    );
    let g3 = app.ok_get("/lineage?node=model:fraud@1&depth=3").await;
    assert_eq!(
        ids(&g3),
        set([
            "model:fraud@1",
            "job_execution:e1-train",
            "job_execution:e1-deploy",
            "dataset:raw@1",
            "job_execution:e1-ingest"
        ])
    );
    assert_eq!(
        edges(&g3),
        pairs([
            ("job_execution:e1-ingest", "dataset:raw@1"),
            ("dataset:raw@1", "job_execution:e1-train"),
            ("job_execution:e1-train", "model:fraud@1"),
            ("model:fraud@1", "job_execution:e1-deploy"),
        ])
    );
    let ingest = g3["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"] == "job_execution:e1-ingest")
        .unwrap();
    assert_eq!(ingest["distance"], 3);
    assert_eq!(ingest["name"], "ingest");

    // OpenLineage: a scoring run reads the model and writes scores
    let start = json!({
        "eventType": "START", "eventTime": "2026-11-25T10:00:00Z",
        "run": {"runId": "0193a1b2-0000-7000-8000-000000000001"},
        "job": {"namespace": "spark", "name": "score"},
        "inputs": [{"namespace": "aiflow", "name": "model/fraud"}],
        "producer": "https://example.invalid/spark"
    });
    let r = app.ok_post("/lineage", start).await;
    assert_eq!(r["state"], "RUNNING");
    assert_eq!(r["inputs"], json!(["model:fraud@1"]));
    let complete = json!({
        "eventType": "COMPLETE", "eventTime": "2026-11-25T10:05:00Z",
        "run": {"runId": "0193a1b2-0000-7000-8000-000000000001"},
        "job": {"namespace": "spark", "name": "score"},
        "inputs": [{"namespace": "aiflow", "name": "model/fraud"}],
        "outputs": [{"namespace": "s3://bucket", "name": "scores"}]
    });
    let r = app.ok_post("/lineage", complete).await;
    assert_eq!(r["state"], "SUCCEEDED");
    // The dataset keeps its OpenLineage namespace in its name.
    assert_eq!(r["outputs"], json!(["dataset:s3://bucket/scores@1"]));
    let run = "job_execution:0193a1b2-0000-7000-8000-000000000001";
    let g = app.ok_get("/lineage?node=model:fraud@1&depth=2").await;
    assert!(ids(&g).contains(run), "{g}");
    assert!(ids(&g).contains("dataset:s3://bucket/scores@1"), "{g}");
    assert!(edges(&g).contains(&(run.to_string(), "dataset:s3://bucket/scores@1".to_string())));
    assert!(edges(&g).contains(&("model:fraud@1".to_string(), run.to_string())));
    let scores = app
        .ok_get("/datasets/s3:%2F%2Fbucket%2Fscores/versions/1")
        .await;
    assert_eq!(
        scores["produced_by"],
        "0193a1b2-0000-7000-8000-000000000001"
    );
    assert!(
        app.store
            .all_outbox()
            .await
            .unwrap()
            .iter()
            .any(|e| e.key == "dataset/s3://bucket/scores")
    );

    let (st, b) = app
        .post(
            "/lineage",
            json!({"eventType": "EXPLODE", "eventTime": "2026-11-25T10:05:00Z",
                                  "run": {"runId": "x"}, "job": {"namespace": "n", "name": "j"}}),
        )
        .await;
    assert_error(st, &b, 422, "eventType");
    let (st, b) = app.get("/lineage?node=model:fraud@9").await;
    assert_error(st, &b, 422, "node");
    let (st, b) = app.get("/lineage?node=model:fraud@1&depth=0").await;
    assert_error(st, &b, 400, "depth");

    // read routes of workflows and runs
    let w = app.ok_get("/workflows/pipeline").await;
    assert_eq!(w["latest_version"], 1);
    let vs = app.ok_get("/workflows/pipeline/versions").await;
    assert_eq!(vs[0]["workflow_doc"]["kind"], "workflow");
    let ex = app.ok_get("/executions?workflow=pipeline").await;
    assert_eq!(ex["items"][0]["id"], "e1");
    let jobs = app.ok_get("/executions/e1/jobs").await;
    assert_eq!(jobs.as_array().unwrap().len(), 3);
    let (st, b) = app.get("/executions?cursor=bad").await;
    assert_error(st, &b, 400, "cursor");
}

/// `orders` in `postgres://a` and `orders` in `s3://b` stay two datasets; the schema and
/// documentation facets fill the dataset's schema and description; the `aiflow` namespace names
/// AI Flow's own datasets; a dataset registered under its bare name before keeps being found.
async fn openlineage_namespaces_and_facets(app: App) {
    let event = |run: &str, outputs: Value| {
        json!({
            "eventType": "COMPLETE", "eventTime": "2026-11-25T10:05:00Z",
            "run": {"runId": run}, "job": {"namespace": "spark", "name": "copy"},
            "outputs": outputs
        })
    };
    let r = app
        .ok_post(
            "/lineage",
            event(
                "r1",
                json!([
                    {"namespace": "postgres://a", "name": "orders", "facets": {
                        "schema": {"_producer": "p", "_schemaURL": "u", "fields": [
                            {"name": "id", "type": "int64"}, {"name": "total", "type": "float64"}]},
                        "documentation": {"_producer": "p", "_schemaURL": "u", "description": "Orders of shop A"}
                    }},
                    {"namespace": "s3://b/", "name": "orders"},
                    {"namespace": "aiflow", "name": "features"}
                ]),
            ),
        )
        .await;
    assert_eq!(
        r["outputs"],
        json!([
            "dataset:postgres://a/orders@1",
            "dataset:s3://b/orders@1",
            "dataset:features@1"
        ])
    );
    let a = app.ok_get("/datasets/postgres:%2F%2Fa%2Forders").await;
    assert_eq!(
        a["schema"],
        json!([{"name": "id", "type": "int64"}, {"name": "total", "type": "float64"}])
    );
    assert_eq!(a["description"], "Orders of shop A");
    assert_eq!(a["properties"]["openlineage"]["namespace"], "postgres://a");
    assert_eq!(a["properties"]["openlineage"]["name"], "orders");
    let b = app.ok_get("/datasets/s3:%2F%2Fb%2Forders").await;
    assert_eq!(b["schema"], json!([]));
    assert_ne!(a["id"], b["id"]);
    // A second event for the same namespace and name is the same dataset, a new version.
    let r = app
        .ok_post(
            "/lineage",
            event(
                "r2",
                json!([{"namespace": "postgres://a", "name": "orders"}]),
            ),
        )
        .await;
    assert_eq!(r["outputs"], json!(["dataset:postgres://a/orders@2"]));

    // Before namespaces were kept: a bare `legacy` whose latest version is `gs://c/legacy`.
    let (st, body) = app.post("/datasets", json!({"name": "legacy"})).await;
    assert_eq!(st.as_u16(), 201, "{body}");
    let (st, body) = app
        .post("/datasets/legacy/versions", json!({"uri": "gs://c/legacy"}))
        .await;
    assert_eq!(st.as_u16(), 201, "{body}");
    let r = app
        .ok_post(
            "/lineage",
            event("r3", json!([{"namespace": "gs://c", "name": "legacy"}])),
        )
        .await;
    assert_eq!(r["outputs"], json!(["dataset:legacy@2"]));
}
