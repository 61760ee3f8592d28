//! Cron expressions and time zones, parsed the way the scheduler evaluates them: our crontab
//! dialect on top of the `cron` crate.
//!
//! Five fields (and the `@` macros) are crontab, as croniter and Airflow read it:
//! - `minute hour day-of-month month day-of-week`; `*`, numbers, `a-b` ranges, `*/n`, `a-b/n`
//!   and `a/n` steps, comma lists; month names `JAN`…`DEC` and day names `SUN`…`SAT` (any case);
//!   Sunday is 0 or 7 anywhere, in lists, ranges (`5-7`, `FRI-SUN`) and steps (`1-7/2`).
//! - When both day fields are restricted (neither is `*` or `?`), a day matching either runs: the
//!   earlier of a day-of-month schedule and a day-of-week schedule. `0 0 1 * 1` runs on the 1st
//!   and on every Monday.
//! - `@yearly`/`@annually`, `@monthly`, `@weekly`, `@daily`/`@midnight` and `@hourly` stand for
//!   `0 0 1 1 *`, `0 0 1 * *`, `0 0 * * 0`, `0 0 * * *` and `0 * * * *`.
//!
//! Six or seven fields are the `cron` crate's own form (seconds first, an optional year, day of
//! week 1 = Sunday … 7 = Saturday, both day fields must match), as accepted before.
//!
//! Times are wall-clock times in the trigger's time zone. Across daylight-saving changes:
//! - a wall time that does not exist (spring forward) runs once, at the end of the gap (a 02:30
//!   tick on a day the clock jumps from 02:00 to 03:00 runs at 03:00), unless the hour field is
//!   `*`: then the missing ticks are skipped, since the next hour comes at once;
//! - a wall time that repeats (fall back) runs once, at its first occurrence, unless the hour
//!   field is `*`: then each real hour runs, both occurrences of the repeated hour included.

use std::str::FromStr;

use chrono::{DateTime, Duration, NaiveDateTime, Offset, TimeZone, Timelike, Utc};
use chrono_tz::Tz;
use cron::Schedule;

/// The time zone used when a trigger names none.
pub const DEFAULT_TIMEZONE: &str = "UTC";

/// The macros and the five fields each stands for.
pub const MACROS: [(&str, &str); 7] = [
    ("@yearly", "0 0 1 1 *"),
    ("@annually", "0 0 1 1 *"),
    ("@monthly", "0 0 1 * *"),
    ("@weekly", "0 0 * * 0"),
    ("@daily", "0 0 * * *"),
    ("@midnight", "0 0 * * *"),
    ("@hourly", "0 * * * *"),
];

/// Offsets change by less than this at one daylight-saving or zone change.
const WINDOW: Duration = Duration::hours(3);

/// A parsed cron expression in our dialect; evaluate it with [`CronSchedule::next_after`],
/// [`CronSchedule::latest_at_or_before`] or [`CronSchedule::after`] in a time zone.
#[derive(Debug, Clone)]
pub struct CronSchedule {
    days: Days,
    /// The hour field is `*`: ticks follow real hours across daylight-saving changes.
    every_hour: bool,
}

#[derive(Debug, Clone)]
enum Days {
    /// One `cron` crate schedule.
    One(Schedule),
    /// Both day fields restricted: a day-of-month schedule or a day-of-week schedule.
    Either(Schedule, Box<Schedule>),
}

struct Field {
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
    /// The first name's number.
    names_from: u32,
}

const MINUTE: Field = Field {
    name: "minute",
    min: 0,
    max: 59,
    names: &[],
    names_from: 0,
};
const HOUR: Field = Field {
    name: "hour",
    min: 0,
    max: 23,
    names: &[],
    names_from: 0,
};
const DAY_OF_MONTH: Field = Field {
    name: "day of month",
    min: 1,
    max: 31,
    names: &[],
    names_from: 0,
};
const MONTH: Field = Field {
    name: "month",
    min: 1,
    max: 12,
    names: &[
        "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
    ],
    names_from: 1,
};
/// 0–7, both 0 and 7 are Sunday; `*` is 0–6.
const DAY_OF_WEEK: Field = Field {
    name: "day of week",
    min: 0,
    max: 7,
    names: &["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"],
    names_from: 0,
};

