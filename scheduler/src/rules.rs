//! The rule engine: plain functions over plain data, no I/O.
//!
//! Each rule of a workflow keeps, per execution, a [`RuleMemory`]: how often it fired and which
//! leaves of its condition have been met since it last fired (so `all_of` parts may arrive in
//! any order). [`evaluate`] feeds one [`Signal`] to every rule and returns what changed;
//! [`decide`] turns a fired action into a transition for the job's current state.

use std::collections::{BTreeSet, HashMap};

use aiflow_api::Event;
use aiflow_api::event::key_matches;
use aiflow_translator::{
    Action, EventCondition, Life, RuleCondition, StatusCondition, Workflow, WorkflowTrigger,
};
use serde::{Deserialize, Serialize};

use crate::state::{JobState, WorkflowState};

/// What a rule reacts to.
#[derive(Debug, Clone, Copy)]
pub enum Signal<'a> {
    /// An event routed to this execution.
    Event(&'a Event),
    /// A job of this execution reached a state.
    Job { job: &'a str, state: JobState },
}

/// One rule's memory in one execution.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleMemory {
    /// How many times the rule fired.
    pub fired: u32,
    /// Leaves (numbered in pre-order) met since the rule last fired.
    pub met: BTreeSet<usize>,
}

/// A rule evaluation that changed something: the record behind `execution why`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evaluation {
    /// Index of the rule in the workflow.
    pub rule: usize,
    /// The job the rule acts on.
    pub job: String,
    /// Leaves this signal met.
    pub matched: Vec<usize>,
    /// Leaves met since the last firing, after this signal.
    pub met: Vec<usize>,
    /// The action taken, when the condition became true.
    pub fired: Option<Action>,
    /// One readable line.
    pub explanation: String,
}

/// Feeds `signal` to every rule of `workflow`; updates `memory` (one per rule) and returns the
/// evaluations that changed something, in rule order.
///
/// # Panics
/// When `memory` does not hold one entry per rule.
pub fn evaluate(
    workflow: &Workflow,
    memory: &mut [RuleMemory],
    signal: Signal<'_>,
) -> Vec<Evaluation> {
    assert_eq!(memory.len(), workflow.rules.len(), "one memory per rule");
    let mut out = Vec::new();
    for (i, (rule, mem)) in workflow.rules.iter().zip(memory.iter_mut()).enumerate() {
        if rule.life == Life::Once && mem.fired > 0 {
            continue;
        }
        let mut leaves = Vec::new();
        flatten(&rule.condition, &mut leaves);
        let matched: Vec<usize> = leaves
            .iter()
            .enumerate()
            .filter(|(_, leaf)| leaf_matches(leaf, &signal, &workflow.namespace))
            .map(|(id, _)| id)
            .collect();
        if matched.is_empty() {
            continue;
        }
        mem.met.extend(matched.iter().copied());
        let met: Vec<usize> = mem.met.iter().copied().collect();
        let mut next = 0;
        let satisfied = is_met(&rule.condition, &mem.met, &mut next);
        let fired = satisfied.then(|| {
            mem.fired += 1;
            mem.met.clear();
            rule.action.clone()
        });
        let explanation = match &fired {
            Some(action) => format!(
                "{} {}: condition met by {}",
                action,
                rule.job,
                describe_signal(&signal)
            ),
            None => format!(
                "{} {} waits: {} of {} parts met after {}",
                rule.action,
                rule.job,
                met.len(),
                leaves.len(),
                describe_signal(&signal)
            ),
        };
        out.push(Evaluation {
            rule: i,
            job: rule.job.clone(),
            matched,
            met,
            fired,
            explanation,
        });
    }
    out
}

/// Memory slots an execution of `workflow` keeps: one per rule, then one for `finish_on` when
/// the workflow has it.
#[must_use]
pub fn memory_slots(workflow: &Workflow) -> usize {
    workflow.rules.len() + usize::from(workflow.finish_on.is_some())
}

/// Whether the workflow's `finish_on` condition has been met (`memory` as in [`memory_slots`]).
#[must_use]
pub fn finished(workflow: &Workflow, memory: &[RuleMemory]) -> bool {
    workflow.finish_on.is_some()
        && memory
            .get(workflow.rules.len())
            .is_some_and(|m| m.fired > 0)
}

