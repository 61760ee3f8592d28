//! Checks shared by AI graphs and workflow documents.

use crate::graph::{Catchup, EventCondition, JobSpec, Trigger};
use crate::problem::Problems;
use crate::schedule::{DEFAULT_TIMEZONE, normalize_cron, parse_cron, parse_timezone};
use crate::workflow::WorkflowTrigger;

/// Longest name of a workflow, node or job.
pub const MAX_NAME_LEN: usize = 128;
/// Longest event key or namespace, in bytes.
pub const MAX_KEY_LEN: usize = 256;

/// The fast path of [`check_name`]: `true` when the name is fine.
pub(crate) fn is_plain_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.'))
}

/// Names of workflows, nodes and jobs: 1–128 of `A-Z a-z 0-9 _ - .`, so they fit in URLs,
/// file names and NATS subjects as they are.
pub(crate) fn check_name(name: &str, what: &str, location: &str, p: &mut Problems) -> bool {
    let problem = if name.is_empty() {
        Some(format!("{what} is empty"))
    } else if name.len() > MAX_NAME_LEN {
        Some(format!(
            "{what} {name:?} is longer than {MAX_NAME_LEN} characters"
        ))
    } else {
        name.chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')))
            .map(|c| {
                format!(
                    "{what} {name:?} has the character {c:?}; use letters, digits, '_', '-' and '.'"
                )
            })
    };
    match problem {
        Some(m) => {
            p.push(location, m);
            false
        }
        None => true,
    }
}

/// Event keys and namespaces: 1–256 bytes of UTF-8 without control characters.
pub(crate) fn check_key(key: &str, what: &str, location: &str, p: &mut Problems) {
    if key.is_empty() {
        p.push(location, format!("{what} is empty"));
    } else if key.len() > MAX_KEY_LEN {
        p.push(
            location,
            format!(
                "{what} is {} bytes long, at most {MAX_KEY_LEN} allowed",
                key.len()
            ),
        );
    } else if key.chars().any(char::is_control) {
        p.push(
            location,
            format!("{what} {key:?} contains a control character"),
        );
    }
}

pub(crate) fn check_event_condition(ev: &EventCondition, location: &str, p: &mut Problems) {
    check_key(&ev.key, "event key", &format!("{location}.key"), p);
    if let Some(ns) = &ev.namespace {
        check_key(ns, "namespace", &format!("{location}.namespace"), p);
    }
    for (field, value) in [("event_type", &ev.event_type), ("sender", &ev.sender)] {
        if value.as_deref() == Some("") {
            p.push(
                format!("{location}.{field}"),
                format!("{field} is empty; leave it out to match any"),
            );
        }
    }
}

/// Executor settings that are wrong whatever job they end up in.
pub(crate) fn check_job_spec(spec: &JobSpec, loc: impl Fn() -> String, p: &mut Problems) {
    if let Some(name) = &spec.name {
        check_name(name, "job name", &format!("{}.name", loc()), p);
    }
    if spec.command.first().is_some_and(String::is_empty) {
        p.push(format!("{}.command[0]", loc()), "program name is empty");
    }
    if spec.timeout_s == Some(0) {
        p.push(
            format!("{}.timeout_s", loc()),
            "timeout must be at least 1 second",
        );
    }
    if spec.queue.as_deref() == Some("") {
        p.push(format!("{}.queue", loc()), "queue name is empty");
    }
    if let Some(q) = spec.queue.as_ref().filter(|q| !q.is_empty()) {
        check_name(q, "queue name", &format!("{}.queue", loc()), p);
    }
    if let Some(dir) = &spec.working_dir
        && dir.is_empty()
    {
        p.push(
            format!("{}.working_dir", loc()),
            "working directory is empty",
        );
    }
    for k in spec.env.keys() {
        if k.is_empty() || k.contains('=') || k.contains('\0') {
            p.push(
                format!("{}.env", loc()),
                format!("environment variable name {k:?} is invalid"),
            );
        }
    }
    if let Some(cpus) = spec.resources.as_ref().and_then(|r| r.cpus)
        && !(cpus.is_finite() && cpus > 0.0)
    {
        p.push(
            format!("{}.resources.cpus", loc()),
            format!("cpus must be a positive number, got {cpus}"),
        );
    }
}

