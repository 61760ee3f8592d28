//! Time triggers as plain functions of time: which ticks of a cron or interval trigger are due
//! between the last check and now, after the `catchup` policy. The clock is the caller's, so
//! tests pass any times they like.

use std::str::FromStr;

use aiflow_translator::{Catchup, WorkflowTrigger};
use chrono::{DateTime, Duration, Utc};
use chrono_tz::Tz;
use cron::Schedule;

/// A tick later than this after its time counts as missed (the scheduler was down).
pub const ON_TIME: Duration = Duration::seconds(30);

/// Ticks to fire now for a time trigger last checked at `last`. Missed ticks follow `catchup`:
/// `none` drops them (only a tick within [`ON_TIME`] of now fires), `latest` fires the newest
/// one, `all` fires each (at most 1000). Non-time triggers give nothing.
#[must_use]
pub fn due(
    trigger: &WorkflowTrigger,
    last: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Vec<DateTime<Utc>> {
    if now <= last {
        return Vec::new();
    }
    let (ticks, catchup): (Vec<DateTime<Utc>>, Catchup) = match trigger {
        WorkflowTrigger::Cron {
            schedule,
            timezone,
            catchup,
            ..
        } => {
            let (Ok(schedule), Ok(tz)) = (Schedule::from_str(schedule), Tz::from_str(timezone))
            else {
                return Vec::new();
            };
            let ticks = schedule
                .after(&last.with_timezone(&tz))
                .map(|t| t.with_timezone(&Utc))
                .take_while(|t| *t <= now)
                .take(1000)
                .collect();
            (ticks, catchup.clone())
        }
        WorkflowTrigger::Interval { interval_s } => {
            let step = Duration::seconds(i64::try_from(*interval_s).unwrap_or(i64::MAX).max(1));
            let mut ticks = Vec::new();
            let mut t = last + step;
            while t <= now && ticks.len() < 1000 {
                ticks.push(t);
                t += step;
            }
            // Interval triggers catch up on the latest tick only.
            (ticks, Catchup::Latest)
        }
        _ => return Vec::new(),
    };
    match catchup {
        Catchup::All => ticks,
        Catchup::Latest => ticks.last().copied().into_iter().collect(),
        _ => ticks
            .last()
            .copied()
            .filter(|t| now - *t <= ON_TIME)
            .into_iter()
            .collect(),
    }
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
        WorkflowTrigger::Cron {
            schedule, timezone, ..
        } => {
            let schedule = Schedule::from_str(schedule).ok()?;
            let tz = Tz::from_str(timezone).ok()?;
            schedule
                .after(&now.with_timezone(&tz))
                .next()
                .map(|t| t.with_timezone(&Utc))
        }
        WorkflowTrigger::Interval { interval_s } => {
            let step = i64::try_from(*interval_s).unwrap_or(i64::MAX).max(1);
            let last = last?;
            let behind = (now - last).num_seconds().max(0);
            Some(last + Duration::seconds((behind / step + 1).saturating_mul(step)))
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
}
