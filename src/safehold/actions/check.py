"""`safehold check`: monitoring with Nagios exit codes (0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN).

What iTop's check-backup.php checks (the point exists, its size is not suspicious) plus what it
misses (a disabled schedule, the last run's result, restore drills, a copy off the host, restic
locks a killed run left behind, an application a killed run left paused, repository damage a
verify found). Reads the local history, verify's damage records (and the lock folder of
repositories on this host) only, so it is fast enough for a monitoring agent every few minutes.
Each finding names the rule that fired. The one thing it changes: an
application that a killed run left paused (quiesced) is resumed when no run of that instance is
alive, since that only undoes safehold's own recorded steps (see apps.quiesce).
"""

from __future__ import annotations

import os
import pwd
import socket
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypedDict

from safehold import restoring
from safehold.apps.quiesce import RESUME_SECONDS, look_at_marker, marker_path, resume_marker
from safehold.config import Config, InstanceConfig
from safehold.errors import ConfigError
from safehold.history import READ_TIMEOUT, History, Run
from safehold.lock import is_locked
from safehold.output import Silent
from safehold.repository import damage
from safehold.repository.restic import REPAIR
from safehold.runner import process_alive
from safehold.schedule import DEFAULT_GAP, EARLY, GRACE, backup_schedule, drill_schedule, verify_schedule

OK, WARNING, CRITICAL, UNKNOWN = 0, 1, 2, 3
NAMES = {OK: "OK", WARNING: "WARNING", CRITICAL: "CRITICAL", UNKNOWN: "UNKNOWN"}

# Size anomaly rules against the median of the recent successful points.
SHRINK_WARN = 0.5      # newest point under half the median
SHRINK_CRIT = 0.1      # newest point under a tenth of the median
GROWTH_WARN = 3.0      # newest point over three times the median
RECENT_POINTS = 10

# A run's error is quoted at most this long: the status line must fit a monitoring system's output
# limit (Nagios keeps 4-8 KiB) and still name every other finding; `safehold history` has it in full.
QUOTE_LIMIT = 300

# restic renews the lock of a running command every 5 minutes and calls one older than 30 stale.
STALE_LOCK = timedelta(minutes=30)


@dataclass
class Finding:
    """One rule's verdict on one instance."""

    rule: str
    status: int
    message: str

    def __post_init__(self) -> None:
        # Messages quote stderr of children (a quiesce command, a database tool), which may hold line
        # breaks; a monitoring system reads only the first line as the status and would lose the rest.
        self.message = " ".join(self.message.split())

    def as_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {"rule": self.rule, "status": NAMES[self.status], "message": self.message}


class InstanceStatus(TypedDict):
    """One instance's part of `check`'s answer."""

    instance: str
    status: str  # a NAMES value
    code: int  # its exit code (OK … UNKNOWN)
    findings: list[dict[str, Any]]
    problems: list[str]


def _age(delta: timedelta) -> str:
    hours = delta.total_seconds() / 3600
    if hours < 2:
        return f"{delta.total_seconds() / 60:.0f} min"
    return f"{hours:.1f} h" if hours < 48 else f"{hours / 24:.1f} d"


def _quote(error: str | None) -> str:
    """A run's recorded error for the status line: shortened (`safehold history` shows it whole)."""
    if not error:
        return "no reason recorded"
    return error if len(error) <= QUOTE_LIMIT else f"{error[:QUOTE_LIMIT]}…"


