//! Create, get, list (pagination and filters), update and delete of every named thing.

use axum::http::{Method, StatusCode};
use serde_json::json;

use crate::{App, assert_error, both};

both!(
    every_other_route,
    projects_crud,
    datasets_crud,
    metrics_and_artifacts_crud,
    list_filters_and_pages,
    name_reuse_after_delete
);

async fn projects_crud(app: App) {
    let p = app
        .ok_post("/projects", json!({"name": "demo", "description": "d", "properties": {"a": 1}, "tags": {"team": "risk"}}))
        .await;
    assert_eq!(p["name"], "demo");
    assert_eq!(p["properties"]["a"], 1);
    assert_eq!(p["tags"]["team"], "risk");
    let got = app.ok_get("/projects/demo").await;
    assert_eq!(got["id"], p["id"]);
    let (s, u) = app
        .call(
            Method::PATCH,
            "/projects/demo",
            Some(json!({"description": "new", "tags": {"team": "ml"}})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{u}");
    assert_eq!(u["description"], "new");
    assert_eq!(u["tags"], json!({"team": "ml"}));
    let list = app.ok_get("/projects?tags=team=ml").await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    let list = app.ok_get("/projects?tags=team=risk").await;
    assert_eq!(list["items"].as_array().unwrap().len(), 0);
    let (s, _) = app.call(Method::DELETE, "/projects/demo", None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, b) = app.get("/projects/demo").await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{b}");
    assert_eq!(b["error"]["code"], "not_found");
}

async fn datasets_crud(app: App) {
    app.ok_post("/projects", json!({"name": "demo"})).await;
    let d = app
        .ok_post(
            "/datasets",
            json!({"name": "raw", "project": "demo", "uri": "s3://b/raw", "format": "parquet",
                   "schema": [{"name": "id", "type": "int64"}, {"name": "amount", "type": "float64"}],
                   "kind": "stream", "tags": {"pii": "no"}}),
        )
        .await;
    assert_eq!(d["project"], "demo");
    assert_eq!(d["kind"], "stream");
    assert_eq!(d["schema"][1]["type"], "float64");
    assert_eq!(d["latest_version"], 0);
    let (s, u) = app
        .call(
            Method::PATCH,
            "/datasets/raw",
            Some(json!({"format": "csv", "kind": "batch"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{u}");
    assert_eq!(u["format"], "csv");
    assert_eq!(u["uri"], "s3://b/raw");
    // versions
    let v1 = app
        .ok_post(
            "/datasets/raw/versions",
            json!({"uri": "s3://b/raw/1", "row_count": 10}),
        )
        .await;
    assert_eq!(v1["version"], 1);
    let v2 = app
        .ok_post("/datasets/raw/versions", json!({"uri": "s3://b/raw/2"}))
        .await;
    assert_eq!(v2["version"], 2);
    assert_eq!(app.ok_get("/datasets/raw").await["latest_version"], 2);
    let got = app.ok_get("/datasets/raw/versions/1").await;
    assert_eq!(got["row_count"], 10);
    let page = app.ok_get("/datasets/raw/versions?limit=1").await;
    assert_eq!(page["items"][0]["version"], 1);
    let cursor = page["next_cursor"].as_str().unwrap().to_string();
    let page = app
        .ok_get(&format!("/datasets/raw/versions?limit=1&cursor={cursor}"))
        .await;
    assert_eq!(page["items"][0]["version"], 2);
    assert!(page["next_cursor"].is_null());
    // each version announced in the outbox
    let events = app.store.all_outbox().await.unwrap();
    assert_eq!(events.len(), 2);
    assert_eq!(events[0].key, "dataset/raw");
    assert_eq!(events[0].event_type, "DATASET_VERSION_CREATED");
    assert_eq!(events[1].value, "2");
    let (s, b) = app.get("/datasets/raw/versions/9").await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{b}");
    let (s, b) = app.get("/datasets/raw/versions/x").await;
    assert_error(s, &b, 400, "version");
}

async fn metrics_and_artifacts_crud(app: App) {
    app.ok_post("/models", json!({"name": "fraud"})).await;
    let m = app
        .ok_post(
            "/metrics",
            json!({"name": "fraud_eval", "kind": "model", "subject": "fraud"}),
        )
        .await;
    assert_eq!(m["kind"], "model");
    let (s, u) = app
        .call(
            Method::PATCH,
            "/metrics/fraud_eval",
            Some(json!({"description": "eval"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{u}");
    let sha = "a".repeat(64);
    let a = app
        .ok_post("/artifacts", json!({"name": "weights", "uri": "file:///w.bin", "kind": "model_file", "sha256": sha, "size": 123}))
        .await;
    assert_eq!(a["size"], 123);
    let (s, u) = app
        .call(
            Method::PATCH,
            "/artifacts/weights",
            Some(json!({"size": 124})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{u}");
    assert_eq!(u["size"], 124);
    assert_eq!(
        app.ok_get("/artifacts").await["items"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        app.ok_get("/metrics").await["items"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let (s, _) = app.call(Method::DELETE, "/artifacts/weights", None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = app.call(Method::DELETE, "/metrics/fraud_eval", None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = app.call(Method::DELETE, "/metrics/fraud_eval", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

async fn list_filters_and_pages(app: App) {
    app.ok_post("/projects", json!({"name": "a"})).await;
    app.ok_post("/projects", json!({"name": "b"})).await;
    for i in 0..5 {
        let project = if i % 2 == 0 { "a" } else { "b" };
        let env = if i < 3 { "prod" } else { "dev" };
        app.ok_post(
            "/models",
            json!({"name": format!("m{i}"), "project": project, "tags": {"env": env, "team": "risk"}}),
        )
        .await;
    }
    app.ok_post("/models", json!({"name": "other"})).await;
    let names = |v: &serde_json::Value| -> Vec<String> {
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        names(&app.ok_get("/models?project=a").await),
        ["m0", "m2", "m4"]
    );
    assert_eq!(names(&app.ok_get("/models?prefix=m").await).len(), 5);
    assert_eq!(names(&app.ok_get("/models?prefix=M").await).len(), 0);
    assert_eq!(
        names(&app.ok_get("/models?tags=env%3Dprod%26team%3Drisk").await),
        ["m0", "m1", "m2"]
    );
    assert_eq!(
        names(&app.ok_get("/models?tags=env=dev,team=risk").await),
        ["m3", "m4"]
    );
    // a whole tag URI
    assert_eq!(
        names(&app.ok_get("/models?tags=m3%3Fenv%3Ddev").await),
        ["m3"]
    );
    assert_eq!(
        names(&app.ok_get("/models?project=a&tags=env=prod").await),
        ["m0", "m2"]
    );
    // time range
    let all = app.ok_get("/models").await;
    assert_eq!(names(&all).len(), 6);
    let t = all["items"][3]["created_at"].as_str().unwrap().to_string();
    let t_enc = t.replace('+', "%2B");
    assert_eq!(
        names(&app.ok_get(&format!("/models?created_after={t_enc}")).await),
        ["m3", "m4", "other"]
    );
    assert_eq!(
        names(&app.ok_get(&format!("/models?created_before={t_enc}")).await),
        ["m0", "m1", "m2"]
    );
    // pages
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/models?limit=2&cursor={c}"),
            None => "/models?limit=2".to_string(),
        };
        let page = app.ok_get(&path).await;
        seen.extend(names(&page));
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(seen, ["m0", "m1", "m2", "m3", "m4", "other"]);
}

async fn name_reuse_after_delete(app: App) {
    let first = app.ok_post("/datasets", json!({"name": "raw"})).await;
    app.ok_post("/datasets/raw/versions", json!({})).await;
    let (s, b) = app.post("/datasets", json!({"name": "raw"})).await;
    assert_error(s, &b, 409, "name");
    let (s, _) = app.call(Method::DELETE, "/datasets/raw", None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let second = app.ok_post("/datasets", json!({"name": "raw"})).await;
    assert_ne!(first["id"], second["id"]);
    assert_eq!(second["latest_version"], 0);
    let v = app.ok_post("/datasets/raw/versions", json!({})).await;
    assert_eq!(v["version"], 1);
}

/// Routes not exercised elsewhere: model update and delete, metric and artifact get, workflow
/// list, execution get.
async fn every_other_route(app: App) {
    app.ok_post("/models", json!({"name": "m", "tags": {"a": "1"}}))
        .await;
    app.ok_post("/models/m/versions", json!({})).await;
    let (s, b) = app
        .call(
            Method::PATCH,
            "/models/m",
            Some(json!({"description": "d", "properties": {"x": true}})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["description"], "d");
    assert_eq!(b["tags"]["a"], "1");
    let (s, _) = app.call(Method::DELETE, "/models/m", None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = app.get("/models/m/versions/1").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // the name is free again; numbering starts over
    app.ok_post("/models", json!({"name": "m"})).await;
    assert_eq!(
        app.ok_post("/models/m/versions", json!({})).await["version"],
        1
    );
    let (s, b) = app
        .call(
            Method::PATCH,
            "/models/ghost",
            Some(json!({"description": "d"})),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{b}");

    app.ok_post(
        "/metrics",
        json!({"name": "loss", "kind": "job", "subject": "train"}),
    )
    .await;
    assert_eq!(app.ok_get("/metrics/loss").await["subject"], "train");
    app.ok_post("/artifacts", json!({"name": "w", "uri": "file:///w"}))
        .await;
    assert_eq!(app.ok_get("/artifacts/w").await["uri"], "file:///w");
    let (s, _) = app.get("/artifacts/ghost").await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    app.store
        .submit_workflow_version(&aiflow_meta::NewWorkflowVersion {
            name: "wf".into(),
            workflow: json!({"kind": "workflow"}),
            ..Default::default()
        })
        .await
        .unwrap();
    app.store
        .submit_workflow_version(&aiflow_meta::NewWorkflowVersion {
            name: "wf".into(),
            workflow: json!({"kind": "workflow", "v": 2}),
            ..Default::default()
        })
        .await
        .unwrap();
    let list = app.ok_get("/workflows").await;
    assert_eq!(list["items"][0]["latest_version"], 2);
    let v1 = app.ok_get("/workflows/wf/versions/1").await;
    assert_eq!(v1["version"], 1);
    assert_eq!(v1["workflow_doc"], json!({"kind": "workflow"}));
    let (s, b) = app.get("/workflows/wf/versions/0").await;
    assert_error(s, &b, 400, "version");
    let (s, _) = app.get("/workflows/wf/versions/3").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    app.store
        .create_workflow_execution(&aiflow_meta::NewWorkflowExecution {
            id: "x1".into(),
            workflow: "wf".into(),
            state: "RUNNING".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    app.store
        .set_workflow_execution_state("x1", "SUCCEEDED", None, Some(chrono::Utc::now()))
        .await
        .unwrap();
    let e = app.ok_get("/executions/x1").await;
    assert_eq!(e["state"], "SUCCEEDED");
    assert_eq!(e["workflow_version"], 2);
    assert!(e["ended_at"].is_string());
    assert_eq!(
        app.ok_get("/executions?state=SUCCEEDED").await["items"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let (s, _) = app.get("/executions/ghost").await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // Newest first, page by page.
    for id in ["x2", "x3"] {
        app.store
            .create_workflow_execution(&aiflow_meta::NewWorkflowExecution {
                id: id.into(),
                workflow: "wf".into(),
                state: "RUNNING".into(),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    let ids = |page: &serde_json::Value| -> Vec<String> {
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        ids(&app.ok_get("/executions?workflow=wf").await),
        ["x1", "x2", "x3"]
    );
    let p1 = app
        .ok_get("/executions?workflow=wf&order=desc&limit=2")
        .await;
    assert_eq!(ids(&p1), ["x3", "x2"]);
    let cursor = p1["next_cursor"].as_str().unwrap();
    let p2 = app
        .ok_get(&format!(
            "/executions?workflow=wf&order=desc&limit=2&cursor={cursor}"
        ))
        .await;
    assert_eq!(ids(&p2), ["x1"]);
    assert!(p2["next_cursor"].is_null());
    let (s, b) = app.get("/executions?order=sideways").await;
    assert_error(s, &b, 400, "order");

    // A job execution by id (what a lineage graph names).
    app.store
        .create_job_execution(&aiflow_meta::NewJobExecution {
            id: "x3-a".into(),
            workflow_execution: Some("x3".into()),
            job: "a".into(),
            attempt: 1,
            state: "RUNNING".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let j = app.ok_get("/job_executions/x3-a").await;
    assert_eq!(j["workflow_execution"], "x3");
    assert_eq!(j["job"], "a");
    let (s, _) = app.get("/job_executions/ghost").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}
