"""GFS retention over a simulated year of daily points (restic `forget` semantics), table-driven."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from safehold.config import RetentionConfig
from safehold.retention import keep, reasons

YEAR = [(d.isoformat(), datetime.combine(d, datetime.min.time(), UTC).replace(hour=23, minute=30))
        for d in (date(2025, 1, 1) + timedelta(days=i) for i in range(365))]
MONTH_ENDS = ["2025-01-31", "2025-02-28", "2025-03-31", "2025-04-30", "2025-05-31", "2025-06-30", "2025-07-31",
              "2025-08-31", "2025-09-30", "2025-10-31", "2025-11-30", "2025-12-31"]
LAST_WEEK = [f"2025-12-{d}" for d in range(25, 32)]

CASES = [
    ("last 5", {"last": 5}, [f"2025-12-{d}" for d in range(27, 32)]),
    ("daily 7", {"daily": 7}, LAST_WEEK),
    # 2025-12-29..31 fall in ISO week 2026-W01, so the newest weekly point is the 31st, then Sundays.
    ("weekly 4", {"weekly": 4}, ["2025-12-31", "2025-12-28", "2025-12-21", "2025-12-14"]),
    ("monthly 12", {"monthly": 12}, MONTH_ENDS),
    ("monthly 3", {"monthly": 3}, ["2025-10-31", "2025-11-30", "2025-12-31"]),
    ("yearly 3 with one year of data", {"yearly": 3}, ["2025-12-31"]),
    ("hourly 3 on daily points", {"hourly": 3}, ["2025-12-29", "2025-12-30", "2025-12-31"]),
    ("yearly 1 keeps the newest", {"yearly": 1}, ["2025-12-31"]),
    ("last 1 + weekly 2", {"last": 1, "weekly": 2}, ["2025-12-31", "2025-12-28"]),
    ("design example daily 7 weekly 4 monthly 12", {"daily": 7, "weekly": 4, "monthly": 12},
     LAST_WEEK + ["2025-12-21", "2025-12-14"] + MONTH_ENDS[:-1]),
    ("everything", {"last": 3, "daily": 10, "weekly": 6, "monthly": 6, "yearly": 1},
     [f"2025-12-{d}" for d in range(22, 32)] + ["2025-12-21", "2025-12-14", "2025-12-07", "2025-11-30",
                                                "2025-07-31", "2025-08-31", "2025-09-30", "2025-10-31"]),
]


@pytest.mark.parametrize(("name", "policy", "expected"), CASES, ids=[c[0] for c in CASES])
def test_gfs_over_a_year_of_daily_points(name: str, policy: dict[str, int], expected: list[str]) -> None:
    assert keep(YEAR, RetentionConfig(**policy)) == set(expected)


def test_order_of_input_does_not_matter_and_reasons_name_the_rules() -> None:
    policy = RetentionConfig(daily=2, monthly=2)
    why = reasons(list(reversed(YEAR)), policy)
    assert why == {"2025-12-31": ["newest", "daily", "monthly"], "2025-12-30": ["daily"], "2025-11-30": ["monthly"]}


def test_periods_without_points_are_skipped_like_restic() -> None:
    # Only the first day of each quarter: monthly 3 keeps the three newest months that have a point.
    sparse = [(run, when) for run, when in YEAR if run[5:] in ("01-01", "04-01", "07-01", "10-01")]
    assert keep(sparse, RetentionConfig(monthly=3)) == {"2025-10-01", "2025-07-01", "2025-04-01"}


def test_a_policy_keeping_only_the_newest_is_refused() -> None:
    # {} or all-zero counts would silently prune everything but the newest point.
    for policy in ({}, {"daily": 0, "weekly": 0}):
        with pytest.raises(ValueError, match="keeps no point besides the newest"):
            RetentionConfig(**policy)


def test_no_points_keeps_nothing() -> None:
    assert keep([], RetentionConfig(last=3)) == set()
