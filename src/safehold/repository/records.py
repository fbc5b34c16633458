"""Small per-repository facts safehold keeps on this host: STATE_DIR/repositories/NAME.KIND (JSON, 0600).

A repository may be shared by instances, so what belongs to it (damage a verify found, the last
sound scheduled check) lives beside the NAME.url marker rather than in an instance's run history.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any, TypeVar

from safehold.secrets import write_private

R = TypeVar("R")


def path(state_dir: Path, repository: str, kind: str) -> Path:
    """Where the `kind` record of a repository is kept."""
    return state_dir / "repositories" / f"{repository}.{kind}"


def load(state_dir: Path, repository: str, kind: str, cls: type[R]) -> R | None:
    """The record, if any (an unreadable one counts as none)."""
    with contextlib.suppress(OSError, ValueError, TypeError):
        return cls(**json.loads(path(state_dir, repository, kind).read_text()))
    return None


def save(state_dir: Path, repository: str, kind: str, record: Any) -> None:
    """Keep a dataclass record (written aside and renamed, 0600)."""
    write_private(path(state_dir, repository, kind), json.dumps(asdict(record)))


def drop(state_dir: Path, repository: str, kind: str) -> None:
    """Remove the record, if there is one."""
    path(state_dir, repository, kind).unlink(missing_ok=True)


def minutes(iso: str) -> str:
    """An ISO time in UTC as a message shows it: 2026-11-29 05:00 UTC."""
    return f"{iso[:16].replace('T', ' ')} UTC"