def check_instance(config: Config, history: History, name: str, now: datetime) -> list[Finding]:
    """Every rule's finding for one instance."""
    instance = config.instance(name)
    schedule = backup_schedule(instance.schedule)
    findings: list[Finding] = []
    max_age = schedule.max_age(now) if schedule else DEFAULT_GAP + GRACE
    critical = schedule.critical_age(now) if schedule else 2 * (DEFAULT_GAP + GRACE)
    # A partial run's point is stored and usable (only a copy lacks it, which `last-run` names as a WARNING),
    # so the first run being partial is no "no backup" CRITICAL (docs/offhost.md).
    good = history.last_stored(name)
    # A point is as old as its start (the data it holds); the schedule says how old it may be now.
    fresh = good is not None and good.finished is not None and now - good.started <= max_age

    # A backup still going that started in time for the latest due run is that run's point, late only
    # if it outlasts the next due time (then it no longer qualifies and the stale point is reported).
    going = [run for run in history.running(name) if run.kind == "backup" and now - run.started <= max_age]
    if going and not fresh:
        started = min(run.started for run in going)
        findings.append(Finding("freshness", OK, f"a backup is running since {started:%Y-%m-%d %H:%M} UTC "
                                                 f"({_age(now - started)})"))
    elif good is None or good.finished is None:
        findings.append(Finding("freshness", CRITICAL, "no successful backup recorded"))
    elif not fresh:
        age = now - good.started
        status = CRITICAL if age > critical else WARNING
        due = schedule.due_by(now) if schedule is not None and not schedule.config.max_age_hours else None
        why = f"none since the run due {due:%Y-%m-%d %H:%M %Z}" if due is not None \
            else f"allowed {_age(max_age)}"
        findings.append(Finding("freshness", status, f"last good point is {_age(age)} old ({why})"))
    else:
        findings.append(Finding("freshness", OK, f"last good point {_age(now - good.started)} old"))

    if schedule is None:
        findings.append(Finding("schedule", OK, "no schedule (runs by hand or by an external timer)"))
    elif not schedule.enabled:
        findings.append(Finding("schedule", WARNING if fresh else CRITICAL,
                                "schedule disabled" + ("" if fresh else " and no fresh point")))
    else:
        upcoming = schedule.next_run(now)
        findings.append(Finding("schedule", OK, f"next run {upcoming:%Y-%m-%d %H:%M %Z}" if upcoming
                                else "schedule names no day"))

    last = history.last_run(name)
    if last is not None and last.result != "ok":
        status = WARNING if last.result == "partial" else CRITICAL
        findings.append(Finding("last-run", status, f"last run {last.started:%Y-%m-%d %H:%M} UTC {last.result}: "
                                                    f"{_quote(last.error)}"))
    # A prune's or restore's failure is announced too; what could not go out then counts until the next
    # backup, which checks the notification references again.
    others = [run for kind in ("prune", "restore") if (run := history.last_run(name, kind)) is not None
              and (last is None or run.started > last.started)]
    findings.extend(_notify([("run", last), ("drill", history.last_drill(name)),
                             ("verify", history.last_run(name, "verify")), *((run.kind, run) for run in others)]))
    findings.extend(paused_findings(config, name))
    findings.extend(restore_findings(config, name))
    if is_locked(config.state_dir, name):
        findings.append(Finding("running", OK, "a run is in progress"))

    findings.extend(_size(history, name))
    findings.append(_drill(history, name, instance, now))
    findings.extend(_verify(history, name, instance, now))
    findings.append(_offhost(config, instance.repositories))
    findings.extend(_stale_locks(config, instance.repositories, now))
    findings.extend(_damage(config, name, instance.repositories))
    return findings


def _notify(runs: list[tuple[str, Run | None]]) -> list[Finding]:
    """Notification problems the runs recorded, by what they were (this check reads no secrets).

    Each kind's own: a failed drill is announced (and its ticket opened) as a failed backup is, so a
    notification that could not go out there is as much a problem as one of a backup.
    """
    parts, named = [], set()
    for what, run in runs:
        recorded = run.details.get("notify_problems", []) if run is not None else []
        problems = [problem for problem in recorded if problem not in named]
        named.update(problems)  # an unresolvable URL both recorded is named once
        if problems:
            parts.append(f"notifications of the last {what}: " + "; ".join(problems))
    return [Finding("notify", WARNING, "; ".join(parts))] if parts else []


def paused_findings(config: Config, name: str, resume: bool = True) -> list[Finding]:
    """An application a killed run left paused (quiesced): CRITICAL while it stays paused, WARNING once resumed.

    With `resume` (`safehold check`) it is resumed here if the instance is free. That is safehold
    undoing its own recorded steps, under the instance lock, so it can never cut into a live run; an
    application left read-only or without its cron for days is worse than a monitoring check that
    changes something. Without it (the web console, whose pages anyone logged in may read) the marker
    is only looked at, and the finding says who resumes it.
    """
    marker = marker_path(config.state_dir, name)
    if not marker.exists():
        return []
    try:
        found = resume_marker(marker, config.state_dir, Silent()) if resume \
            else look_at_marker(marker, config.state_dir)
    except OSError as exc:  # e.g. the lock folder is not writable by the monitoring user
        return [Finding("paused", CRITICAL, f"{name} may be left paused by a killed run ({marker}), and it could "
                                            f"not be {'resumed' if resume else 'looked at'} here: {exc}; run "
                                            f"`safehold check {name}` as the user that runs the backups")]
    since = f"{found.since:%Y-%m-%d %H:%M} UTC" if found.since else "an unknown time"
    left = f"{found.paused()} — left paused since {since} by run pid {found.pid}, which was killed or could " \
        "not resume it"
    if found.state == "resumed":
        return [Finding("paused", WARNING, f"resumed now: {left}; `safehold history {name}` shows that run")]
    if found.state == "busy":
        if process_alive(found.pid):
            return []  # the pause of the run in progress
        return [Finding("paused", CRITICAL, f"{left}; a run of {name} holds the instance now, and it is "
                                            "resumed once that run ends (by the next `safehold check`, backup or "
                                            "`safehold serve`)")]
    if found.state == "unreadable":
        return [Finding("paused", CRITICAL, f"unreadable quiesce marker {marker} ({found.problems[0]}): the "
                                            f"application may be left paused; resume it by hand, then delete the "
                                            "marker")]
    if found.state == "found":  # only looked at: nobody tried to resume it yet
        return [Finding("paused", CRITICAL, f"{left}; `safehold serve` resumes it within "
                                            f"{RESUME_SECONDS / 60:.0f} min, any backup or `safehold check {name}` "
                                            "at once")]
    return [Finding("paused", CRITICAL, f"{left}; resuming failed: {'; '.join(found.problems)} — fix that and run "
                                        f"`safehold check {name}` again, or resume by hand and delete {marker}")]