/// Feeds `signal` to the workflow's `finish_on` condition (its memory is the slot after the
/// rules'); true when this signal completes it. A met `finish_on` stays met.
pub fn evaluate_finish(workflow: &Workflow, memory: &mut [RuleMemory], signal: Signal<'_>) -> bool {
    let Some(condition) = &workflow.finish_on else {
        return false;
    };
    let Some(mem) = memory.get_mut(workflow.rules.len()) else {
        return false;
    };
    if mem.fired > 0 {
        return false;
    }
    let mut leaves = Vec::new();
    flatten(condition, &mut leaves);
    let matched = leaves
        .iter()
        .enumerate()
        .filter(|(_, leaf)| leaf_matches(leaf, &signal, &workflow.namespace))
        .map(|(id, _)| id);
    mem.met.extend(matched);
    let mut next = 0;
    if is_met(condition, &mem.met, &mut next) {
        mem.fired = 1;
        mem.met.clear();
        true
    } else {
        false
    }
}

/// One readable line naming a signal.
#[must_use]
pub fn describe_signal(signal: &Signal<'_>) -> String {
    match signal {
        Signal::Event(e) => format!(
            "event {} (key {:?}, type {}, value {:?})",
            e.offset, e.key, e.event_type, e.value
        ),
        Signal::Job { job, state } => format!("job {job} {state}"),
    }
}

/// Leaves of a condition in pre-order.
fn flatten<'c>(c: &'c RuleCondition, out: &mut Vec<&'c RuleCondition>) {
    match c {
        RuleCondition::AllOf(parts) | RuleCondition::AnyOf(parts) => {
            for p in parts {
                flatten(p, out);
            }
        }
        leaf => out.push(leaf),
    }
}

/// Whether `c` holds given the met leaves; `next` numbers leaves in pre-order as in [`flatten`].
fn is_met(c: &RuleCondition, met: &BTreeSet<usize>, next: &mut usize) -> bool {
    match c {
        RuleCondition::AllOf(parts) | RuleCondition::AnyOf(parts) => {
            // Every part is visited (no short cut) so leaves keep their pre-order numbers.
            let parts: Vec<bool> = parts.iter().map(|p| is_met(p, met, next)).collect();
            if matches!(c, RuleCondition::AllOf(_)) {
                parts.iter().all(|&b| b)
            } else {
                parts.iter().any(|&b| b)
            }
        }
        _ => {
            let id = *next;
            *next += 1;
            met.contains(&id)
        }
    }
}

fn leaf_matches(leaf: &RuleCondition, signal: &Signal<'_>, namespace: &str) -> bool {
    match (leaf, signal) {
        (RuleCondition::Event(cond), Signal::Event(event)) => event_matches(cond, event, namespace),
        (RuleCondition::JobStatus(js), Signal::Job { job, state }) => {
            js.job == *job && status_matches(&js.status, *state)
        }
        _ => false,
    }
}

/// Whether `event` matches `cond`. A condition without a namespace matches events of
/// `default_namespace` (the workflow's).
#[must_use]
pub fn event_matches(cond: &EventCondition, event: &Event, default_namespace: &str) -> bool {
    let namespace = cond.namespace.as_deref().unwrap_or(default_namespace);
    namespace == event.namespace
        && key_matches(&cond.key, &event.key)
        && cond
            .event_type
            .as_deref()
            .is_none_or(|t| t == event.event_type)
        && cond.value.as_deref().is_none_or(|v| v == event.value)
        && cond
            .sender
            .as_deref()
            .is_none_or(|s| Some(s) == event.sender.as_deref())
}

/// Whether a job reaching `state` meets a `job_status` condition.
#[must_use]
pub fn status_matches(status: &StatusCondition, state: JobState) -> bool {
    match status {
        StatusCondition::Started => state == JobState::Running,
        StatusCondition::Succeeded => state == JobState::Succeeded,
        StatusCondition::Failed => state == JobState::Failed,
        StatusCondition::Stopped => state == JobState::Stopped,
        StatusCondition::Finished => state.is_terminal(),
        StatusCondition::Unknown(_) => false,
    }
}

/// What to do to a job when a rule fires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Begin a new attempt (the job goes to QUEUED).
    Start,
    /// Stop the running attempt (SIGTERM, then SIGKILL after the grace period).
    Stop,
    /// Stop the running attempt, then begin a new one.
    Restart,
    /// Nothing to do; the reason is recorded.
    Ignore(&'static str),
}

