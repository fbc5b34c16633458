"""Private temporary folders named after the process that made them.

A restore spools up to gigabytes of chunks, and an export is unpacked before it is restored; a
run that is killed (SIGKILL, OOM, power) cannot remove those. The owner's PID is part of the
name, so the next run that makes such a folder removes the ones whose process is gone.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

from safehold.runner import process_alive


def private_dir(prefix: str, parent: str | Path | None = None) -> Path:
    """A new 0700 folder `PREFIX<pid>-<random>` in `parent` (the temp dir), after removing dead runs' ones."""
    remove_orphans(prefix, parent)
    return Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-", dir=parent))


def remove_orphans(prefix: str, parent: str | Path | None = None) -> list[Path]:
    """Remove folders `PREFIX<pid>-…` of this user whose process no longer runs; returns them."""
    base = Path(parent or tempfile.gettempdir())
    removed = []
    for path in base.glob(f"{prefix}*"):
        pid = path.name[len(prefix):].partition("-")[0]
        try:
            if not pid.isdigit() or not path.is_dir() or path.stat().st_uid != os.getuid() or process_alive(int(pid)):
                continue
        except OSError:
            continue
        shutil.rmtree(path, ignore_errors=True)
        logging.getLogger("safehold").warning("removed %s, left behind by a safehold run that was killed", path)
        removed.append(path)
    return removed
