"""`safehold serve`'s scheduler: runs due backups (and drills, and repository checks) in a worker pool.

Each tick re-reads the config file, so a changed or disabled schedule applies to the very next due
time (iTop applies a change only after one more run in the old schedule). A job is due when one of
its schedule's times falls in (previous tick, this tick]; times missed while the scheduler was not
running are not caught up (the next due time runs). An instance runs one job at a time; the
instance lock also keeps out runs started by cron/systemd or by hand. At start and every
RESUME_SECONDS it resumes applications that a killed run (its own or a cron-started one) left
paused, for instances no run holds (apps.quiesce.resume_leftovers).

    scheduler = Scheduler(config_path, reporter)
    scheduler.start()       # background thread; the web app runs next to it
    ...
    scheduler.stop()
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

from safehold import config as config_module
from safehold.apps.quiesce import RESUME_SECONDS
from safehold.config import Config
from safehold.errors import SafeholdError
from safehold.output import Reporter
from safehold.schedule import Schedule, job_schedules

Job = Callable[[Config, str, Reporter], object]


def _backup(config: Config, name: str, reporter: Reporter) -> object:
    from safehold.actions.backup import backup_instance

    return backup_instance(config, name, reporter)


def _drill(config: Config, name: str, reporter: Reporter) -> object:
    from safehold.actions.drill import drill_instance

    return drill_instance(config, name, reporter)


def _verify(config: Config, name: str, reporter: Reporter) -> object:
    from safehold.actions.verify import verify_instance

    return verify_instance(config, name, reporter)


JOBS: dict[str, Job] = {"backup": _backup, "drill": _drill, "verify": _verify}


def now_utc() -> datetime:
    """The real clock (tests pass their own)."""
    return datetime.now(UTC)


class Scheduler:
    """Runs each instance's due jobs; start()/stop() for a background thread, tick() for one step."""

    def __init__(self, config_path: Path | None, reporter: Reporter, *, clock: Callable[[], datetime] = now_utc,
                 tick_seconds: float = 1.0, workers: int = 2, jobs: dict[str, Job] | None = None) -> None:
        self.config_path = config_path
        self.reporter = reporter
        self.clock = clock
        self.tick_seconds = tick_seconds
        self.jobs = jobs if jobs is not None else JOBS
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="safehold-job")
        self.config: Config | None = None
        self.running: dict[str, Future[object]] = {}
        self.started: list[tuple[str, str, datetime]] = []  # (instance, kind, due time), for status pages
        self._since: datetime | None = None
        self._config_error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _reload(self) -> Config | None:
        try:
            self.config = config_module.load(self.config_path)
            self._config_error = None
        except SafeholdError as exc:
            # Keep the last good config: a half-edited file must not stop the schedule.
            if exc.line() != self._config_error:
                self.reporter.warn(f"config not reloaded, keeping the previous one: {exc.line()}")
            self._config_error = exc.line()
        return self.config

    def schedules(self, config: Config) -> list[tuple[str, str, Schedule]]:
        """(instance, kind, schedule) for every enabled schedule in the config."""
        found = []
        for name, instance in config.instances.items():
            for kind, schedule in job_schedules(instance.schedule):
                if schedule.enabled and kind in self.jobs:
                    found.append((name, kind, schedule))
        return found

    def tick(self) -> list[tuple[str, str]]:
        """Start every job due since the previous tick; returns the (instance, kind) pairs started."""
        now = self.clock()
        since, self._since = self._since or now, now
        config = self._reload()
        if config is None:
            return []
        started = []
        for name, kind, schedule in self.schedules(config):
            due = schedule.next_run(since)
            if due is None or due > now:
                continue
            busy = self.running.get(name)
            if busy is not None and not busy.done():
                self.reporter.warn(f"{kind} of {name} due at {due:%H:%M:%S} skipped: the previous job still runs")
                continue
            self.reporter.step(f"{kind} of {name} due at {due.isoformat()} ({schedule.describe()})")
            self.running[name] = self.pool.submit(self._run, config, name, kind)
            self.started.append((name, kind, due))
            started.append((name, kind))
        return started

    def _run(self, config: Config, name: str, kind: str) -> object:
        try:
            return self.jobs[kind](config, name, self.reporter)
        except SafeholdError as exc:
            # Already recorded in the history and notified by the action; the loop goes on.
            self.reporter.warn(f"{kind} of {name} failed: {exc.line()}")
        except Exception as exc:  # noqa: BLE001 - one broken job must not stop the scheduler
            self.reporter.warn(f"{kind} of {name} crashed: {type(exc).__name__}: {exc}")
        return None

    def next_runs(self) -> list[dict[str, object]]:
        """Every schedule with its next due time (for `serve` output and the web UI)."""
        config = self.config or self._reload()
        if config is None:
            return []
        now = self.clock()
        return [{"instance": name, "kind": kind, "schedule": schedule.describe(),
                 "next": schedule.next_run(now)} for name, kind, schedule in self.schedules(config)]

    def resume_paused(self) -> list[str]:
        """Resume what killed runs left paused (instances no run holds); returns the instances resumed."""
        from safehold.apps.quiesce import resume_leftovers

        config = self.config or self._reload()
        if config is None:
            return []
        try:
            return resume_leftovers(config.state_dir, self.reporter)
        except Exception as exc:  # noqa: BLE001 - the schedule goes on; the next round tries again
            self.reporter.warn(f"resuming paused applications failed: {type(exc).__name__}: {exc}")
            return []

    def _loop(self) -> None:
        resumed_at = time.monotonic()
        while not self._stop.is_set():
            self.tick()
            if time.monotonic() - resumed_at >= RESUME_SECONDS:
                resumed_at = time.monotonic()
                self.resume_paused()
            self._stop.wait(self.tick_seconds)

    def start(self) -> None:
        """Resume what killed runs left paused, then run ticks in a background thread until stop()."""
        self.resume_paused()
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="safehold-scheduler", daemon=True)
        self._thread.start()

    def stop(self, wait: bool = True) -> None:
        """Stop ticking; with wait, let running jobs finish (a backup is never cut off halfway)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.pool.shutdown(wait=wait)