/// Checks a trigger and returns its parsed form when it is valid.
pub(crate) fn check_trigger(
    t: &Trigger,
    location: &str,
    p: &mut Problems,
) -> Option<WorkflowTrigger> {
    let kinds: Vec<&str> = [
        ("cron", t.cron.is_some()),
        ("interval_s", t.interval_s.is_some()),
        ("event", t.event.is_some()),
        ("all_of", t.all_of.is_some()),
    ]
    .into_iter()
    .filter_map(|(k, set)| set.then_some(k))
    .collect();
    match kinds.as_slice() {
        [] => {
            p.push(
                location,
                "trigger needs one of cron, interval_s, event or all_of",
            );
            return None;
        }
        [_] => {}
        many => {
            p.push(
                location,
                format!(
                    "trigger gives {}; give one, and combine with all_of",
                    many.join(" and ")
                ),
            );
            return None;
        }
    }
    if t.cron.is_none() {
        for (field, set) in [
            ("timezone", t.timezone.is_some()),
            ("catchup", t.catchup.is_some()),
        ] {
            if set {
                p.push(
                    format!("{location}.{field}"),
                    format!("{field} only applies to a cron trigger"),
                );
            }
        }
    }
    if t.event.is_none() && t.delay_s.is_some() {
        p.push(
            format!("{location}.delay_s"),
            "delay_s only applies to an event trigger",
        );
    }
    if let Some(cron) = &t.cron {
        let timezone = t.timezone.as_deref().unwrap_or(DEFAULT_TIMEZONE);
        let catchup = t.catchup.clone().unwrap_or_default();
        return check_cron(cron, timezone, &catchup, location, p);
    }
    if let Some(interval_s) = t.interval_s {
        if interval_s == 0 {
            p.push(
                format!("{location}.interval_s"),
                "interval must be at least 1 second",
            );
            return None;
        }
        return Some(WorkflowTrigger::Interval { interval_s });
    }
    if let Some(event) = &t.event {
        let before = p.len();
        check_event_condition(event, &format!("{location}.event"), p);
        return (p.len() == before).then(|| WorkflowTrigger::Event {
            event: event.clone(),
            delay_s: t.delay_s.unwrap_or(0),
        });
    }
    let all_of = t.all_of.as_deref().unwrap_or_default();
    if all_of.is_empty() {
        p.push(
            format!("{location}.all_of"),
            "all_of needs at least one trigger",
        );
        return None;
    }
    let parts: Vec<Option<WorkflowTrigger>> = all_of
        .iter()
        .enumerate()
        .map(|(i, t)| check_trigger(t, &format!("{location}.all_of[{i}]"), p))
        .collect();
    parts
        .into_iter()
        .collect::<Option<Vec<_>>>()
        .map(|all_of| WorkflowTrigger::AllOf { all_of })
}

/// Checks a cron trigger's fields and returns its parsed form.
pub(crate) fn check_cron(
    cron: &str,
    timezone: &str,
    catchup: &Catchup,
    location: &str,
    p: &mut Problems,
) -> Option<WorkflowTrigger> {
    let before = p.len();
    if let Err(e) = parse_cron(cron) {
        p.push(format!("{location}.cron"), e);
    }
    if let Err(e) = parse_timezone(timezone) {
        p.push(format!("{location}.timezone"), e);
    }
    if !catchup.is_known() {
        p.push(
            format!("{location}.catchup"),
            format!(
                "unknown catchup {:?}, expected one of {}",
                catchup.as_str(),
                Catchup::KNOWN.join(", ")
            ),
        );
    }
    (p.len() == before).then(|| WorkflowTrigger::Cron {
        cron: cron.to_string(),
        timezone: timezone.to_string(),
        catchup: catchup.clone(),
        schedule: normalize_cron(cron),
    })
}

/// Checks a parsed workflow trigger (from a workflow document).
pub(crate) fn check_workflow_trigger(t: &WorkflowTrigger, location: &str, p: &mut Problems) {
    match t {
        WorkflowTrigger::Cron {
            cron,
            timezone,
            catchup,
            ..
        } => {
            check_cron(cron, timezone, catchup, location, p);
        }
        WorkflowTrigger::Interval { interval_s } => {
            if *interval_s == 0 {
                p.push(
                    format!("{location}.interval_s"),
                    "interval must be at least 1 second",
                );
            }
        }
        WorkflowTrigger::Event { event, .. } => {
            check_event_condition(event, &format!("{location}.event"), p);
        }
        WorkflowTrigger::AllOf { all_of } => {
            if all_of.is_empty() {
                p.push(
                    format!("{location}.all_of"),
                    "all_of needs at least one trigger",
                );
            }
            for (i, t) in all_of.iter().enumerate() {
                check_workflow_trigger(t, &format!("{location}.all_of[{i}]"), p);
            }
        }
    }
}

/// Reports an unknown word of a closed set.
pub(crate) fn unknown_word(
    what: &str,
    word: &str,
    known: &[&str],
    location: String,
    p: &mut Problems,
) {
    p.push(
        location,
        format!(
            "unknown {what} {word:?}, expected one of {}",
            known.join(", ")
        ),
    );
}
