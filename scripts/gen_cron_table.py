#!/usr/bin/env python3
"""Writes translator/tests/data/croniter_table.json: next fire times from croniter for cron
expressions in several time zones, around daylight-saving changes included. The Rust table test
(translator/tests/it/cron_table.rs) asserts that our dialect gives the same times.

Run once, in a venv:
    python3 -m venv /tmp/venv-cron && /tmp/venv-cron/bin/pip install croniter pytz
    /tmp/venv-cron/bin/python scripts/gen_cron_table.py

One documented difference: croniter runs a fixed wall time that repeats when the clock falls back
twice (once per offset); crontab, and AI Flow, run it once, at its first occurrence. For those rows
the script drops croniter's second run, keeps croniter's raw answer in `croniter` and says so in
`adjusted`. When the hour field is `*`, both real hours run in both, and nothing is adjusted.
"""
import json
import os
from datetime import datetime, timezone

from importlib.metadata import version
import pytz
from croniter import croniter

N = 5

# (expression, time zone, start instant in UTC)
ROWS = [
    # Day of month OR day of week when both are restricted.
    ("0 0 1 * 1", "UTC", "2026-12-06T00:00:00Z"),
    ("0 0 1 * 1", "America/New_York", "2026-12-28T12:00:00Z"),
    ("0 0 1 * 1", "Australia/Sydney", "2026-09-27T00:00:00Z"),
    ("0 0 1,15 * 3", "UTC", "2026-12-06T00:00:00Z"),
    ("0 0 1,15 * 3", "Europe/Berlin", "2027-01-10T00:00:00Z"),
    ("0 0 1-7 * 1", "UTC", "2026-12-06T00:00:00Z"),
    ("0 0 13 * fri", "UTC", "2026-02-01T00:00:00Z"),
    ("0 0 */10 * 1", "UTC", "2026-12-06T00:00:00Z"),
    ("0 0 1 * */2", "UTC", "2026-12-06T00:00:00Z"),
    # Sunday as 0 or 7, in lists, ranges and steps.
    ("0 0 * * 7", "UTC", "2026-12-06T00:00:00Z"),
    ("0 0 * * 0", "UTC", "2026-12-06T00:00:00Z"),
    ("0 0 * * 5-7", "UTC", "2026-12-06T00:00:00Z"),
    ("0 0 * * 5-7", "America/New_York", "2026-12-06T00:00:00Z"),
    ("0 0 * * 7,1", "UTC", "2026-12-06T00:00:00Z"),
    ("0 0 * * 1-7/2", "UTC", "2026-12-06T00:00:00Z"),
    ("0 0 * * 5-7/2", "UTC", "2026-12-06T00:00:00Z"),
    ("0 0 * * */3", "UTC", "2026-12-06T00:00:00Z"),
    ("5 4 * * sun", "Europe/Berlin", "2026-12-06T00:00:00Z"),
    ("0 9 * * SAT-SUN", "UTC", "2026-12-06T00:00:00Z"),
    # Macros.
    ("@hourly", "UTC", "2026-12-06T10:30:00Z"),
    ("@hourly", "America/New_York", "2026-11-01T04:30:00Z"),
    ("@daily", "UTC", "2026-12-06T10:30:00Z"),
    ("@daily", "Australia/Sydney", "2026-10-02T00:00:00Z"),
    ("@midnight", "Europe/Berlin", "2026-03-27T12:00:00Z"),
    ("@weekly", "UTC", "2026-12-06T10:30:00Z"),
    ("@weekly", "America/New_York", "2026-12-06T10:30:00Z"),
    ("@monthly", "UTC", "2026-12-06T10:30:00Z"),
    ("@monthly", "Australia/Sydney", "2026-12-06T10:30:00Z"),
    ("@yearly", "UTC", "2026-12-06T10:30:00Z"),
    ("@annually", "Europe/Berlin", "2026-12-06T10:30:00Z"),
    # Names, ranges and steps.
    ("0 12 1 jan,Jul *", "UTC", "2026-12-06T00:00:00Z"),
    ("30 8 * * MON-FRI", "Europe/Berlin", "2026-12-04T00:00:00Z"),
    ("0 0 1 feb-apr *", "UTC", "2026-12-06T00:00:00Z"),
    ("0 0 1 */3 *", "UTC", "2026-12-06T00:00:00Z"),
    ("23 0-20/2 * * *", "UTC", "2026-12-06T00:00:00Z"),
    ("10/20 8-9 * * *", "UTC", "2026-12-06T00:00:00Z"),
    ("*/15 * * * *", "Australia/Sydney", "2026-12-06T00:07:00Z"),
    ("0 */6 * * *", "America/New_York", "2026-12-06T00:00:00Z"),
    ("0 0 29 2 *", "UTC", "2026-12-06T00:00:00Z"),
    ("0 0 31 * *", "Europe/Berlin", "2026-12-06T00:00:00Z"),
    # Spring forward: a wall time that does not exist runs once, at the end of the gap.
    ("30 2 * * *", "America/New_York", "2026-03-07T12:00:00Z"),
    ("0,30 2 * * *", "America/New_York", "2026-03-07T12:00:00Z"),
    ("30 2,3 * * *", "America/New_York", "2026-03-07T12:00:00Z"),
    ("15 * * * *", "America/New_York", "2026-03-08T05:30:00Z"),
    ("*/30 * * * *", "America/New_York", "2026-03-08T06:10:00Z"),
    ("15 */2 * * *", "America/New_York", "2026-03-08T05:00:00Z"),
    ("30 2 * * *", "Europe/Berlin", "2026-03-28T12:00:00Z"),
    ("0 2 * * 0", "Europe/Berlin", "2026-03-22T12:00:00Z"),
    ("30 2 * * *", "Australia/Sydney", "2026-10-03T00:00:00Z"),
    ("0 * * * *", "Australia/Sydney", "2026-10-03T14:30:00Z"),
    # Fall back: a wall time that repeats runs once (fixed hour), each real hour when hour is `*`.
    ("30 1 * * *", "America/New_York", "2026-10-31T12:00:00Z"),
    ("30 1 * * *", "America/New_York", "2026-11-01T06:10:00Z"),
    ("0 1-3 * * *", "America/New_York", "2026-11-01T04:00:00Z"),
    ("*/20 1 * * *", "America/New_York", "2026-11-01T04:50:00Z"),
    ("0 * * * *", "America/New_York", "2026-11-01T04:10:00Z"),
    ("*/30 * * * *", "America/New_York", "2026-11-01T05:40:00Z"),
    ("30 2 * * *", "Europe/Berlin", "2026-10-24T12:00:00Z"),
    ("0 * * * *", "Europe/Berlin", "2026-10-24T23:10:00Z"),
    ("30 2 * * *", "Australia/Sydney", "2026-04-04T00:00:00Z"),
    ("45 * * * *", "Australia/Sydney", "2026-04-04T14:00:00Z"),
]


