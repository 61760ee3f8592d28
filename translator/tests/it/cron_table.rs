//! Next fire times against croniter's: tests/data/croniter_table.json, written once by
//! scripts/gen_cron_table.py (croniter and pytz in a venv). Rows marked `adjusted` are the one
//! documented difference: a fixed wall time that repeats when the clock falls back runs once here
//! (as in crontab), twice in croniter.

use aiflow_translator::schedule::{parse_cron, parse_timezone};
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::Value;

#[test]
fn next_fire_times_match_croniter() {
    let text = include_str!("../data/croniter_table.json");
    let table: Value = serde_json::from_str(text).expect("the table is JSON");
    let rows = table["rows"].as_array().expect("rows");
    assert!(rows.len() >= 40, "{} rows", rows.len());
    let mut zones = std::collections::BTreeSet::new();
    let mut failures = Vec::new();
    for row in rows {
        let (expr, tz, start) = (
            row["expr"].as_str().expect("expr"),
            row["tz"].as_str().expect("tz"),
            row["start"].as_str().expect("start"),
        );
        zones.insert(tz);
        let expected: Vec<&str> = row["next"]
            .as_array()
            .expect("next")
            .iter()
            .map(|v| v.as_str().expect("a time"))
            .collect();
        let schedule = parse_cron(expr).unwrap_or_else(|e| panic!("{expr}: {e}"));
        let zone = parse_timezone(tz).expect("a zone");
        let start: DateTime<Utc> = start.parse().expect("an RFC 3339 time");
        let got: Vec<String> = schedule
            .after(start, &zone)
            .take(expected.len())
            .map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true))
            .collect();
        if got != expected {
            failures.push(format!(
                "{expr:?} in {tz} after {start}:\n  croniter {expected:?}\n  ours     {got:?}"
            ));
        }
        // The newest tick at or before each expected time is that time.
        for t in &expected {
            let t: DateTime<Utc> = t.parse().expect("an RFC 3339 time");
            if schedule.latest_at_or_before(t, &zone) != Some(t) {
                failures.push(format!(
                    "{expr:?} in {tz}: latest at or before {t} is not {t}"
                ));
            }
        }
    }
    for zone in [
        "UTC",
        "America/New_York",
        "Europe/Berlin",
        "Australia/Sydney",
    ] {
        assert!(zones.contains(zone), "no row in {zone}");
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