/// The transition `action` asks of a job in `state`.
#[must_use]
pub fn decide(action: &Action, state: JobState) -> Decision {
    match action {
        Action::Start if state.is_active() => Decision::Ignore("job is already running"),
        Action::Start => Decision::Start,
        Action::Stop if state.is_active() => Decision::Stop,
        Action::Stop if state == JobState::Waiting => Decision::Stop,
        Action::Stop => Decision::Ignore("job is not running"),
        Action::Restart if state.is_active() => Decision::Restart,
        Action::Restart => Decision::Start,
        Action::None => Decision::Ignore("the rule's action is NONE"),
        Action::Unknown(_) => Decision::Ignore("unknown action"),
    }
}

/// Jobs that start with the execution: those no START rule targets.
#[must_use]
pub fn initial_jobs(workflow: &Workflow) -> Vec<&str> {
    workflow
        .jobs
        .iter()
        .filter(|j| {
            !workflow
                .rules
                .iter()
                .any(|r| r.job == j.name && r.action == Action::Start)
        })
        .map(|j| j.name.as_str())
        .collect()
}

/// The execution's final state once nothing can happen any more, or `None` while something
/// still can: a job is active, or a rule waiting for outside events could still fire (unless
/// the workflow's `finish_on` has been met).
#[must_use]
pub fn outcome(
    workflow: &Workflow,
    jobs: &HashMap<String, JobState>,
    memory: &[RuleMemory],
) -> Option<WorkflowState> {
    if jobs.values().any(|s| s.is_active()) {
        return None;
    }
    let waits_for_events = !finished(workflow, memory)
        && workflow
            .rules
            .iter()
            .zip(memory)
            .filter(|(r, m)| !(r.life == Life::Once && m.fired > 0))
            .any(|(r, _)| has_event_leaf(&r.condition));
    if waits_for_events {
        return None;
    }
    if jobs.values().any(|s| *s == JobState::Failed) {
        Some(WorkflowState::Failed)
    } else {
        Some(WorkflowState::Succeeded)
    }
}

fn has_event_leaf(c: &RuleCondition) -> bool {
    match c {
        RuleCondition::Event(_) => true,
        RuleCondition::JobStatus(_) => false,
        RuleCondition::AllOf(p) | RuleCondition::AnyOf(p) => p.iter().any(has_event_leaf),
    }
}

