"""A stream stored with `restic backup --stdin` gets a wide pipe, so a small dump is written while restic
derives the repository key instead of after it (issue 21)."""

from __future__ import annotations

import fcntl
import subprocess

from safehold.repository.restic.writing import PIPE_BYTES, PIPE_MAX, _widen


def test_the_pipe_to_restic_holds_a_small_dump() -> None:
    child = subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
    assert child.stdin is not None
    try:
        before = fcntl.fcntl(child.stdin.fileno(), fcntl.F_GETPIPE_SZ)
        _widen(child.stdin)
        after = fcntl.fcntl(child.stdin.fileno(), fcntl.F_GETPIPE_SZ)
    finally:
        child.stdin.close()
        child.wait()
    assert after >= min(PIPE_BYTES, int(PIPE_MAX.read_text())) > before
