"""Which earlier scheduled check of a shared repository a verify may take instead of its own."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from safehold.repository import checks

ROUND = datetime(2026, 11, 29, 4, 45, tzinfo=UTC)


@pytest.mark.parametrize(("done", "wanted", "taken"), [
    ("5%", "5%", True), ("all", "5%", True), ("all", "2G", True), ("5%", "none", True), ("none", "none", True),
    ("5%", "all", False), ("5%", "10%", False), ("none", "5%", False), ("2G", "5%", False),
])
def test_a_check_is_taken_only_if_it_read_as_much(tmp_path: Path, done: str, wanted: str, taken: bool) -> None:
    checks.note_passed(tmp_path, "main", "a", ROUND + timedelta(minutes=15), done)
    assert (checks.shared_by(tmp_path, "main", "b", ROUND, wanted) is not None) is taken


def test_only_another_instances_check_of_this_round(tmp_path: Path) -> None:
    assert checks.shared_by(tmp_path, "main", "b", ROUND, "5%") is None  # none yet
    checks.note_passed(tmp_path, "main", "a", ROUND - timedelta(seconds=1), "5%")
    assert checks.shared_by(tmp_path, "main", "b", ROUND, "5%") is None  # the last round's
    checks.note_passed(tmp_path, "main", "a", ROUND, "5%")
    assert checks.shared_by(tmp_path, "main", "a", ROUND, "5%") is None  # its own
    assert checks.shared_by(tmp_path, "main", "b", ROUND, "5%") == checks.Passed("a", ROUND.isoformat(), "5%")
    assert checks.shared_by(tmp_path, "other", "b", ROUND, "5%") is None  # another repository
    assert (tmp_path / "repositories" / "main.checked").stat().st_mode & 0o777 == 0o600
    checks.forget(tmp_path, "main")
    assert checks.shared_by(tmp_path, "main", "b", ROUND, "5%") is None


def test_an_unreadable_record_counts_as_none(tmp_path: Path) -> None:
    (tmp_path / "repositories").mkdir()
    (tmp_path / "repositories" / "main.checked").write_text("{not json")
    assert checks.last_passed(tmp_path, "main") is None


def test_a_note_that_cannot_be_written_leaves_the_others_checking(tmp_path: Path) -> None:
    (tmp_path / "repositories").write_text("a file where the folder should be")
    checks.note_passed(tmp_path, "main", "a", ROUND, "5%")  # no error: the verify itself passed
    assert checks.shared_by(tmp_path, "main", "b", ROUND, "5%") is None