impl Field {
    fn value(&self, text: &str) -> Result<u32, String> {
        if let Some(i) = self.names.iter().position(|n| n.eq_ignore_ascii_case(text)) {
            return Ok(self.names_from + u32::try_from(i).unwrap_or(0));
        }
        let n: u32 = text.parse().map_err(|_| {
            if self.names.is_empty() {
                format!("{} {text:?} is not a number", self.name)
            } else {
                format!(
                    "{} {text:?} is neither a number nor one of {}",
                    self.name,
                    self.names.join(" ")
                )
            }
        })?;
        if n < self.min || n > self.max {
            return Err(format!(
                "{} {n} is out of range {}-{}",
                self.name, self.min, self.max
            ));
        }
        Ok(n)
    }

    /// The values a field selects, in this field's numbering (Sunday as 0 only).
    fn parse(&self, text: &str) -> Result<Vec<u32>, String> {
        let star_max = if self.name == DAY_OF_WEEK.name {
            6
        } else {
            self.max
        };
        let days = self.name == DAY_OF_MONTH.name || self.name == DAY_OF_WEEK.name;
        let mut set = std::collections::BTreeSet::new();
        for item in text.split(',') {
            if item.is_empty() {
                return Err(format!("{} {text:?} has an empty list item", self.name));
            }
            let (range, step) = match item.split_once('/') {
                Some((r, s)) => {
                    let step: u32 = s
                        .parse()
                        .ok()
                        .filter(|n| *n >= 1 && *n <= self.max)
                        .ok_or_else(|| {
                            format!(
                                "{} step {s:?} in {item:?} is not a number from 1 to {}",
                                self.name, self.max
                            )
                        })?;
                    (r, step)
                }
                None => (item, 1),
            };
            let (lo, hi) = match range {
                "*" => (self.min, star_max),
                "?" if days => (self.min, star_max),
                _ => match range.split_once('-') {
                    Some((a, b)) => {
                        let (lo, mut hi) = (self.value(a)?, self.value(b)?);
                        // A day-of-week range may end on Sunday as 0 or SUN: `FRI-SUN`.
                        if self.name == DAY_OF_WEEK.name && hi == 0 && lo > 0 {
                            hi = 7;
                        }
                        if lo > hi {
                            return Err(format!(
                                "{} range {range:?} runs backwards (Sunday is 0 or 7)",
                                self.name
                            ));
                        }
                        (lo, hi)
                    }
                    None if item.contains('/') => (self.value(range)?, self.max),
                    None => {
                        let v = self.value(range)?;
                        (v, v)
                    }
                },
            };
            let mut v = lo;
            while v <= hi {
                set.insert(if self.name == DAY_OF_WEEK.name && v == 7 {
                    0
                } else {
                    v
                });
                v += step;
            }
        }
        Ok(set.into_iter().collect())
    }
}

/// A set of values in the `cron` crate's syntax: `*` when full, `a-b/n` for an even run, or a
/// list of numbers and ranges.
fn crate_field(values: &[u32], min: u32, max: u32) -> String {
    let full = values.len() == (max - min + 1) as usize;
    if full {
        return "*".into();
    }
    if values.len() >= 3 {
        let step = values[1] - values[0];
        if values.windows(2).all(|w| w[1] - w[0] == step) {
            let (a, b) = (values[0], values[values.len() - 1]);
            return if a == min && b + step > max {
                format!("*/{step}")
            } else if step == 1 {
                format!("{a}-{b}")
            } else {
                format!("{a}-{b}/{step}")
            };
        }
    }
    values
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

fn expand_macro(expr: &str) -> Result<Option<&'static str>, String> {
    let t = expr.trim();
    if !t.starts_with('@') {
        return Ok(None);
    }
    MACROS
        .iter()
        .find(|(m, _)| m.eq_ignore_ascii_case(t))
        .map(|(_, f)| Some(*f))
        .ok_or_else(|| {
            format!(
                "unknown macro {t:?} (use {})",
                MACROS.map(|(m, _)| m).join(", ")
            )
        })
}

