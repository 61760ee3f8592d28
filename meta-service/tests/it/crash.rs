//! Killing the process while it registers model versions never leaves a version without its
//! event nor an event without its version; the relay then publishes each event once.
//!
//! The parent test starts this test binary again as a child running `crash_child` (ignored
//! in normal runs), which registers versions, moves stages and aliases in a loop; the parent
//! kills it (SIGKILL) at pseudo-random moments, several times, then checks the database.

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use aiflow_api::meta::{ModelStage, ModelVersionUpdate, NewModel, NewModelVersion};
use aiflow_db::testing::TestDb;
use aiflow_db::{Db, DbConfig};
use aiflow_meta::Store;
use aiflow_notification::{EmbeddedBus, EmbeddedConfig, EventBus};

const ENV: &str = "AIFLOW_META_CRASH_DB";

#[tokio::test]
#[ignore = "child process of the crash tests"]
async fn crash_child() {
    let Ok(url) = std::env::var(ENV) else { return };
    let store = Store::new(Db::connect(&DbConfig::new(url)).await.unwrap());
    let _ = store
        .create_model(&NewModel {
            name: "crashy".into(),
            ..NewModel::default()
        })
        .await;
    eprintln!("child ready");
    loop {
        let v = store
            .create_model_version(
                "crashy",
                &NewModelVersion {
                    uri: Some("s3://m".into()),
                    ..NewModelVersion::default()
                },
            )
            .await
            .unwrap();
        if v.version % 3 == 0 {
            store
                .update_model_version(
                    "crashy",
                    v.version,
                    &ModelVersionUpdate {
                        stage: Some(ModelStage::Validated),
                        ..ModelVersionUpdate::default()
                    },
                )
                .await
                .unwrap();
            store
                .set_alias("crashy", "champion", v.version)
                .await
                .unwrap();
        }
    }
}

/// Cheap pseudo-random delays without a dependency.
fn jitter(seed: &mut u64, lo: u64, hi: u64) -> Duration {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    Duration::from_millis(lo + *seed % (hi - lo))
}

async fn kill_repeatedly(db: TestDb) {
    let exe = std::env::current_exe().unwrap();
    let mut seed = u64::from(std::process::id()) | 1;
    for round in 0..5 {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "crash::crash_child",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(ENV, &db.url)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        tokio::time::sleep(jitter(&mut seed, 400, 1200)).await;
        child.kill().unwrap();
        let status = child.wait().unwrap();
        assert!(!status.success(), "round {round}: child ended by itself");
    }

    let store = Store::new(db.db.clone());
    let versions: BTreeSet<String> = sqlx::query_scalar::<_, i64>(
        "SELECT v.version FROM meta_model_versions v JOIN meta_models m ON m.id = v.model_id WHERE m.name = 'crashy'",
    )
    .fetch_all(&db.db.pool)
    .await
    .unwrap()
    .into_iter()
    .map(|v| v.to_string())
    .collect();
    assert!(
        versions.len() > 5,
        "the child registered only {} versions",
        versions.len()
    );
    let outbox = store.all_outbox().await.unwrap();
    let created: Vec<String> = outbox
        .iter()
        .filter(|e| e.event_type == "MODEL_VERSION_CREATED")
        .map(|e| e.value.clone())
        .collect();
    let created_set: BTreeSet<String> = created.iter().cloned().collect();
    assert_eq!(created.len(), created_set.len(), "an event stored twice");
    assert_eq!(created_set, versions, "versions and their events differ");
    // stage changes and alias moves: one event per recorded change
    let stage_rows: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM meta_model_stage_history WHERE to_stage = 'VALIDATED'",
    )
    .fetch_one(&db.db.pool)
    .await
    .unwrap();
    let validated = outbox
        .iter()
        .filter(|e| e.event_type == "MODEL_VALIDATED")
        .count();
    assert_eq!(validated as i64, stage_rows);
    let moves: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM meta_model_alias_history")
        .fetch_one(&db.db.pool)
        .await
        .unwrap();
    let moved = outbox
        .iter()
        .filter(|e| e.event_type == "MODEL_ALIAS_MOVED")
        .count();
    assert_eq!(moved as i64, moves);
    // latest_version never runs ahead of the stored versions
    let latest: i64 =
        sqlx::query_scalar("SELECT latest_version FROM meta_models WHERE name = 'crashy'")
            .fetch_one(&db.db.pool)
            .await
            .unwrap();
    assert_eq!(latest as usize, versions.len());

    // the relay publishes every stored event exactly once, even when run twice
    let bus: Arc<dyn EventBus> = Arc::new(
        EmbeddedBus::start(db.db.clone(), EmbeddedConfig::default())
            .await
            .unwrap(),
    );
    aiflow_meta::relay_once(&store, bus.as_ref()).await.unwrap();
    sqlx::query("UPDATE meta_outbox SET sent_at = NULL")
        .execute(&db.db.pool)
        .await
        .unwrap();
    aiflow_meta::relay_once(&store, bus.as_ref()).await.unwrap();
    let events = crate::outbox::all_events(bus.as_ref()).await;
    let published: Vec<String> = events
        .iter()
        .filter(|e| e.event_type == "MODEL_VERSION_CREATED")
        .map(|e| e.value.clone())
        .collect();
    assert_eq!(published.len(), versions.len());
    assert_eq!(published.iter().cloned().collect::<BTreeSet<_>>(), versions);
    assert_eq!(events.len(), outbox.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_during_model_version_registration_sqlite() {
    kill_repeatedly(TestDb::sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_during_model_version_registration_postgres() {
    if let Some(db) = TestDb::postgres().await {
        kill_repeatedly(db).await;
    }
}
