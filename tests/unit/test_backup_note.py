"""`backup --note` and `--keep-days`: what is refused before any work, and why prune keeps a point."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest

from safehold.actions.backup import KEEP_DAYS_MAX, NOTE_MAX, check_keep_days, check_note
from safehold.actions.common import Point
from safehold.actions.prune import keep_reasons
from safehold.config import RetentionConfig
from safehold.errors import EXIT_USAGE, ConfigError
from safehold.history import History
from safehold.repository.manifest import Manifest
from tests.conftest import run_cli
from tests.unit.test_cli_input import files_config, one_line_error

T0 = datetime(2026, 11, 1, 23, 30, tzinfo=UTC)


def test_a_note_is_one_printable_line_of_at_most_200_characters() -> None:
    assert check_note(None) is None
    assert check_note("   ") is None  # the console's empty field: no note
    assert check_note("  before the update to 25.06 — Müller  ") == "before the update to 25.06 — Müller"
    assert check_note("x" * NOTE_MAX) == "x" * NOTE_MAX


@pytest.mark.parametrize(("note", "says"), [
    ("before\nafter", "the note has 2 lines"),
    ("before\r\nafter", "the note has 2 lines"),
    ("before\u2028after", "the note has 2 lines"),
    ("tab\there", "unprintable character (U+0009)"),
    ("bell\x07", "unprintable character (U+0007)"),
    ("x" * (NOTE_MAX + 1), f"the note has {NOTE_MAX + 1} characters, more than {NOTE_MAX}"),
])
def test_a_bad_note_is_a_usage_error(note: str, says: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(says)) as caught:
        check_note(note)
    assert caught.value.exit_code == EXIT_USAGE
    assert "\n" not in caught.value.line() and "nothing was backed up" in caught.value.line()


def test_keep_days_must_be_at_least_one() -> None:
    check_keep_days(None)
    check_keep_days(1)
    for days in (0, -3):
        with pytest.raises(ConfigError, match=f"--keep-days {days} keeps the point no time"):
            check_keep_days(days)
    check_keep_days(KEEP_DAYS_MAX)
    for days in (KEEP_DAYS_MAX + 1, 10**8, 10**12):  # 10**8 days is past year 9999
        with pytest.raises(ConfigError, match=f"--keep-days {days} is more than {KEEP_DAYS_MAX} days") as caught:
            check_keep_days(days)
        assert caught.value.exit_code == EXIT_USAGE


def point(hours: int, keep_days: int | None = None, safety: bool = False) -> Point:
    """A point `hours` after T0, optionally made with --keep-days."""
    started = T0 + timedelta(hours=hours)
    manifest = Manifest(run_id=f"run-{hours:03d}", instance="app", app="generic", host="h", safehold_version="0",
                        started=started, safety_point=safety,
                        keep_until=started + timedelta(days=keep_days) if keep_days else None)
    return Point(manifest, f"snap{hours}", "main")


def test_a_kept_point_survives_the_rules_until_its_date_then_is_ordinary() -> None:
    older, kept, newest = point(0), point(1, keep_days=30), point(2)
    complete = [newest, kept, older]
    policy = RetentionConfig(last=1)
    why = keep_reasons(complete, policy, T0 + timedelta(days=29))
    assert why == {newest.run_id: ["newest", "last"], kept.run_id: ["kept until 2026-12-02 (--keep-days)"]}
    # After its date the rules alone decide, and last = 1 keeps only the newest.
    assert keep_reasons(complete, policy, T0 + timedelta(days=31)) == {newest.run_id: ["newest", "last"]}


def test_a_kept_point_still_counts_as_a_regular_point_for_the_rules() -> None:
    # The choice: --keep-days adds a reason and takes nothing from the rules, so a kept newest
    # point is also `last` and the older one goes (unlike a safety point, which is never counted).
    older, kept = point(0), point(1, keep_days=7)
    why = keep_reasons([kept, older], RetentionConfig(last=1), T0 + timedelta(days=1))
    assert why == {kept.run_id: ["newest", "last", "kept until 2026-11-09 (--keep-days)"]}
    safety = point(2, safety=True)
    why = keep_reasons([safety, kept, older], RetentionConfig(last=1), T0 + timedelta(days=1))
    assert why[safety.run_id] == ["safety point, kept 14 days"] and older.run_id not in why


def test_old_manifests_without_a_note_still_load() -> None:
    data = point(0).manifest.model_dump(mode="json")
    for key in ("note", "keep_until"):
        data.pop(key)
    manifest = Manifest.model_validate(data)
    assert manifest.note is None and manifest.keep_until is None


@pytest.mark.parametrize("args", [["--note", "before\nafter"], ["--note", "x" * 201], ["--keep-days", "0"]])
def test_the_cli_refuses_a_bad_note_or_keep_days_before_any_work(tmp_path, args: list[str]) -> None:
    config = files_config(tmp_path)
    result = run_cli("backup", "app", *args, config=config)
    assert result.returncode == 2, result.stdout + result.stderr
    line = one_line_error(result)
    assert "nothing was backed up" in line and "\n" not in line
    assert not (tmp_path / "repo").exists()  # no repository was even created
    assert History(tmp_path / "state").runs("app") == []  # and no run recorded
