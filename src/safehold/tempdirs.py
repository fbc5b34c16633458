"""Private temporary folders named after the process that made them.

A restore spools up to gigabytes of chunks, and an export is unpacked before it is restored; a
run that is killed (SIGKILL, OOM, power) cannot remove those. The owner's PID is part of the
name, so the next run that makes such a folder removes the ones whose process is gone. A run
stopped by SIGTERM (or ending any other way Python sees) removes its own on the way out.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import logging
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from safehold.errors import SafeholdError
from safehold.runner import process_alive

_made: set[Path] = set()  # folders private_dir made in this process


def private_dir(prefix: str, parent: str | Path | None = None) -> Path:
    """A new 0700 folder `PREFIX<pid>-<random>` in `parent` (the temp dir), after removing dead runs' ones."""
    remove_orphans(prefix, parent)
    _made.difference_update([path for path in list(_made) if not path.exists()])  # removed by their callers
    # SIGTERM's handler raises: arriving after mkdtemp but before the caller's try, it would leave the
    # folder behind. Held while the folder is made and recorded, it is raised only once remove_made() knows it.
    main = threading.current_thread() is threading.main_thread()
    held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT}) if main else None
    try:
        path = Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-", dir=parent))
        _made.add(path)
    finally:
        if held is not None:
            signal.pthread_sigmask(signal.SIG_SETMASK, held)
    return path


@contextlib.contextmanager
def room_in(folder: str | Path, what: str) -> Iterator[None]:
    """Say which folder ran out of space while `what` was written there: a full temp folder is for the
    admin to fix (free space, TMPDIR), not a damaged point or a database error ("[Errno 28]")."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        raise SafeholdError(f"no space left in {folder} for {what}",
                            "free space there, or set TMPDIR to a folder on a disk with room") from None


def remove_tree(path: Path) -> bool:
    """Remove a folder and everything in it, also read-only folders inside it; True when it is gone.

    restic restores a point's folder modes, and a user other than root cannot delete from a 0555
    folder (a vendor or config tree): such a folder of the tree is made the owner's (0700) and the
    deletion retried. Nothing outside `path` is changed, and symlinks are never followed.
    """
    def unlock(function: Callable[..., object], failed: str, _: object) -> None:
        with contextlib.suppress(OSError):
            if function in (os.unlink, os.rmdir) and Path(failed) != path:  # its folder is read-only
                os.chmod(os.path.dirname(failed), 0o700)
                function(failed)
            elif os.path.isdir(failed) and not os.path.islink(failed):  # a folder that cannot be listed
                os.chmod(failed, 0o700)
                shutil.rmtree(failed, onerror=unlock)

    shutil.rmtree(path, onerror=unlock)
    return not os.path.lexists(path)


@atexit.register
def remove_made() -> None:
    """Remove every folder this process made that is still there: the last cleanup of a stopped run."""
    for path in list(_made):
        shutil.rmtree(path, ignore_errors=True)
        _made.discard(path)


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
