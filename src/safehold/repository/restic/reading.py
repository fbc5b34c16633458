"""Reading points back: snapshot listings, single files, folder listings, and restores into a folder.

`PointReader` is what a restore reads from: a repository, or an unpacked `safehold export` file.
"""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
from collections.abc import Generator, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import IO, Any, Protocol

from safehold import runner
from safehold.output import Reporter
from safehold.repository.restic.errors import target_error
from safehold.repository.restic.process import ResticProcess
from safehold.repository.restic.writing import TAG


class PointReader(Protocol):
    """Where a restore reads a point's parts from (a repository, or an unpacked export file)."""

    def open_file(self, snapshot_id: str, path: str) -> contextlib.AbstractContextManager[IO[bytes]]:
        """Stream one file of a snapshot."""
        ...

    def restore(self, snapshot_id: str, target: Path, includes: Sequence[str], reporter: Reporter) -> None:
        """Put paths of a snapshot under `target`."""
        ...


def snapshot_time(snapshot: dict[str, Any]) -> datetime:
    """A snapshot's time; restic writes nanoseconds, which datetime cannot parse."""
    text = re.sub(r"(\.\d{6})\d+", r"\1", snapshot["time"]).replace("Z", "+00:00")
    return datetime.fromisoformat(text)


def literal_pattern(path: str) -> str:
    """`path` as a restic include pattern that selects that path (and what lies in it) and nothing else.

    restic reads `*`, `?`, `[...]` and `\\` in a pattern as wildcards and escapes; in a file name
    they are plain characters (`Invoice [1].pdf`), so they are escaped.
    """
    return re.sub(r"([*?\[\]\\])", r"\\\1", path)


class Reading(ResticProcess):
    """The reading commands of a repository."""


    def snapshots(self, tags: Sequence[str] = ()) -> list[dict[str, Any]]:
        """Snapshots carrying all `tags` (and the safehold tag), oldest first."""
        return self.run_json("snapshots", "--tag", ",".join([TAG, *tags])) or []

    def cat_file(self, snapshot_id: str, path: str) -> bytes:
        """The whole content of one (small) file in a snapshot."""
        return self.run("dump", snapshot_id, path)

    @contextlib.contextmanager
    def open_file(self, snapshot_id: str, path: str, archive: bool = False) -> Iterator[IO[bytes]]:
        """Stream one file (or, with `archive`, a tar of a folder) out of a snapshot.

        A failed read raises after the consumer is done.
        """
        args = ["dump", *(["--archive", "tar"] if archive else []), snapshot_id, path]
        with self._call(*args) as call:
            child = runner.start(call.argv(*args), what="restic dump", env=call.env,
                                 stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, secrets=self.secrets)
            try:
                yield child.stdout
            except BaseException:
                child.kill()
                raise
            try:
                # Drain in blocks: a consumer that stopped early (a check reading only the start of
                # a dump) must not pull the rest of a multi-GB stream into memory.
                while child.stdout.read(1 << 20):
                    pass
                child.wait()
            except runner.ProcessFailed as exc:
                raise self._explain(exc.stderr, call) from None

    def walk(self, snapshot_id: str, paths: Sequence[str] = (),
             recursive: bool = True) -> Generator[dict[str, Any], None, None]:
        """Every node of a snapshot (path, type, size, mode, uid, gid, mtime), streamed as `restic ls --json`
        lists them (a tree may hold millions), parents before their content.

        With `paths` (absolute), only those and what lies in them: all of it when `recursive`, else each
        path and its direct content; restic then reads only the folders on the way there. Closing the
        generator before its end stops restic.
        """
        args = ["ls", "--json", *(["--recursive"] if recursive and paths else []), snapshot_id, *paths]
        with self._call(*args) as call:
            child = runner.start(call.argv(*args), what="restic ls", env=call.env,
                                 stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, secrets=self.secrets)
            try:
                for raw in child.stdout:
                    item = json.loads(raw)
                    if item.get("struct_type") == "node":
                        yield item
            except BaseException:
                child.kill()
                raise
            try:
                child.wait()
            except runner.ProcessFailed as exc:
                raise self._explain(exc.stderr, call) from None

    def restore(self, snapshot_id: str, target: Path, includes: Sequence[str], reporter: Reporter) -> None:
        """Restore paths of a snapshot under `target` ("/" puts them back where they were)."""
        args = ["restore", snapshot_id, "--target", str(target)]
        for path in includes:
            args += ["--include", literal_pattern(path)]
        reporter.step(f"restoring files from {self.name} into {target}")
        self.run(*args, local_error=lambda stderr: target_error(stderr, target))
