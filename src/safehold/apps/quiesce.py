"""Pause an application around a snapshot and always resume it, even after safehold dies.

Every pausing action is first written to a marker file (`STATE/quiesce/INSTANCE.json`, 0600)
together with what undoes it, and only then performed. Leaving the context undoes the actions in
reverse order and removes the marker. Exceptions and SIGTERM/SIGHUP (turned into an exception
while paused) pass through that path. SIGKILL cannot be caught: the marker stays behind and
`resume_leftovers` undoes what the dead run left paused. It is called by every backup, by
`safehold serve` (at start and every few minutes) and, for the instances it checks, by `safehold
check`, which reports what it found. A resume that fails leaves its reasons in the marker, so the
web console, which only looks (`look_at_marker`), can tell "not resumed yet" from "resuming fails".

A live pause always holds the instance lock (a backup pauses under it). So a marker whose instance
lock can be taken is a leftover, whatever PID it names, and undoing it while holding that lock
cannot race a run that is pausing the same instance: a marker of a busy instance is left alone.

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
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from safehold.errors import SafeholdError
from safehold.lock import Locked, instance_lock, is_locked
from safehold.output import Reporter
from safehold.secrets import write_private

# How often `safehold serve` resumes what a killed run left paused (`check` tells how soon that is).
RESUME_SECONDS = 300.0

Resumer = Callable[[dict[str, Any], Reporter], None]
Describer = Callable[[dict[str, Any]], str]
RESUMERS: dict[str, Resumer] = {}
DESCRIBERS: dict[str, Describer] = {}
CAUGHT_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


class Terminated(SafeholdError):
    """safehold was asked to stop (SIGTERM/SIGHUP) while an application was paused."""


def resumer(kind: str, describe: Describer | None = None) -> Callable[[Resumer], Resumer]:
    """Register the function that undoes pause steps of `kind` (and one that says what such a step paused)."""
    def register(func: Resumer) -> Resumer:
        RESUMERS[kind] = func
        if describe is not None:
            DESCRIBERS[kind] = describe
        return func
    return register


def describe_step(step: dict[str, Any]) -> str:
    """What one recorded pause step holds paused, for people (`check`)."""
    kind = str(step.get("kind", "?"))
    if step.get("what"):
        return str(step["what"])
    describe = DESCRIBERS.get(kind)
    try:
        return describe(step) if describe else kind
    except (KeyError, TypeError, ValueError):
        return kind


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
    carried: list[dict[str, Any]] = []
    if marker.exists():
        # The caller holds the instance lock, so no other run is paused: whatever the marker holds is left over.
        found = _read(marker)
        if found.state == "unreadable":
            reporter.warn(f"unreadable quiesce marker {marker}: {found.problems[0]}; resume the application by "
                          "hand; it is replaced now")
        elif _undo_marker(found, reporter).state == "failed":
            carried = found.steps  # not forgotten: tried again when this run resumes
    pause = Pause(marker, instance, app)
    if carried:
        pause.data["steps"] = list(carried)
        pause.data["since"] = found.since.timestamp() if found.since else pause.data["since"]
        write_private(marker, json.dumps(pause.data, indent=2))
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
                    reporter.warn(f"could not resume {instance}: {line} (retried by the next backup, `safehold "
                                  "check` and `safehold serve`)")
            else:
                marker.unlink(missing_ok=True)


@dataclass
class Leftover:
    """A resume marker found in the state directory, and what became of it."""

    marker: Path
    instance: str
    app: str = "?"
    pid: int = 0
    since: datetime | None = None
    steps: list[dict[str, Any]] = field(default_factory=list)
    # found (not resumed yet), resumed, busy (a run of the instance holds its lock), failed (an undo step
    # failed), unreadable
    state: str = "found"
    problems: list[str] = field(default_factory=list)

    def paused(self) -> str:
        """What is held paused, newest step last, e.g. `iTop read-only mode (/srv/itop/data/.readonly)`."""
        return "; ".join(describe_step(step) for step in self.steps) or "nothing recorded"


def _read(marker: Path) -> Leftover:
    found = Leftover(marker, marker.stem)
    try:
        data = json.loads(marker.read_text())
        found.instance = str(data.get("instance") or marker.stem)
        found.app, found.pid = str(data.get("app", "?")), int(data.get("pid", 0))
        found.since = datetime.fromtimestamp(float(data["since"]), UTC) if data.get("since") else None
        found.steps = list(data.get("steps", []))
        found.problems = [str(line) for line in data.get("resume_failed", [])]
    except (OSError, ValueError, TypeError, AttributeError) as exc:
        found.state, found.problems = "unreadable", [str(exc)]
    return found


def _undo_marker(found: Leftover, reporter: Reporter) -> Leftover:
    reporter.warn(f"instance {found.instance} was left paused by run pid {found.pid} that did not finish; "
                  "resuming it now")
    found.problems = undo_steps(found.steps, reporter)
    for line in found.problems:
        reporter.warn(f"could not resume {found.instance}: {line}")
    if found.problems:
        found.state = "failed"
        # Kept in the marker for those who only look (the web console); the next attempt replaces them.
        # Best effort: not being able to note them must not hide the reasons from this caller.
        with contextlib.suppress(OSError, ValueError):
            data = json.loads(found.marker.read_text())
            write_private(found.marker, json.dumps({**data, "resume_failed": found.problems}, indent=2))
        return found
    found.marker.unlink(missing_ok=True)
    found.state = "resumed"
    return found


def resume_marker(marker: Path, state_dir: Path, reporter: Reporter) -> Leftover:
    """Undo a leftover marker if its instance is free (taking the instance lock meanwhile)."""
    import safehold.apps  # noqa: F401 - registers every profile's resumers

    found = _read(marker)
    if found.state == "unreadable":
        reporter.warn(f"unreadable quiesce marker {marker}: {found.problems[0]}; resume the application by hand "
                      "and delete it")
        return found
    try:
        with instance_lock(state_dir, found.instance, "resume", "resume of what a killed run left paused",
                           reporter):
            if not marker.exists():  # resumed by someone else meanwhile
                found.state = "resumed"
                return found
            found = _read(marker)  # re-read under the lock: a run may have replaced it meanwhile
            if found.state == "unreadable":
                return found
            return _undo_marker(found, reporter)
    except Locked:
        found.state = "busy"  # a run of this instance holds the lock: its pause (or its start) handles it
        return found


def look_at_marker(marker: Path, state_dir: Path) -> Leftover:
    """A resume marker as it stands, changing nothing: busy, failed (the last resume failed), or found.

    For pages anyone may read: resuming runs the application's commands and takes the instance
    lock, which a page view must not do (`safehold serve` resumes every few minutes).
    """
    found = _read(marker)
    if found.state != "unreadable":
        found.state = "busy" if is_locked(state_dir, found.instance) else "failed" if found.problems else "found"
    return found


def leftovers(state_dir: Path) -> list[Path]:
    """Every resume marker in the state directory."""
    folder = state_dir / "quiesce"
    return sorted(folder.glob("*.json")) if folder.is_dir() else []


def resume_leftovers(state_dir: Path, reporter: Reporter) -> list[str]:
    """Resume every instance a killed safehold run left paused; returns the instances resumed."""
    return [found.instance for found in (resume_marker(m, state_dir, reporter) for m in leftovers(state_dir))
            if found.state == "resumed"]


@contextlib.contextmanager
def folder_times_kept(path: Path) -> Iterator[None]:
    """Keep the access and modification times of `path`'s folder across adding or removing `path`:
    a pause flag leaves no trace in the tree a point saves and a restore compares."""
    folder = path.parent
    before = folder.stat() if folder.is_dir() else None
    yield
    if before is not None and folder.is_dir():
        os.utime(folder, ns=(before.st_atime_ns, before.st_mtime_ns))


@resumer("remove_file", describe=lambda step: f"{step['path']} in place (removed on resume)")
def _remove_file(step: dict[str, Any], reporter: Reporter) -> None:
    path = Path(step["path"])
    with folder_times_kept(path):
        path.unlink(missing_ok=True)
    reporter.step(f"removed {path}")


def raise_flag(pause: Pause, flag: Path, content: str, *, what: str, method: str, reporter: Reporter,
               already: str, done: str) -> None:
    """Put an app's pause flag file in place (iTop's read-only flag, Laravel's maintenance file), removed
    on resume; the folder's times are kept. A flag already there is the administrator's: it stays (`already`)."""
    if flag.exists():
        reporter.step(already)
        return
    pause.record("remove_file", path=str(flag), what=what)
    flag.parent.mkdir(parents=True, exist_ok=True)
    with folder_times_kept(flag):
        flag.write_text(content)
    pause.methods(method)
    reporter.step(done)