/// The five crontab fields as `cron` crate expressions (seconds first): one, or a day-of-month
/// and a day-of-week one when both day fields are restricted.
fn crontab_to_crate(fields: &[&str]) -> Result<(String, Option<String>), String> {
    let minute = MINUTE.parse(fields[0])?;
    let hour = HOUR.parse(fields[1])?;
    let dom = DAY_OF_MONTH.parse(fields[2])?;
    let month = MONTH.parse(fields[3])?;
    // The crate numbers days of week 1 = Sunday … 7 = Saturday.
    let dow: Vec<u32> = DAY_OF_WEEK
        .parse(fields[4])?
        .into_iter()
        .map(|d| d + 1)
        .collect();
    let restricted = |f: &str| f != "*" && f != "?";
    let head = format!(
        "0 {} {}",
        crate_field(&minute, 0, 59),
        crate_field(&hour, 0, 23)
    );
    let month = crate_field(&month, 1, 12);
    let dom_text = crate_field(&dom, 1, 31);
    let dow_text = crate_field(&dow, 1, 7);
    match (restricted(fields[2]), restricted(fields[4])) {
        (true, true) => Ok((
            format!("{head} {dom_text} {month} *"),
            Some(format!("{head} * {month} {dow_text}")),
        )),
        (true, false) => Ok((format!("{head} {dom_text} {month} *"), None)),
        (false, true) => Ok((format!("{head} * {month} {dow_text}"), None)),
        (false, false) => Ok((format!("{head} * {month} *"), None)),
    }
}

fn crate_schedule(expr: &str) -> Result<Schedule, String> {
    Schedule::from_str(expr).map_err(|e| {
        // The crate's message repeats the expression with a caret line; keep the reason only.
        let text = e.to_string();
        text.lines()
            .map(str::trim)
            .rfind(|l| !l.is_empty() && *l != "^")
            .unwrap_or("not a cron expression")
            .to_string()
    })
}

/// Parses a cron expression (5 fields, a macro, or 6–7 fields with seconds first); the error
/// says what is wrong.
pub fn parse_cron(expr: &str) -> Result<CronSchedule, String> {
    let invalid = |reason: String| format!("invalid cron expression {expr:?}: {reason}");
    let five = expand_macro(expr).map_err(invalid)?;
    let fields: Vec<&str> = five.unwrap_or(expr).split_whitespace().collect();
    match fields.len() {
        5 => {
            let (first, second) = crontab_to_crate(&fields).map_err(invalid)?;
            let first = crate_schedule(&first).map_err(invalid)?;
            let days = match second {
                Some(s) => Days::Either(first, Box::new(crate_schedule(&s).map_err(invalid)?)),
                None => Days::One(first),
            };
            Ok(CronSchedule {
                days,
                every_hour: fields[1] == "*",
            })
        }
        6 | 7 => Ok(CronSchedule {
            days: Days::One(crate_schedule(&fields.join(" ")).map_err(invalid)?),
            every_hour: fields[2] == "*",
        }),
        n => Err(invalid(format!(
            "expected 5 fields (minute hour day month weekday), a macro such as @daily, or 6–7 fields with seconds first, found {n}"
        ))),
    }
}

/// The form the scheduler evaluates, for the workflow document's `schedule` field: the `cron`
/// crate's expression (seconds first, day of week 1 = Sunday … 7 = Saturday), or two joined by
/// ` | ` when both day fields are restricted (a day matching either runs). An expression that
/// does not parse is returned with its fields joined by single spaces.
#[must_use]
pub fn normalize_cron(expr: &str) -> String {
    let fields: Vec<&str> = match expand_macro(expr) {
        Ok(Some(five)) => five.split_whitespace().collect(),
        _ => expr.split_whitespace().collect(),
    };
    if fields.len() == 5
        && let Ok((first, second)) = crontab_to_crate(&fields)
    {
        return match second {
            Some(s) => format!("{first} | {s}"),
            None => first,
        };
    }
    fields.join(" ")
}

/// The wall-clock time of an instant in `tz`.
fn local(tz: &Tz, t: DateTime<Utc>) -> NaiveDateTime {
    t.with_timezone(tz).naive_local()
}

