"""Writing points: a stream (a database dump, the manifest, keys) or file trees, each as one snapshot."""

from __future__ import annotations

import contextlib
import fcntl
import json
import socket
import subprocess
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TypeVar, cast

from safehold import runner
from safehold.errors import RepositoryError
from safehold.output import Reporter
from safehold.repository.restic.errors import source_errors, unreadable_files
from safehold.repository.restic.process import ResticProcess

T = TypeVar("T")
TAG = "safehold"
UNREADABLE_SOURCE = 3  # restic backup: snapshot stored, some source files could not be read
VERBOSE = b'{"message_type":"verbose_status"'


# restic derives the repository key (about half a second) and loads the index before it reads its stdin:
# with this much room in the pipe, a small dump is written meanwhile instead of after.
PIPE_BYTES = 8 << 20
PIPE_MAX = Path("/proc/sys/fs/pipe-max-size")


def _widen(pipe: IO[bytes]) -> None:
    """Give the pipe to restic PIPE_BYTES of room (root may; others get the system's pipe-max-size)."""
    sizes = [PIPE_BYTES]
    with contextlib.suppress(OSError, ValueError):
        sizes.append(min(PIPE_BYTES, int(PIPE_MAX.read_text())))
    for size in sizes:
        with contextlib.suppress(OSError):
            fcntl.fcntl(pipe.fileno(), fcntl.F_SETPIPE_SZ, size)
            return


class _ParentMissing(Exception):
    """The parent snapshot named for a file backup is no longer in the repository."""


@dataclass


class Summary:
    """restic's closing summary of a backup."""

    snapshot_id: str
    data_added: int = 0
    total_bytes: int = 0
    files_new: int = 0
    files_changed: int = 0
    raw: dict[str, Any] = field(default_factory=dict)
    # A file backup given a parent: that parent, and the saved roots restic found equal to the parent's
    # (the root's node, so the whole tree under it: restic compares the subtree's content hash).
    parent: str | None = None
    unchanged: frozenset[str] = frozenset()


class _CountingWriter:
    """Wraps restic's stdin so the producer's bytes are counted for progress."""

    def __init__(self, sink: IO[bytes], on_bytes: Callable[[int], None]) -> None:
        self.sink = sink
        self.count = 0
        self.on_bytes = on_bytes

    def write(self, data: bytes | memoryview) -> int:
        self.sink.write(data)
        self.count += len(data)
        self.on_bytes(self.count)
        return len(data)

    def flush(self) -> None:
        self.sink.flush()


# restic restore: "ignoring error for /a/b: write /target/a/b: no space left on device"


