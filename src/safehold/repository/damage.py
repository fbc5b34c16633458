"""What verify found wrong with a repository, kept until a verify finds it sound again.

A pack file lost from a repository stays listed in restic's index, so every later backup
deduplicates against the lost data and makes points that cannot be restored. Once a verify has
seen that, backups into the repository (and copies to it) are refused until `safehold verify
--repair` has rebuilt the index; after that, the old points that lost data stay damaged until
they are removed, and `check` says so until a verify passes.

Why a small file per repository and not the run history: the history records runs of an instance
(backup, drill, prune, restore, and the scheduled verify of one instance), while damage belongs to a
repository that several instances may share, and a verify by hand is no recorded run. Backup,
copy and check need one fact per repository, so verify keeps it in
STATE_DIR/repositories/NAME.damage beside the NAME.url marker, where check reads it without
opening the repository.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from safehold.errors import RepositoryError
from safehold.repository import records
from safehold.repository.restic import REPAIR, RepositoryDamaged


@dataclass
class Damage:
    """What the last verify of a repository found wrong with it."""

    message: str
    found: str  # ISO time in UTC
    # The index lists lost or corrupt data: backups would reuse it, so they are refused until a repair.
    unsafe: bool
    # Found by reading the stored data: a verify that does not read it cannot clear the record.
    read_data: bool
    # {"instance", "run_id"} of each point a repair found damaged.
    points: list[dict[str, str]] = field(default_factory=list)

    @property
    def since(self) -> str:
        """When it was found, for a message."""
        return records.minutes(self.found)


KIND = "damage"


def recorded(state_dir: Path, repository: str) -> Damage | None:
    """The damage a verify recorded for the repository, if any (an unreadable record counts as none)."""
    return records.load(state_dir, repository, KIND, Damage)


def record(state_dir: Path, repository: str, error: RepositoryDamaged, read_data: bool,
           points: list[dict[str, str]] | None = None, repaired: bool = False) -> Damage:
    """Keep what a verify (or, with `repaired`, the check after a rebuilt index) found; returns the record.

    An unsafe record is replaced by a finding that is not unsafe only after a repair: a verify
    without --read-data cannot see the corrupt data that a --read-data one found.
    """
    old = recorded(state_dir, repository)
    if old is not None and old.unsafe and not error.unsafe and not repaired:
        return old
    damage = Damage(error.message, datetime.now(UTC).isoformat(timespec="seconds"), error.unsafe,
                    read_data or (old is not None and old.read_data and not repaired),
                    points if points is not None else old.points if old is not None else [])
    records.save(state_dir, repository, KIND, damage)
    return damage


def passed(state_dir: Path, repository: str, read_data: bool) -> None:
    """A check found the repository sound: drop its record, unless the damage was found by reading
    data and this check did not read it."""
    old = recorded(state_dir, repository)
    if old is not None and (read_data or not old.read_data):
        records.drop(state_dir, repository, KIND)


def refuse_unsafe(state_dir: Path, repository: str) -> Damage | None:
    """Raise before a backup or copy would deduplicate against data the repository lost; else return
    the repository's damage record (damaged points it still holds), if any."""
    damage = recorded(state_dir, repository)
    if damage is not None and damage.unsafe:
        raise RepositoryError(f"{damage.message} (found by verify, {damage.since}): a point stored there now "
                              "would reuse the lost data and could not be restored, so nothing was stored",
                              f"run `{REPAIR}` first")
    return damage
