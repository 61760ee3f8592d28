//! The core's decisions, asserted on the state and effects they return: no store, no bus, no
//! processes.

use std::sync::Arc;
use std::time::Duration;

use aiflow_api::{Event, Offset};
use aiflow_translator::{Document, Workflow, translate};
use chrono::Utc;
use serde_json::json;

use super::{Core, Effect};
use crate::durable::MetaWrite;
use crate::exec::{AttemptId, Outcome, Status};
use crate::metrics::{Obs, Progress};
use crate::runtime::SchedulerConfig;
use crate::state::JobState;

fn workflow(doc: serde_json::Value) -> Arc<Workflow> {
    Arc::new(match Document::from_value(doc).unwrap() {
        Document::Graph(g) => translate(&g).unwrap(),
        Document::Workflow(w) => w,
    })
}

fn core_with(max_running: usize) -> Core {
    let mut config = SchedulerConfig::local("/nonexistent".into(), "http://127.0.0.1:1".into());
    config.max_running = max_running;
    Core::new(Arc::new(config), Obs::new(Arc::new(Progress::default()), 0))
}

fn core() -> Core {
    core_with(32)
}

fn start(core: &mut Core, wf: &Arc<Workflow>) -> String {
    core.start_execution(wf.clone(), 1, 1, json!({"type": "manual"}), None)
}

fn event(key: &str, execution: Option<&str>) -> Event {
    Event {
        offset: Offset(1),
        namespace: "default".into(),
        key: key.into(),
        value: String::new(),
        event_type: "T".into(),
        sender: None,
        context: execution.map(|e| json!({"execution": e})),
        created_at: Utc::now(),
    }
}

fn state(core: &Core, id: &str, job: &str) -> Option<JobState> {
    core.attempt_state(id, job).map(|(_, s)| s)
}

fn attempt(core: &Core, id: &str, job: &str) -> u32 {
    core.attempt_state(id, job).map_or(0, |(a, _)| a)
}

/// The attempts launched into free slots now: (job, attempt).
fn dispatch(core: &mut Core) -> Vec<(String, u32)> {
    core.dispatch()
        .into_iter()
        .map(|r| (r.id.job, r.id.attempt))
        .collect()
}

fn report(core: &mut Core, id: &str, job: &str, attempt: u32, status: Status) {
    let row = core
        .executions
        .get(id)
        .and_then(|e| e.jobs.get(job))
        .and_then(|j| j.row.clone());
    let id = AttemptId {
        execution: id.to_string(),
        job: job.to_string(),
        attempt,
        row,
    };
    core.on_status(id, status, None);
}

fn ended(outcome: Outcome) -> Status {
    Status::Ended { outcome, ran: true }
}

/// Launches and starts the job's current attempt.
fn run(core: &mut Core, id: &str, job: &str) {
    let launched = dispatch(core);
    let a = attempt(core, id, job);
    assert!(
        launched.contains(&(job.to_string(), a)),
        "{job} launched: {launched:?}"
    );
    report(core, id, job, a, Status::Started);
    assert_eq!(state(core, id, job), Some(JobState::Running));
}

/// The state the execution ended in (written by the last commit's meta rows).
fn finished_as(core: &Core, id: &str) -> Option<(String, Option<String>)> {
    core.pending.meta.iter().find_map(|m| match m {
        MetaWrite::ExecState {
            id: e,
            state,
            reason,
        } if e == id => Some((state.to_string(), reason.clone())),
        _ => None,
    })
}