def restore_findings(config: Config, name: str) -> list[Finding]:
    """CRITICAL while an in-place restore of the instance stands interrupted (see safehold.restoring)."""
    record = restoring.read(config.state_dir, name)
    if record is None:
        return []
    if is_locked(config.state_dir, name):  # the restore (or the one finishing it) is running now
        return [Finding("restore", OK, f"an in-place restore of point {record.run_id} is running")]
    return [Finding("restore", CRITICAL, record.message())]


def _size(history: History, name: str) -> list[Finding]:
    sizes = history.recent_sizes(name, RECENT_POINTS + 1)
    median = history.median_size(name, RECENT_POINTS)
    if not sizes or median is None or median <= 0:
        return []
    ratio = sizes[0] / median
    detail = f"newest point {sizes[0] / 1e6:.2f} MB vs median {median / 1e6:.2f} MB of the previous " \
             f"{min(len(sizes) - 1, RECENT_POINTS)}"
    if ratio < SHRINK_CRIT:
        return [Finding("size-shrink", CRITICAL, f"{detail} (under {SHRINK_CRIT:.0%} of the median)")]
    if ratio < SHRINK_WARN:
        return [Finding("size-shrink", WARNING, f"{detail} (under {SHRINK_WARN:.0%} of the median)")]
    if ratio > GROWTH_WARN:
        return [Finding("size-growth", WARNING, f"{detail} (over {GROWTH_WARN:.0f}x the median)")]
    return [Finding("size", OK, detail)]


def _drill(history: History, name: str, instance: InstanceConfig, now: datetime) -> Finding:
    drill = history.last_drill(name)
    if drill is None:
        return Finding("drill", OK, "no restore drill recorded yet")
    if drill.result != "ok":
        return Finding("drill", CRITICAL, f"last drill {drill.started:%Y-%m-%d} failed: {_quote(drill.error)}")
    late = drill_overdue(instance, drill.started, now)
    if late is not None:
        return Finding("drill", WARNING, late)
    return Finding("drill", OK, f"last drill passed {_age(now - drill.started)} ago")


def _verify(history: History, name: str, instance: InstanceConfig, now: datetime) -> list[Finding]:
    """The last recorded verify (`verify --scheduled`, the console's Verify): failed, or missing since its
    schedule's due time."""
    run = history.last_run(name, "verify")
    schedule = verify_schedule(instance.schedule)
    scheduled = schedule is not None and schedule.enabled
    if run is None:
        return [Finding("verify", OK, "no scheduled verify recorded yet")] if scheduled else []
    if run.result != "ok":
        return [Finding("verify", CRITICAL, f"last verify {run.started:%Y-%m-%d} failed: {_quote(run.error)}")]
    due = schedule.due_by(now) if scheduled and schedule is not None else None
    going = any(r.kind == "verify" and due is not None and r.started >= due - EARLY for r in history.running(name))
    if due is not None and run.started < due - EARLY and not going:
        return [Finding("verify", WARNING, f"last verify passed but is {_age(now - run.started)} old (none since "
                                           f"the verify due {due:%Y-%m-%d %H:%M %Z})")]
    return [Finding("verify", OK, f"last verify passed {_age(now - run.started)} ago")]


