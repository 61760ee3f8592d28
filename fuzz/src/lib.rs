//! The checks behind the fuzz targets, shared with the proptest suite of the ordinary test run
//! (`tests/inputs.rs` includes this file), so both hold the same promise: odd input gives an
//! error, never a panic or a hang, and what is accepted behaves consistently.
//!
//! Structured inputs are lines of text (`\n`-separated), so seed corpus files are readable and
//! can be written by hand.

use std::collections::HashMap;
use std::time::Instant;

use aiflow_api::event::{EventQuery, NewEvent, key_matches};
use aiflow_api::{Event, EventFilter, Offset};
use aiflow_scheduler::rules::{self, RuleMemory, Signal};
use aiflow_scheduler::state::JobState;
use aiflow_scheduler::triggers;
use aiflow_translator::schedule::{normalize_cron, parse_cron, parse_timezone};
use aiflow_translator::{Catchup, Document, WorkflowTrigger, render};
use chrono::{DateTime, Utc};

/// The `n`-th `\n`-separated line of `data` (lossy UTF-8), empty when there are fewer lines.
fn lines(data: &[u8]) -> Vec<String> {
    data.split(|&b| b == b'\n')
        .map(|l| String::from_utf8_lossy(l).into_owned())
        .collect()
}

fn line(lines: &[String], n: usize) -> &str {
    lines.get(n).map_or("", String::as_str)
}

/// A time from a line: seconds since the epoch, clamped into chrono's range.
fn time(text: &str, default: DateTime<Utc>) -> DateTime<Utc> {
    text.trim()
        .parse::<i64>()
        .ok()
        .and_then(|s| DateTime::from_timestamp(s, 0))
        .unwrap_or(default)
}

/// Fails when `f` takes longer than `limit_ms` (a hang that finishes is still a bug).
fn bounded<T>(what: &str, limit_ms: u128, f: impl FnOnce() -> T) -> T {
    let start = Instant::now();
    let out = f();
    let took = start.elapsed().as_millis();
    assert!(
        took <= limit_ms,
        "{what} took {took} ms (limit {limit_ms} ms)"
    );
    out
}

/// An AI graph or workflow document: parse, check, translate, render, feed the rule engine.
/// A workflow that comes out of a translation must read back as the same valid workflow.
pub fn check_document(text: &str) {
    let Ok(doc) = bounded("parse", 2_000, || Document::parse(text)) else {
        return;
    };
    let graph = match &doc {
        Document::Graph(g) => Some(g.clone()),
        Document::Workflow(_) => None,
    };
    let workflow = match bounded("translate", 2_000, || doc.into_workflow()) {
        Ok(w) => w,
        Err(e) => {
            assert!(!e.problems.is_empty(), "an error lists its problems");
            return;
        }
    };
    if let Some(g) = &graph {
        let _ = render::dot(g, &workflow);
        let _ = render::svg(g, &workflow);
        // What the translator writes is a workflow document that passes its own checks.
        let json = serde_json::to_string(&workflow).expect("a workflow serialises");
        match Document::parse(&json) {
            Ok(Document::Workflow(w2)) => {
                assert_eq!(w2, workflow, "the workflow reads back the same");
                if let Err(e) = Document::Workflow(w2).into_workflow() {
                    panic!("a translated workflow fails its checks: {e}");
                }
            }
            Ok(Document::Graph(_)) => panic!("a translated workflow reads back as a graph"),
            Err(e) => panic!("a translated workflow does not parse: {e}"),
        }
    }
    // The rule engine takes any valid workflow.
    let _ = rules::initial_jobs(&workflow);
    for t in &workflow.triggers {
        let _ = rules::trigger_events(t);
        let _ = triggers::describe(t);
        let now = DateTime::from_timestamp(1_790_000_000, 0).expect("in range");
        let _ = triggers::due(t, now - chrono::Duration::days(1), now);
        let _ = triggers::next_tick(t, Some(now), now);
    }
    let mut memory = vec![RuleMemory::default(); workflow.rules.len()];
    let event = Event {
        offset: Offset(1),
        namespace: workflow.namespace.clone(),
        key: "a".into(),
        value: String::new(),
        event_type: "UNDEFINED".into(),
        sender: None,
        context: None,
        created_at: Utc::now(),
    };
    let _ = rules::evaluate(&workflow, &mut memory, Signal::Event(&event));
    let mut states = HashMap::new();
    for job in &workflow.jobs {
        for state in JobState::ALL {
            let _ = rules::evaluate(
                &workflow,
                &mut memory,
                Signal::Job {
                    job: &job.name,
                    state,
                },
            );
        }
        states.insert(job.name.clone(), JobState::Succeeded);
    }
    let _ = rules::outcome(&workflow, &states, &memory);
}

/// Reference matcher for `*` globs: plain dynamic programming over characters.
#[must_use]
pub fn glob_reference(pattern: &str, key: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let k: Vec<char> = key.chars().collect();
    // row[j]: p[..i] matches k[..j]
    let mut row = vec![false; k.len() + 1];
    row[0] = true;
    for &pc in &p {
        let mut next = vec![false; k.len() + 1];
        if pc == '*' {
            let mut any = false;
            for j in 0..=k.len() {
                any |= row[j];
                next[j] = any;
            }
        } else {
            for j in 1..=k.len() {
                next[j] = row[j - 1] && k[j - 1] == pc;
            }
        }
        row = next;
    }
    row[k.len()]
}

