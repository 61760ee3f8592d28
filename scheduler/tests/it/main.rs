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
    dir: tempfile::TempDir,
    bus: Arc<dyn EventBus>,
    store: Store,
    scheduler: Scheduler,
    shutdown: watch::Sender<bool>,
    handle: tokio::task::JoinHandle<()>,
}

async fn start(
    store: &Store,
    bus: &Arc<dyn EventBus>,
    dir: &std::path::Path,
) -> (Scheduler, watch::Sender<bool>, tokio::task::JoinHandle<()>) {
    let (tx, rx) = watch::channel(false);
    let (scheduler, handle) = Scheduler::start(
        store.clone(),
        bus.clone(),
        SchedulerConfig {
            data_dir: dir.to_path_buf(),
            server_url: "http://127.0.0.1:1".into(),
            stop_grace: Duration::from_millis(500),
            aiflow_bin: None,
            max_running: aiflow_scheduler::service::DEFAULT_MAX_RUNNING,
            node: "test".into(),
            fabric: None,
            remote: false,
            job_tokens: None,
            job_token_ttl: aiflow_scheduler::service::DEFAULT_JOB_TOKEN_TTL,
            log_max_bytes: None,
            supervisor: None,
            ca_cert: None,
            docker_host: None,
            container_network: None,
            gpus: None,
            job_env_passthrough: Vec::new(),
        },
        rx,
    )
    .await
    .unwrap();
    (scheduler, tx, handle)
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
    let (scheduler, shutdown, handle) = start(&store, &bus, dir.path()).await;
    Env {
        _db: db,
        dir,
        bus,
        store,
        scheduler,
        shutdown,
        handle,
    }
}

fn sh(script: &str) -> serde_json::Value {
    json!({"command": ["sh", "-c", script]})
}