class Writing(ResticProcess):
    """The writing commands of a repository."""


    def _summary(self, lines: list[dict[str, Any]]) -> Summary:
        for item in reversed(lines):
            if item.get("message_type") == "summary":
                return Summary(
                    snapshot_id=item["snapshot_id"],
                    data_added=int(item.get("data_added", 0)),
                    total_bytes=int(item.get("total_bytes_processed", 0)),
                    files_new=int(item.get("files_new", 0)),
                    files_changed=int(item.get("files_changed", 0)),
                    raw=item,
                )
        raise RepositoryError(f"repository {self.name}: restic reported no snapshot", "see the log for details")

    def _read_json_lines(self, stream: IO[bytes], sink: list[dict[str, Any]],
                         on_status: Callable[[dict[str, Any]], None] | None,
                         wanted: Sequence[bytes] = ()) -> threading.Thread:
        """Collect restic's JSON lines in `sink` (status lines go to `on_status`); of the per-file verbose
        lines only those holding one of `wanted` are kept (a tree may have millions of files)."""
        def read() -> None:
            for raw in stream:
                if raw.startswith(VERBOSE) and not any(marker in raw for marker in wanted):
                    continue
                try:
                    item = json.loads(raw)
                except ValueError:
                    continue
                if item.get("message_type") == "status":
                    if on_status:
                        on_status(item)
                else:
                    sink.append(item)

        thread = threading.Thread(target=read, daemon=True)
        thread.start()
        return thread

    def backup_stream(self, filename: str, tags: Sequence[str], producer: Callable[[IO[bytes]], T],
                      reporter: Reporter, label: str, compressed: bool = False) -> tuple[Summary, T]:
        """Store what `producer` writes as one file in a new snapshot (`compressed`: it is already).

        If the producer fails, restic is killed before it sees end-of-input, so no snapshot holding
        a truncated stream is ever created. The producer must be able to start over: it is called
        again when another host's restic lock stopped restic before it read anything.
        """
        # restic ignores the option for format-1 repositories, which never compress.
        args = ["backup", "--stdin", "--stdin-filename", filename, "--json", *(["--compression", "off"] * compressed),
                "--host", socket.gethostname(), *self._tag_args(tags)]
        return self._while_locked_elsewhere("backup", lambda: self._backup_stream_once(args, producer, reporter, label))

    def _backup_stream_once(self, args: list[str], producer: Callable[[IO[bytes]], T], reporter: Reporter,
                            label: str) -> tuple[Summary, T]:
        lines: list[dict[str, Any]] = []
        with self._call(*args) as call:
            child = runner.start(call.argv(*args), what="restic backup", env=call.env, stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, secrets=self.secrets)
            reader = self._read_json_lines(child.stdout, lines, None)
            _widen(child.stdin)
            writer = _CountingWriter(child.stdin, lambda n: reporter.advance(label, n))
            try:
                # Producers only write (and flush): the counting wrapper is all of IO they use.
                result = producer(cast(IO[bytes], writer))
                child.stdin.close()
            except BaseException as exc:
                child.kill()
                reader.join(timeout=5)
                if isinstance(exc, BrokenPipeError | OSError) and child.popen.returncode:
                    raise self._explain(child.stderr_text(), call) from None
                raise
            try:
                child.wait()
            except runner.ProcessFailed as exc:
                raise self._explain(exc.stderr, call) from None
            reader.join()
        reporter.advance(label, writer.count, writer.count)
        return self._summary(lines), result

    def backup_paths(self, paths: Sequence[Path], tags: Sequence[str], excludes: Sequence[str],
                     reporter: Reporter, label: str, parent: str | None = None) -> Summary:
        """Store file trees (owners, modes, mtimes, symlinks kept by restic) as one snapshot.

        With `parent` (a snapshot of the same paths), restic compares with that one and the summary
        names the paths whose whole tree is unchanged since; a parent no longer in the repository
        (forgotten since) is dropped and restic picks its own.
        """
        base = ["backup", "--json", "--host", socket.gethostname(), *self._tag_args(tags), *["--force"] * self.read_all]
        for pattern in excludes:
            base += ["--exclude", pattern]
        roots = [str(p) for p in paths]
        if parent is not None and not self.read_all:  # --force ignores a parent
            # restic names each saved item in a verbose line: a folder with a trailing slash.
            wanted = [f'"item":{json.dumps(p, ensure_ascii=False)}'.encode() for r in roots for p in (r, r + "/")]
            args = [*base, "--parent", parent, "--verbose=2", "--", *roots]
            try:
                return self._while_locked_elsewhere(
                    "backup", lambda: self._backup_paths_once(args, reporter, label, parent, wanted))
            except _ParentMissing:
                pass
        args = [*base, "--", *roots]
        return self._while_locked_elsewhere("backup", lambda: self._backup_paths_once(args, reporter, label))

    def _backup_paths_once(self, args: list[str], reporter: Reporter, label: str, parent: str | None = None,
                           wanted: Sequence[bytes] = ()) -> Summary:
        lines: list[dict[str, Any]] = []

        def status(item: dict[str, Any]) -> None:
            reporter.advance(label, int(item.get("bytes_done", 0)), int(item.get("total_bytes", 0)) or None)

        with self._call(*args) as call:
            child = runner.start(call.argv(*args), what="restic backup", env=call.env, stdin=subprocess.DEVNULL,
                                 stdout=subprocess.PIPE, secrets=self.secrets)
            reader = self._read_json_lines(child.stdout, lines, status, wanted)
            stderr = ""
            try:
                child.wait()
            except runner.ProcessFailed as exc:
                if parent is not None and f'invalid id "{parent}"' in exc.stderr:
                    raise _ParentMissing from None
                if exc.returncode != UNREADABLE_SOURCE:
                    raise self._explain(exc.stderr, call) from None
                stderr = exc.stderr
            reader.join()
        errors = source_errors(lines, stderr)
        if stderr and (not errors or not all(error.vanished for error in errors)):
            raise unreadable_files(label, [error for error in errors if not error.vanished])
        for error in errors:  # files deleted while restic ran: the point holds the tree as it was after
            reporter.warn(f"{label}: {error.path} disappeared while it was being saved")
        summary = self._summary(lines)
        if parent is not None:
            summary.parent = parent
            summary.unchanged = frozenset(item["item"].rstrip("/") or "/" for item in lines
                                          if item.get("message_type") == "verbose_status"
                                          and item.get("action") == "unchanged" and not errors)
        return summary

    @staticmethod
    def _tag_args(tags: Sequence[str]) -> list[str]:
        return ["--tag", ",".join([TAG, *tags])]
