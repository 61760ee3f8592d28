//! Metric points: bulk insert, history by key and step range, paging, downsampling.

use serde_json::json;

use crate::{App, assert_error, both};

both!(points_history_and_downsampling);

async fn points_history_and_downsampling(app: App) {
    app.ok_post("/models", json!({"name": "fraud"})).await;
    app.ok_post("/models/fraud/versions", json!({})).await;
    app.ok_post(
        "/metrics",
        json!({"name": "train", "kind": "model", "subject": "fraud"}),
    )
    .await;
    let points: Vec<_> = (0..2500)
        .map(|i| json!({"key": "loss", "value": 1000.0 - f64::from(i), "step": i, "model_version": 1}))
        .chain((0..10).map(|i| json!({"key": "auc", "value": 0.5, "step": i})))
        .collect();
    let w = app.ok_post("/metrics/train/points", json!(points)).await;
    assert_eq!(w["written"], 2510);
    // The keys, for a client that draws every series of a metric.
    assert_eq!(
        app.ok_get("/metrics/train/keys").await,
        json!({"auc": 10, "loss": 2500})
    );
    let (s, b) = app.get("/metrics/ghost/keys").await;
    assert_eq!(s.as_u16(), 404, "{b}");
    let h = app
        .ok_get("/metrics/train/points?key=loss&step_from=10&step_to=19")
        .await;
    let pts = h["points"].as_array().unwrap();
    assert_eq!(pts.len(), 10);
    assert_eq!(pts[0]["step"], 10);
    assert_eq!(pts[0]["value"], 990.0);
    assert_eq!(pts[0]["model_version"], 1);
    assert_eq!(h["downsampled"], false);
    // pages
    let p1 = app
        .ok_get("/metrics/train/points?key=loss&limit=2000")
        .await;
    assert_eq!(p1["points"].as_array().unwrap().len(), 2000);
    let c = p1["next_cursor"].as_str().unwrap();
    let p2 = app
        .ok_get(&format!(
            "/metrics/train/points?key=loss&limit=2000&cursor={c}"
        ))
        .await;
    assert_eq!(p2["points"].as_array().unwrap().len(), 500);
    assert_eq!(p2["points"][0]["step"], 2000);
    // downsampled
    let d = app
        .ok_get("/metrics/train/points?key=loss&max_points=100")
        .await;
    assert_eq!(d["downsampled"], true);
    let b = d["points"].as_array().unwrap();
    assert_eq!(b.len(), 100);
    assert_eq!(b[0]["count"], 25);
    assert_eq!(b[0]["max"], 1000.0);
    assert_eq!(b[0]["min"], 976.0);
    assert_eq!(b[0]["value"], 988.0);
    // few points: returned as they are
    let d = app
        .ok_get("/metrics/train/points?key=auc&max_points=100")
        .await;
    assert_eq!(d["downsampled"], false);
    assert_eq!(d["points"].as_array().unwrap().len(), 10);
    // errors, all-or-nothing
    let (s, e) = app.get("/metrics/train/points").await;
    assert_error(s, &e, 400, "key");
    let (s, e) = app
        .post(
            "/metrics/train/points",
            json!([{"key": "loss", "value": 1.0}, {"key": "loss", "value": "x"}]),
        )
        .await;
    assert_error(s, &e, 422, "[1].value");
    let (s, e) = app
        .post("/metrics/train/points", json!([{"key": "loss", "value": 1.0}, {"key": "loss", "value": 2.0, "model_version": 9}]))
        .await;
    assert_error(s, &e, 422, "points[1].model_version");
    let (s, e) = app
        .post("/metrics/train/points", json!([{"key": "", "value": 1.0}]))
        .await;
    assert_error(s, &e, 422, "points[0].key");
    let (s, e) = app.get("/metrics/train/points?key=loss&cursor=zz").await;
    assert_error(s, &e, 400, "cursor");
    assert_eq!(app.count("meta_metric_points").await, 2510);
    // values round-trip exactly (SQLite may be one ulp off at extreme exponents like 1e-300)
    let exact = [
        0.1 + 0.2,
        1e-30,
        -123_456.789_012_345_67,
        f64::MAX,
        2.0 / 3.0,
    ];
    let pts: Vec<_> = exact
        .iter()
        .enumerate()
        .map(|(i, v)| json!({"key": "exact", "value": v, "step": i}))
        .collect();
    app.ok_post("/metrics/train/points", json!(pts)).await;
    let h = app.ok_get("/metrics/train/points?key=exact").await;
    let got: Vec<f64> = h["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["value"].as_f64().unwrap())
        .collect();
    assert_eq!(got, exact);
}
