"""The one place that starts child processes (restic, mariadb-dump, mariadb, pg_dump…).

It keeps secrets out of argv (callers pass them as files or environment), drains stderr in the
background so a chatty child never blocks, scrubs known secret values out of what it keeps, and
turns a non-zero exit into a ProcessFailed that callers translate into a user-facing error.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import subprocess
import threading
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import IO

from safehold.errors import SafeholdError
from safehold.secrets import Secret, appears_in, mask

log = logging.getLogger(__name__)

STDERR_TAIL_LINES = 40
# A Go stack trace's "\tfile.go:123" line, below its function's line. restic prints ~40 such lines
# after some errors (a lock it cannot write): they explain nothing and would push the lines that do
# (the "read-only file system" above them) out of the tail, so the tail skips them.
GO_FRAME = re.compile(r"^\t\S+\.go:\d+$")
SECRET_FD = re.compile(r"/dev/fd/(\d+)")


class ProcessFailed(Exception):
    """A child exited non-zero; `stderr` is scrubbed of secrets."""

    def __init__(self, what: str, returncode: int, stderr: str) -> None:
        super().__init__(f"{what} exited with {returncode}: {stderr.strip()[-500:]}")
        self.what = what
        self.returncode = returncode
        self.stderr = stderr


def scrub(text: str, secrets: Iterable[Secret]) -> str:
    """Replace every secret value found in `text` with ***."""
    return mask(text, (secret.reveal() for secret in secrets))


@dataclass
class Child:
    """A running child process with its stderr collected in the background."""

    what: str
    popen: subprocess.Popen[bytes]
    secrets: Sequence[Secret] = ()
    _tail: deque[str] = field(default_factory=lambda: deque(maxlen=STDERR_TAIL_LINES))
    _drain: threading.Thread | None = None
    on_stderr_line: object = None

    def start_drain(self) -> None:
        if self.popen.stderr is None:
            return

        def drain() -> None:
            assert self.popen.stderr is not None
            for raw in self.popen.stderr:
                line = scrub(raw.decode("utf-8", "replace").rstrip("\n"), self.secrets)
                if GO_FRAME.match(line):
                    if self._tail and not any(char.isspace() for char in self._tail[-1]):
                        self._tail.pop()  # the frame's function name
                else:
                    self._tail.append(line)
                if callable(self.on_stderr_line):
                    self.on_stderr_line(line)

        self._drain = threading.Thread(target=drain, daemon=True)
        self._drain.start()

    @property
    def stdin(self) -> IO[bytes]:
        assert self.popen.stdin is not None
        return self.popen.stdin

    @property
    def stdout(self) -> IO[bytes]:
        assert self.popen.stdout is not None
        return self.popen.stdout

    def stderr_text(self) -> str:
        """The last lines the child wrote to stderr, secrets scrubbed."""
        if self._drain is not None:
            self._drain.join(timeout=5)
        return "\n".join(self._tail)

    def wait(self, check: bool = True) -> int:
        """Wait for exit; raise ProcessFailed on a non-zero code when `check`."""
        code = self.popen.wait()
        if self.popen.stdin and not self.popen.stdin.closed:
            with contextlib.suppress(BrokenPipeError):
                self.popen.stdin.close()
        if check and code != 0:
            raise ProcessFailed(self.what, code, self.stderr_text())
        return code

    def kill(self) -> None:
        """Stop the child (used when the producer or consumer on the other side failed)."""
        if self.popen.poll() is None:
            self.popen.kill()
        self.popen.wait()


def start(
    argv: Sequence[str],
    *,
    what: str | None = None,
    env: dict[str, str] | None = None,
    stdin: int | IO[bytes] | None = None,
    stdout: int | IO[bytes] | None = None,
    secrets: Sequence[Secret] = (),
    cwd: str | None = None,
    on_stderr_line: object = None,
    account: tuple[int, int] | None = None,
) -> Child:
    """Start a child; `env` is added to a copy of os.environ. Secrets must never be in argv.

    `account` (uid, gid; root only) runs the child as that user, without root's other groups.
    """
    for secret in secrets:
        if any(appears_in(secret.reveal(), arg) for arg in argv):
            # Only a very short or common secret (a password "backup") can meet this: argv never gets one.
            raise SafeholdError(f"refusing to start {os.path.basename(argv[0])}: the value of the secret "
                                f"{secret.reference or '(unnamed)'} also appears in its command line, where "
                                "every user of this host could read it",
                                "choose a longer password that is not a word of the command")
    full_env = {**os.environ, **(env or {})}
    # Secrets are handed over as /dev/fd/N memfds (see secrets.secret_files): pass exactly those.
    pass_fds = sorted({int(m) for text in [*argv, *(env or {}).values()] for m in SECRET_FD.findall(text)})
    log.debug("start %s", " ".join(argv))
    try:
        popen = subprocess.Popen(
            list(argv),
            stdin=stdin,
            stdout=stdout,
            stderr=subprocess.PIPE,
            env=full_env,
            cwd=cwd,
            pass_fds=pass_fds,
            # None is Popen's own default for each: the child keeps this process's user and groups.
            user=account[0] if account else None,
            group=account[1] if account else None,
            extra_groups=[] if account else None,
        )
    except FileNotFoundError:
        raise ProcessFailed(what or argv[0], 127, f"{argv[0]}: command not found") from None
    child = Child(what or os.path.basename(argv[0]), popen, secrets, on_stderr_line=on_stderr_line)
    child.start_drain()
    return child


def run(
    argv: Sequence[str],
    *,
    what: str | None = None,
    env: dict[str, str] | None = None,
    input: bytes | None = None,
    secrets: Sequence[Secret] = (),
    cwd: str | None = None,
    check: bool = True,
    account: tuple[int, int] | None = None,
) -> bytes:
    """Run a child to completion and return its stdout (`account` as in `start`)."""
    child = start(
        argv,
        what=what,
        env=env,
        stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        secrets=secrets,
        cwd=cwd,
        account=account,
    )
    if input is not None:

        def feed() -> None:
            try:
                child.stdin.write(input)
                child.stdin.close()
            except BrokenPipeError:
                pass

        threading.Thread(target=feed, daemon=True).start()
    out = child.stdout.read()
    child.wait(check=check)
    return out


COPY_BUFFER = 1 << 20


def stream_out(argv: Sequence[str], sink: IO[bytes], *, what: str, env: dict[str, str] | None = None,
               secrets: Sequence[Secret] = (), on_bytes: Callable[[int], None] | None = None,
               on_stderr_line: Callable[[str], None] | None = None) -> int:
    """Run a child and copy its stdout into `sink` (a dump into the repository); returns the bytes.

    If writing to the sink fails the child is killed; a non-zero exit raises ProcessFailed.
    `on_stderr_line` sees every stderr line (scrubbed), also those before the kept tail.
    """
    child = start(argv, what=what, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, secrets=secrets,
                  on_stderr_line=on_stderr_line)
    total = 0
    try:
        while block := child.stdout.read(COPY_BUFFER):
            sink.write(block)
            total += len(block)
            if on_bytes:
                on_bytes(total)
    except BaseException:
        child.kill()
        raise
    child.wait()
    return total


def stream_in(argv: Sequence[str], source: IO[bytes], *, what: str, env: dict[str, str] | None = None,
              secrets: Sequence[Secret] = (), on_bytes: Callable[[int], None] | None = None) -> int:
    """Run a child and feed `source` to its stdin (a dump into a database loader); returns the bytes.

    A child that stops reading early is reported through its exit status, not as a broken pipe.
    """
    child = start(argv, what=what, env=env, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, secrets=secrets)
    total = 0
    try:
        while block := source.read(COPY_BUFFER):
            child.stdin.write(block)
            total += len(block)
            if on_bytes:
                on_bytes(total)
        child.stdin.close()
    except BrokenPipeError:
        pass
    except BaseException:
        child.kill()
        raise
    child.wait()
    return total


def process_alive(pid: int) -> bool:
    """True while process `pid` exists (also when it belongs to another user)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
