"""How a run shows progress: rich on a terminal, plain lines otherwise, JSON events with --json.

Progress always goes to stderr so stdout carries only the command's result (JSON with --json).
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TransferSpeedColumn,
)
from rich.text import Text

PLAIN_INTERVAL_SECONDS = 5.0
JSON_INTERVAL_SECONDS = 1.0


def literal_console(**options: Any) -> Console:
    """A console that prints strings as they are.

    Messages carry names, paths and errors from users, configs, databases and child processes:
    rich markup would eat `[export]` or crash on `[/a]`, emoji codes would turn `:x:` into a picture.
    safehold's own styling is passed as Text instead.
    """
    return Console(highlight=False, markup=False, emoji=False, **options)


class Reporter:
    """Progress sink handed down from the CLI to actions and engines."""

    def __init__(self, mode: str | None = None, stream: Any = None) -> None:
        self.stream = stream or sys.stderr
        if mode is None:
            mode = "rich" if self.stream.isatty() else "plain"
        self.mode = mode
        self.console = literal_console(file=self.stream)
        self._lock = threading.Lock()
        self._bars: Progress | None = None
        self._tasks: dict[str, Any] = {}
        self._last_emit: dict[str, float] = {}
        self.listeners: list[Callable[[dict[str, Any]], None]] = []

    def _event(self, event: dict[str, Any]) -> None:
        for listener in self.listeners:
            listener(event)
        if self.mode == "json":
            self.stream.write(json.dumps(event) + "\n")
            self.stream.flush()

    def step(self, message: str) -> None:
        """A phase of the run starts or a fact worth one line."""
        with self._lock:
            self._event({"event": "step", "message": message, "time": time.time()})
            if self.mode == "rich":
                self.console.log(message)
            elif self.mode == "plain":
                self.stream.write(f"{time.strftime('%H:%M:%S')} {message}\n")
                self.stream.flush()

    def warn(self, message: str) -> None:
        """Something the user should know about although the run goes on."""
        with self._lock:
            self._event({"event": "warning", "message": message, "time": time.time()})
            if self.mode == "rich":
                self.console.log(Text.assemble(("warning:", "bold yellow"), f" {message}"))
            elif self.mode == "plain":
                self.stream.write(f"{time.strftime('%H:%M:%S')} warning: {message}\n")
                self.stream.flush()

    def advance(self, label: str, done: int, total: int | None = None) -> None:
        """Bytes done so far for one part (a dump, a file tree, an upload)."""
        with self._lock:
            now = time.monotonic()
            interval = JSON_INTERVAL_SECONDS if self.mode == "json" else PLAIN_INTERVAL_SECONDS
            finished = total is not None and done >= total
            if self.mode != "rich" and not finished and now - self._last_emit.get(label, 0) < interval:
                return
            self._last_emit[label] = now
            self._event({"event": "progress", "part": label, "done": done, "total": total})
            if self.mode == "rich":
                if self._bars is None:
                    self._bars = Progress(
                        TextColumn("{task.description}", markup=False),  # the label names a database or path
                        BarColumn(),
                        DownloadColumn(),
                        TransferSpeedColumn(),
                        TimeElapsedColumn(),
                        console=self.console,
                        transient=True,
                    )
                    self._bars.start()
                if label not in self._tasks:
                    self._tasks[label] = self._bars.add_task(label, total=total)
                self._bars.update(self._tasks[label], completed=done, total=total)
            elif self.mode == "plain":
                size = f"{done / 1e6:.1f} MB" + (f" of {total / 1e6:.1f} MB" if total else "")
                self.stream.write(f"{time.strftime('%H:%M:%S')} {label}: {size}\n")
                self.stream.flush()

    def close(self) -> None:
        """Stop live displays."""
        with self._lock:
            if self._bars is not None:
                self._bars.stop()
                self._bars = None
                self._tasks.clear()


class Silent(Reporter):
    """A reporter that shows nothing (library use, tests, nested safety points)."""

    def __init__(self) -> None:
        super().__init__(mode="silent")
