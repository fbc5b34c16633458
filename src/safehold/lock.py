"""One run per instance at a time.

The lock is an flock() on a file in the state directory: the kernel releases it when the holding
process dies, even by SIGKILL, so a killed run can never leave a lock that blocks the next one.
The holder's PID and start time are written into the file for the message a waiting run shows.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator
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


@contextlib.contextmanager
def instance_lock(state_dir: Path, instance: str, run_id: str, what: str, reporter: Reporter,
                  wait_seconds: float = 0) -> Iterator[None]:
    """Hold the instance's lock for the duration; wait up to `wait_seconds`, else raise Locked."""
    folder = state_dir / "locks"
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = folder / f"{instance}.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + wait_seconds
        announced = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise Locked(f"instance {instance} is busy: {_holder(path)} is running",
                                 "wait for it to finish, or set settings.lock_wait_seconds to queue") from None
                if not announced:
                    reporter.step(f"waiting for {_holder(path)} on instance {instance}")
                    announced = True
                time.sleep(POLL_SECONDS)
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
