//! Model versions, stages with history, aliases with history, and their events.

use axum::http::{Method, StatusCode};
use serde_json::json;

use crate::{App, both};

both!(versions_stages_aliases);

async fn versions_stages_aliases(app: App) {
    app.ok_post("/datasets", json!({"name": "raw"})).await;
    app.ok_post("/datasets/raw/versions", json!({"uri": "s3://raw/1"}))
        .await;
    app.ok_post(
        "/models",
        json!({"name": "fraud", "tags": {"team": "risk"}}),
    )
    .await;
    let v1 = app
        .ok_post(
            "/models/fraud/versions",
            json!({"uri": "s3://m/1", "status": "READY", "input_dataset_versions": [{"dataset": "raw", "version": 1}]}),
        )
        .await;
    assert_eq!(v1["version"], 1);
    assert_eq!(v1["stage"], "GENERATED");
    assert_eq!(v1["input_dataset_versions"][0]["dataset"], "raw");
    let v2 = app
        .ok_post("/models/fraud/versions", json!({"uri": "s3://m/2"}))
        .await;
    assert_eq!(v2["version"], 2);
    assert_eq!(v2["status"], "PENDING");

    // stages
    for stage in ["VALIDATED", "DEPLOYED"] {
        let (s, b) = app
            .call(
                Method::PATCH,
                "/models/fraud/versions/1",
                Some(json!({"stage": stage, "reason": "auc ok"})),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{b}");
        assert_eq!(b["stage"], stage);
    }
    let hist = app.ok_get("/models/fraud/versions/1/stages").await;
    let stages: Vec<&str> = hist
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["to_stage"].as_str().unwrap())
        .collect();
    assert_eq!(stages, ["GENERATED", "VALIDATED", "DEPLOYED"]);
    assert_eq!(hist[2]["from_stage"], "VALIDATED");
    let deployed = app.ok_get("/models/fraud/versions?stage=DEPLOYED").await;
    assert_eq!(deployed["items"].as_array().unwrap().len(), 1);

    // aliases
    let (s, a) = app
        .call(
            Method::PUT,
            "/models/fraud/aliases/production",
            Some(json!({"version": 1})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{a}");
    assert_eq!(a["version"], 1);
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let between = chrono::Utc::now();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let (s, a) = app
        .call(
            Method::PUT,
            "/models/fraud/aliases/production",
            Some(json!({"version": 2})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{a}");
    // setting it again to the same version changes nothing
    app.call(
        Method::PUT,
        "/models/fraud/aliases/production",
        Some(json!({"version": 2})),
    )
    .await;
    assert_eq!(
        app.ok_get("/models/fraud/aliases/production").await["version"],
        2
    );
    let at = between.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    assert_eq!(
        app.ok_get(&format!("/models/fraud/aliases/production?at={at}"))
            .await["version"],
        1
    );
    let (s, _) = app
        .get("/models/fraud/aliases/production?at=2000-01-01T00:00:00Z")
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let hist = app.ok_get("/models/fraud/aliases/production/history").await;
    assert_eq!(hist.as_array().unwrap().len(), 2);
    assert_eq!(hist[1]["from_version"], 1);
    assert_eq!(hist[1]["to_version"], 2);
    let m = app.ok_get("/models/fraud").await;
    assert_eq!(m["aliases"]["production"], 2);
    assert_eq!(m["latest_version"], 2);
    assert_eq!(
        app.ok_get("/models/fraud/versions/2").await["aliases"],
        json!(["production"])
    );
    let (s, _) = app
        .call(Method::DELETE, "/models/fraud/aliases/production", None)
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = app.get("/models/fraud/aliases/production").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(
        app.ok_get("/models/fraud/aliases/production/history")
            .await
            .as_array()
            .unwrap()
            .len(),
        3
    );

    // events, in order, in the outbox
    let events: Vec<(String, String, String)> = app
        .store
        .all_outbox()
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.key == "model/fraud")
        .map(|e| (e.event_type, e.value, e.namespace))
        .collect();
    let types: Vec<&str> = events.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(
        types,
        [
            "MODEL_VERSION_CREATED",
            "MODEL_VERSION_CREATED",
            "MODEL_VALIDATED",
            "MODEL_DEPLOYED",
            "MODEL_ALIAS_MOVED",
            "MODEL_ALIAS_MOVED",
            "MODEL_ALIAS_MOVED"
        ]
    );
    assert_eq!(events[1].1, "2");
    assert_eq!(events[3].1, "1");
    assert_eq!(events[5].1, "2");

    // paging versions
    let page = app.ok_get("/models/fraud/versions?limit=1").await;
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    assert!(page["next_cursor"].is_string());
}