fn offset(tz: &Tz, t: DateTime<Utc>) -> i32 {
    tz.offset_from_utc_datetime(&t.naive_utc())
        .fix()
        .local_minus_utc()
}

/// A fall-back change: at `at` the wall clock goes back from `end` to `start`, so wall times in
/// `[start, end)` come twice.
struct Fold {
    at: DateTime<Utc>,
    start: NaiveDateTime,
    end: NaiveDateTime,
}

/// The fall-back change within [`WINDOW`] of `t`, if any.
fn fold_near(tz: &Tz, t: DateTime<Utc>) -> Option<Fold> {
    let (a, b) = (t.checked_sub_signed(WINDOW)?, t.checked_add_signed(WINDOW)?);
    let (oa, ot, ob) = (offset(tz, a), offset(tz, t), offset(tz, b));
    let (lo, hi, before, after) = if oa > ot {
        (a, t, oa, ot)
    } else if ot > ob {
        (t, b, ot, ob)
    } else {
        return None;
    };
    let at = |s: i64| DateTime::from_timestamp(s, 0);
    // The first second with the later offset.
    let (mut l, mut h) = (lo.timestamp(), hi.timestamp());
    while h - l > 1 {
        let m = l + (h - l) / 2;
        if offset(tz, at(m)?) == after {
            h = m;
        } else {
            l = m;
        }
    }
    let f = at(h)?;
    let wall = |o: i32| (f + Duration::seconds(i64::from(o))).naive_utc();
    Some(Fold {
        at: f,
        start: wall(after),
        end: wall(before),
    })
}

