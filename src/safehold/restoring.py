"""The record of an in-place restore under way, kept until it is finished or undone.

A restore killed part-way (kill -9, power loss) leaves the live instance half-restored: a table emptied,
a tree not yet swapped. Nothing about the instance looks wrong to a backup, which would store the
damage as a good point while retention ages out the good ones. So before its first step that changes
the live instance, a restore writes this record (atomically, in the state folder), and only its
success removes it. While it stands, `check` is CRITICAL and names the safety point and the commands
to finish or undo, the dashboard shows it red, and `backup` refuses.
"""

from __future__ import annotations

import contextlib
import json
import shlex
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from safehold.errors import SafeholdError
from safehold.secrets import write_private

FOLDER = "restoring"


@dataclass
class Unfinished:
    """What an in-place restore was changing, and how to get out of it."""

    instance: str
    run_id: str  # the point being restored
    parts: list[str]  # db and/or files
    safety_point: str | None  # the state before the first interrupted restore, once known
    finish: list[str]  # the arguments of `safehold restore` that finish it
    started: str = field(default_factory=lambda: datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"))
    stage: str = "safety point"  # "safety point" (nothing changed yet) or "changing"
    earlier: bool = False  # an earlier interrupted restore of the instance is finished by this one

    def finish_command(self) -> str:
        """The command that finishes the restore (the same restore again)."""
        return shlex.join(["safehold", "restore", *self.finish])

    def undo_command(self, config_args: list[str]) -> str | None:
        """The command that puts back what was there before, when its safety point is complete."""
        if self.safety_point is None or self.stage == "safety point":
            return None
        return shlex.join(["safehold", "restore", self.instance, self.safety_point, "--force", *config_args])

    def message(self) -> str:
        """One line for check, the dashboard and a refused backup."""
        parts = " and ".join("databases" if p == "db" else p for p in self.parts)
        if self.stage == "safety point":
            state = (f"it was taking safety point {self.safety_point} and had changed nothing yet "
                     f"(the app may be left paused)")
        elif self.safety_point:
            state = f"the {parts} may be half-restored; what was there before is in safety point {self.safety_point}"
        else:
            state = f"the {parts} may be half-restored (nothing was there before, so no safety point was needed)"
        config_args = self.finish[self.finish.index("--config"):][:2] if "--config" in self.finish else []
        undo = self.undo_command(config_args)
        return (f"an in-place restore of point {self.run_id} into {self.instance} was interrupted (started "
                f"{self.started}): {state} — finish it with `{self.finish_command()}`"
                + (f", or undo it with `{undo}`" if undo else ""))


class RestoreUnfinished(SafeholdError):
    """A run refused because an in-place restore of the instance was interrupted."""


def _path(state_dir: Path, instance: str) -> Path:
    return state_dir / FOLDER / f"{instance}.json"


def read(state_dir: Path, instance: str) -> Unfinished | None:
    """The instance's record, or None; an unreadable one still counts (as an unknown restore)."""
    path = _path(state_dir, instance)
    try:
        data = json.loads(path.read_text())
        return Unfinished(**data)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError):
        return Unfinished(instance, "?", ["db", "files"], None, [instance, "RUN", "--force"],
                          started="?", stage=f"unreadable record {path}")


def begin(state_dir: Path, record: Unfinished) -> Unfinished:
    """Write the record before the restore changes anything; a record left by an earlier interrupted
    restore keeps its safety point (the state before all of them), which the undo command names."""
    earlier = read(state_dir, record.instance)
    if earlier is not None and earlier.stage != "safety point":
        record.safety_point, record.stage, record.earlier = earlier.safety_point, "changing", True
    save(state_dir, record)
    return record


def save(state_dir: Path, record: Unfinished) -> None:
    """Write (or rewrite) the record atomically: a kill never leaves half of one."""
    write_private(_path(state_dir, record.instance), json.dumps(asdict(record), indent=2))


def clear(state_dir: Path, instance: str) -> None:
    """The restore finished (or changed nothing): the instance is as a point says."""
    with contextlib.suppress(FileNotFoundError):
        _path(state_dir, instance).unlink()


def refuse_backup(state_dir: Path, instance: str) -> None:
    """A backup of a half-restored instance would store the damage as a good point: refuse it."""
    if (record := read(state_dir, instance)) is not None:
        raise RestoreUnfinished(f"no backup made: {record.message()}",
                                "a point of a half-restored instance would look like a good one; finish or undo "
                                "the restore first")
