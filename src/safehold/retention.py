"""Which recovery points a retention policy keeps. Pure functions, so they are easy to test."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from safehold.config import RetentionConfig


def keep(points: Sequence[tuple[str, datetime]], policy: RetentionConfig) -> set[str]:
    """Run ids to keep from (run_id, time) pairs. The newest point is always kept."""
    ordered = sorted(points, key=lambda p: p[1], reverse=True)
    if not ordered:
        return set()
    kept = {ordered[0][0]}
    if policy.last:
        kept.update(run for run, _ in ordered[: policy.last])
    return kept
