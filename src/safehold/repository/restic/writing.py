"""Writing points: a stream (a database dump, the manifest, keys) or file trees, each as one snapshot."""

from __future__ import annotations

import contextlib
import fcntl
import json
import signal
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
from safehold.repository.restic.errors import RepositoryLocked, source_errors, unreadable_files
from safehold.repository.restic.process import ResticCall, ResticProcess

T = TypeVar("T")
TAG = "safehold"
UNREADABLE_SOURCE = 3  # restic backup: snapshot stored, some source files could not be read
VERBOSE = b'{"message_type":"verbose_status"'
STOP_SECONDS = 10  # for a waiting restic to clean up after SIGINT (remove its lock) before it is killed


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


@dataclass
class _OpenStream:
    """A started `restic backup --stdin`: its call (password file, turn on the repository, held by `stack`
    until the stream ends), the process, and the thread collecting its JSON lines."""

    call: ResticCall
    child: runner.Child
    reader: threading.Thread
    lines: list[dict[str, Any]]
    stack: contextlib.ExitStack


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

    @staticmethod
    def _stream_args(filename: str, tags: Sequence[str], compressed: bool) -> list[str]:
        # restic ignores the option for format-1 repositories, which never compress.
        return ["backup", "--stdin", "--stdin-filename", filename, "--json", *(["--compression", "off"] * compressed),
                "--host", socket.gethostname(), *Writing._tag_args(tags)]

    def backup_stream(self, filename: str, tags: Sequence[str], producer: Callable[[IO[bytes]], T],
                      reporter: Reporter, label: str, compressed: bool = False) -> tuple[Summary, T]:
        """Store what `producer` writes as one file in a new snapshot (`compressed`: it is already).

        If the producer fails, restic is killed before it sees end-of-input, so no snapshot holding
        a truncated stream is ever created. The producer must be able to start over: it is called
        again when another host's restic lock stopped restic before it read anything.
        """
        args = self._stream_args(filename, tags, compressed)
        return self._while_locked_elsewhere(
            "backup", lambda: self._fill_stream(self._open_stream(args), producer, reporter, label))

    def start_stream(self, filename: str, tags: Sequence[str], compressed: bool = False) -> PendingStream:
        """A `backup_stream` whose restic starts now and stores what `PendingStream.store` writes later.

        restic derives the repository key and loads the index (about half a second) before it reads its
        input, so a stream known to come last (the manifest) starts with the run and that time overlaps
        the run's other work instead of following it. Leave the `with` block without `store` and restic
        is stopped without storing anything.
        """
        return PendingStream(self, filename, tags, compressed, self._open_stream(
            self._stream_args(filename, tags, compressed)))

    def _open_stream(self, args: list[str]) -> _OpenStream:
        """Start `restic backup --stdin` (args) with this call's password file and turn on the repository."""
        stack = contextlib.ExitStack()
        try:
            call = stack.enter_context(self._call(*args))
            child = runner.start(call.argv(*args), what="restic backup", env=call.env, stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, secrets=self.secrets)
        except BaseException:
            stack.close()
            raise
        lines: list[dict[str, Any]] = []
        reader = self._read_json_lines(child.stdout, lines, None)
        _widen(child.stdin)
        return _OpenStream(call, child, reader, lines, stack)

    def _fill_stream(self, stream: _OpenStream, producer: Callable[[IO[bytes]], T], reporter: Reporter,
                     label: str) -> tuple[Summary, T]:
        """Write the producer's bytes into a started stream, end it and return restic's summary."""
        child, call = stream.child, stream.call
        writer = _CountingWriter(child.stdin, lambda n: reporter.advance(label, n))
        with stream.stack:
            try:
                # Producers only write (and flush): the counting wrapper is all of IO they use.
                result = producer(cast(IO[bytes], writer))
                child.stdin.close()
            except BaseException as exc:
                child.kill()
                stream.reader.join(timeout=5)
                if isinstance(exc, BrokenPipeError | OSError) and child.popen.returncode:
                    raise self._explain(child.stderr_text(), call) from None
                raise
            try:
                child.wait()
            except runner.ProcessFailed as exc:
                raise self._explain(exc.stderr, call) from None
            stream.reader.join()
        reporter.advance(label, writer.count, writer.count)
        return self._summary(stream.lines), result

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


class PendingStream:
    """A `restic backup --stdin` started before its data exists (see `Writing.start_stream`).

    While it waits, restic holds the repository's shared lock and this host's shared turn, as any
    backup does. If this process dies before `store`, restic reads an empty input, which it refuses
    to store ("snapshot is empty"); `abandon` stops it with SIGINT, on which restic removes its lock.
    """

    def __init__(self, repo: Writing, filename: str, tags: Sequence[str], compressed: bool,
                 stream: _OpenStream) -> None:
        self._repo, self._filename, self._tags, self._compressed = repo, filename, list(tags), compressed
        self._stream: _OpenStream | None = stream

    def __enter__(self) -> PendingStream:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.abandon()

    def store(self, producer: Callable[[IO[bytes]], T], reporter: Reporter, label: str) -> tuple[Summary, T]:
        """Write the producer's bytes and store them, as `Writing.backup_stream` does.

        A restic that stopped while it waited (another host's lock, say) is started again from the
        beginning, with that lock waited out.
        """
        stream, self._stream = self._stream, None
        if stream is not None and stream.child.popen.poll() is None:
            try:
                return self._repo._fill_stream(stream, producer, reporter, label)
            except RepositoryLocked:
                pass
        elif stream is not None:
            self._close(stream)
        return self._repo.backup_stream(self._filename, self._tags, producer, reporter, label, self._compressed)

    def abandon(self) -> None:
        """Stop restic without storing anything (nothing happens after `store`)."""
        stream, self._stream = self._stream, None
        if stream is not None:
            self._close(stream)

    @staticmethod
    def _close(stream: _OpenStream) -> None:
        popen = stream.child.popen
        with stream.stack:
            if popen.poll() is None:
                popen.send_signal(signal.SIGINT)
                try:
                    popen.wait(timeout=STOP_SECONDS)
                except subprocess.TimeoutExpired:
                    stream.child.kill()
            with contextlib.suppress(OSError):
                stream.child.stdin.close()
            stream.reader.join(timeout=5)