/// The event conditions of a workflow's event triggers (for routing).
#[must_use]
pub fn trigger_events(trigger: &WorkflowTrigger) -> Vec<&EventCondition> {
    match trigger {
        WorkflowTrigger::Event { event, .. } => vec![event],
        WorkflowTrigger::AllOf { all_of } => all_of.iter().flat_map(trigger_events).collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aiflow_api::Offset;
    use aiflow_translator::{Document, translate};
    use chrono::Utc;
    use serde_json::json;

    fn workflow(doc: serde_json::Value) -> Workflow {
        match Document::from_value(doc).unwrap() {
            Document::Graph(g) => translate(&g).unwrap(),
            Document::Workflow(w) => w,
        }
    }

    fn event(offset: i64, key: &str, ty: &str) -> Event {
        Event {
            offset: Offset(offset),
            namespace: "default".into(),
            key: key.into(),
            value: String::new(),
            event_type: ty.into(),
            sender: None,
            context: None,
            created_at: Utc::now(),
        }
    }

    fn cmd() -> serde_json::Value {
        json!({"command": ["true"]})
    }

    fn chain() -> Workflow {
        workflow(json!({
            "name": "chain",
            "nodes": [{"name": "a", "job": cmd()}, {"name": "b", "job": cmd()}, {"name": "c", "job": cmd()}],
            "control_edges": [
                {"to": "b", "action": "START", "condition": {"job_status": {"node": "a", "status": "SUCCEEDED"}}},
                {"to": "c", "action": "START", "condition": {"job_status": {"node": "b", "status": "SUCCEEDED"}}}
            ]
        }))
    }

    #[test]
    fn chain_by_job_status() {
        let wf = chain();
        assert_eq!(initial_jobs(&wf), ["a"]);
        let mut mem = vec![RuleMemory::default(); 2];
        let ev = evaluate(
            &wf,
            &mut mem,
            Signal::Job {
                job: "a",
                state: JobState::Running,
            },
        );
        assert!(ev.is_empty(), "RUNNING is not SUCCEEDED");
        let ev = evaluate(
            &wf,
            &mut mem,
            Signal::Job {
                job: "a",
                state: JobState::Succeeded,
            },
        );
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].job, "b");
        assert_eq!(ev[0].fired, Some(Action::Start));
        let ev = evaluate(
            &wf,
            &mut mem,
            Signal::Job {
                job: "b",
                state: JobState::Failed,
            },
        );
        assert!(ev.is_empty());
        let jobs: HashMap<String, JobState> = [
            ("a".to_string(), JobState::Succeeded),
            ("b".to_string(), JobState::Failed),
            ("c".to_string(), JobState::Waiting),
        ]
        .into();
        assert_eq!(outcome(&wf, &jobs, &mem), Some(WorkflowState::Failed));
    }

    #[test]
    fn all_of_remembers_parts_in_either_order() {
        let wf = workflow(json!({
            "name": "both",
            "nodes": [{"name": "t", "job": cmd()}],
            "control_edges": [{"to": "t", "action": "START", "condition": {"all_of": [
                {"event": {"key": "dataset/a"}}, {"event": {"key": "dataset/b"}}
            ]}}]
        }));
        for order in [["dataset/a", "dataset/b"], ["dataset/b", "dataset/a"]] {
            let mut mem = vec![RuleMemory::default()];
            let first = evaluate(&wf, &mut mem, Signal::Event(&event(1, order[0], "X")));
            assert_eq!(first[0].fired, None);
            assert_eq!(first[0].met.len(), 1);
            let second = evaluate(&wf, &mut mem, Signal::Event(&event(2, order[1], "X")));
            assert_eq!(second[0].fired, Some(Action::Start));
            assert!(mem[0].met.is_empty(), "memory resets after firing");
        }
    }

    #[test]
    fn once_fires_once_and_repeated_every_time() {
        let wf = workflow(json!({
            "name": "life",
            "nodes": [{"name": "o", "job": cmd()}, {"name": "r", "job": cmd()}],
            "control_edges": [
                {"to": "o", "action": "START", "life": "ONCE", "condition": {"event": {"key": "go"}}},
                {"to": "r", "action": "START", "condition": {"event": {"key": "go"}}}
            ]
        }));
        let mut mem = vec![RuleMemory::default(); 2];
        let mut fired = HashMap::<String, u32>::new();
        for i in 0..3 {
            for e in evaluate(&wf, &mut mem, Signal::Event(&event(i, "go", "T"))) {
                if e.fired.is_some() {
                    *fired.entry(e.job).or_default() += 1;
                }
            }
        }
        assert_eq!(fired["o"], 1);
        assert_eq!(fired["r"], 3, "two quick events are two evaluations");
    }

    #[test]
    fn event_conditions_match_fields_and_wildcards() {
        let c = EventCondition::key("dataset/raw/*").of_type("DATASET_VERSION_CREATED");
        assert!(event_matches(
            &c,
            &event(1, "dataset/raw/2026", "DATASET_VERSION_CREATED"),
            "default"
        ));
        assert!(!event_matches(
            &c,
            &event(1, "dataset/raw/2026", "OTHER"),
            "default"
        ));
        assert!(!event_matches(
            &c,
            &event(1, "dataset/clean/x", "DATASET_VERSION_CREATED"),
            "default"
        ));
        let mut e = event(1, "dataset/raw/x", "DATASET_VERSION_CREATED");
        e.namespace = "team-b".into();
        assert!(!event_matches(&c, &e, "default"), "other namespace");
        assert!(event_matches(&c.clone().namespace("team-b"), &e, "default"));
    }

    #[test]
    fn decisions_follow_the_job_state() {
        assert_eq!(
            decide(&Action::Start, JobState::Running),
            Decision::Ignore("job is already running")
        );
        assert_eq!(decide(&Action::Start, JobState::Succeeded), Decision::Start);
        assert_eq!(
            decide(&Action::Restart, JobState::Running),
            Decision::Restart
        );
        assert_eq!(decide(&Action::Restart, JobState::Waiting), Decision::Start);
        assert_eq!(decide(&Action::Stop, JobState::Running), Decision::Stop);
        assert!(matches!(
            decide(&Action::Stop, JobState::Failed),
            Decision::Ignore(_)
        ));
        assert!(matches!(
            decide(&Action::None, JobState::Running),
            Decision::Ignore(_)
        ));
    }

    #[test]
    fn event_rules_keep_an_execution_running() {
        let wf = workflow(json!({
            "name": "stream",
            "nodes": [{"name": "serve", "job": {"command": ["serve"], "streaming": true}}],
            "control_edges": [{"to": "serve", "action": "RESTART", "condition": {"event": {"key": "model/x"}}}]
        }));
        assert_eq!(
            initial_jobs(&wf),
            ["serve"],
            "RESTART is not START: starts with the execution"
        );
        let jobs: HashMap<String, JobState> = [("serve".to_string(), JobState::Stopped)].into();
        assert_eq!(outcome(&wf, &jobs, &[RuleMemory::default()]), None);
        let wf = chain();
        let jobs: HashMap<String, JobState> = [
            ("a".to_string(), JobState::Succeeded),
            ("b".to_string(), JobState::Succeeded),
            ("c".to_string(), JobState::Running),
        ]
        .into();
        assert_eq!(
            outcome(&wf, &jobs, &[RuleMemory::default(), RuleMemory::default()]),
            None
        );
    }

    #[test]
    fn finish_on_ends_an_execution_that_event_rules_keep_running() {
        let wf = workflow(json!({
            "name": "rounds",
            "nodes": [{"name": "learn", "job": cmd()}, {"name": "aggregate", "job": cmd()}],
            "control_edges": [
                {"to": "learn", "action": "START", "condition": {"event": {"key": "fl/model"}}},
                {"to": "aggregate", "action": "START", "condition": {"all_of": [
                    {"event": {"key": "fl/update/*"}},
                    {"job_status": {"node": "learn", "status": "SUCCEEDED"}}]}}
            ],
            "finish_on": {"all_of": [{"event": {"key": "fl/done"}},
                                     {"job_status": {"node": "aggregate", "status": "SUCCEEDED"}}]}
        }));
        assert_eq!(memory_slots(&wf), 3, "two rules, then finish_on");
        let mut mem = vec![RuleMemory::default(); memory_slots(&wf)];
        let jobs: HashMap<String, JobState> = [
            ("learn".to_string(), JobState::Succeeded),
            ("aggregate".to_string(), JobState::Succeeded),
        ]
        .into();
        assert_eq!(
            outcome(&wf, &jobs, &mem),
            None,
            "the event rules still wait"
        );
        // Signals that meet no part of finish_on change nothing.
        let model = event(1, "fl/model", "MODEL_VERSION_CREATED");
        assert!(!evaluate_finish(&wf, &mut mem, Signal::Event(&model)));
        assert!(!finished(&wf, &mem));
        // Its parts are remembered in either order, like a rule's.
        let done = event(2, "fl/done", "FL_DONE");
        assert!(!evaluate_finish(&wf, &mut mem, Signal::Event(&done)));
        assert_eq!(mem[2].met, BTreeSet::from([0]));
        assert!(!finished(&wf, &mem));
        let ended = Signal::Job {
            job: "aggregate",
            state: JobState::Succeeded,
        };
        assert!(evaluate_finish(&wf, &mut mem, ended), "met now");
        assert!(finished(&wf, &mem));
        assert!(
            !evaluate_finish(&wf, &mut mem, ended),
            "met once, stays met"
        );
        assert_eq!(mem[..2], [RuleMemory::default(), RuleMemory::default()]);
        assert_eq!(outcome(&wf, &jobs, &mem), Some(WorkflowState::Succeeded));
        let running: HashMap<String, JobState> = [("learn".to_string(), JobState::Running)].into();
        assert_eq!(outcome(&wf, &running, &mem), None, "running jobs end first");
        let failed: HashMap<String, JobState> = [("learn".to_string(), JobState::Failed)].into();
        assert_eq!(outcome(&wf, &failed, &mem), Some(WorkflowState::Failed));
        // Without finish_on nothing changes: no slot, never finished.
        let wf = chain();
        assert_eq!(memory_slots(&wf), 2);
        let mut mem = vec![RuleMemory::default(); 2];
        assert!(!evaluate_finish(&wf, &mut mem, ended));
        assert!(!finished(&wf, &mem));
    }
}
