"""One run per instance at a time.

The lock is an flock() on a file in the state directory: the kernel releases it when the holding
process dies, even by SIGKILL, so a killed run can never leave a lock that blocks the next one.
The holder's PID and start time are written into the file for the message a waiting run shows.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from safehold.errors import SafeholdError
from safehold.output import Reporter

POLL_SECONDS = 0.5


class Locked(SafeholdError):
    """Another run holds the instance lock."""


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return "another run"
    return f"run {info.get('run', '?')} (pid {info.get('pid', '?')}, {info.get('what', 'backup')})"


def _flock(fd: int, mode: int, wait_seconds: float, busy: Callable[[], SafeholdError],
           announce: Callable[[], None]) -> None:
    """Take flock `mode` on `fd`, polling up to `wait_seconds` (announcing the wait once), else raise busy()."""
    deadline = time.monotonic() + wait_seconds
    announced = False
    while True:
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise busy() from None
            if not announced:
                announce()
                announced = True
            time.sleep(POLL_SECONDS)


@contextlib.contextmanager
def instance_lock(state_dir: Path, instance: str, run_id: str, what: str, reporter: Reporter,
                  wait_seconds: float = 0) -> Iterator[None]:
    """Hold the instance's lock for the duration; wait up to `wait_seconds`, else raise Locked."""
    folder = state_dir / "locks"
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = folder / f"{instance}.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        def busy() -> Locked:
            return Locked(f"instance {instance} is busy: {_holder(path)} is running",
                          "wait for it to finish, or set settings.lock_wait_seconds to queue")

        _flock(fd, fcntl.LOCK_EX, wait_seconds, busy,
               lambda: reporter.step(f"waiting for {_holder(path)} on instance {instance}"))
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "run": run_id, "what": what,
                                  "since": time.time()}).encode(), 0)
        yield
    finally:
        os.close(fd)


def is_locked(state_dir: Path, instance: str) -> bool:
    """True while some process holds the instance's lock (for dashboards and check)."""
    path = state_dir / "locks" / f"{instance}.lock"
    if not path.exists():
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


# Paths of the repository locks the current thread holds: a restic command started while the same
# thread streams from another one (a dump being read) must not wait for itself.
_held = threading.local()


class RepositoryBusy(SafeholdError):
    """Another safehold run on this host kept the repository longer than the wait allows."""


@contextlib.contextmanager
def repository_lock(path: Path, exclusive: bool, what: str, wait_seconds: float) -> Iterator[None]:
    """Take turns with the other safehold processes and threads of this host on one repository.

    restic fails a command at once when another holds the repository's exclusive lock (check, prune,
    forget) or when it needs that lock while others run: two instances sharing a repository, one
    pruning while the other backs up, made one of them fail. Here the exclusive commands hold this
    flock exclusively and all others shared, so each waits its turn (up to `wait_seconds`, saying
    for whom). Another host's restic is still met by restic's own lock.
    """
    held: set[Path] = _held.__dict__.setdefault("paths", set())
    if path in held:
        yield
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError:
        # A user who may not write the state folder (reading another's config) goes without the turn
        # taking, as before it existed; restic's own lock still guards the repository.
        yield
        return
    try:
        def busy() -> RepositoryBusy:
            waited = f"{wait_seconds / 60:.0f} min" if wait_seconds >= 60 else f"{wait_seconds:g} s"
            return RepositoryBusy(f"repository {path.stem} is still busy with {_repository_holder(path)} after "
                                  f"waiting {waited}", "run again when it is done, or raise "
                                  "settings.repository_wait_seconds")

        _flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH, wait_seconds, busy,
               lambda: logging.getLogger("safehold").warning("repository %s is busy with %s: restic %s waits for it",
                                                             path.stem, _repository_holder(path), what))
        if exclusive:
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps({"pid": os.getpid(), "what": what, "since": time.time()}).encode(), 0)
        held.add(path)
        try:
            yield
        finally:
            held.discard(path)
            if exclusive:
                os.ftruncate(fd, 0)  # a waiting run must not name this holder once it is gone
    finally:
        os.close(fd)


def _repository_holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        info = {}
    if not info:
        return "backups or restores running now"
    since = time.strftime("%H:%M", time.localtime(info.get("since", 0)))
    return f"restic {info.get('what', '?')} (pid {info.get('pid', '?')}, since {since})"
