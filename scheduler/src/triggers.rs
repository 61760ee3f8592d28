//! Time triggers as plain functions of time: which ticks of a cron or interval trigger are due
//! between the last check and now, after the `catchup` policy. The clock is the caller's, so
//! tests pass any times they like.

use aiflow_translator::schedule::{parse_cron, parse_timezone};
use aiflow_translator::{Catchup, WorkflowTrigger};
use chrono::{DateTime, Duration, Utc};

/// A tick later than this after its time counts as missed (the scheduler was down).
pub const ON_TIME: Duration = Duration::seconds(30);

/// Ticks to fire now for a time trigger last checked at `last`. Missed ticks follow `catchup`:
/// `none` drops them (only a tick within [`ON_TIME`] of now fires), `latest` fires the newest
/// one, `all` fires each (the first 1000). Non-time triggers give nothing. Times past chrono's
/// range never come: an interval of ten million years is accepted and never fires.
#[must_use]
pub fn due(
    trigger: &WorkflowTrigger,
    last: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Vec<DateTime<Utc>> {
    if now <= last {
        return Vec::new();
    }
    match trigger {
        WorkflowTrigger::Cron {
            cron,
            timezone,
            catchup,
            ..
        } => {
            let (Ok(schedule), Ok(tz)) = (parse_cron(cron), parse_timezone(timezone)) else {
                return Vec::new();
            };
            if *catchup == Catchup::All {
                return schedule
                    .after(last, &tz)
                    .take_while(|t| *t <= now)
                    .take(1000)
                    .collect();
            }
            // The newest tick at or before now, found backwards from now: walking forwards
            // from `last` would stop at the 1000th tick after a long downtime.
            let latest = schedule
                .latest_at_or_before(now, &tz)
                .filter(|t| *t > last && *t <= now);
            match catchup {
                Catchup::Latest => latest.into_iter().collect(),
                _ => latest.filter(|t| now - *t <= ON_TIME).into_iter().collect(),
            }
        }
        // Interval triggers catch up on the latest tick only: the last whole period.
        WorkflowTrigger::Interval { interval_s } => {
            let Some(step) = interval_step(*interval_s) else {
                return Vec::new();
            };
            let periods = (now - last).num_seconds() / step;
            (periods > 0)
                .then(|| Duration::try_seconds(periods.saturating_mul(step)))
                .flatten()
                .and_then(|d| last.checked_add_signed(d))
                .into_iter()
                .collect()
        }
        _ => Vec::new(),
    }
}

/// An interval in whole seconds (at least one), `None` when it is past chrono's range.
fn interval_step(interval_s: u64) -> Option<i64> {
    let step = i64::try_from(interval_s).ok()?.max(1);
    Duration::try_seconds(step).map(|_| step)
}

/// The parts of a trigger, in pre-order: itself, or the leaves of an `all_of` (which starts an
/// execution once each part has happened since the last start).
#[must_use]
pub fn parts(trigger: &WorkflowTrigger) -> Vec<&WorkflowTrigger> {
    match trigger {
        WorkflowTrigger::AllOf { all_of } => all_of.iter().flat_map(parts).collect(),
        t => vec![t],
    }
}

/// Whether the trigger is a cron or interval one.
#[must_use]
pub fn is_time(trigger: &WorkflowTrigger) -> bool {
    matches!(
        trigger,
        WorkflowTrigger::Cron { .. } | WorkflowTrigger::Interval { .. }
    )
}

/// When a time trigger fires next, strictly after `now`: a cron trigger's next tick in its time
/// zone; an interval trigger's next period after `last` (its last firing), when it has fired.
/// Other triggers have no time of their own.
#[must_use]
pub fn next_tick(
    trigger: &WorkflowTrigger,
    last: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    match trigger {
        // Evaluated from what the user wrote, in our crontab dialect (the `schedule` field is
        // informational: documents stored by older versions hold another form there).
        WorkflowTrigger::Cron { cron, timezone, .. } => {
            let schedule = parse_cron(cron).ok()?;
            let tz = parse_timezone(timezone).ok()?;
            schedule.next_after(now, &tz)
        }
        WorkflowTrigger::Interval { interval_s } => {
            let step = interval_step(*interval_s)?;
            let behind = (now - last?).num_seconds().max(0);
            let ahead = (behind / step).checked_add(1)?.checked_mul(step)?;
            last?.checked_add_signed(Duration::try_seconds(ahead)?)
        }
        _ => None,
    }
}

/// A trigger in one line: `cron 0 */6 * * * (UTC)`, `every 60 s`, `event dataset/raw/*`, or
/// `all of: …`.
#[must_use]
pub fn describe(trigger: &WorkflowTrigger) -> String {
    match trigger {
        WorkflowTrigger::Cron { cron, timezone, .. } => format!("cron {cron} ({timezone})"),
        WorkflowTrigger::Interval { interval_s } => format!("every {interval_s} s"),
        WorkflowTrigger::Event { event, delay_s } => {
            let mut s = format!("event {}", event.key);
            if let Some(t) = &event.event_type {
                s.push_str(&format!(" [{t}]"));
            }
            if *delay_s > 0 {
                s.push_str(&format!(" + {delay_s} s"));
            }
            s
        }
        WorkflowTrigger::AllOf { all_of } => format!(
            "all of: {}",
            all_of.iter().map(describe).collect::<Vec<_>>().join("; ")
        ),
    }
}

/// The `kind` word of a trigger.
#[must_use]
pub fn kind(trigger: &WorkflowTrigger) -> &'static str {
    match trigger {
        WorkflowTrigger::Cron { .. } => "cron",
        WorkflowTrigger::Interval { .. } => "interval",
        WorkflowTrigger::Event { .. } => "event",
        WorkflowTrigger::AllOf { .. } => "all_of",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn cron(expr: &str, tz: &str, catchup: Catchup) -> WorkflowTrigger {
        WorkflowTrigger::Cron {
            cron: expr.into(),
            timezone: tz.into(),
            catchup,
            schedule: aiflow_translator::schedule::normalize_cron(expr),
        }
    }

    fn at(h: u32, m: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 25, h, m, s).unwrap()
    }

    #[test]
    fn cron_fires_on_its_tick() {
        let t = cron("*/5 * * * *", "UTC", Catchup::None);
        assert!(due(&t, at(10, 0, 1), at(10, 4, 59)).is_empty());
        assert_eq!(due(&t, at(10, 4, 59), at(10, 5, 0)), vec![at(10, 5, 0)]);
        assert_eq!(due(&t, at(10, 4, 59), at(10, 5, 2)), vec![at(10, 5, 0)]);
    }

    #[test]
    fn catchup_after_downtime() {
        // Down from 10:01 to 10:32: ticks 10:05 … 10:30 were missed.
        let (last, now) = (at(10, 1, 0), at(10, 32, 0));
        assert!(due(&cron("*/5 * * * *", "UTC", Catchup::None), last, now).is_empty());
        assert_eq!(
            due(&cron("*/5 * * * *", "UTC", Catchup::Latest), last, now),
            vec![at(10, 30, 0)]
        );
        assert_eq!(
            due(&cron("*/5 * * * *", "UTC", Catchup::All), last, now).len(),
            6
        );
    }

    #[test]
    fn cron_runs_in_its_time_zone() {
        // 09:00 in Paris is 08:00 UTC in November.
        let t = cron("0 9 * * *", "Europe/Paris", Catchup::None);
        assert_eq!(due(&t, at(7, 59, 0), at(8, 0, 1)), vec![at(8, 0, 0)]);
        assert!(due(&t, at(8, 30, 0), at(9, 0, 1)).is_empty());
    }

    #[test]
    fn cron_triggers_follow_crontab() {
        let ymd = |y, mo, d, h, mi| Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap();
        // Day of month or day of week: after Sunday 2026-12-06 comes Monday the 7th, not the
        // first 1st that is a Monday (2027-02-01).
        let t = cron("0 0 1 * 1", "UTC", Catchup::None);
        assert_eq!(
            next_tick(&t, None, ymd(2026, 12, 6, 0, 0)),
            Some(ymd(2026, 12, 7, 0, 0))
        );
        assert_eq!(
            next_tick(&t, None, ymd(2026, 12, 28, 0, 0)),
            Some(ymd(2027, 1, 1, 0, 0))
        );
        // A macro, in the trigger's time zone.
        let t = cron("@daily", "Europe/Berlin", Catchup::None);
        assert_eq!(
            next_tick(&t, None, ymd(2026, 12, 6, 12, 0)),
            Some(ymd(2026, 12, 6, 23, 0))
        );
        // Sunday as 7.
        let t = cron("0 0 * * 7", "UTC", Catchup::Latest);
        assert_eq!(
            due(&t, ymd(2026, 12, 10, 0, 0), ymd(2026, 12, 14, 0, 0)),
            vec![ymd(2026, 12, 13, 0, 0)]
        );
        // New York, 2026-11-01: 01:30 comes twice and fires once; 2026-03-08: 02:30 does not
        // exist and fires once, at 03:00 EDT.
        let t = cron("30 1 * * *", "America/New_York", Catchup::All);
        assert_eq!(
            due(&t, ymd(2026, 11, 1, 0, 0), ymd(2026, 11, 1, 12, 0)),
            vec![ymd(2026, 11, 1, 5, 30)]
        );
        let t = cron("30 2 * * *", "America/New_York", Catchup::All);
        assert_eq!(
            due(&t, ymd(2026, 3, 8, 0, 0), ymd(2026, 3, 8, 12, 0)),
            vec![ymd(2026, 3, 8, 7, 0)]
        );
        // Every hour: both real hours of the repeated one fire.
        let t = cron("0 * * * *", "America/New_York", Catchup::All);
        assert_eq!(
            due(&t, ymd(2026, 11, 1, 4, 30), ymd(2026, 11, 1, 7, 30)),
            vec![
                ymd(2026, 11, 1, 5, 0),
                ymd(2026, 11, 1, 6, 0),
                ymd(2026, 11, 1, 7, 0)
            ]
        );
    }

    #[test]
    fn interval_ticks() {
        let t = WorkflowTrigger::Interval { interval_s: 60 };
        assert!(due(&t, at(10, 0, 0), at(10, 0, 59)).is_empty());
        assert_eq!(due(&t, at(10, 0, 0), at(10, 1, 0)), vec![at(10, 1, 0)]);
        assert_eq!(due(&t, at(10, 0, 0), at(10, 5, 30)), vec![at(10, 5, 0)]);
    }

    #[test]
    fn next_tick_of_cron_and_interval() {
        let t = cron("0 9 * * *", "Europe/Paris", Catchup::None);
        // 09:00 in Paris is 08:00 UTC in November; from 08:00 exactly the next is tomorrow's.
        assert_eq!(next_tick(&t, None, at(7, 0, 0)), Some(at(8, 0, 0)));
        assert_eq!(
            next_tick(&t, None, at(8, 0, 0)),
            Some(at(8, 0, 0) + Duration::days(1))
        );
        let every = WorkflowTrigger::Interval { interval_s: 60 };
        assert_eq!(next_tick(&every, None, at(10, 0, 0)), None, "never fired");
        assert_eq!(
            next_tick(&every, Some(at(10, 0, 0)), at(10, 0, 30)),
            Some(at(10, 1, 0))
        );
        // Behind by several periods: the next period boundary after now.
        assert_eq!(
            next_tick(&every, Some(at(10, 0, 0)), at(10, 5, 0)),
            Some(at(10, 6, 0))
        );
        assert_eq!(describe(&t), "cron 0 9 * * * (Europe/Paris)");
        assert_eq!(describe(&every), "every 60 s");
        assert_eq!(kind(&every), "interval");
    }

    #[test]
    fn huge_intervals_never_fire_and_never_panic() {
        // Found by fuzzing: `last + interval` overflowed chrono's range and panicked.
        for interval_s in [333_333_333_333_322, u64::MAX, i64::MAX as u64] {
            let t = WorkflowTrigger::Interval { interval_s };
            assert!(due(&t, at(10, 0, 0), at(11, 0, 0)).is_empty());
            assert_eq!(next_tick(&t, Some(at(10, 0, 0)), at(11, 0, 0)), None);
        }
        let max = DateTime::<Utc>::MAX_UTC;
        let every = WorkflowTrigger::Interval { interval_s: 60 };
        assert_eq!(
            next_tick(&every, Some(max - Duration::seconds(30)), max),
            None
        );
        let t = cron("* * * * *", "UTC", Catchup::Latest);
        assert_eq!(next_tick(&t, None, max), None);
        assert!(due(&t, max - Duration::days(1), max).is_empty());
    }

    #[test]
    fn long_downtime_catches_up_on_the_newest_tick() {
        // Two days down: far more than 1000 missed ticks. The newest one is the one that fires,
        // not the 1000th after the last check (nor, for an interval, one per check until caught
        // up).
        let last = at(10, 0, 0) - Duration::days(2);
        let now = at(10, 0, 30);
        let every = WorkflowTrigger::Interval { interval_s: 60 };
        assert_eq!(due(&every, last, now), vec![at(10, 0, 0)]);
        assert_eq!(
            due(&cron("* * * * *", "UTC", Catchup::Latest), last, now),
            vec![at(10, 0, 0)]
        );
        assert_eq!(
            due(&cron("* * * * *", "UTC", Catchup::None), last, now),
            vec![at(10, 0, 0)],
            "the tick of 30 s ago is on time"
        );
        let all = due(&cron("* * * * *", "UTC", Catchup::All), last, now);
        assert_eq!(all.len(), 1000);
        assert_eq!(all[0], last + Duration::minutes(1));
        // A tick exactly at `now` counts; one exactly at `last` does not.
        let t = cron("*/5 * * * *", "UTC", Catchup::Latest);
        assert_eq!(due(&t, at(10, 0, 0), at(10, 5, 0)), vec![at(10, 5, 0)]);
        assert!(due(&t, at(10, 0, 0), at(10, 4, 59)).is_empty());
    }
}
