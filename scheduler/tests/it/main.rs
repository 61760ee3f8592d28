//! The scheduler end to end: real processes, the embedded event bus on SQLite, the meta store.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aiflow_api::{EventFilter, NewEvent, Offset};
use aiflow_db::testing::TestDb;
use aiflow_meta::Store;
use aiflow_notification::{EmbeddedBus, EmbeddedConfig, EventBus};
use aiflow_scheduler::{Scheduler, SchedulerConfig};
use serde_json::json;
use tokio::sync::watch;

struct Env {
    _db: TestDb,
    _dir: tempfile::TempDir,
    bus: Arc<dyn EventBus>,
    store: Store,
    scheduler: Scheduler,
    _shutdown: watch::Sender<bool>,
}

async fn env() -> Env {
    let db = TestDb::sqlite().await;
    let dir = tempfile::tempdir().unwrap();
    let bus: Arc<dyn EventBus> = Arc::new(
        EmbeddedBus::start(db.db.clone(), EmbeddedConfig::default())
            .await
            .unwrap(),
    );
    let store = Store::new(db.db.clone());
    let (tx, rx) = watch::channel(false);
    let (scheduler, _) = Scheduler::start(
        store.clone(),
        bus.clone(),
        SchedulerConfig {
            data_dir: dir.path().to_path_buf(),
            server_url: "http://127.0.0.1:1".into(),
            stop_grace: Duration::from_millis(500),
            aiflow_bin: None,
            max_running: aiflow_scheduler::service::DEFAULT_MAX_RUNNING,
        },
        rx,
    )
    .await
    .unwrap();
    Env {
        _db: db,
        _dir: dir,
        bus,
        store,
        scheduler,
        _shutdown: tx,
    }
}

fn sh(script: &str) -> serde_json::Value {
    json!({"command": ["sh", "-c", script]})
}

