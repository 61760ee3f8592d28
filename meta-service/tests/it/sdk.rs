//! The SDK's typed client against a real server socket.

use std::net::SocketAddr;

use aiflow_api::PageQuery;
use aiflow_api::meta::*;
use aiflow_db::testing::TestDb;
use aiflow_meta::Store;
use aiflow_sdk::Client;
use utoipa_axum::router::OpenApiRouter;

/// Serves the meta routes on a free local port.
pub(crate) async fn serve(store: Store, addr: &str) -> SocketAddr {
    let (router, api) = OpenApiRouter::with_openapi(aiflow_meta::base_openapi())
        .nest("/api/v1", aiflow_meta::routes(store.clone()))
        .nest("/api/v1", aiflow_meta::run_routes(store))
        .split_for_parts();
    let app = router.merge(aiflow_meta::docs_router(api));
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_client_round_trip() {
    let db = TestDb::sqlite().await;
    let addr = serve(Store::new(db.db.clone()), "127.0.0.1:0").await;
    let c = Client::new(format!("http://{addr}"));
    c.create_project(&NewProject {
        name: "demo".into(),
        ..NewProject::default()
    })
    .await
    .unwrap();
    let mut tags = Tags::new();
    tags.insert("team".into(), "risk".into());
    c.create_dataset(&NewDataset {
        name: "raw".into(),
        project: Some("demo".into()),
        tags: tags.clone(),
        ..NewDataset::default()
    })
    .await
    .unwrap();
    let dv = c
        .create_dataset_version(
            "raw",
            &NewDatasetVersion {
                row_count: Some(3),
                ..NewDatasetVersion::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(dv.version, 1);
    let list = c
        .list_datasets(&ListQuery {
            tags: Some("team=risk".into()),
            project: Some("demo".into()),
            ..ListQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(list.items.len(), 1);
    c.create_model(&NewModel {
        name: "fraud".into(),
        ..NewModel::default()
    })
    .await
    .unwrap();
    let v = c
        .create_model_version(
            "fraud",
            &NewModelVersion {
                input_dataset_versions: vec![DatasetVersionRef {
                    dataset: "raw".into(),
                    version: 1,
                }],
                ..NewModelVersion::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(v.version, 1);
    let v = c
        .promote_model_version("fraud", 1, ModelStage::Deployed, Some("ok".into()))
        .await
        .unwrap();
    assert_eq!(v.stage, ModelStage::Deployed);
    c.set_alias("fraud", "production", 1).await.unwrap();
    assert_eq!(
        c.get_alias("fraud", "production", None)
            .await
            .unwrap()
            .version,
        1
    );
    assert_eq!(
        c.get_alias("fraud", "production", Some(chrono::Utc::now()))
            .await
            .unwrap()
            .version,
        1
    );
    assert_eq!(
        c.alias_history("fraud", "production").await.unwrap().len(),
        1
    );
    assert_eq!(c.stage_history("fraud", 1).await.unwrap().len(), 2);
    let page = c
        .list_model_versions("fraud", Some(ModelStage::Deployed), &PageQuery::default())
        .await
        .unwrap();
    assert_eq!(page.items.len(), 1);
    c.create_metric(&NewMetric {
        name: "eval".into(),
        kind: MetricKind::Model,
        subject: Some("fraud".into()),
        project: None,
        description: None,
        properties: None,
        tags: Tags::new(),
    })
    .await
    .unwrap();
    let pts: Vec<MetricPoint> = (0..50i32)
        .map(|i| MetricPoint {
            key: "auc".into(),
            value: f64::from(i),
            step: i64::from(i),
            timestamp: None,
            model_version: Some(1),
            job_execution: None,
        })
        .collect();
    assert_eq!(c.log_points("eval", &pts).await.unwrap().written, 50);
    let s = c
        .read_points(
            "eval",
            &PointsQuery {
                key: Some("auc".into()),
                max_points: Some(5),
                ..PointsQuery::default()
            },
        )
        .await
        .unwrap();
    assert!(s.downsampled);
    assert_eq!(s.points.len(), 5);
    c.create_artifact(&NewArtifact {
        name: "w".into(),
        uri: "file:///w".into(),
        ..NewArtifact::default()
    })
    .await
    .unwrap();
    c.delete_artifact("w").await.unwrap();
    let g = c.lineage("model:fraud@1", 1).await.unwrap();
    assert_eq!(g.nodes.len(), 2);
    let e = c.get_model("nope").await.unwrap_err();
    assert_eq!(e.status(), Some(404));
    let e = c
        .list_models(&ListQuery {
            cursor: Some("bad".into()),
            ..ListQuery::default()
        })
        .await
        .unwrap_err();
    match e {
        aiflow_sdk::Error::Api { status, error, .. } => {
            assert_eq!(status, 400);
            assert_eq!(error.field.as_deref(), Some("cursor"));
        }
        other => panic!("{other}"),
    }
    // docs are served from the binary
    let html = http_get(addr, "/docs/").await;
    assert!(html.starts_with("HTTP/1.1 200"), "{html}");
    assert!(html.contains("swagger"));
}

async fn http_get(addr: SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

/// `AIFLOW_META_SERVE=127.0.0.1:18080 cargo test -p aiflow-meta --test it serve_for_manual_use -- --ignored`:
/// a meta server for trying the CLI by hand (stops after 120 s).
#[tokio::test]
#[ignore = "manual use only"]
async fn serve_for_manual_use() {
    let Ok(addr) = std::env::var("AIFLOW_META_SERVE") else {
        return;
    };
    let db = TestDb::sqlite().await;
    let addr = serve(Store::new(db.db.clone()), &addr).await;
    eprintln!("serving the meta routes at http://{addr}");
    tokio::time::sleep(std::time::Duration::from_secs(120)).await;
}