def drill_overdue(instance: InstanceConfig, started: datetime, now: datetime) -> str | None:
    """Why a passed drill started at `started` is too old at `now` (None: it is recent enough).

    The one rule `check` and the web dashboard share, so the two never disagree about a drill.
    """
    age = now - started
    schedule = drill_schedule(instance.schedule)
    if schedule is not None and schedule.enabled and "drill_interval_hours" not in instance.model_fields_set:
        # The drill schedule says when a drill was due, as the backup schedule does for points: a monthly
        # drill is not late after the default 8 days, and a missed weekly one shows 2 h after its due time.
        due = schedule.due_by(now)
        if due is not None and started < due - EARLY:
            return f"last drill passed but is {_age(age)} old (none since the drill due {due:%Y-%m-%d %H:%M %Z})"
    elif age > timedelta(hours=instance.drill_interval_hours) + GRACE:
        return f"last drill passed but is {_age(age)} old (every {instance.drill_interval_hours} h)"
    return None


def _offhost(config: Config, names: list[str]) -> Finding:
    remote = [n for n in names if config.repositories[n].is_remote()]
    if remote:
        return Finding("off-host", OK, f"off-host copy in {', '.join(remote)}")
    return Finding("off-host", WARNING, f"every repository ({', '.join(names)}) is a path on {socket.gethostname()}: "
                                        "a disk or host loss takes the backups too")


def _stale_locks(config: Config, names: list[str], now: datetime) -> list[Finding]:
    """Lock files a killed restic left in a repository on this host (read from the folder: no key, no restic).

    Backups take shared locks and go on working, but `forget`/`prune` need the exclusive one and
    fail until the stale locks go. Remote repositories are not looked at (that needs a restic call).
    """
    findings = []
    for name in names:
        folder = config.repositories[name].local_path()
        if folder is None:
            continue
        try:
            ages = [now - datetime.fromtimestamp(f.stat().st_mtime, UTC) for f in (folder / "locks").iterdir()]
        except OSError:
            continue  # no repository yet, or not readable by this user
        stale = [age for age in ages if age > STALE_LOCK]
        if stale:
            findings.append(Finding(
                "repository-locks", WARNING,
                f"repository {name} holds {len(stale)} restic lock(s) older than {_age(STALE_LOCK)} (oldest "
                f"{_age(max(stale))}), left by a killed run: retention cannot prune until they go; "
                "`safehold verify` removes the ones whose process is gone"))
    return findings


def _damage(config: Config, instance: str, names: list[str]) -> list[Finding]:
    """What the last verify recorded of a repository's damage (see repository.damage), until one passes."""
    findings = []
    for name in names:
        found = damage.recorded(config.state_dir, name)
        if found is None:
            continue
        if found.unsafe:
            message = f"{found.message} (verify, {found.since}): backups into it are refused until `{REPAIR}`"
        else:
            mine = [p["run_id"] for p in found.points if p["instance"] == instance]
            message = f"repository {name} holds points that lost data (verify, {found.since})" + \
                (f", {len(mine)} of {instance}: {', '.join(mine)}" if mine else "") + \
                f"; `{REPAIR}` names them and how to remove them"
        findings.append(Finding("repository-damage", CRITICAL, message))
    return findings


def _refuse_a_history_of_another_user(config: Config) -> None:
    """A monitoring agent runs as its own user (nagios), whose default state folder is not root's: it
    would find no history and call every instance CRITICAL for a reason that is not true."""
    # os.path.exists, not Path.exists: a folder this user may not enter is "no history" too.
    if config.settings.state_dir or os.geteuid() == 0 or os.path.exists(config.state_dir / "history.sqlite"):
        return
    user = pwd.getpwuid(os.geteuid()).pw_name
    raise ConfigError(f"no run history in {config.state_dir}: user {user} has run no backup "
                      "(runs as root keep theirs in /var/lib/safehold)",
                      "run check as the user that runs the backups (from a monitoring agent: a sudo rule "
                      "for `safehold check`)")


def check(config: Config, name: str | None, now: datetime | None = None) -> dict[str, Any]:
    """Findings for one or all instances, the overall status and the one-line summary."""
    now = now or datetime.now(UTC)
    _refuse_a_history_of_another_user(config)
    history = History(config.state_dir, busy_timeout=READ_TIMEOUT)
    instances: list[InstanceStatus] = []
    for instance_name in config.select(name):
        findings = check_instance(config, history, instance_name, now)
        worst = max(f.status for f in findings)
        instances.append({"instance": instance_name, "status": NAMES[worst], "code": worst,
                          "findings": [f.as_dict() for f in findings],
                          "problems": [f"{f.rule}: {f.message}" for f in findings if f.status != OK]})
    code = max(i["code"] for i in instances)
    problems = [f"{i['instance']} {p}" for i in instances for p in i["problems"]]
    summary = "; ".join(problems) if problems else f"{len(instances)} instance(s) fine"
    return {"status": NAMES[code], "code": code, "line": f"SAFEHOLD {NAMES[code]} - {summary}",
            "instances": instances}
