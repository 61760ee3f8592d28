//! Cron expressions and time zones, parsed the way the scheduler evaluates them.

use std::str::FromStr;

use chrono_tz::Tz;
use cron::Schedule;

/// The time zone used when a trigger names none.
pub const DEFAULT_TIMEZONE: &str = "UTC";

/// Turns a user's cron expression into the form the `cron` crate evaluates (seconds first).
///
/// Five fields are standard cron (minute hour day-of-month month day-of-week, Sunday = 0 or 7) and
/// get a `0` seconds field, with day-of-week numbers moved to the crate's 1 = Sunday … 7 =
/// Saturday. Six or seven fields are taken as they are (seconds first, optional year).
#[must_use]
pub fn normalize_cron(expr: &str) -> String {
    let fields: Vec<&str> = expr.split_whitespace().collect();
    if fields.len() != 5 {
        return fields.join(" ");
    }
    let dow = fields[4]
        .split(',')
        .map(shift_dow_item)
        .collect::<Vec<_>>()
        .join(",");
    format!(
        "0 {} {} {} {} {}",
        fields[0], fields[1], fields[2], fields[3], dow
    )
}

fn shift_dow_item(item: &str) -> String {
    let (range, step) = match item.split_once('/') {
        Some((r, s)) => (r, Some(s)),
        None => (item, None),
    };
    let shift = |s: &str| match s.parse::<u32>() {
        Ok(7) => "1".to_string(),
        Ok(n) => (n + 1).to_string(),
        Err(_) => s.to_string(),
    };
    let shifted = match range.split_once('-') {
        Some((a, "7")) if step.is_none() => return format!("{}-7,1", shift(a)),
        Some((a, b)) => {
            let b = b
                .parse::<u32>()
                .map_or(b.to_string(), |n| (n + 1).to_string());
            format!("{}-{}", shift(a), b)
        }
        None => shift(range),
    };
    match step {
        Some(s) => format!("{shifted}/{s}"),
        None => shifted,
    }
}

/// Parses a cron expression (5, 6 or 7 fields); the error says what is wrong.
pub fn parse_cron(expr: &str) -> Result<Schedule, String> {
    let n = expr.split_whitespace().count();
    if !(5..=7).contains(&n) {
        return Err(format!(
            "invalid cron expression {expr:?}: expected 5 fields (minute hour day month weekday) or 6–7 with seconds first, found {n}"
        ));
    }
    Schedule::from_str(&normalize_cron(expr)).map_err(|e| {
        // The crate's message repeats the expression with a caret line; keep the reason only.
        let text = e.to_string();
        let reason = text
            .lines()
            .map(str::trim)
            .rfind(|l| !l.is_empty() && *l != "^")
            .unwrap_or("not a cron expression")
            .to_string();
        format!("invalid cron expression {expr:?}: {reason}")
    })
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
    use chrono::{Datelike, TimeZone, Utc, Weekday};

    #[test]
    fn five_fields_get_seconds_and_sunday_zero() {
        assert_eq!(normalize_cron("0 */6 * * *"), "0 0 */6 * * *");
        assert_eq!(normalize_cron("30 2 * * 0"), "0 30 2 * * 1");
        assert_eq!(normalize_cron("0 9 * * 1-5"), "0 0 9 * * 2-6");
        assert_eq!(normalize_cron("0 9 * * 5-7"), "0 0 9 * * 6-7,1");
        assert_eq!(normalize_cron("0 9 * * MON"), "0 0 9 * * MON");
        assert_eq!(normalize_cron("0 0 9 * * *"), "0 0 9 * * *");
    }

    #[test]
    fn sunday_zero_fires_on_sunday() {
        let s = parse_cron("30 2 * * 0").unwrap();
        let from = Utc.with_ymd_and_hms(2026, 11, 25, 0, 0, 0).unwrap();
        let next = s.after(&from).next().unwrap();
        assert_eq!(next.weekday(), Weekday::Sun);
        let s = parse_cron("0 9 * * 1-5").unwrap();
        for t in s.after(&from).take(10) {
            assert!(!matches!(t.weekday(), Weekday::Sat | Weekday::Sun), "{t}");
        }
    }

    #[test]
    fn bad_expressions_and_zones_are_errors() {
        assert!(parse_cron("61 * * * *").is_err());
        assert!(parse_cron("* *").unwrap_err().contains("found 2"));
        assert!(parse_cron("not a cron at all").is_err());
        assert!(parse_timezone("Mars/Olympus").is_err());
        assert!(parse_timezone("Europe/Paris").is_ok());
    }
}
