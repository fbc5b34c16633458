"""When a scheduled verify last found a repository sound, so instances sharing it check it once a round.

An MSP keeps many clients' instances in one repository, each with the same verify schedule. Every
restic check holds the repository's exclusive lock (backups wait) and reads its share of the stored
data from the off-host server: thirty instances meant thirty checks of the same repository each
Sunday. A scheduled verify that passed writes STATE_DIR/repositories/NAME.checked (beside the
.damage and .url markers); another instance's scheduled verify of the same round takes it instead of
checking again, as long as it read at least as much of the data. Damage is never shared this way:
only a passed check is written, so a verify after a failed one checks for itself.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from safehold.repository import records


@dataclass
class Passed:
    """The last scheduled check of a repository that found it sound."""

    instance: str  # whose verify ran it
    started: str  # ISO time in UTC
    read_data: str  # schedule.verify_read_data of that verify: none, all, a percentage or a size

    @property
    def since(self) -> str:
        """When it started, for a message."""
        return records.minutes(self.started)

    def covers(self, read_data: str) -> bool:
        """Whether this check read at least what a verify set to `read_data` would."""
        return read_data == "none" or self.read_data in ("all", read_data)


KIND = "checked"


def last_passed(state_dir: Path, repository: str) -> Passed | None:
    """The last passed scheduled check of the repository (an unreadable record counts as none)."""
    return records.load(state_dir, repository, KIND, Passed)


def note_passed(state_dir: Path, repository: str, instance: str, started: datetime, read_data: str) -> None:
    """Keep that `instance`'s scheduled verify, started at `started`, found the repository sound.

    Best effort: without the note the other instances check for themselves, as before it existed.
    """
    with contextlib.suppress(OSError):
        records.save(state_dir, repository, KIND, Passed(instance, started.isoformat(timespec="seconds"), read_data))


def forget(state_dir: Path, repository: str) -> None:
    """A check found damage: no later verify may take the earlier sound check for its own."""
    records.drop(state_dir, repository, KIND)


def shared_by(state_dir: Path, repository: str, instance: str, since: datetime, read_data: str) -> Passed | None:
    """Another instance's passed check of this round (started at or after `since`) reading at least
    `read_data`, which `instance`'s scheduled verify takes instead of checking again."""
    last = last_passed(state_dir, repository)
    if last is None or last.instance == instance or not last.covers(read_data):
        return None
    return last if datetime.fromisoformat(last.started) >= since else None