def first_occurrence(z, d):
    """The earliest instant whose wall clock in `z` reads what `d`'s does."""
    naive = d.replace(tzinfo=None)
    try:
        z.localize(naive, is_dst=None)
        return d
    except pytz.exceptions.AmbiguousTimeError:
        return min(z.localize(naive, is_dst=True), z.localize(naive, is_dst=False))


def utc(d):
    return d.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def row(expr, tz, start):
    z = pytz.timezone(tz)
    s = datetime.fromisoformat(start.replace("Z", "+00:00")).astimezone(z)
    it = croniter(expr, s)
    hour_star = expr.startswith("@hourly") or (
        not expr.startswith("@") and expr.split()[1] == "*"
    )
    raw, kept = [], []
    while len(kept) < N:
        d = it.get_next(datetime)
        if len(raw) < N:
            raw.append(utc(d))
        if not hour_star and first_occurrence(z, d) < d:
            continue
        kept.append(utc(d))
    out = {"expr": expr, "tz": tz, "start": start, "next": kept}
    if kept != raw:
        out["croniter"] = raw
        out["adjusted"] = "a repeated fixed wall time runs once, at its first occurrence"
    return out


def main():
    table = {
        "generator": "scripts/gen_cron_table.py",
        "croniter": version("croniter"),
        "pytz": pytz.__version__,
        "rows": [row(*r) for r in ROWS],
    }
    path = os.path.join(
        os.path.dirname(os.path.abspath(__file__)),
        "..", "translator", "tests", "data", "croniter_table.json",
    )
    with open(path, "w") as f:
        json.dump(table, f, indent=1)
        f.write("\n")
    adjusted = sum(1 for r in table["rows"] if "adjusted" in r)
    print(f"{len(table['rows'])} rows ({adjusted} adjusted) -> {os.path.normpath(path)}")


if __name__ == "__main__":
    main()