impl Env {
    /// Kills the scheduler loop where it is (as a crash would: nothing more is committed),
    /// then starts a new one on the same database and bus.
    async fn crash_and_restart(&mut self) {
        self.handle.abort();
        let _ = (&mut self.handle).await;
        let (scheduler, shutdown, handle) = start(&self.store, &self.bus, self.dir.path()).await;
        self.scheduler = scheduler;
        self.shutdown = shutdown;
        self.handle = handle;
    }

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
    let marker = env.dir.path().join("tried");
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
async fn a_restarted_scheduler_resumes_its_executions() {
    let mut env = env().await;
    let pid_file = env.dir.path().join("a.pid");
    // `a` hangs in its first attempt and succeeds in its second; `b` follows `a`.
    let script = format!(
        "if [ \"$AIFLOW_ATTEMPT\" = 1 ]; then echo $$ > {}; exec sleep 60; fi",
        pid_file.display()
    );
    env.scheduler
        .submit(json!({
            "name": "resumable",
            "nodes": [
                {"name": "a", "job": {"command": ["sh", "-c", script], "retries": 1, "retry_backoff_s": 0}},
                {"name": "b", "job": sh("true")},
            ],
            "control_edges": [{"to": "b", "action": "START", "condition": {"job_status": {"node": "a", "status": "SUCCEEDED"}}}],
        }))
        .await
        .unwrap();
    let e = env
        .scheduler
        .start_execution("resumable", json!({}))
        .await
        .unwrap();
    env.wait_job(&e.id, "a", "RUNNING").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !pid_file.exists() {
        assert!(Instant::now() < deadline, "the job never wrote its pid");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();

    env.crash_and_restart().await;

    env.wait_execution(&e.id, "SUCCEEDED").await;
    // What the first attempt left running was killed, not left behind.
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::path::Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains(") Z "))
    {
        assert!(
            Instant::now() < deadline,
            "process {pid} of the lost attempt still runs"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let jobs = env.store.list_job_executions(&e.id).await.unwrap();
    let a: Vec<(i64, &str)> = jobs
        .iter()
        .filter(|j| j.job == "a")
        .map(|j| (j.attempt, j.state.as_str()))
        .collect();
    assert_eq!(a, vec![(1, "FAILED"), (2, "SUCCEEDED")], "{jobs:?}");
    assert!(jobs.iter().any(|j| j.job == "b" && j.state == "SUCCEEDED"));
    // Every transition was published once, in order, across the restart.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let statuses = env.statuses(&e.id).await;
        let of = |job: &str| -> Vec<String> {
            statuses
                .iter()
                .filter(|(j, _)| j == job)
                .map(|(_, s)| s.clone())
                .collect()
        };
        if of("b").len() == 3 {
            assert_eq!(
                of("a"),
                [
                    "QUEUED",
                    "RUNNING",
                    "RETRYING",
                    "QUEUED",
                    "RUNNING",
                    "SUCCEEDED"
                ]
            );
            assert_eq!(of("b"), ["QUEUED", "RUNNING", "SUCCEEDED"]);
            break;
        }
        assert!(Instant::now() < deadline, "{statuses:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn rule_memory_survives_a_restart() {
    let mut env = env().await;
    env.scheduler
        .submit(json!({
            "name": "both",
            "nodes": [{"name": "x", "job": sh("true")}],
            "control_edges": [{"to": "x", "action": "START", "condition": {"all_of": [
                {"event": {"key": "left"}}, {"event": {"key": "right"}},
            ]}}],
        }))
        .await
        .unwrap();
    let e = env
        .scheduler
        .start_execution("both", json!({}))
        .await
        .unwrap();
    env.bus.publish(NewEvent::new("left", "1")).await.unwrap();
    // The first part is remembered (committed) before the crash.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let n: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM rule_evaluations WHERE execution_id = $1")
                .bind(&e.id)
                .fetch_one(&env.store.db().pool)
                .await
                .unwrap();
        if n == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the first part was never evaluated"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    env.crash_and_restart().await;
    env.bus.publish(NewEvent::new("right", "1")).await.unwrap();
    env.wait_job(&e.id, "x", "SUCCEEDED").await;
    let decisions: Vec<String> = sqlx::query_scalar(
        "SELECT decision FROM rule_evaluations WHERE execution_id = $1 ORDER BY id",
    )
    .bind(&e.id)
    .fetch_all(&env.store.db().pool)
    .await
    .unwrap();
    // One evaluation per event: none repeated after the restart, none lost.
    assert_eq!(decisions, ["ignored: condition not met yet", "START"]);
    env.scheduler.stop_execution(&e.id).await.unwrap();
}

#[tokio::test]
async fn all_of_a_time_and_a_data_trigger_waits_for_both() {
    let env = env().await;
    env.scheduler
        .submit(json!({
            "name": "fresh_and_due",
            "nodes": [{"name": "a", "job": sh("true")}],
            "triggers": [{"all_of": [{"interval_s": 1}, {"event": {"key": "data/landed"}}]}]
        }))
        .await
        .unwrap();
    let runs = || async {
        env.store
            .list_workflow_executions(&aiflow_api::meta::ExecutionQuery {
                workflow: Some("fresh_and_due".into()),
                ..Default::default()
            })
            .await
            .unwrap()
            .items
    };
    // Ticks alone start nothing.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(runs().await.is_empty());
    // The event completes the trigger (a tick has happened since the last start).
    let published = env
        .bus
        .publish(NewEvent::new("data/landed", "1"))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let first = loop {
        if let Some(e) = runs().await.into_iter().next() {
            break e;
        }
        assert!(Instant::now() < deadline, "the all_of trigger never fired");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let trigger = first.trigger.clone().unwrap();
    assert_eq!(trigger["type"], "all_of", "{trigger}");
    assert_eq!(trigger["offset"], published.offset.0, "{trigger}");
    // More ticks without a new event start nothing more.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(runs().await.len(), 1);
}

/// When the loop has ended (here: its task is gone, as after a fault), the handle says so
/// (`/readyz` answers 503 on it) and commands fail instead of waiting.
#[tokio::test]
async fn a_loop_that_has_ended_is_reported() {
    let mut env = env().await;
    assert!(env.scheduler.loop_running());
    env.handle.abort();
    let _ = (&mut env.handle).await;
    assert!(!env.scheduler.loop_running());
    let e = env
        .scheduler
        .start_execution("anything", json!({"type": "manual"}))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("not running"), "{e}");
    // A new loop on the same store runs again.
    let (scheduler, _shutdown, _handle) = start(&env.store, &env.bus, env.dir.path()).await;
    assert!(scheduler.loop_running());
}
