"""What the pages show, gathered from the safehold features that are installed.

The console is built before some features land (run history, scheduler, drill, export). Each
optional feature is looked up with importlib and, when absent, simply not shown. The names this
module expects from them are listed in OPTIONAL_API so wiring them in is one place to change.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

from safehold.actions.points import list_points
from safehold.config import WEEK_DAYS, Config, InstanceConfig, ScheduleConfig
from safehold.errors import SafeholdError
from safehold.output import Reporter
from safehold.web.jobs import Job, JobRunner

OPTIONAL = {
    "history": "safehold.history",
    "schedule": "safehold.schedule",
    "drill": "safehold.actions.drill",
    "export": "safehold.actions.export",
}
# function each optional module is expected to provide (see docs/web.md, "Wiring other features in")
OPTIONAL_API = {
    "schedule": "next_run(schedule: ScheduleConfig, after: datetime) -> datetime | None",
    "drill": "drill(config, name, reporter) -> dict (keys ok, seconds/rto, problems)",
    "export": "export(config, run, path, reporter, instance=name) -> dict",
}
POINTS_TTL = 30.0
OFF_HOST = ("sftp:", "s3:", "rest:", "rclone:", "b2:", "azure:", "gs:", "swift:")
SECRET_KEYS = re.compile(r"pass|secret|token|key|identity", re.IGNORECASE)
REF = re.compile(r"^(env:|file:)")


def feature(name: str) -> ModuleType | None:
    """The optional module behind a feature name, or None when this build does not have it."""
    module = OPTIONAL[name]
    try:
        found = importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        found = False
    return importlib.import_module(module) if found else None


def mask_url(url: str) -> str:
    """A repository or notification URL without user:password (some URLs embed credentials)."""
    return re.sub(r"(//)[^/@\s]*@", r"\1***@", url)


def mask(value: Any, key: str = "") -> Any:
    """Config values safe to show: references stay, anything that could be a secret is hidden."""
    if isinstance(value, dict):
        return {k: mask(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [mask(v, key) for v in value]
    if isinstance(value, str):
        if REF.match(value):
            return value
        if key == "urls":  # notification URLs are often credentials themselves
            return value.split(":", 1)[0] + "://(hidden)"
        if SECRET_KEYS.search(key) and key not in ("known_hosts",):
            return "(hidden)"
        return mask_url(value)
    return value


def settings_view(config: Config) -> dict[str, Any]:
    """The effective configuration with secrets masked (references are shown, values never)."""
    return mask(config.model_dump(mode="json"))


def describe_schedule(schedule: ScheduleConfig | None) -> str | None:
    """One line such as `Mon-Fri 23:30 UTC` or `cron 0 2 * * * UTC`."""
    if schedule is None:
        return None
    if schedule.cron:
        return f"cron {schedule.cron} {schedule.timezone}"
    days = [d[:3].capitalize() for d in WEEK_DAYS if d in schedule.week_days]
    return f"{', '.join(days)} {schedule.time} {schedule.timezone}"


def stale_after_hours(schedule: ScheduleConfig | None) -> float:
    """How old the newest point may get: the longest gap between scheduled days, plus slack."""
    if schedule is None or schedule.cron or not schedule.week_days:
        return 26.0
    days = sorted(WEEK_DAYS.index(d) for d in schedule.week_days)
    gaps = [(b - a) % 7 or 7 for a, b in zip(days, days[1:] + days[:1], strict=True)]
    return max(gaps) * 24.0 + 2.0


@dataclass
class InstanceView:
    """One row of the dashboard and the head of the instance page."""

    name: str
    app: str
    repositories: list[dict[str, Any]]
    schedule: str | None
    schedule_disabled: bool
    next_run: datetime | None = None
    points: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    last_job: Job | None = None
    last_drill: Job | None = None
    running: bool = False
    state: str = "ok"  # ok | warn | bad | running
    reasons: list[str] = field(default_factory=list)

    @property
    def last_point(self) -> dict[str, Any] | None:
        normal = [p for p in self.points if not p["safety_point"]]
        return (normal or self.points or [None])[0]

    @property
    def last_age_hours(self) -> float | None:
        point = self.last_point
        if point is None:
            return None
        return (datetime.now(UTC) - point["started"]).total_seconds() / 3600


class Data:
    """Reads config, points (cached briefly), locks and the job history for the pages."""

    def __init__(self, config: Config, jobs: JobRunner) -> None:
        self.config = config
        self.jobs = jobs
        self._cache: dict[str, tuple[float, list[dict[str, Any]]]] = {}
        self._lock = threading.Lock()
        jobs.on_finish.append(lambda job: self.invalidate(job.instance))

    def invalidate(self, name: str) -> None:
        """Forget cached points of an instance (a run just changed them)."""
        with self._lock:
            self._cache.pop(name, None)

    def points(self, name: str) -> list[dict[str, Any]]:
        """Recovery points of an instance in all its repositories, newest first."""
        with self._lock:
            cached = self._cache.get(name)
        if cached and time.monotonic() - cached[0] < POINTS_TTL:
            return cached[1]
        rows = list_points(self.config, name)
        rows.sort(key=lambda r: r["started"], reverse=True)
        with self._lock:
            self._cache[name] = (time.monotonic(), rows)
        return rows

    def instance(self, name: str) -> InstanceView:
        """Everything the console knows about one instance, with a state colour and its reasons."""
        cfg: InstanceConfig = self.config.instance(name)
        repos = [{"name": r, "url": mask_url(self.config.repositories[r].url),
                  "off_host": self.config.repositories[r].url.startswith(OFF_HOST)} for r in cfg.repositories]
        view = InstanceView(name=name, app=cfg.app, repositories=repos, schedule=describe_schedule(cfg.schedule),
                            schedule_disabled=bool(cfg.schedule and not cfg.schedule.enabled))
        try:
            view.points = self.points(name)
        except SafeholdError as exc:
            view.error = exc.line()
        history = self.jobs.history(name, limit=50)
        runs = [j for j in history if j.kind in ("backup", "drill", "restore", "verify")]
        view.last_job = next((j for j in runs if j.done), None)
        view.last_drill = next((j for j in history if j.kind == "drill" and j.done), None)
        view.running = self.jobs.busy(name)
        schedule_module = feature("schedule")
        next_run = getattr(schedule_module, "next_run", None)
        if next_run and cfg.schedule and cfg.schedule.enabled:
            view.next_run = next_run(cfg.schedule, datetime.now(UTC))
        self._judge(view, cfg)
        return view

    @staticmethod
    def _judge(view: InstanceView, cfg: InstanceConfig) -> None:
        bad, warn = [], []
        if view.error:
            bad.append(view.error)
        if view.schedule_disabled:
            bad.append("schedule is disabled: no automatic backups")
        if view.last_job and view.last_job.state == "failed":
            bad.append(f"last {view.last_job.kind} failed: {view.last_job.error}")
        if view.last_drill and view.last_drill.state == "failed" and view.last_drill is not view.last_job:
            bad.append(f"last drill failed: {view.last_drill.error}")
        age = view.last_age_hours
        if age is None and not view.error:
            bad.append("no recovery point yet")
        elif age is not None and age > stale_after_hours(cfg.schedule):
            bad.append(f"newest point is {age:.0f} h old")
        if cfg.schedule is None:
            warn.append("no schedule: backups run only when started by hand")
        if not any(r["off_host"] for r in view.repositories):
            warn.append("every repository is on this host: a lost host loses the backups too")
        view.reasons = bad + warn
        view.state = "running" if view.running else "bad" if bad else "warn" if warn else "ok"

    def dashboard(self) -> list[InstanceView]:
        """Every configured instance."""
        return [self.instance(name) for name in sorted(self.config.instances)]


def drill_action(config: Config, name: str) -> Any:
    """The drill as a job action, when the drill feature is installed."""
    module = feature("drill")
    if module is None:
        return None
    return lambda reporter: module.drill(config, name, reporter)


def export_action(config: Config, name: str, run: str, path: Path) -> Any:
    """A portable export as a job action, when the export feature is installed."""
    module = feature("export")
    if module is None:
        return None

    def run_export(reporter: Reporter) -> dict[str, Any]:
        result = module.export(config, run, path, reporter, instance=name)
        return {**(result if isinstance(result, dict) else {}), "file": path.name}

    return run_export
