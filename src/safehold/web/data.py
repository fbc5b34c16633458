"""What the pages show, gathered from the rest of safehold.

Run history, schedules, drills, exports and copies to several repositories are called from this
module only, so the pages and routes never import them directly.
"""

from __future__ import annotations

import logging
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from safehold.actions import drill, export, replicate
from safehold.actions.check import OK, drill_overdue, paused_findings, restore_findings
from safehold.actions.points import list_points
from safehold.config import WEEK_DAYS, Config, InstanceConfig, ScheduleConfig
from safehold.errors import SafeholdError
from safehold.history import History, Run
from safehold.output import Reporter
from safehold.schedule import backup_schedule, drill_schedule, verify_schedule
from safehold.secrets import mask_url
from safehold.web.jobs import Job, JobRunner

LOG = logging.getLogger(__name__)
POINTS_TTL = 30.0
PAGE_WAIT_SECONDS = 5
EXPORT_KEEP_HOURS = 24  # how long a console export waits to be downloaded
OFF_HOST = ("sftp:", "s3:", "rest:", "rclone:", "b2:", "azure:", "gs:", "swift:")
SECRET_KEYS = re.compile(r"pass|secret|token|key|identity", re.IGNORECASE)
REF = re.compile(r"^(env:|file:)")
URL_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


