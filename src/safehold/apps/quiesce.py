"""Pause an application around a snapshot and always resume it, even after safehold dies.

Every pausing action is first written to a marker file (`STATE/quiesce/INSTANCE.json`, 0600)
together with what undoes it, and only then performed. Leaving the context undoes the actions in
reverse order and removes the marker. Exceptions and SIGTERM/SIGHUP (turned into an exception
while paused) pass through that path. SIGKILL cannot be caught: the marker stays behind and
`resume_leftovers`, called when safehold next starts, undoes what the dead run left paused.

Markers never hold secrets: a step that needs database access (ITFlow's cron switch) records the
install root and reads the credentials from the application's config file again when resuming.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from safehold.errors import SafeholdError
from safehold.lock import is_locked
from safehold.output import Reporter
from safehold.runner import process_alive
from safehold.secrets import write_private

Resumer = Callable[[dict[str, Any], Reporter], None]
RESUMERS: dict[str, Resumer] = {}
CAUGHT_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


class Terminated(SafeholdError):
    """safehold was asked to stop (SIGTERM/SIGHUP) while an application was paused."""


def resumer(kind: str) -> Callable[[Resumer], Resumer]:
    """Register the function that undoes pause steps of `kind`."""
    def register(func: Resumer) -> Resumer:
        RESUMERS[kind] = func
        return func
    return register


def marker_path(state_dir: Path, instance: str) -> Path:
    """Where the resume marker of an instance lives."""
    return state_dir / "quiesce" / f"{instance}.json"


class Pause:
    """The pause steps taken so far for one instance, mirrored in its marker file."""

    def __init__(self, marker: Path, instance: str, app: str) -> None:
        self.marker = marker
        self.data: dict[str, Any] = {"instance": instance, "app": app, "pid": os.getpid(),
                                     "since": time.time(), "steps": []}
        self.window: dict[str, object] = {"method": "none"}

    def record(self, kind: str, **undo: Any) -> None:
        """Remember how to undo a step; call this BEFORE performing the step."""
        if kind not in RESUMERS:
            raise ValueError(f"no resumer registered for {kind!r}")
        self.data["steps"].append({"kind": kind, **undo})
        write_private(self.marker, json.dumps(self.data, indent=2))

    def methods(self, name: str) -> None:
        """Note a pause method in the quiesce window recorded in the manifest."""
        current = str(self.window.get("method", "none"))
        self.window["method"] = name if current == "none" else f"{current}+{name}"


def undo_steps(steps: list[dict[str, Any]], reporter: Reporter) -> list[str]:
    """Undo pause steps newest first; every step is tried, failures are returned as lines."""
    failures: list[str] = []
    for step in reversed(steps):
        try:
            RESUMERS[step["kind"]](step, reporter)
        except Exception as exc:  # noqa: BLE001 - each step must get its chance to resume
            failures.append(exc.line() if isinstance(exc, SafeholdError) else f"{step['kind']}: {exc}")
    return failures


@contextlib.contextmanager
def _signals_raise() -> Iterator[Callable[[], None]]:
    """While paused, SIGTERM/SIGHUP raise Terminated so the resume path runs; yields a 'mask' switch."""
    if threading.current_thread() is not threading.main_thread():
        yield lambda: None
        return

    def handler(signum: int, frame: object) -> None:
        raise Terminated(f"stopped by {signal.Signals(signum).name}",
                         "the application was resumed; the last complete recovery point is untouched")

    previous = {sig: signal.signal(sig, handler) for sig in CAUGHT_SIGNALS}

    def mask() -> None:
        # A second signal must not interrupt the resume itself.
        for sig in CAUGHT_SIGNALS:
            signal.signal(sig, signal.SIG_IGN)

    try:
        yield mask
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@contextlib.contextmanager
def paused(state_dir: Path, instance: str, app: str, reporter: Reporter) -> Iterator[Pause]:
    """Context for pausing an instance: record steps on the yielded Pause; all are undone on exit."""
    marker = marker_path(state_dir, instance)
    if marker.exists():
        _resume_marker(marker, reporter, state_dir, force=True)
    pause = Pause(marker, instance, app)
    with _signals_raise() as mask:
        try:
            yield pause
        finally:
            mask()
            if pause.data["steps"]:
                reporter.step(f"resuming {instance}")
            failures = undo_steps(pause.data["steps"], reporter)
            if failures:
                pause.window["resume_failed"] = failures
                for line in failures:
                    reporter.warn(f"could not resume {instance}: {line} (retried at the next safehold start)")
            else:
                marker.unlink(missing_ok=True)


def _owner_alive(data: dict[str, Any], state_dir: Path) -> bool:
    if not process_alive(int(data.get("pid", 0))):
        return False
    # The PID may have been reused: a live pause always holds the instance lock.
    return is_locked(state_dir, str(data.get("instance", "")))


def _resume_marker(marker: Path, reporter: Reporter, state_dir: Path, force: bool = False) -> bool:
    try:
        data = json.loads(marker.read_text())
    except (OSError, ValueError) as exc:
        reporter.warn(f"unreadable quiesce marker {marker}: {exc}; resume the application by hand and delete it")
        return False
    if not force and _owner_alive(data, state_dir):
        return False
    reporter.warn(f"instance {data.get('instance')} was left paused by run pid {data.get('pid')} that did not "
                  "finish; resuming it now")
    failures = undo_steps(data.get("steps", []), reporter)
    for line in failures:
        reporter.warn(f"could not resume {data.get('instance')}: {line}")
    if failures:
        return False
    marker.unlink(missing_ok=True)
    return True


def resume_leftovers(state_dir: Path, reporter: Reporter) -> list[str]:
    """Resume every instance a killed safehold run left paused; returns the instances resumed."""
    import safehold.apps  # noqa: F401 - registers every profile's resumers

    folder = state_dir / "quiesce"
    resumed: list[str] = []
    for marker in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        if _resume_marker(marker, reporter, state_dir):
            resumed.append(marker.stem)
    return resumed


@resumer("remove_file")
def _remove_file(step: dict[str, Any], reporter: Reporter) -> None:
    path = Path(step["path"])
    path.unlink(missing_ok=True)
    reporter.step(f"removed {path}")