impl Env {
    async fn wait_execution(&self, id: &str, state: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let e = self.store.get_workflow_execution(id).await.unwrap();
            if e.state == state {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "execution {id} is {} not {state}",
                e.state
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until `job` has an attempt in `state`; returns the attempt number.
    async fn wait_job(&self, id: &str, job: &str, state: &str) -> i64 {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let jobs = self.store.list_job_executions(id).await.unwrap();
            if let Some(j) = jobs.iter().find(|j| j.job == job && j.state == state) {
                return j.attempt;
            }
            assert!(
                Instant::now() < deadline,
                "job {job} never reached {state}: {jobs:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `(job, state)` of every JOB_STATUS event of an execution, in offset order.
    async fn statuses(&self, id: &str) -> Vec<(String, String)> {
        let filter = EventFilter {
            event_types: vec!["JOB_STATUS".into()],
            ..EventFilter::default()
        };
        self.bus
            .list(&filter, Offset(0), 1000)
            .await
            .unwrap()
            .into_iter()
            .filter(|e| e.context.as_ref().and_then(|c| c["execution"].as_str()) == Some(id))
            .map(|e| {
                (
                    e.context.unwrap()["job"].as_str().unwrap().to_string(),
                    e.value,
                )
            })
            .collect()
    }
}

#[tokio::test]
async fn chain_by_job_status() {
    let env = env().await;
    let s = env
        .scheduler
        .submit(json!({
            "name": "chain",
            "nodes": [{"name": "a", "job": sh("echo a")}, {"name": "b", "job": sh("echo b")}, {"name": "c", "job": sh("echo c")}],
            "control_edges": [
                {"to": "b", "action": "START", "condition": {"job_status": {"node": "a", "status": "SUCCEEDED"}}},
                {"to": "c", "action": "START", "condition": {"job_status": {"node": "b", "status": "SUCCEEDED"}}}
            ]
        }))
        .await
        .unwrap();
    assert!(s.created);
    let e = env
        .scheduler
        .start_execution("chain", json!({}))
        .await
        .unwrap();
    env.wait_execution(&e.id, "SUCCEEDED").await;
    let states = env.statuses(&e.id).await;
    let done: Vec<&str> = states
        .iter()
        .filter(|(_, s)| s == "SUCCEEDED")
        .map(|(j, _)| j.as_str())
        .collect();
    assert_eq!(done, ["a", "b", "c"]);
    let a: Vec<&str> = states
        .iter()
        .filter(|(j, _)| j == "a")
        .map(|(_, s)| s.as_str())
        .collect();
    assert_eq!(a, ["QUEUED", "RUNNING", "SUCCEEDED"]);
    let rows = env.store.list_job_executions(&e.id).await.unwrap();
    assert_eq!(rows.len(), 3);
    assert!(rows.iter().all(|r| r.state == "SUCCEEDED"), "{rows:?}");
    let log = std::fs::read_to_string(env.scheduler.log_path(&e.id, "b", 1)).unwrap();
    assert!(log.contains("\nb\n"), "{log}");
}

#[tokio::test]
async fn external_event_starts_a_job_and_why_explains_it() {
    let env = env().await;
    env.scheduler
        .submit(json!({
            "name": "on_data",
            "nodes": [{"name": "train", "job": sh("echo \"$AIFLOW_EVENT\"")}],
            "control_edges": [{"to": "train", "action": "START",
                "condition": {"event": {"key": "dataset/*", "event_type": "DATASET_VERSION_CREATED"}}}]
        }))
        .await
        .unwrap();
    let e = env
        .scheduler
        .start_execution("on_data", json!({}))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        env.store
            .list_job_executions(&e.id)
            .await
            .unwrap()
            .is_empty(),
        "waits for the event"
    );
    env.bus
        .publish(NewEvent::new("dataset/raw", "7").event_type("DATASET_VERSION_CREATED"))
        .await
        .unwrap();
    env.wait_job(&e.id, "train", "SUCCEEDED").await;
    let log = std::fs::read_to_string(env.scheduler.log_path(&e.id, "train", 1)).unwrap();
    assert!(
        log.contains("dataset/raw"),
        "AIFLOW_EVENT carries the event: {log}"
    );
    let e2 = env.store.get_workflow_execution(&e.id).await.unwrap();
    assert_eq!(
        e2.state, "RUNNING",
        "pure event rules keep the execution running"
    );
    env.scheduler.stop_execution(&e.id).await.unwrap();
    env.wait_execution(&e.id, "STOPPED").await;
}

#[tokio::test]
async fn restart_of_a_streaming_job_on_an_event() {
    let env = env().await;
    env.scheduler
        .submit(json!({
            "name": "serve",
            "nodes": [{"name": "predictor", "job": {"command": ["sh", "-c", "echo serving $AIFLOW_ATTEMPT; exec sleep 60"], "streaming": true}}],
            "control_edges": [{"to": "predictor", "action": "RESTART",
                "condition": {"event": {"key": "model/fraud", "event_type": "MODEL_DEPLOYED"}}}]
        }))
        .await
        .unwrap();
    let e = env
        .scheduler
        .start_execution("serve", json!({}))
        .await
        .unwrap();
    env.wait_job(&e.id, "predictor", "RUNNING").await;
    env.bus
        .publish(NewEvent::new("model/fraud", "2").event_type("MODEL_DEPLOYED"))
        .await
        .unwrap();
    env.wait_job(&e.id, "predictor", "STOPPED").await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let rows = env.store.list_job_executions(&e.id).await.unwrap();
        if rows.iter().any(|r| r.attempt == 2 && r.state == "RUNNING") {
            break;
        }
        assert!(Instant::now() < deadline, "no second attempt: {rows:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    env.scheduler.stop_execution(&e.id).await.unwrap();
    env.wait_execution(&e.id, "STOPPED").await;
}

#[tokio::test]
async fn retry_then_success_and_a_missing_program_fails_cleanly() {
    let env = env().await;
    let marker = env._dir.path().join("tried");
    env.scheduler
        .submit(json!({
            "name": "flaky",
            "nodes": [
                {"name": "flaky", "job": {"command": ["sh", "-c", format!("if [ -f {0} ]; then echo ok; else touch {0}; exit 1; fi", marker.display())], "retries": 2, "retry_backoff_s": 0}},
                {"name": "broken", "job": {"command": ["/no/such/aiflow-program"]}}
            ]
        }))
        .await
        .unwrap();
    let e = env
        .scheduler
        .start_execution("flaky", json!({}))
        .await
        .unwrap();
    env.wait_execution(&e.id, "FAILED").await;
    let rows = env.store.list_job_executions(&e.id).await.unwrap();
    let flaky: Vec<(i64, &str)> = rows
        .iter()
        .filter(|r| r.job == "flaky")
        .map(|r| (r.attempt, r.state.as_str()))
        .collect();
    assert!(flaky.contains(&(2, "SUCCEEDED")), "{flaky:?}");
    assert!(
        rows.iter()
            .any(|r| r.job == "broken" && r.state == "FAILED")
    );
    let log = std::fs::read_to_string(env.scheduler.log_path(&e.id, "broken", 1)).unwrap();
    assert!(log.contains("cannot start"), "{log}");
}

#[tokio::test]
async fn submit_checks_documents_and_skips_unchanged_ones() {
    let env = env().await;
    let doc = json!({"name": "w", "nodes": [{"name": "a", "job": sh("true")}]});
    let first = env.scheduler.submit(doc.clone()).await.unwrap();
    let again = env.scheduler.submit(doc).await.unwrap();
    assert!(first.created && !again.created);
    assert_eq!(first.version, again.version);
    let bad = env
        .scheduler
        .submit(json!({"name": "w", "nodes": [{"name": "a", "job": sh("true")}],
            "control_edges": [{"to": "ghost", "action": "START", "condition": {"event": {"key": "x"}}}],
            "triggers": [{"cron": "nope"}]}))
        .await
        .unwrap_err();
    let text = bad.to_string();
    assert!(
        text.contains("control_edges[0].to") && text.contains("triggers[0].cron"),
        "{text}"
    );
    assert_eq!(
        env.store.get_workflow("w").await.unwrap().latest_version,
        1,
        "nothing stored"
    );
}

#[tokio::test]
async fn interval_trigger_starts_executions() {
    let env = env().await;
    env.scheduler
        .submit(json!({
            "name": "every_second",
            "nodes": [{"name": "tick", "job": sh("echo tick")}],
            "triggers": [{"interval_s": 1}]
        }))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let page = env
            .store
            .list_workflow_executions(&aiflow_api::meta::ExecutionQuery {
                workflow: Some("every_second".into()),
                ..Default::default()
            })
            .await
            .unwrap();
        let done = page.items.iter().filter(|e| e.state == "SUCCEEDED").count();
        if done >= 2 {
            let trigger = page.items[0].trigger.clone().unwrap();
            assert_eq!(trigger["type"], "time", "{trigger}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "interval trigger did not run twice: {page:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Paused workflows' triggers stop.
    env.store
        .set_workflow_paused("every_second", true)
        .await
        .unwrap();
    env.scheduler.reload().await;
}

#[tokio::test]
async fn event_trigger_starts_an_execution_with_the_event() {
    let env = env().await;
    env.scheduler
        .submit(json!({
            "name": "on_landing",
            "nodes": [{"name": "load", "job": sh("echo \"$AIFLOW_EVENT\"")}],
            "triggers": [{"event": {"key": "dataset/raw/*"}}]
        }))
        .await
        .unwrap();
    env.bus
        .publish(NewEvent::new("dataset/raw/2026-11-25", "v1"))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    let id = loop {
        let page = env
            .store
            .list_workflow_executions(&aiflow_api::meta::ExecutionQuery {
                workflow: Some("on_landing".into()),
                ..Default::default()
            })
            .await
            .unwrap();
        if let Some(e) = page.items.iter().find(|e| e.state == "SUCCEEDED") {
            break e.id.clone();
        }
        assert!(
            Instant::now() < deadline,
            "event trigger did not start: {page:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let log = std::fs::read_to_string(env.scheduler.log_path(&id, "load", 1)).unwrap();
    assert!(log.contains("dataset/raw/2026-11-25"), "{log}");
}

#[tokio::test]
async fn max_concurrent_jobs_queues_the_rest() {
    let env = env().await;
    env.scheduler
        .submit(json!({
            "name": "one_at_a_time",
            "max_concurrent_jobs": 1,
            "nodes": [
                {"name": "a", "job": sh("sleep 0.2")},
                {"name": "b", "job": sh("sleep 0.2")},
                {"name": "c", "job": sh("sleep 0.2")}
            ]
        }))
        .await
        .unwrap();
    let e = env
        .scheduler
        .start_execution("one_at_a_time", json!({}))
        .await
        .unwrap();
    env.wait_execution(&e.id, "SUCCEEDED").await;
    let mut spans: Vec<(chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>)> = env
        .store
        .list_job_executions(&e.id)
        .await
        .unwrap()
        .iter()
        .map(|j| (j.started_at.unwrap(), j.ended_at.unwrap()))
        .collect();
    spans.sort();
    assert_eq!(spans.len(), 3);
    for w in spans.windows(2) {
        assert!(w[0].1 <= w[1].0, "jobs overlapped: {spans:?}");
    }
}

#[tokio::test]
async fn executions_left_running_by_a_dead_scheduler_are_marked_lost() {
    let env = env().await;
    env.scheduler
        .submit(json!({"name": "long", "nodes": [{"name": "a", "job": sh("sleep 30")}]}))
        .await
        .unwrap();
    let e = env
        .scheduler
        .start_execution("long", json!({}))
        .await
        .unwrap();
    env.wait_job(&e.id, "a", "RUNNING").await;
    // A second scheduler on the same database: the first one's execution is not its own.
    let (_tx, rx) = watch::channel(false);
    let _second = Scheduler::start(
        env.store.clone(),
        env.bus.clone(),
        SchedulerConfig {
            data_dir: env._dir.path().to_path_buf(),
            server_url: "http://127.0.0.1:1".into(),
            stop_grace: Duration::from_millis(200),
            aiflow_bin: None,
            max_running: 4,
        },
        rx,
    )
    .await
    .unwrap();
    let info = env.store.get_workflow_execution(&e.id).await.unwrap();
    assert_eq!(info.state, "FAILED");
    let jobs = env.store.list_job_executions(&e.id).await.unwrap();
    assert!(jobs.iter().all(|j| j.state == "FAILED"), "{jobs:?}");
    env.scheduler.stop_execution(&e.id).await.ok();
}
