"""Which recovery points a retention policy keeps. Pure functions, so they are easy to test.

The semantics are restic's `forget`: `last` keeps the N newest points; each GFS bucket (hourly,
daily, weekly, monthly, yearly) walks the points newest first and keeps the newest point of each
of its N most recent periods that hold a point. A point kept by any rule is kept. Weeks are ISO
weeks (Monday to Sunday), as in restic.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime

from safehold.config import RetentionConfig

# bucket name -> the period a point falls in
BUCKETS: dict[str, Callable[[datetime], tuple[int, ...]]] = {
    "hourly": lambda t: (t.year, t.month, t.day, t.hour),
    "daily": lambda t: (t.year, t.month, t.day),
    "weekly": lambda t: tuple(t.isocalendar()[:2]),
    "monthly": lambda t: (t.year, t.month),
    "yearly": lambda t: (t.year,),
}


def reasons(points: Sequence[tuple[str, datetime]], policy: RetentionConfig) -> dict[str, list[str]]:
    """For each kept run id, the rules that keep it (e.g. ["daily", "monthly"])."""
    ordered = sorted(points, key=lambda p: p[1], reverse=True)
    why: dict[str, list[str]] = {}
    if not ordered:
        return why
    why.setdefault(ordered[0][0], []).append("newest")
    for run, _ in ordered[: policy.last or 0]:
        why.setdefault(run, []).append("last")
    for bucket, period_of in BUCKETS.items():
        count = getattr(policy, bucket) or 0
        seen: set[tuple[int, ...]] = set()
        for run, when in ordered:
            if len(seen) >= count:
                break
            period = period_of(when)
            if period not in seen:
                seen.add(period)
                why.setdefault(run, []).append(bucket)
    return why


def keep(points: Sequence[tuple[str, datetime]], policy: RetentionConfig) -> set[str]:
    """Run ids to keep from (run_id, time) pairs. The newest point is always kept."""
    return set(reasons(points, policy))