fn stops(core: &Core) -> Vec<(String, u32)> {
    core.pending
        .effects
        .iter()
        .filter_map(|e| match e {
            Effect::Stop { job, attempt, .. } => Some((job.clone(), *attempt)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_chain_runs_job_after_job_and_the_execution_succeeds() {
    let wf = workflow(json!({
        "name": "chain",
        "nodes": [{"name": "a", "job": {"command": ["true"]}}, {"name": "b", "job": {"command": ["true"]}}],
        "control_edges": [{"to": "b", "action": "START", "condition": {"job_status": {"node": "a", "status": "SUCCEEDED"}}}]
    }));
    let mut core = core();
    let id = start(&mut core, &wf);
    assert_eq!(state(&core, &id, "a"), Some(JobState::Queued));
    assert_eq!(state(&core, &id, "b"), Some(JobState::Waiting));
    run(&mut core, &id, "a");
    assert!(dispatch(&mut core).is_empty(), "b waits for a");
    report(&mut core, &id, "a", 1, ended(Outcome::Succeeded));
    assert_eq!(state(&core, &id, "b"), Some(JobState::Queued));
    run(&mut core, &id, "b");
    assert_eq!(finished_as(&core, &id), None);
    report(&mut core, &id, "b", 1, ended(Outcome::Succeeded));
    assert_eq!(
        finished_as(&core, &id),
        Some(("SUCCEEDED".to_string(), None))
    );
    assert!(core.executions.is_empty(), "a finished execution is let go");
    assert_eq!(core.running_total, 0, "every slot is free again");
}

/// A workflow whose job `t` is driven by event rules only, and a streaming job that keeps the
/// execution running meanwhile.
fn driven() -> Arc<Workflow> {
    workflow(json!({
        "name": "driven",
        "nodes": [
            {"name": "keep", "job": {"command": ["serve"], "streaming": true}},
            {"name": "t", "job": {"command": ["true"], "retries": 1, "retry_backoff_s": 5}}
        ],
        "control_edges": [
            {"to": "t", "action": "START", "condition": {"event": {"key": "start"}}},
            {"to": "t", "action": "STOP", "condition": {"event": {"key": "stop"}}},
            {"to": "t", "action": "RESTART", "condition": {"event": {"key": "restart"}}}
        ]
    }))
}

/// Brings `t` to `target` through the core's own decisions.
fn to_state(core: &mut Core, id: &str, target: JobState) {
    let fire = |core: &mut Core, key: &str| {
        assert!(core.on_event(&event(key, None)).is_empty());
    };
    match target {
        JobState::Waiting => {}
        JobState::Queued => fire(core, "start"),
        JobState::Running => {
            fire(core, "start");
            run(core, id, "t");
        }
        JobState::Succeeded | JobState::Failed | JobState::Retrying => {
            fire(core, "start");
            run(core, id, "t");
            let outcome = if target == JobState::Succeeded {
                Outcome::Succeeded
            } else {
                Outcome::Failed {
                    message: "exit 1".into(),
                }
            };
            report(core, id, "t", 1, ended(outcome.clone()));
            if target == JobState::Failed {
                // The one retry fails too.
                let a = attempt(core, id, "t");
                core.set_job_state(id, "t", JobState::Queued, None);
                core.enqueue(id, "t");
                run(core, id, "t");
                report(core, id, "t", a, ended(outcome));
            }
        }
        JobState::Stopped => {
            fire(core, "start");
            fire(core, "stop");
        }
    }
    assert_eq!(state(core, id, "t"), Some(target), "set up {target:?}");
    core.pending.effects.clear();
}

#[test]
fn each_action_against_each_job_state() {
    use JobState::{Failed, Queued, Retrying, Running, Stopped, Succeeded, Waiting};
    // (state before, action) → (state after, a new attempt begun, a stop sent to the attempt)
    let table = [
        (Waiting, "start", Queued, true, false),
        (Waiting, "stop", Stopped, false, true),
        (Waiting, "restart", Queued, true, false),
        (Queued, "start", Queued, false, false),
        (Queued, "stop", Stopped, false, true),
        (Queued, "restart", Queued, true, true),
        (Running, "start", Running, false, false),
        // A running attempt stays RUNNING until its executor says it stopped.
        (Running, "stop", Running, false, true),
        (Running, "restart", Running, false, true),
        (Retrying, "start", Retrying, false, false),
        (Retrying, "stop", Stopped, false, true),
        (Retrying, "restart", Queued, true, true),
        (Succeeded, "start", Queued, true, false),
        (Succeeded, "stop", Succeeded, false, false),
        (Succeeded, "restart", Queued, true, false),
        (Failed, "start", Queued, true, false),
        (Failed, "stop", Failed, false, false),
        (Failed, "restart", Queued, true, false),
        (Stopped, "start", Queued, true, false),
        (Stopped, "stop", Stopped, false, false),
        (Stopped, "restart", Queued, true, false),
    ];
    let wf = driven();
    for (before, action, after, new_attempt, stopped) in table {
        let mut core = core();
        let id = start(&mut core, &wf);
        run(&mut core, &id, "keep");
        to_state(&mut core, &id, before);
        let was = attempt(&core, &id, "t");
        core.on_event(&event(action, None));
        let case = format!("{action} on {before:?}");
        assert_eq!(state(&core, &id, "t"), Some(after), "{case}");
        let now = attempt(&core, &id, "t");
        assert_eq!(now > was, new_attempt, "{case}: attempt {was} → {now}");
        assert_eq!(
            stops(&core).contains(&("t".to_string(), was)),
            stopped,
            "{case}: {:?}",
            stops(&core)
        );
        if before == Running && action != "start" {
            // The end of the stopped attempt decides what follows.
            report(&mut core, &id, "t", was, ended(Outcome::Stopped));
            let expected = if action == "restart" { Queued } else { Stopped };
            assert_eq!(state(&core, &id, "t"), Some(expected), "{case}, ended");
            assert_eq!(
                attempt(&core, &id, "t") > was,
                action == "restart",
                "{case}, ended"
            );
        }
        // Whatever happened, no slot is held by an attempt that is not active.
        let holding = core.executions[&id]
            .jobs
            .values()
            .filter(|j| j.launched)
            .count();
        assert_eq!(core.running_total, holding, "{case}: slots");
    }
}

#[test]
fn all_of_rules_remember_what_was_met_until_the_rest_comes() {
    let wf = workflow(json!({
        "name": "allof",
        "nodes": [{"name": "keep", "job": {"command": ["serve"], "streaming": true}},
                  {"name": "t", "job": {"command": ["true"]}}],
        "control_edges": [{"to": "t", "action": "START", "condition": {"all_of": [
            {"event": {"key": "data/a"}}, {"event": {"key": "data/b"}}]}}]
    }));
    for order in [["data/a", "data/b"], ["data/b", "data/a"]] {
        let mut core = core();
        let id = start(&mut core, &wf);
        core.on_event(&event(order[0], None));
        assert_eq!(state(&core, &id, "t"), Some(JobState::Waiting), "{order:?}");
        assert!(
            core.pending.rules.iter().any(|(e, _)| e == &id),
            "the part met is committed as rule memory"
        );
        core.on_event(&event(order[0], None));
        assert_eq!(
            state(&core, &id, "t"),
            Some(JobState::Waiting),
            "the same part twice is still one part"
        );
        core.on_event(&event(order[1], None));
        assert_eq!(state(&core, &id, "t"), Some(JobState::Queued), "{order:?}");
    }
}

#[test]
fn all_of_triggers_start_an_execution_once_every_part_happened() {
    let wf = workflow(json!({
        "name": "trig",
        "nodes": [{"name": "t", "job": {"command": ["true"]}}],
        "triggers": [{"all_of": [{"event": {"key": "data/a"}}, {"event": {"key": "data/b"}}]}]
    }));
    let mut core = core();
    core.triggers.push(wf);
    assert!(core.on_event(&event("data/b", None)).is_empty());
    assert!(
        core.pending
            .kv
            .iter()
            .any(|(k, v)| k == "scheduler.trigger_memory.trig.0" && v == "[1]"),
        "{:?}",
        core.pending.kv
    );
    let starts = core.on_event(&event("data/a", None));
    assert_eq!(starts.len(), 1, "{starts:?}");
    assert_eq!(starts[0].0, "trig");
    assert_eq!(starts[0].1["type"], "all_of");
    // The memory starts over.
    assert!(core.on_event(&event("data/a", None)).is_empty());
}

#[test]
fn once_rules_fire_once_and_repeated_rules_every_time() {
    let wf = workflow(json!({
        "name": "life",
        "nodes": [{"name": "keep", "job": {"command": ["serve"], "streaming": true}},
                  {"name": "o", "job": {"command": ["true"]}},
                  {"name": "r", "job": {"command": ["true"]}}],
        "control_edges": [
            {"to": "o", "action": "START", "life": "ONCE", "condition": {"event": {"key": "go"}}},
            {"to": "r", "action": "START", "condition": {"event": {"key": "go"}}}
        ]
    }));
    let mut core = core();
    let id = start(&mut core, &wf);
    run(&mut core, &id, "keep");
    for round in 1..=3 {
        core.on_event(&event("go", None));
        for (job, a) in dispatch(&mut core) {
            report(&mut core, &id, &job, a, Status::Started);
            report(&mut core, &id, &job, a, ended(Outcome::Succeeded));
        }
        assert_eq!(attempt(&core, &id, "o"), 1, "round {round}: ONCE");
        assert_eq!(attempt(&core, &id, "r"), round, "round {round}: REPEATED");
    }
}

#[test]
fn free_slots_go_to_the_highest_priority_then_the_earliest() {
    let wf = workflow(json!({
        "name": "prio",
        "nodes": [{"name": "low", "job": {"command": ["true"], "priority": 1}},
                  {"name": "first", "job": {"command": ["true"], "priority": 5}},
                  {"name": "second", "job": {"command": ["true"], "priority": 5}}]
    }));
    let mut core = core_with(1);
    let id = start(&mut core, &wf);
    let mut order = Vec::new();
    for _ in 0..3 {
        let launched = dispatch(&mut core);
        assert_eq!(launched.len(), 1, "one slot: {launched:?}");
        let (job, a) = launched[0].clone();
        assert!(dispatch(&mut core).is_empty(), "the slot is taken");
        report(&mut core, &id, &job, a, Status::Started);
        report(&mut core, &id, &job, a, ended(Outcome::Succeeded));
        order.push(job);
    }
    assert_eq!(order, ["first", "second", "low"]);
}

#[test]
fn a_failed_attempt_is_retried_with_a_growing_jittered_backoff() {
    let wf = workflow(json!({
        "name": "retry",
        "nodes": [{"name": "t", "job": {"command": ["false"], "retries": 2, "retry_backoff_s": 10}}]
    }));
    let mut core = core();
    let id = start(&mut core, &wf);
    for (a, base) in [(1u32, 10.0f64), (2, 20.0)] {
        run(&mut core, &id, "t");
        core.pending.effects.clear();
        let fail = Outcome::Failed {
            message: "exit 1".into(),
        };
        report(&mut core, &id, "t", a, ended(fail));
        assert_eq!(state(&core, &id, "t"), Some(JobState::Retrying));
        let retry = core.pending.effects.iter().find_map(|e| match e {
            Effect::Retry { attempt, delay, .. } => Some((*attempt, *delay)),
            _ => None,
        });
        let (next, delay) = retry.expect("a retry is scheduled");
        assert_eq!(next, a + 1, "the retry names the attempt it launches");
        assert!(
            delay >= Duration::from_secs_f64(base) && delay < Duration::from_secs_f64(base * 1.25),
            "attempt {a}: {delay:?}"
        );
        assert!(
            dispatch(&mut core).is_empty(),
            "nothing runs before the retry is due"
        );
        assert_eq!(core.running_total, 0, "a retrying job holds no slot");
        // The retry comes due (the runtime's timer).
        core.set_job_state(&id, "t", JobState::Queued, None);
        core.enqueue(&id, "t");
    }
    run(&mut core, &id, "t");
    let fail = Outcome::Failed {
        message: "exit 1".into(),
    };
    report(&mut core, &id, "t", 3, ended(fail));
    assert_eq!(state(&core, &id, "t"), None, "finished");
    assert_eq!(finished_as(&core, &id).map(|f| f.0), Some("FAILED".into()));
}

#[test]
fn max_duration_stops_the_execution_as_failed_naming_the_limit() {
    let wf = workflow(json!({
        "name": "limit",
        "max_duration_s": 2,
        "nodes": [{"name": "serve", "job": {"command": ["serve"], "streaming": true}}]
    }));
    let mut core = core();
    let id = start(&mut core, &wf);
    run(&mut core, &id, "serve");
    let started = core.executions[&id].started_at;
    core.on_tick(started + chrono::Duration::seconds(1));
    assert!(stops(&core).is_empty(), "within its limit");
    core.on_tick(started + chrono::Duration::seconds(3));
    assert_eq!(stops(&core), [("serve".to_string(), 1)]);
    assert!(
        core.pending
            .records
            .iter()
            .any(|r| r.job == "serve" && r.explanation.contains("max_duration_s")),
        "why names the limit"
    );
    report(&mut core, &id, "serve", 1, ended(Outcome::Stopped));
    let (state, reason) = finished_as(&core, &id).expect("finished");
    assert_eq!(state, "FAILED");
    assert!(
        reason
            .as_deref()
            .is_some_and(|r| r.contains("limit of 2 s")),
        "{reason:?}"
    );
}

#[test]
fn reports_of_an_older_attempt_change_nothing_and_its_late_start_is_stopped() {
    let wf = driven();
    let mut core = core();
    let id = start(&mut core, &wf);
    to_state(&mut core, &id, JobState::Queued);
    // Restarted while QUEUED: attempt 1 is superseded by attempt 2.
    core.on_event(&event("restart", None));
    assert_eq!(attempt(&core, &id, "t"), 2);
    core.pending.effects.clear();
    report(&mut core, &id, "t", 1, Status::Started);
    assert!(
        core.pending
            .effects
            .iter()
            .any(|e| matches!(e, Effect::StopStale(a) if a.attempt == 1)),
        "the stale attempt is told to stop"
    );
    report(&mut core, &id, "t", 1, ended(Outcome::Succeeded));
    assert_eq!(state(&core, &id, "t"), Some(JobState::Queued), "unchanged");
}

#[test]
fn an_event_naming_an_execution_reaches_that_one_only() {
    let wf = driven();
    let mut core = core();
    let one = start(&mut core, &wf);
    let two = start(&mut core, &wf);
    core.on_event(&event("start", Some(&two)));
    assert_eq!(state(&core, &one, "t"), Some(JobState::Waiting));
    assert_eq!(state(&core, &two, "t"), Some(JobState::Queued));
    core.on_event(&event("start", Some("not-running")));
    assert_eq!(state(&core, &one, "t"), Some(JobState::Waiting), "none");
    core.on_event(&event("start", None));
    assert_eq!(state(&core, &one, "t"), Some(JobState::Queued), "all");
}