/// The first instant at which the wall clock reads `wall` or later: the end of the gap `wall`
/// falls into.
fn gap_end(tz: &Tz, wall: NaiveDateTime) -> Option<DateTime<Utc>> {
    let centre = wall.and_utc().timestamp();
    let (mut lo, mut hi) = (centre - 16 * 3600, centre + 16 * 3600);
    let at = |s: i64| DateTime::from_timestamp(s, 0);
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if local(tz, at(mid)?) >= wall {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    at(hi)
}

impl CronSchedule {
    /// The next wall-clock tick strictly after `wall`.
    fn wall_next(&self, wall: NaiveDateTime) -> Option<NaiveDateTime> {
        // The crate adds a second without checking.
        wall.checked_add_signed(Duration::seconds(2))?;
        let after = wall.and_utc();
        let next = |s: &Schedule| s.after(&after).next().map(|t| t.naive_utc());
        match &self.days {
            Days::One(s) => next(s),
            Days::Either(a, b) => match (next(a), next(b)) {
                (Some(x), Some(y)) => Some(x.min(y)),
                (x, y) => x.or(y),
            },
        }
    }

    /// The wall-clock tick just before `wall`.
    fn wall_prev(&self, wall: NaiveDateTime) -> Option<NaiveDateTime> {
        wall.checked_sub_signed(Duration::seconds(2))?;
        let before = wall.and_utc();
        let prev = |s: &Schedule| s.after(&before).next_back().map(|t| t.naive_utc());
        match &self.days {
            Days::One(s) => prev(s),
            Days::Either(a, b) => match (prev(a), prev(b)) {
                (Some(x), Some(y)) => Some(x.max(y)),
                (x, y) => x.or(y),
            },
        }
    }

    /// The instants a wall-clock tick runs at in `tz` (none, one or two), in order.
    fn instants(&self, tz: &Tz, wall: NaiveDateTime) -> Vec<DateTime<Utc>> {
        match tz.from_local_datetime(&wall) {
            chrono::LocalResult::Single(t) => vec![t.with_timezone(&Utc)],
            chrono::LocalResult::Ambiguous(a, b) if self.every_hour => {
                vec![a.with_timezone(&Utc), b.with_timezone(&Utc)]
            }
            chrono::LocalResult::Ambiguous(a, _) => vec![a.with_timezone(&Utc)],
            chrono::LocalResult::None if self.every_hour => Vec::new(),
            chrono::LocalResult::None => gap_end(tz, wall).into_iter().collect(),
        }
    }

    /// The first tick strictly after `t`, evaluated in `tz`.
    ///
    /// Instants grow with wall-clock ticks except in a fold, where every-hour ticks run again in
    /// the second pass; so: the first tick from `t`'s wall time on with an instant after `t`,
    /// or, before a fold, the first tick of the fold's second pass when that is earlier.
    #[must_use]
    pub fn next_after(&self, t: DateTime<Utc>, tz: &Tz) -> Option<DateTime<Utc>> {
        let wall = local(tz, t).with_nanosecond(0)?;
        let fold = fold_near(tz, t);
        let mut best: Option<DateTime<Utc>> = None;
        if self.every_hour
            && let Some(f) = &fold
            && f.at > t
            && let Some(l) = f
                .start
                .checked_sub_signed(Duration::seconds(1))
                .and_then(|c| self.wall_next(c))
            && l < f.end
            && let chrono::LocalResult::Ambiguous(_, late) = tz.from_local_datetime(&l)
        {
            best = Some(late.with_timezone(&Utc));
        }
        let mut cursor = wall.checked_sub_signed(Duration::seconds(1))?;
        // In a fold's second pass, fixed times there ran at their first occurrence.
        if !self.every_hour
            && let Some(f) = &fold
            && f.at <= t
            && wall < f.end
        {
            cursor = cursor.max(f.end - Duration::seconds(1));
        }
        // Before a fold, a tick's second-pass run is not its next: that is the one found above.
        let fold_ahead = fold.as_ref().is_some_and(|f| f.at > t);
        while let Some(l) = self.wall_next(cursor) {
            let runs = self.instants(tz, l);
            let runs = if fold_ahead {
                &runs[..runs.len().min(1)]
            } else {
                &runs[..]
            };
            if let Some(x) = runs.iter().copied().find(|x| *x > t) {
                return Some(best.map_or(x, |b| b.min(x)));
            }
            cursor = l;
            // Every-hour ticks in a gap do not run: on to its end.
            if self.every_hour
                && tz.from_local_datetime(&l) == chrono::LocalResult::None
                && let Some(g) = gap_end(tz, l)
            {
                cursor = cursor.max(local(tz, g) - Duration::seconds(1));
            }
        }
        best
    }

    /// The newest tick at or before `t`, evaluated in `tz` (the mirror of
    /// [`CronSchedule::next_after`]).
    #[must_use]
    pub fn latest_at_or_before(&self, t: DateTime<Utc>, tz: &Tz) -> Option<DateTime<Utc>> {
        let wall = local(tz, t).with_nanosecond(0)?;
        let mut best: Option<DateTime<Utc>> = None;
        // In a fold's second pass, the first pass's ticks after `wall` have run already.
        if let Some(f) = fold_near(tz, t)
            && f.at <= t
            && wall < f.end
            && let Some(l) = self.wall_prev(f.end)
            && l > wall
            && let chrono::LocalResult::Ambiguous(early, _) = tz.from_local_datetime(&l)
        {
            best = Some(early.with_timezone(&Utc));
        }
        let mut cursor = wall.checked_add_signed(Duration::seconds(1))?;
        while let Some(l) = self.wall_prev(cursor) {
            if let Some(x) = self.instants(tz, l).into_iter().rfind(|x| *x <= t) {
                return Some(best.map_or(x, |b| b.max(x)));
            }
            cursor = l;
            // Every-hour ticks in a gap do not run: back to its start.
            if self.every_hour
                && tz.from_local_datetime(&l) == chrono::LocalResult::None
                && let Some(g) = gap_end(tz, l)
                && let Some(before) = g.checked_sub_signed(Duration::seconds(1))
            {
                cursor = cursor.min(local(tz, before) + Duration::seconds(1));
            }
        }
        best
    }

    /// The ticks strictly after `t`, in order, evaluated in `tz`.
    pub fn after<'a>(
        &'a self,
        t: DateTime<Utc>,
        tz: &'a Tz,
    ) -> impl Iterator<Item = DateTime<Utc>> + 'a {
        std::iter::successors(self.next_after(t, tz), move |prev| {
            self.next_after(*prev, tz)
        })
    }
}