def mask(value: Any, key: str = "") -> Any:
    """Config values safe to show: references stay, anything that could be a secret is hidden."""
    if isinstance(value, dict):
        # unset options (None) are left out: the page shows what is configured or defaulted to a value
        return {k: mask(v, k) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [mask(v, key) for v in value]
    if isinstance(value, str):
        if REF.match(value):
            return value
        if key == "urls":  # notification URLs are often credentials themselves: at most the scheme is shown
            scheme = URL_SCHEME.match(value)
            return f"{scheme[1]}://(hidden)" if scheme else "(hidden)"
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
    """How old the newest point may get: the same rule `safehold check` applies."""
    if schedule is None:
        return 26.0
    return backup_schedule(schedule).max_age(datetime.now(UTC)).total_seconds() / 3600


@dataclass
class Outcome:
    """How the newest run of one kind ended, wherever it was recorded (console, history, drill log)."""

    kind: str
    ok: bool
    when: datetime
    error: str | None = None
    rto_seconds: float | None = None
    job: str | None = None


def _aware(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, UTC)
    return datetime.fromisoformat(str(value))


def _from_job(job: Job) -> Outcome:
    rto = job.result.get("rto_seconds") if isinstance(job.result, dict) else None
    return Outcome(job.kind, job.state == "ok", _aware(job.finished or job.created), job.error, rto, job.id)


def _newest_first(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """list_points' rows (one per point per repository) by their start time, newest first."""
    return sorted(points, key=lambda row: row["started"], reverse=True)


def _from_run(run: Run | None) -> Outcome | None:
    # A killed run is in the history as a failed one ("interrupted: ..."): History notices its process is gone.
    if run is None:
        return None
    return Outcome(run.kind, run.result == "ok", _aware(run.finished or run.started), run.reason(),
                   run.details.get("rto_seconds"))


def newest(*outcomes: Outcome | None) -> Outcome | None:
    """The most recent of several records of the same kind of run."""
    present = [o for o in outcomes if o is not None]
    return max(present, key=lambda o: o.when) if present else None


@dataclass
class InstanceView:
    """One row of the dashboard and the head of the instance page."""

    name: str
    app: str
    repositories: list[dict[str, Any]]
    schedule: str | None
    schedule_disabled: bool
    next_backup: datetime | None = None
    next_drill: datetime | None = None
    next_verify: datetime | None = None
    points: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    last_backup: Outcome | None = None
    last_drill: Outcome | None = None
    last_verify: Outcome | None = None  # the scheduled verify's or the console's Verify
    running: bool = False
    state: str = "ok"  # ok | warn | bad | running
    reasons: list[str] = field(default_factory=list)
    # `safehold check`'s "paused" findings (rule, status, message): what a killed run left paused
    paused: list[dict[str, Any]] = field(default_factory=list)

    @property
    def last_point(self) -> dict[str, Any] | None:
        normal = [p for p in self.points if not p["safety_point"]]
        return next(iter(normal or self.points), None)

    @property
    def last_age_hours(self) -> float | None:
        point = self.last_point
        if point is None:
            return None
        return (datetime.now(UTC) - point["started"]).total_seconds() / 3600


class Data:
    """Reads config, points (cached briefly), locks and run records for the pages."""

    def __init__(self, config: Config, jobs: JobRunner) -> None:
        self.config = config
        # A page waits a few seconds, not the hours a run may, for a repository another run prunes or
        # checks: it then shows that instead of the points.
        self._browsing = config.model_copy(update={"settings": config.settings.model_copy(
            update={"repository_wait_seconds": min(PAGE_WAIT_SECONDS, config.settings.repository_wait_seconds)})})
        self.jobs = jobs
        self._cache: dict[str, tuple[float, Any]] = {}
        self._lock = threading.Lock()
        jobs.on_finish.append(lambda job: self.invalidate(job.instance))

    def invalidate(self, name: str) -> None:
        """Forget cached points and copy status of an instance (a run just changed them)."""
        with self._lock:
            self._cache.pop(name, None)
            self._cache.pop(f"{name} copies", None)

    def _cached(self, key: str, compute: Any) -> Any:
        # Listing points costs restic calls per repository: pages reuse a recent answer.
        with self._lock:
            cached = self._cache.get(key)
        if cached and time.monotonic() - cached[0] < POINTS_TTL:
            return cached[1]
        value = compute()
        with self._lock:
            self._cache[key] = (time.monotonic(), value)
        return value

    def points(self, name: str) -> list[dict[str, Any]]:
        """Recovery points of an instance in all its repositories, newest first."""
        return self._cached(name, lambda: _newest_first(list_points(self._browsing, name)))

    def history_runs(self, name: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """Runs from the run history (scheduler, CLI and console alike)."""
        return [run.as_dict() for run in History(self.config.state_dir).runs(name, limit=limit)]

    def _last(self, name: str, kind: str, console: list[Job]) -> Outcome | None:
        """The newest finished backup or drill, started here or anywhere else (the run history has them all)."""
        mine = next((_from_job(j) for j in console if j.kind == kind and j.done), None)
        return newest(mine, _from_run(History(self.config.state_dir).last_run(name, kind)))

    def _copies(self, name: str) -> dict[str, dict[str, Any]]:
        try:
            rows = self._cached(f"{name} copies", lambda: replicate.copy_status(self._browsing, name))
            return {row["repository"]: row for row in rows}
        except SafeholdError as exc:
            return {"": {"missing": [], "error": exc.line()}}

    def instance(self, name: str) -> InstanceView:
        """Everything the console knows about one instance, with a state colour and its reasons."""
        cfg: InstanceConfig = self.config.instance(name)
        copies = self._copies(name)
        repos = [{"name": r, "url": mask_url(self.config.repositories[r].url),
                  "off_host": self.config.repositories[r].url.startswith(OFF_HOST),
                  "missing": len(copies.get(r, {}).get("missing") or []), "error": copies.get(r, {}).get("error")}
                 for r in cfg.repositories]
        view = InstanceView(name=name, app=cfg.app, repositories=repos, schedule=describe_schedule(cfg.schedule),
                            schedule_disabled=bool(cfg.schedule and not cfg.schedule.enabled))
        try:
            view.points = self.points(name)
        except SafeholdError as exc:
            view.error = exc.line()
        console = self.jobs.history(name, limit=50)
        view.last_backup = self._last(name, "backup", console)
        view.last_drill = self._last(name, "drill", console)
        view.last_verify = _from_run(History(self.config.state_dir).last_run(name, "verify"))
        # Only looked at: a page view must not start services (`safehold serve` resumes every few minutes).
        # ... and an interrupted in-place restore, red until it is finished or undone.
        view.paused = [f.as_dict() for f in [*paused_findings(self.config, name, resume=False),
                                             *restore_findings(self.config, name)] if f.status != OK]
        view.running = self.jobs.busy(name)
        if cfg.schedule is not None and cfg.schedule.enabled:
            now = datetime.now(UTC)
            view.next_backup = backup_schedule(cfg.schedule).next_run(now)
            drills, verifies = drill_schedule(cfg.schedule), verify_schedule(cfg.schedule)
            view.next_drill = drills.next_run(now) if drills else None
            view.next_verify = verifies.next_run(now) if verifies else None
        self._judge(view, cfg, datetime.now(UTC))
        return view

    def _judge(self, view: InstanceView, cfg: InstanceConfig, now: datetime) -> None:
        bad, warn = [], []
        if view.error:
            bad.append(view.error)
        if view.schedule_disabled:
            bad.append("schedule is disabled: no automatic backups")
        if view.last_backup and not view.last_backup.ok:
            bad.append(f"last backup failed: {view.last_backup.error}")
        if view.last_drill and not view.last_drill.ok:
            bad.append(f"last drill failed: {view.last_drill.error}")
        if view.last_verify and not view.last_verify.ok:
            bad.append(f"last verify failed: {view.last_verify.error}")
        age = view.last_age_hours
        if age is None and not view.error:
            bad.append("no recovery point yet")
        elif age is not None and age > stale_after_hours(cfg.schedule):
            bad.append(f"newest point is {age:.0f} h old")
        if cfg.schedule is None:
            warn.append("no schedule: backups run only when started by hand")
        if not any(r["off_host"] for r in view.repositories):
            warn.append("every repository is on this host: a lost host loses the backups too")
        for repo in view.repositories:
            if repo["error"]:
                warn.append(f"copy to {repo['name']}: {repo['error']}")
            elif repo["missing"]:
                warn.append(f"{repo['missing']} point(s) not yet copied to {repo['name']}")
        if view.points:
            if view.last_drill is None:
                warn.append("never drilled: nobody has proven these points restore")
            # `safehold check`'s rule (the drill schedule, or drill_interval_hours when set); a failed drill
            # is a reason of its own above.
            elif view.last_drill.ok and (late := drill_overdue(cfg, view.last_drill.when, now)):
                warn.append(late)
        view.reasons = bad + warn
        # A paused application has a line of its own (red or amber), so it is not repeated among the reasons.
        bad_pause = any(f["status"] == "CRITICAL" for f in view.paused)
        view.state = "running" if view.running else "bad" if bad or bad_pause else "warn" if warn or view.paused \
            else "ok"

    def dashboard(self) -> list[InstanceView]:
        """Every configured instance."""
        return [self.instance(name) for name in sorted(self.config.instances)]


def drill_action(config: Config, name: str) -> Any:
    """The drill as a job action."""
    return lambda reporter: drill.drill_instance(config, name, reporter)


def export_action(config: Config, name: str, run: str, folder: Path) -> Any:
    """A portable export as a job action.

    The file is age-encrypted (and then carries the escrowed keys) when [export] recipients are set.
    """
    suffix = ".tar.zst.age" if config.export.recipients else ".tar.zst"
    token = secrets.token_hex(3)
    path = folder / f"{name}-{run}-{token}{suffix}"

    def run_export(reporter: Reporter) -> dict[str, Any]:
        result = export.export(config, run, path, reporter, instance=name)
        final = path.with_name(f"{name}-{result['run_id']}-{token}{suffix}")
        if final != path:  # `latest`: the file is named by the point it holds, as every other export
            path.rename(final)
            reporter.step(f"named {final.name} after the point it holds")
        return {**result, "file": final.name}

    return run_export


def prune_exports(folder: Path, keep_hours: float = EXPORT_KEEP_HOURS) -> list[str]:
    """Delete the exports (and leftovers of killed ones) made more than `keep_hours` ago; returns their names.

    The console writes them only to be downloaded: kept, they would pile up as copies of the data outside
    the repositories, unencrypted when [export] has no recipients.
    """
    if not folder.is_dir():
        return []
    cutoff = time.time() - keep_hours * 3600
    removed = []
    for path in folder.iterdir():  # the `.NAME.partial` of a killed export too
        try:
            if path.is_file() and path.stat().st_mtime < cutoff:
                path.unlink()
                removed.append(path.name)
        except FileNotFoundError:  # another sweep got there first
            continue
        except OSError as exc:  # the next sweep tries again; starting a job must not fail over it
            LOG.warning("cannot delete old export %s: %s", path, exc)
    return removed