/// Event filters. Lines: key pattern, key, query string of `GET /events`, JSON body of
/// `POST /events`.
pub fn check_event_filter(data: &[u8]) {
    let l = lines(data);
    let (pattern, key) = (line(&l, 0), line(&l, 1));
    let fast = bounded("key_matches", 1_000, || key_matches(pattern, key));
    if pattern.len() <= 2_000 && key.len() <= 2_000 {
        assert_eq!(
            fast,
            glob_reference(pattern, key),
            "key_matches({pattern:?}, {key:?})"
        );
    }
    let event = Event {
        offset: Offset(7),
        namespace: line(&l, 4).to_string(),
        key: key.to_string(),
        value: line(&l, 5).to_string(),
        event_type: line(&l, 6).to_string(),
        sender: Some(line(&l, 7).to_string()).filter(|s| !s.is_empty()),
        context: None,
        created_at: Utc::now(),
    };
    let filter = EventFilter {
        key: Some(pattern.to_string()),
        ..EventFilter::default()
    };
    assert_eq!(filter.matches(&event), fast);
    // A query string as `GET /events` reads it.
    let query = line(&l, 2);
    if let Ok(uri) = format!("/events?{query}").parse::<axum::http::Uri>()
        && let Ok(q) = axum::extract::Query::<EventQuery>::try_from_uri(&uri)
    {
        let f = q.0.filter();
        let _ = f.matches(&event);
        let back = EventQuery::from_filter(&f).filter();
        assert_eq!(back, f, "a filter survives a round trip through its query");
        let _ = q.0.after.map(|a| a.to_string().parse::<Offset>());
        let _ = q.0.cursor.as_deref().map(str::parse::<Offset>);
    }
    // A body as `POST /events` reads it.
    let body = line(&l, 3);
    let limits = aiflow_api::event::EventLimits::default();
    if let Ok(e) = aiflow_api::server::decode_json::<NewEvent>(body.as_bytes()) {
        let _ = e.validate(&limits);
    }
    if let Ok(batch) = aiflow_api::server::decode_json::<Vec<NewEvent>>(body.as_bytes()) {
        let _ = aiflow_api::event::validate_batch(&batch, &limits);
    }
    let _ = line(&l, 0).parse::<Offset>();
}

/// Tag URIs, in both modes; an accepted URI formats and parses back the same.
pub fn check_tag_uri(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    for bare in [false, true] {
        let Ok(t) = aiflow_meta::tags::parse_tag_uri(&text, "tags", bare) else {
            continue;
        };
        assert!(t.name.is_some() || !t.tags.is_empty());
        let formatted = aiflow_meta::tags::format_tag_uri(t.name.as_deref().unwrap_or(""), &t.tags);
        match aiflow_meta::tags::parse_tag_uri(&formatted, "tags", false) {
            Ok(back) => assert_eq!(back, t, "{text:?} → {formatted:?}"),
            Err(e) => panic!("{text:?} parses, but its formatted form {formatted:?} does not: {e}"),
        }
    }
    let _ = aiflow_meta::tags::check_name(&text, "name");
}

/// Cron and interval triggers. Lines: cron expression, time zone, catchup, last check time,
/// now (both seconds since the epoch), interval in seconds.
pub fn check_trigger(data: &[u8]) {
    let l = lines(data);
    let (expr, tz) = (line(&l, 0), line(&l, 1));
    let epoch = DateTime::from_timestamp(1_790_000_000, 0).expect("in range");
    let last = time(line(&l, 3), epoch);
    let now = time(line(&l, 4), epoch + chrono::Duration::hours(1));
    let _ = normalize_cron(expr);
    let cron = bounded("parse_cron", 1_000, || parse_cron(expr));
    let zone = parse_timezone(tz);
    let catchup = Catchup::parse(line(&l, 2));
    if cron.is_ok() && zone.is_ok() {
        let trigger = WorkflowTrigger::Cron {
            cron: expr.to_string(),
            timezone: tz.to_string(),
            catchup: catchup.clone(),
            schedule: normalize_cron(expr),
        };
        let due = bounded("cron due", 2_000, || triggers::due(&trigger, last, now));
        assert!(due.len() <= 1000);
        for t in &due {
            assert!(*t > last && *t <= now, "tick {t} outside ({last}, {now}]");
        }
        // Catching up on the newest tick: the same as walking forwards from `last`.
        if catchup == Catchup::Latest && now - last <= chrono::Duration::hours(1) {
            let zone = zone.clone().expect("parsed above");
            let walked = parse_cron(expr)
                .expect("parsed above")
                .after(last, &zone)
                .take_while(|t| *t <= now)
                .last();
            assert_eq!(due, walked.into_iter().collect::<Vec<_>>(), "latest tick");
        }
        let next = bounded("cron next_tick", 2_000, || {
            triggers::next_tick(&trigger, Some(last), now)
        });
        if let Some(n) = next {
            assert!(n > now, "next tick {n} is not after {now}");
        }
    }
    if let Ok(interval_s) = line(&l, 5).trim().parse::<u64>() {
        let trigger = WorkflowTrigger::Interval { interval_s };
        let due = bounded("interval due", 1_000, || triggers::due(&trigger, last, now));
        assert!(due.len() <= 1);
        for t in &due {
            assert!(*t > last && *t <= now, "tick {t} outside ({last}, {now}]");
        }
        if let Some(n) = triggers::next_tick(&trigger, Some(last), now) {
            assert!(n > now, "next tick {n} is not after {now}");
        }
    }
    // The same trigger in a graph document goes through the translator's checks.
    let doc = serde_json::json!({
        "name": "t",
        "nodes": [{"name": "a", "job": {"command": ["true"]}}],
        "triggers": [
            {"cron": expr, "timezone": tz, "catchup": line(&l, 2)},
            {"interval_s": line(&l, 5).trim().parse::<u64>().unwrap_or(1)},
        ],
    });
    check_document(&doc.to_string());
}