/// Parses an IANA time zone name such as `Europe/Paris` or `UTC`.
pub fn parse_timezone(name: &str) -> Result<Tz, String> {
    Tz::from_str(name).map_err(|_| {
        format!("unknown time zone {name:?} (use an IANA name such as UTC or Europe/Paris)")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Datelike, Weekday};

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn next(expr: &str, tz: &str, from: &str, n: usize) -> Vec<String> {
        let tz = parse_timezone(tz).unwrap();
        parse_cron(expr)
            .unwrap()
            .after(utc(from), &tz)
            .take(n)
            .map(|t| t.with_timezone(&tz).to_rfc3339())
            .collect()
    }

    #[test]
    fn five_fields_become_the_crates_form() {
        assert_eq!(normalize_cron("0 */6 * * *"), "0 0 */6 * * *");
        assert_eq!(normalize_cron("*/7 1-23/2 * * */2"), "0 */7 1-23/2 * * */2");
        assert_eq!(normalize_cron("30 2 * * 0"), "0 30 2 * * 1");
        assert_eq!(normalize_cron("0 9 * * 1-5"), "0 0 9 * * 2-6");
        assert_eq!(normalize_cron("0 9 * * 5-7"), "0 0 9 * * 1,6,7");
        assert_eq!(normalize_cron("0 9 * * MON"), "0 0 9 * * 2");
        assert_eq!(normalize_cron("@weekly"), "0 0 0 * * 1");
        assert_eq!(normalize_cron("0 0 1 * 1"), "0 0 0 1 * * | 0 0 0 * * 2");
        assert_eq!(normalize_cron("0 0 9 * * *"), "0 0 9 * * *");
    }

    #[test]
    fn sunday_is_zero_or_seven_in_every_form() {
        let from = "2026-11-25T00:00:00Z";
        for expr in ["30 2 * * 0", "30 2 * * 7", "30 2 * * sun", "30 2 * * 7-7"] {
            for t in next(expr, "UTC", from, 3) {
                let d = DateTime::parse_from_rfc3339(&t).unwrap();
                assert_eq!(d.weekday(), Weekday::Sun, "{expr}: {t}");
            }
        }
        let weekdays = |expr: &str| -> Vec<Weekday> {
            next(expr, "UTC", "2026-11-29T12:00:00Z", 4)
                .iter()
                .map(|t| DateTime::parse_from_rfc3339(t).unwrap().weekday())
                .collect()
        };
        use Weekday::*;
        assert_eq!(weekdays("0 0 * * 5-7"), [Fri, Sat, Sun, Fri]);
        assert_eq!(weekdays("0 0 * * 1-7/2"), [Mon, Wed, Fri, Sun]);
        assert_eq!(weekdays("0 0 * * 7,1"), [Mon, Sun, Mon, Sun]);
        assert_eq!(weekdays("0 0 * * fri-sat"), [Fri, Sat, Fri, Sat]);
        assert_eq!(weekdays("0 0 * * SAT-SUN"), [Sat, Sun, Sat, Sun]);
        let s = next("0 9 * * 1-5", "UTC", "2026-11-25T00:00:00Z", 10);
        for t in s {
            let d = DateTime::parse_from_rfc3339(&t).unwrap();
            assert!(!matches!(d.weekday(), Sat | Sun), "{t}");
        }
    }

    #[test]
    fn both_day_fields_restricted_is_either() {
        // The 1st, and Mondays: not only a 1st that is a Monday.
        assert_eq!(
            next("0 0 1 * 1", "UTC", "2026-12-06T00:00:00Z", 4),
            [
                "2026-12-07T00:00:00+00:00",
                "2026-12-14T00:00:00+00:00",
                "2026-12-21T00:00:00+00:00",
                "2026-12-28T00:00:00+00:00",
            ]
        );
        assert_eq!(
            next("0 0 1 * 1", "UTC", "2026-12-28T00:00:00Z", 2),
            ["2027-01-01T00:00:00+00:00", "2027-01-04T00:00:00+00:00"]
        );
        // One restricted day field alone is the only rule.
        assert_eq!(
            next("0 0 1 * *", "UTC", "2026-12-06T00:00:00Z", 1),
            ["2027-01-01T00:00:00+00:00"]
        );
        // The latest tick walks the same days backwards.
        let s = parse_cron("0 0 1 * 1").unwrap();
        assert_eq!(
            s.latest_at_or_before(utc("2027-01-03T12:00:00Z"), &Tz::UTC),
            Some(utc("2027-01-01T00:00:00Z"))
        );
        assert_eq!(
            s.latest_at_or_before(utc("2027-01-04T00:00:00Z"), &Tz::UTC),
            Some(utc("2027-01-04T00:00:00Z"))
        );
    }

    #[test]
    fn macros_names_ranges_and_steps() {
        for (m, five) in MACROS {
            assert_eq!(
                next(m, "UTC", "2026-12-06T10:30:00Z", 3),
                next(five, "UTC", "2026-12-06T10:30:00Z", 3),
                "{m}"
            );
            assert!(parse_cron(&m.to_uppercase()).is_ok(), "{m}");
        }
        assert_eq!(
            next("0 12 1 jan,Jul *", "UTC", "2026-12-06T00:00:00Z", 2),
            ["2027-01-01T12:00:00+00:00", "2027-07-01T12:00:00+00:00"]
        );
        assert_eq!(
            next("10/20 8-9 * * *", "UTC", "2026-12-06T00:00:00Z", 4),
            [
                "2026-12-06T08:10:00+00:00",
                "2026-12-06T08:30:00+00:00",
                "2026-12-06T08:50:00+00:00",
                "2026-12-06T09:10:00+00:00",
            ]
        );
    }

    #[test]
    fn daylight_saving_gaps_and_repeats_run_once() {
        let ny = "America/New_York";
        // 2026-03-08: 02:00 EST jumps to 03:00 EDT. 02:30 does not exist: it runs at 03:00.
        assert_eq!(
            next("30 2 * * *", ny, "2026-03-07T12:00:00Z", 2),
            ["2026-03-08T03:00:00-04:00", "2026-03-09T02:30:00-04:00"]
        );
        // Two missing ticks still run once.
        assert_eq!(
            next("0,30 2 * * *", ny, "2026-03-08T05:00:00Z", 2),
            ["2026-03-08T03:00:00-04:00", "2026-03-09T02:00:00-04:00"]
        );
        // Every hour: the missing hour is skipped.
        assert_eq!(
            next("15 * * * *", ny, "2026-03-08T05:30:00Z", 2),
            ["2026-03-08T01:15:00-05:00", "2026-03-08T03:15:00-04:00"]
        );
        // 2026-11-01: 02:00 EDT goes back to 01:00 EST. 01:30 comes twice and runs once.
        assert_eq!(
            next("30 1 * * *", ny, "2026-10-31T12:00:00Z", 2),
            ["2026-11-01T01:30:00-04:00", "2026-11-02T01:30:00-05:00"]
        );
        // Asked from inside the repeated hour, it does not run again.
        assert_eq!(
            next("30 1 * * *", ny, "2026-11-01T06:10:00Z", 1),
            ["2026-11-02T01:30:00-05:00"]
        );
        // Every hour: both real hours run.
        assert_eq!(
            next("0 * * * *", ny, "2026-11-01T05:10:00Z", 2),
            ["2026-11-01T01:00:00-05:00", "2026-11-01T02:00:00-05:00"]
        );
        let s = parse_cron("30 1 * * *").unwrap();
        let tz = parse_timezone(ny).unwrap();
        assert_eq!(
            s.latest_at_or_before(utc("2026-11-01T07:00:00Z"), &tz),
            Some(utc("2026-11-01T05:30:00Z"))
        );
        let s = parse_cron("30 2 * * *").unwrap();
        assert_eq!(
            s.latest_at_or_before(utc("2026-03-08T07:10:00Z"), &tz),
            Some(utc("2026-03-08T07:00:00Z"))
        );
    }

    /// Every run instant in (from, to]: each wall-clock tick of the window mapped on its own.
    fn reference(
        s: &CronSchedule,
        tz: &Tz,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Vec<DateTime<Utc>> {
        let mut wall = local(tz, from) - Duration::hours(4);
        let end = local(tz, to) + Duration::hours(4);
        let mut out = Vec::new();
        while let Some(w) = s.wall_next(wall).filter(|w| *w <= end) {
            out.extend(
                s.instants(tz, w)
                    .into_iter()
                    .filter(|t| *t > from && *t <= to),
            );
            wall = w;
        }
        out.sort();
        out.dedup();
        out
    }

    #[test]
    fn walking_agrees_with_mapping_every_tick_around_clock_changes() {
        let zones = [
            "America/New_York",
            "Europe/Berlin",
            "Australia/Sydney",
            "Australia/Lord_Howe",
            "UTC",
        ];
        // Around each 2026 change of those zones.
        let changes = [
            "2026-03-08T07:00:00Z",
            "2026-11-01T06:00:00Z",
            "2026-03-29T01:00:00Z",
            "2026-10-25T01:00:00Z",
            "2026-04-04T16:00:00Z",
            "2026-10-03T16:00:00Z",
            "2026-04-04T15:00:00Z",
            "2026-10-03T15:30:00Z",
        ];
        let exprs = [
            "* * * * *",
            "*/7 * * * *",
            "30 1 * * *",
            "15 2 * * *",
            "0 * * * *",
            "45 2,3 * * *",
            "*/20 1-3 * * *",
            "0 0 1 * 1",
            "*/13 * * * * *",
            "0 30 2 * * *",
        ];
        for expr in exprs {
            let s = parse_cron(expr).unwrap();
            for zone in zones {
                let tz = parse_timezone(zone).unwrap();
                for change in changes {
                    let from = utc(change) - Duration::hours(5);
                    let to = utc(change) + Duration::hours(5);
                    let want = reference(&s, &tz, from, to);
                    let got: Vec<_> = s.after(from, &tz).take_while(|t| *t <= to).collect();
                    if got != want {
                        let diff = got.iter().zip(&want).position(|(a, b)| a != b);
                        panic!(
                            "{expr} in {zone} around {change}: {} ticks, want {}; first difference at {diff:?}: {:?} vs {:?}",
                            got.len(),
                            want.len(),
                            diff.and_then(|i| got.get(i)),
                            diff.and_then(|i| want.get(i)),
                        );
                    }
                    // The newest tick at or before any time is the last of the reference's.
                    let mut t = from + Duration::minutes(61);
                    while t < to {
                        let expected = want.iter().rev().find(|x| **x <= t).copied();
                        if expected.is_some() {
                            assert_eq!(
                                s.latest_at_or_before(t, &tz),
                                expected,
                                "{expr} in {zone}: latest at or before {t}"
                            );
                        }
                        t += Duration::seconds(617);
                    }
                }
            }
        }
    }

    #[test]
    fn six_and_seven_fields_keep_the_crates_form() {
        // Seconds first, 1 = Sunday.
        let s = next("0 30 2 * * 1", "UTC", "2026-11-25T00:00:00Z", 1);
        let d = DateTime::parse_from_rfc3339(&s[0]).unwrap();
        assert_eq!(d.weekday(), Weekday::Sun);
        assert_eq!(
            next("*/20 * * * * * 2027", "UTC", "2026-11-25T00:00:00Z", 2),
            ["2027-01-01T00:00:00+00:00", "2027-01-01T00:00:20+00:00"]
        );
    }

    #[test]
    fn bad_expressions_and_zones_are_errors() {
        let err = |e: &str| parse_cron(e).unwrap_err();
        assert!(err("61 * * * *").contains("minute 61 is out of range 0-59"));
        assert!(err("* 24 * * *").contains("hour 24"));
        assert!(err("* * 0 * *").contains("day of month 0"));
        assert!(err("* * * 13 *").contains("month 13"));
        assert!(err("* * * * 8").contains("day of week 8"));
        assert!(err("* * * * 5-1").contains("runs backwards"));
        assert!(parse_cron("* * * * 5-0").is_ok());
        assert!(err("*/0 * * * *").contains("step"));
        assert!(err("* * * * MOO").contains("SUN MON"));
        assert!(err("1,,2 * * * *").contains("empty"));
        assert!(err("@reboot").contains("unknown macro"));
        assert!(err("* *").contains("found 2"));
        assert!(err("not a cron at all").contains("minute \"not\" is not a number"));
        assert!(parse_timezone("Mars/Olympus").is_err());
        assert!(parse_timezone("Europe/Paris").is_ok());
    }
}
