"""Run history, `safehold check` rules (Nagios codes) and Prometheus metrics, from history rows alone."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from prometheus_client.parser import text_string_to_metric_families

from safehold import metrics
from safehold.actions.check import check
from safehold.apps.quiesce import marker_path
from safehold.config import Config, parse
from safehold.history import History
from safehold.lock import instance_lock
from safehold.output import Silent
from tests.conftest import run_cli, write_config

MB = 1_000_000


def make_config(tmp_path: Path, schedule: str = "", repo_url: str = "sftp:backup@nas.example:/srv/safehold") -> Path:
    return write_config(tmp_path, {"url": repo_url, "password_file": str(tmp_path / "unused.pass")}, f"""
[instances.app]
repositories = ["main"]
files = ["{tmp_path}"]
{schedule}
""", settings=f'metrics_textfile = "{tmp_path / "textfile" / "safehold.prom"}"')


def load(path: Path) -> Config:
    return parse(path.read_text(), path)


def add_backups(history: History, sizes: list[int], result: str = "ok", error: str | None = None) -> None:
    for size in sizes:
        run = history.record_start("app", "backup")
        history.record_end(run, result, bytes_added=size // 10, bytes_total=size, error=error,  # type: ignore[arg-type]
                           details={"repository": "main"})


def rules(result: dict) -> dict[str, str]:
    return {f["rule"]: f["status"] for f in result["instances"][0]["findings"]}


def test_history_records_queries_and_reaps_killed_runs(tmp_path: Path) -> None:
    history = History(tmp_path)
    add_backups(history, [10 * MB, 11 * MB, 12 * MB, 13 * MB])
    assert history.recent_sizes("app", 3) == [13 * MB, 12 * MB, 11 * MB]
    assert history.median_size("app") == 11 * MB  # the newest is compared with the ones before it
    assert history.last_success("app").bytes_total == 13 * MB
    assert history.last_drill("app") is None
    assert (tmp_path / "history.sqlite").stat().st_mode & 0o077 == 0
    # A row left running by a process that no longer exists is a failed run.
    dead = subprocess.Popen(["true"])
    dead.wait()
    run = history.record_start("app", "backup")
    with history._connect() as db:
        db.execute("UPDATE runs SET pid=? WHERE id=?", (dead.pid, run))
    last = history.last_run("app")
    assert last.id == run and last.result == "failed" and "interrupted" in last.error
    # Tickets: one open per (instance, system:kind) until the next ok run closes it.
    history.add_ticket("app", "itop:backup", "R-1", run)
    assert history.open_ticket("app", "itop:backup") == "R-1"
    assert history.close_tickets("app", "drill") == []
    assert history.close_tickets("app", "backup") == [("itop", "R-1")]
    assert history.open_ticket("app", "itop:backup") is None


def test_all_fine_is_ok(tmp_path: Path) -> None:
    config = load(make_config(tmp_path))
    add_backups(History(config.state_dir), [100 * MB] * 4)
    result = check(config, None)
    assert result["code"] == 0 and result["line"].startswith("SAFEHOLD OK - ")


@pytest.mark.parametrize(("newest", "code", "rule", "words"), [
    (5 * MB, 2, "size-shrink", "under 10% of the median"),
    (40 * MB, 1, "size-shrink", "under 50% of the median"),
    (400 * MB, 1, "size-growth", "over 3x the median"),
    (90 * MB, 0, "size", "median 100.00 MB"),
])
def test_size_anomaly_names_the_rule(tmp_path: Path, newest: int, code: int, rule: str, words: str) -> None:
    config = load(make_config(tmp_path))
    add_backups(History(config.state_dir), [100 * MB] * 5 + [newest])
    result = check(config, "app")
    assert result["code"] == code
    finding = next(f for f in result["instances"][0]["findings"] if f["rule"] == rule)
    assert words in finding["message"]
    if code:
        assert rule in result["line"] and words in result["line"]


def test_disabled_schedule_is_reported_and_critical_without_a_fresh_point(tmp_path: Path) -> None:
    config = load(make_config(tmp_path, 'schedule = { enabled = false, time = "02:00" }'))
    result = check(config, "app")
    assert result["code"] == 2 and rules(result)["schedule"] == "CRITICAL"
    assert "schedule disabled and no fresh point" in result["line"]
    add_backups(History(config.state_dir), [MB])
    result = check(config, "app")
    assert result["code"] == 1 and "schedule: schedule disabled" in result["line"]
    # A week later that point is no longer fresh: CRITICAL again. (Two days were not always enough: the
    # schedule runs on weekdays only, so over a weekend, or with the grace hours before 02:00, a two-day-old
    # point can still be the one the schedule expects.)
    result = check(config, "app", now=datetime.now(UTC) + timedelta(days=7))
    assert result["code"] == 2 and "no fresh point" in result["line"]


def test_last_run_failure_stale_point_drill_and_local_only_repository(tmp_path: Path) -> None:
    config = load(make_config(tmp_path, 'schedule = { cron = "0 * * * *" }', repo_url=str(tmp_path / "repo")))
    history = History(config.state_dir)
    add_backups(history, [MB])
    add_backups(history, [0], result="failed", error="repository main: disk full — free space")
    run = history.record_start("app", "drill")
    history.record_end(run, "failed", error="row counts differ in table t")
    result = check(config, "app")
    found = rules(result)
    assert found["last-run"] == "CRITICAL" and found["drill"] == "CRITICAL" and found["off-host"] == "WARNING"
    assert "disk full" in result["line"] and "row counts differ" in result["line"]
    # Hourly schedule: three hours later the point is stale (allowed: 2 h gap + 2 h grace → after 4 h).
    later = check(config, "app", now=datetime.now(UTC) + timedelta(hours=5))
    assert rules(later)["freshness"] == "WARNING"


def test_check_line_stays_one_line_with_multi_line_and_huge_errors(tmp_path: Path) -> None:
    # A quiesce command's stderr (two lines of systemctl) ends up in the run's error; Nagios takes only the
    # first line of the output as the status, so the rest of the findings would be cut off.
    config = load(make_config(tmp_path, 'schedule = { cron = "0 * * * *" }'))
    history = History(config.state_dir)
    add_backups(history, [MB])
    add_backups(history, [0], result="failed",
                error="quiesce command failed: Job for apache2.service failed.\nSee systemctl status apache2.service.")
    run = history.record_start("app", "drill")
    history.record_end(run, "failed", error="x" * 100_000)
    result = check(config, "app")
    assert "\n" not in result["line"] and len(result["line"]) < 2000
    assert "failed. See systemctl status apache2.service." in result["line"]
    assert "app drill: last drill" in result["line"]


def add_point_at(history: History, started: datetime, minutes: int = 10) -> None:
    """A successful backup that started at `started` (the fake clock's past) and took `minutes`."""
    run = history.record_start("app", "backup")
    history.record_end(run, "ok", bytes_added=MB, bytes_total=MB, details={"repository": "main"})
    with history._connect() as db:
        db.execute("UPDATE runs SET started=?, finished=? WHERE id=?",
                   (started.timestamp(), (started + timedelta(minutes=minutes)).timestamp(), run))


BERLIN = ZoneInfo("Europe/Berlin")
THU, NEW_YORK = '{ cron = "0 7 * * thu" }', '{ cron = "0 2 * * *", timezone = "America/New_York" }'
DAILY, WEEKDAYS = '{ cron = "0 2 * * *" }', '{ time = "23:30", timezone = "Europe/Berlin" }'  # iTop-style: mon..fri


@pytest.mark.parametrize(("schedule", "point", "now", "status"), [
    # Weekly on Thursdays 07:00 UTC, the run of 12-03 missed.
    (THU, datetime(2026, 11, 26, 7, tzinfo=UTC), datetime(2026, 12, 3, 8, 59, tzinfo=UTC), "OK"),  # may still run
    (THU, datetime(2026, 11, 26, 7, tzinfo=UTC), datetime(2026, 12, 3, 9, 1, tzinfo=UTC), "WARNING"),
    (THU, datetime(2026, 11, 26, 7, tzinfo=UTC), datetime(2026, 12, 9, 23, tzinfo=UTC), "WARNING"),  # was OK
    (THU, datetime(2026, 11, 26, 7, tzinfo=UTC), datetime(2026, 12, 10, 11, 1, tzinfo=UTC), "CRITICAL"),  # 2 missed
    (THU, datetime(2026, 12, 3, 7, tzinfo=UTC), datetime(2026, 12, 9, 23, tzinfo=UTC), "OK"),
    # Daily 02:00 UTC, the run of day 2 missed.
    (DAILY, datetime(2026, 12, 1, 2, tzinfo=UTC), datetime(2026, 12, 2, 3, 59, tzinfo=UTC), "OK"),
    (DAILY, datetime(2026, 12, 1, 2, tzinfo=UTC), datetime(2026, 12, 2, 4, 1, tzinfo=UTC), "WARNING"),
    (DAILY, datetime(2026, 12, 1, 2, tzinfo=UTC), datetime(2026, 12, 2, 14, tzinfo=UTC), "WARNING"),  # was OK
    (DAILY, datetime(2026, 12, 1, 2, tzinfo=UTC), datetime(2026, 12, 3, 6, 1, tzinfo=UTC), "CRITICAL"),
    # A run by hand just before the due time (the scheduled one then finds the instance busy) counts for it.
    (DAILY, datetime(2026, 12, 2, 1, 50, tzinfo=UTC), datetime(2026, 12, 2, 14, tzinfo=UTC), "OK"),
    (DAILY, datetime(2026, 12, 2, 1, 30, tzinfo=UTC), datetime(2026, 12, 2, 14, tzinfo=UTC), "WARNING"),
    # iTop-style week_days + time in Berlin: Friday 2026-11-27's 23:30 run missed.
    (WEEKDAYS, datetime(2026, 11, 26, 23, 30, tzinfo=BERLIN), datetime(2026, 11, 28, 1, 29, tzinfo=BERLIN), "OK"),
    (WEEKDAYS, datetime(2026, 11, 26, 23, 30, tzinfo=BERLIN), datetime(2026, 11, 28, 1, 31, tzinfo=BERLIN),
     "WARNING"),
    # Monday noon: still one missed run (measured against the weekend's gap), not yet CRITICAL.
    (WEEKDAYS, datetime(2026, 11, 26, 23, 30, tzinfo=BERLIN), datetime(2026, 11, 30, 12, tzinfo=BERLIN), "WARNING"),
    (WEEKDAYS, datetime(2026, 11, 27, 23, 30, tzinfo=BERLIN), datetime(2026, 11, 30, 12, tzinfo=BERLIN), "OK"),
    # The time zone is the schedule's: 02:00 New York is 07:00 UTC in winter.
    (NEW_YORK, datetime(2026, 12, 1, 7, tzinfo=UTC), datetime(2026, 12, 2, 8, 59, tzinfo=UTC), "OK"),
    (NEW_YORK, datetime(2026, 12, 1, 7, tzinfo=UTC), datetime(2026, 12, 2, 9, 1, tzinfo=UTC), "WARNING"),
    # A disabled schedule still says when points were due: freshness is judged the same way.
    ('{ enabled = false, cron = "0 2 * * *" }', datetime(2026, 12, 2, 2, tzinfo=UTC),
     datetime(2026, 12, 2, 14, tzinfo=UTC), "OK"),
    ('{ enabled = false, cron = "0 2 * * *" }', datetime(2026, 12, 1, 2, tzinfo=UTC),
     datetime(2026, 12, 2, 14, tzinfo=UTC), "WARNING"),
    # max_age_hours overrides the schedule: plain age.
    ('{ cron = "0 2 * * *", max_age_hours = 48 }', datetime(2026, 12, 1, 2, tzinfo=UTC),
     datetime(2026, 12, 2, 14, tzinfo=UTC), "OK"),
    ('{ cron = "0 2 * * *", max_age_hours = 6 }', datetime(2026, 12, 2, 2, tzinfo=UTC),
     datetime(2026, 12, 2, 14, tzinfo=UTC), "WARNING"),
])
def test_freshness_expects_the_point_of_the_latest_due_run(tmp_path: Path, schedule: str, point: datetime,
                                                           now: datetime, status: str) -> None:
    config = load(make_config(tmp_path, f"schedule = {schedule}"))
    add_point_at(History(config.state_dir), point)
    result = check(config, "app", now=now)
    freshness = next(f for f in result["instances"][0]["findings"] if f["rule"] == "freshness")
    assert freshness["status"] == status, freshness["message"]


def test_a_missed_weekly_run_is_named_in_the_line(tmp_path: Path) -> None:
    config = load(make_config(tmp_path, f"schedule = {THU}"))
    add_point_at(History(config.state_dir), datetime(2026, 11, 26, 7, tzinfo=UTC))
    result = check(config, "app", now=datetime(2026, 12, 9, 23, tzinfo=UTC))
    assert result["code"] >= 1
    assert "freshness: last good point is 13.7 d old (none since the run due 2026-12-03 07:00 UTC)" in result["line"]


def add_drill_at(history: History, started: datetime) -> None:
    run = history.record_start("app", "drill")
    history.record_end(run, "ok")
    with history._connect() as db:
        db.execute("UPDATE runs SET started=?, finished=? WHERE id=?",
                   (started.timestamp(), (started + timedelta(minutes=5)).timestamp(), run))


@pytest.mark.parametrize(("drill", "now", "status", "words"), [
    # A monthly drill is not late three weeks into the month (the default interval is 8 days)...
    ('"0 4 1 * *"', datetime(2026, 12, 20, 12, tzinfo=UTC), "OK", "last drill passed"),
    # ...but is once the next month's drill was due and did not run.
    ('"0 4 1 * *"', datetime(2027, 1, 1, 6, 1, tzinfo=UTC), "WARNING", "none since the drill due 2027-01-01 04:00"),
    # A weekly drill that missed its Sunday is named as such.
    ('"0 4 * * sun"', datetime(2026, 12, 13, 6, 1, tzinfo=UTC), "WARNING", "none since the drill due 2026-12-13"),
])
def test_a_drill_schedule_says_how_old_the_last_drill_may_be(tmp_path: Path, drill: str, now: datetime, status: str,
                                                            words: str) -> None:
    config = load(make_config(tmp_path, f'schedule = {{ cron = "0 2 * * *", drill = {drill} }}'))
    history = History(config.state_dir)
    add_point_at(history, now - timedelta(hours=3))
    add_drill_at(history, datetime(2026, 12, 6, 4, tzinfo=UTC) if "sun" in drill else datetime(2026, 12, 1, 4,
                                                                                                   tzinfo=UTC))
    found = next(f for f in check(config, "app", now=now)["instances"][0]["findings"] if f["rule"] == "drill")
    assert found["status"] == status and words in found["message"], found


def test_drill_interval_hours_set_in_the_config_wins_over_the_drill_schedule(tmp_path: Path) -> None:
    config = load(make_config(tmp_path, 'drill_interval_hours = 24\nschedule = { drill = "0 4 1 * *" }'))
    add_drill_at(History(config.state_dir), datetime(2026, 12, 1, 4, tzinfo=UTC))
    found = next(f for f in check(config, "app", now=datetime(2026, 12, 3, tzinfo=UTC))["instances"][0]["findings"]
                 if f["rule"] == "drill")
    assert found["status"] == "WARNING" and "(every 24 h)" in found["message"]


@pytest.mark.parametrize(("settings", "drilled", "now", "late"), [
    # A monthly drill schedule: three weeks after the drill is fine (the dashboard used to say "older than
    # 192 h", the default drill_interval_hours)...
    ('schedule = { drill = "0 4 1 * *" }', datetime(2026, 12, 1, 4, tzinfo=UTC), datetime(2026, 12, 20, tzinfo=UTC),
     None),
    # ...and late once the next one was due (and its grace passed) without running.
    ('schedule = { drill = "0 4 1 * *" }', datetime(2026, 12, 1, 4, tzinfo=UTC),
     datetime(2027, 1, 1, 6, 1, tzinfo=UTC), "none since the drill due 2027-01-01 04:00"),
    # drill_interval_hours set in the config wins over the drill schedule.
    ('drill_interval_hours = 24\nschedule = { drill = "0 4 1 * *" }', datetime(2026, 12, 1, 4, tzinfo=UTC),
     datetime(2026, 12, 3, tzinfo=UTC), "(every 24 h)"),
    ('drill_interval_hours = 24', datetime(2026, 12, 1, 4, tzinfo=UTC), datetime(2026, 12, 2, 5, tzinfo=UTC), None),
])
def test_the_dashboard_judges_the_last_drill_as_check_does(tmp_path: Path, settings: str, drilled: datetime,
                                                          now: datetime, late: str | None) -> None:
    from safehold.web.data import Data, InstanceView, Outcome
    from safehold.web.jobs import JobRunner

    config = load(make_config(tmp_path, settings))
    add_drill_at(History(config.state_dir), drilled)
    found = next(f for f in check(config, "app", now=now)["instances"][0]["findings"] if f["rule"] == "drill")
    view = InstanceView(name="app", app="files", repositories=[], schedule=None, schedule_disabled=False,
                        points=[{"started": now, "safety_point": False}],
                        last_drill=Outcome(kind="drill", ok=True, when=drilled))
    jobs = JobRunner(config.state_dir)
    try:
        Data(config, jobs)._judge(view, config.instance("app"), now)
    finally:
        jobs.shutdown()
    drill_reasons = [reason for reason in view.reasons if "drill" in reason]
    if late is None:
        assert found["status"] == "OK" and drill_reasons == [], (found, view.reasons)
    else:
        # The same verdict in the same words.
        assert found["status"] == "WARNING" and late in found["message"], found
        assert drill_reasons == [found["message"]]


URL_UNSET = "notify.urls.0: environment variable HOOK_URL is not set"
TICKET = "notify.itop: could not open the ticket: iTop ticket: cannot reach https://itop.example/"


@pytest.mark.parametrize(("backup", "drill", "message"), [
    ([], [TICKET], f"notifications of the last drill: {TICKET}"),
    ([URL_UNSET], [], f"notifications of the last run: {URL_UNSET}"),
    # Both runs recorded the URL that does not resolve: named once; the drill's own ticket problem too.
    ([URL_UNSET], [URL_UNSET, TICKET], f"notifications of the last run: {URL_UNSET}; "
                                       f"notifications of the last drill: {TICKET}"),
    ([], [], None),
])
def test_notify_problems_of_the_last_backup_and_the_last_drill(tmp_path: Path, backup: list[str], drill: list[str],
                                                                message: str | None) -> None:
    config = load(make_config(tmp_path))
    history = History(config.state_dir)
    for kind, problems in (("backup", backup), ("drill", drill)):
        run = history.record_start("app", kind)  # type: ignore[arg-type]
        history.record_end(run, "failed" if kind == "drill" else "ok", bytes_total=MB,
                           details={"notify_problems": problems} if problems else None)
    found = [f for f in check(config, "app")["instances"][0]["findings"] if f["rule"] == "notify"]
    assert found == ([{"rule": "notify", "status": "WARNING", "message": message}] if message else [])


def test_notify_problems_of_a_prune_or_restore_count_until_the_next_backup(tmp_path: Path) -> None:
    config = load(make_config(tmp_path))
    history = History(config.state_dir)

    def add(kind: str, problems: list[str]) -> None:
        run = history.record_start("app", kind)  # type: ignore[arg-type]
        history.record_end(run, "failed" if kind != "backup" else "ok", bytes_total=MB,
                           details={"notify_problems": problems} if problems else None)

    def notify() -> list[str]:
        return [f["message"] for f in check(config, "app")["instances"][0]["findings"] if f["rule"] == "notify"]

    add("restore", [TICKET])  # before any backup
    add("backup", [])
    assert notify() == []
    add("prune", [URL_UNSET])
    assert notify() == [f"notifications of the last prune: {URL_UNSET}"]
    add("backup", [])
    assert notify() == []


def leave_paused(state: Path, pid: int, steps: list[dict]) -> Path:
    """A resume marker as a backup killed while the app was paused leaves it."""
    marker = marker_path(state, "app")
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({"instance": "app", "app": "itop", "pid": pid,
                                  "since": datetime(2026, 12, 3, 7, 0, 5, tzinfo=UTC).timestamp(), "steps": steps}))
    return marker


def dead_pid() -> int:
    dead = subprocess.Popen(["true"])
    dead.wait()
    return dead.pid


def paused_finding(result: dict) -> dict | None:
    return next((f for f in result["instances"][0]["findings"] if f["rule"] == "paused"), None)


def test_check_resumes_an_app_a_killed_run_left_paused_and_says_what_and_since(tmp_path: Path) -> None:
    config = load(make_config(tmp_path))
    add_backups(History(config.state_dir), [MB] * 3)
    flag = tmp_path / "itop" / "data" / ".readonly"
    flag.parent.mkdir(parents=True)
    flag.touch()
    marker = leave_paused(config.state_dir, dead_pid(), [{"kind": "remove_file", "path": str(flag),
                                                          "what": f"iTop read-only mode ({flag})"}])
    result = check(config, "app")
    finding = paused_finding(result)
    assert finding is not None and finding["status"] == "WARNING", result["line"]
    assert f"resumed now: iTop read-only mode ({flag}) — left paused since 2026-12-03 07:00 UTC" in finding["message"]
    assert not flag.exists() and not marker.exists()
    assert paused_finding(check(config, "app")) is None


def test_check_is_critical_when_a_left_over_pause_cannot_be_resumed(tmp_path: Path) -> None:
    config = load(make_config(tmp_path))
    add_backups(History(config.state_dir), [MB] * 3)
    steps = [{"kind": "commands", "start": [["false"]]}]
    marker = leave_paused(config.state_dir, dead_pid(), steps)
    result = check(config, "app")
    assert result["code"] == 2
    message = paused_finding(result)["message"]
    assert message.startswith("stopped by the quiesce commands (start: false) — left paused since 2026-12-03 07:00 UTC")
    assert "resuming failed: resume command 'false' failed" in message and f"delete {marker}" in message
    assert marker.exists()
    # A run of the instance holds it (here: this process): not resumed under its feet, still CRITICAL.
    marker.write_text(marker.read_text().replace('"false"', '"true"'))
    with instance_lock(config.state_dir, "app", "r1", "backup", Silent()):
        result = check(config, "app")
        assert paused_finding(result)["status"] == "CRITICAL" and "resumed once that run ends" in result["line"]
        assert marker.exists()
        # The pause of the live run itself (its PID, and it holds the lock) is no finding.
        data = json.loads(marker.read_text())
        marker.write_text(json.dumps({**data, "pid": os.getpid()}))
        assert paused_finding(check(config, "app")) is None
    assert paused_finding(check(config, "app"))["status"] == "WARNING" and not marker.exists()


def test_check_cli_exit_codes_one_line_and_json(tmp_path: Path) -> None:
    path = make_config(tmp_path, 'schedule = { enabled = false }')
    proc = run_cli("check", config=path)
    assert proc.returncode == 2 and proc.stdout.count("\n") == 1 and proc.stdout.startswith("SAFEHOLD CRITICAL")
    proc = run_cli("check", "app", "--json", config=path)
    data = json.loads(proc.stdout)
    assert proc.returncode == 2 and data["status"] == "CRITICAL" and data["instances"][0]["instance"] == "app"
    proc = run_cli("check", config=tmp_path / "missing.toml")
    assert proc.returncode == 3 and proc.stdout.startswith("SAFEHOLD UNKNOWN")


HOLD_LOCK = """
import sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("PRAGMA locking_mode=EXCLUSIVE")
db.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
"""


def test_a_locked_history_is_unknown_within_seconds_and_a_backup_still_waits(tmp_path: Path) -> None:
    path = make_config(tmp_path)
    history = History(load(path).state_dir)
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(history.path), "12"], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline() == "locked\n"
        started = locked = time.monotonic()
        proc = run_cli("check", config=path, timeout=60)
        # Well within a monitoring agent's 10 s (it waited SQLite's 30 s busy timeout, then blamed state_dir).
        assert time.monotonic() - started < 10
        assert proc.returncode == 3 and proc.stdout.count("\n") == 1, proc.stdout + proc.stderr
        assert f"UNKNOWN - the run history {history.path} is locked by another process (" in proc.stdout
        assert "try again" in proc.stdout and "writable" not in proc.stdout
        # A run waits on (30 s): its record goes in once the holder lets go.
        run = history.record_start("app", "backup")
        # The holder's lock goes when its process ends (the kernel drops its files a moment before the
        # exit can be collected, so it is waited for rather than polled).
        assert time.monotonic() - locked >= 11 and holder.wait(timeout=5) == 0
        assert history.get(run).result == "running"
    finally:
        holder.kill()
        holder.wait()


def test_check_answers_unknown_in_one_line_when_reading_the_state_fails(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    # An error nobody foresaw (here SQLite's "disk I/O error" while reading the history) must not end as a
    # traceback with exit 1, which a monitoring system takes for WARNING: it is UNKNOWN.
    from typer.testing import CliRunner

    from safehold.cli import app

    def broken(*_: object) -> None:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(History, "last_stored", broken)
    path = make_config(tmp_path)
    proc = CliRunner().invoke(app, ["check", "--config", str(path)])
    assert proc.exit_code == 3, proc.output
    assert proc.output == "SAFEHOLD UNKNOWN - internal error (OperationalError: disk I/O error)\n"
    data = json.loads(CliRunner().invoke(app, ["check", "--json", "--config", str(path)]).output)
    assert data["code"] == 3 and data["status"] == "UNKNOWN"


def test_metrics_parse_and_textfile_is_replaced_atomically(tmp_path: Path) -> None:
    config = load(make_config(tmp_path, 'schedule = { time = "02:00" }'))
    history = History(config.state_dir)
    add_backups(history, [3 * MB])
    history.add_details(history.last_success("app").id, {"points": {"main": 7}})
    run = history.record_start("app", "drill")
    history.record_end(run, "ok")
    families = {f.name: f for f in text_string_to_metric_families(metrics.render(config))}
    sample = {(f.name, tuple(sorted(s.labels.items()))): s.value for f in families.values() for s in f.samples}
    assert sample[("safehold_last_backup_bytes_total", (("instance", "app"), ("repository", "main")))] == 3 * MB
    assert sample[("safehold_points", (("instance", "app"), ("repository", "main")))] == 7
    assert sample[("safehold_last_drill_success", (("instance", "app"),))] == 1
    assert sample[("safehold_schedule_enabled", (("instance", "app"),))] == 1
    assert ("safehold_last_success_timestamp_seconds", (("instance", "app"), ("repository", "main"))) in sample

    target = metrics.write_textfile(config)
    first_inode = target.stat().st_ino
    add_backups(history, [4 * MB])
    metrics.write_textfile(config)
    # Renamed over, never rewritten in place: a reader holding the old file never sees half a file.
    assert target.stat().st_ino != first_inode
    assert os.listdir(target.parent) == ["safehold.prom"]
    assert "4e+06" in target.read_text() or "4000000.0" in target.read_text()
    assert target.stat().st_mode & 0o777 == 0o644


def test_history_cli_lists_runs_newest_first(tmp_path: Path) -> None:
    path = make_config(tmp_path)
    history = History(load(path).state_dir)
    add_backups(history, [MB])
    add_backups(history, [0], result="failed", error="repository main: disk full — free space")
    proc = run_cli("history", "app", "--json", config=path)
    rows = json.loads(proc.stdout)
    assert proc.returncode == 0 and [r["result"] for r in rows] == ["failed", "ok"]
    assert rows[0]["error"].startswith("repository main: disk full") and rows[1]["bytes_total"] == MB
    proc = run_cli("history", config=path)
    assert proc.returncode == 0 and "disk full" in proc.stdout


def test_schedule_install_writes_systemd_units_and_cron_file(tmp_path: Path) -> None:
    path = make_config(tmp_path, 'schedule = { week_days = ["monday"], time = "01:15", timezone = "Europe/Paris", '
                                  'drill = "0 4 * * sun" }')
    proc = run_cli("schedule", "install", "--dir", str(tmp_path / "units"), config=path)
    assert proc.returncode == 0, proc.stderr
    timer = (tmp_path / "units" / "safehold-backup-app.timer").read_text()
    service = (tmp_path / "units" / "safehold-backup-app.service").read_text()
    assert "OnCalendar=Mon *-*-* 01:15:00 Europe/Paris" in timer and "Persistent=true" in timer
    assert "backup app --config" in service and str(path) in service and "Type=oneshot" in service
    assert "OnCalendar=Sun *-*-* 4:0:00 Europe/Paris" in (tmp_path / "units" / "safehold-drill-app.timer").read_text()
    proc = run_cli("schedule", "install", "--format", "cron", "--dir", str(tmp_path / "cron"), config=path)
    cron = (tmp_path / "cron" / "safehold").read_text()
    assert proc.returncode == 0 and "CRON_TZ=Europe/Paris" in cron
    assert "15 1 * * mon root nice -n 10 ionice -c 2 -n 7 " in cron
    # cron's own PATH is /usr/bin:/bin: a restic installed in /usr/local/bin (newer than the distribution's)
    # would not be found, while the systemd timer (whose PATH has it) works.
    assert "\nPATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n" in cron
    disabled = make_config(tmp_path, 'schedule = { enabled = false }')
    proc = run_cli("schedule", "install", "--dir", str(tmp_path / "none"), "--json", config=disabled)
    assert json.loads(proc.stdout)["skipped_disabled"] == ["app"]


def test_damaged_history_is_moved_aside_and_runs_go_on(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "history.sqlite").write_bytes(b"not sqlite at all " * 100)
    history = History(tmp_path)  # a damaged local history must not stop the next backup
    run = history.record_start("app", "backup")
    history.record_end(run, "ok")
    assert [r.result for r in history.runs("app")] == ["ok"]
    kept = list(tmp_path.glob("history.sqlite.damaged-*"))
    assert len(kept) == 1 and kept[0].read_bytes().startswith(b"not sqlite")
    assert "was damaged" in caplog.text and "recovery points are not affected" in caplog.text


def test_history_damaged_past_its_header_is_moved_aside_too(tmp_path: Path) -> None:
    # The header is intact, so opening works and SQLite only says "malformed" when a query reaches the
    # broken pages: every backup (which reads the history first) used to crash from then on.
    history = History(tmp_path)
    with history._connect() as db:
        db.executemany("INSERT INTO runs (instance, kind, started, finished, result, details, host, pid) "
                       "VALUES ('app', 'backup', ?, ?, 'ok', ?, 'h', 1)", [(i, i, "x" * 500) for i in range(500)])
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    path = tmp_path / "history.sqlite"
    page = 4096
    with path.open("r+b") as handle:
        handle.seek(page)
        handle.write(b"\xff" * (path.stat().st_size - page))
    history = History(tmp_path)
    run = history.record_start("app", "backup")
    history.record_end(run, "ok")
    assert [r.result for r in history.runs("app")] == ["ok"]
    assert len(list(tmp_path.glob("history.sqlite.damaged-*"))) == 1


def test_schedule_install_leaves_out_a_schedule_that_names_no_day(tmp_path: Path) -> None:
    # `safehold serve` never runs it and check says "schedule names no day"; the timer used to say
    # "OnCalendar= *-*-* 02:00:00" (every day) and the cron line lost its weekday field.
    path = make_config(tmp_path, 'schedule = { week_days = [], time = "02:00", drill = "0 4 * * sun" }')
    proc = run_cli("schedule", "install", "--dir", str(tmp_path / "units"), "--json", config=path)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["written"] == ["safehold-drill-app.service", "safehold-drill-app.timer"]
    assert result["skipped_no_day"] == ["app"]
    proc = run_cli("schedule", "install", "--format", "cron", "--dir", str(tmp_path / "cron"), config=path)
    assert proc.returncode == 0 and "names no day, not installed: app" in proc.stdout
    jobs = [line for line in (tmp_path / "cron" / "safehold").read_text().splitlines() if " root " in line]
    assert len(jobs) == 1 and jobs[0].startswith("0 4 * * sun root ") and " drill app " in jobs[0]


def test_schedule_install_removes_the_units_of_schedules_no_longer_wanted(tmp_path: Path) -> None:
    units = tmp_path / "units"
    path = write_config(tmp_path, {"url": "/srv/repo", "password_file": str(tmp_path / "unused.pass")}, f"""
[instances.app]
repositories = ["main"]
files = ["{tmp_path}"]
schedule = {{ time = "02:00", drill = "0 4 * * sun" }}
[instances.old]
repositories = ["main"]
files = ["{tmp_path}"]
schedule = {{ time = "03:00" }}
""")
    assert run_cli("schedule", "install", "--dir", str(units), config=path).returncode == 0
    # Not install's: a unit of the admin's that only looks like one, and another service.
    (units / "safehold-backup-extra.service").write_text("[Unit]\nDescription=my own backup job\n")
    (units / "other.timer").write_text("[Unit]\nDescription=safehold backup of old\n")
    # The drill is dropped, `old` is removed from the config.
    path.write_text(path.read_text().replace(', drill = "0 4 * * sun"', "").split("[instances.old]")[0])
    proc = run_cli("schedule", "install", "--dir", str(units), "--json", config=path)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    gone = ["safehold-backup-old.service", "safehold-backup-old.timer", "safehold-drill-app.service",
            "safehold-drill-app.timer"]
    assert result["removed"] == gone
    assert sorted(p.name for p in units.iterdir()) == ["other.timer", "safehold-backup-app.service",
                                                       "safehold-backup-app.timer", "safehold-backup-extra.service"]
    assert "systemctl disable --now safehold-backup-old.timer safehold-drill-app.timer && systemctl " \
           "daemon-reload" in result["next"]
    # A disabled schedule: its units go too, and the line says so.
    path.write_text(path.read_text().replace('schedule = { time = "02:00" }', "schedule = { enabled = false }"))
    proc = run_cli("schedule", "install", "--dir", str(units), config=path)
    assert proc.returncode == 0, proc.stderr
    assert "removed, no longer scheduled: safehold-backup-app.service, safehold-backup-app.timer" in \
        " ".join(proc.stdout.split())
    assert sorted(p.name for p in units.iterdir()) == ["other.timer", "safehold-backup-extra.service"]


def test_schedule_install_names_the_environment_variables_a_timer_would_lack(tmp_path: Path) -> None:
    # A unit or cron job starts with an empty environment: a run there fails on "env:" references that work
    # in the shell the admin tested in. Said at install time, not by the first failed night.
    path = write_config(tmp_path, {"url": "/srv/repo", "password_file": str(tmp_path / "unused.pass")}, f"""
[instances.app]
repositories = ["main"]
files = ["{tmp_path}"]
schedule = {{ time = "02:00" }}

[[instances.app.databases]]
engine = "mariadb"
password = "env:APP_DB_PASS"
names = ["app"]

[notify]
urls = ["env:NTFY_URL", "json://localhost/"]
""")
    proc = run_cli("schedule", "install", "--dir", str(tmp_path / "units"), "--json", config=path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["environment"] == ["APP_DB_PASS", "NTFY_URL"]
    proc = run_cli("schedule", "install", "--format", "cron", "--dir", str(tmp_path / "cron"), config=path)
    assert "reads APP_DB_PASS, NTFY_URL from the environment" in proc.stdout


def test_a_running_backup_started_for_the_due_run_keeps_the_point_fresh(tmp_path: Path) -> None:
    config = load(make_config(tmp_path, f"schedule = {DAILY}"))
    history = History(config.state_dir)
    add_point_at(history, datetime(2026, 12, 1, 2, tzinfo=UTC))
    run = history.record_start("app", "backup")  # this process: alive, so the run is in progress
    with history._connect() as db:
        db.execute("UPDATE runs SET started=? WHERE id=?", (datetime(2026, 12, 2, 2, tzinfo=UTC).timestamp(), run))
    freshness = {f["rule"]: f for f in check(config, "app", now=datetime(2026, 12, 2, 5, tzinfo=UTC))
                 ["instances"][0]["findings"]}["freshness"]
    assert freshness["status"] == "OK" and "a backup is running since 2026-12-02 02:00 UTC (3.0 h)" in \
        freshness["message"]
    # Still going when the next run is due and its grace has passed: the point is stale after all.
    result = check(config, "app", now=datetime(2026, 12, 3, 4, 1, tzinfo=UTC))
    assert rules(result)["freshness"] == "WARNING" and "none since the run due 2026-12-03 02:00" in result["line"]


def test_check_as_another_user_without_history_says_so_instead_of_critical(tmp_path: Path) -> None:
    # A monitoring agent's user (here nobody) with the config root's backups use: no state_dir set.
    path = tmp_path / "safehold.toml"
    path.write_text('[repositories.main]\nurl = "sftp:backup@nas.example:/srv/safehold"\n'
                    'password = "file:/etc/safehold/repo.pass"\n[instances.app]\nrepositories = ["main"]\n'
                    f'files = ["{tmp_path}"]\n')
    own = tmp_path / "nobody-state"
    own.mkdir(mode=0o777)
    own.chmod(0o777)
    config = load(path)
    reader, writer = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child reports through the pipe
        message = "no error"
        try:
            os.setgid(65534)
            os.setuid(65534)
            os.environ["XDG_STATE_HOME"] = str(own)
            check(config, None)
        except Exception as exc:  # noqa: BLE001
            message = f"{type(exc).__name__}: {exc.line() if hasattr(exc, 'line') else exc}"
        os.write(writer, message.encode())
        os._exit(0)
    os.close(writer)
    os.waitpid(child, 0)
    message = os.read(reader, 4096).decode()
    assert message.startswith(f"ConfigError: no run history in {own / 'safehold'}: user nobody has run no backup"), \
        message
    assert "run check as the user that runs the backups" in message
    assert not (own / "safehold").exists()  # check created no state of its own


def test_schedule_install_names_the_other_formats_jobs_left_installed(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from safehold.actions import schedule_install

    systemd, cron_d = tmp_path / "etc-systemd", tmp_path / "cron.d"
    monkeypatch.setattr(schedule_install, "SYSTEMD_DIR", systemd)
    monkeypatch.setattr(schedule_install, "CRON_FILE", cron_d / "safehold")
    config = load(make_config(tmp_path, 'schedule = { cron = "0 2 * * *" }'))
    (systemd).mkdir()
    (systemd / "safehold-backup-mine.timer").write_text("[Unit]\nDescription=my own timer\n")  # not ours: left out
    first = schedule_install.install(config, systemd, "systemd")
    assert first["installed_elsewhere"] == [] and "twice" not in first["next"]
    # Switching to cron while the timers stay enabled would start every backup twice.
    moved = schedule_install.install(config, cron_d, "cron")
    assert moved["installed_elsewhere"] == [str(systemd / "safehold-backup-app.timer")]
    assert "systemctl disable --now safehold-backup-app.timer" in moved["next"] and "twice" in moved["next"]
    # And back: the cron file is named.
    back = schedule_install.install(config, tmp_path / "units", "systemd")
    assert back["installed_elsewhere"] == [str(cron_d / "safehold")] and str(cron_d / "safehold") in back["next"]
    (cron_d / "safehold").write_text("# the admin's own jobs\n")
    assert schedule_install.install(config, tmp_path / "units", "systemd")["installed_elsewhere"] == []


def add_verify_at(history: History, started: datetime, result: str = "ok", error: str | None = None) -> None:
    run = history.record_start("app", "verify")
    history.record_end(run, result, error=error)  # type: ignore[arg-type]
    with history._connect() as db:
        db.execute("UPDATE runs SET started=?, finished=? WHERE id=?",
                   (started.timestamp(), (started + timedelta(minutes=5)).timestamp(), run))


WEEKLY_VERIFY = 'schedule = { cron = "0 2 * * *", verify = "0 5 * * sun" }'


@pytest.mark.parametrize(("schedule", "verified", "result", "status", "words"), [
    (WEEKLY_VERIFY, None, "ok", "OK", "no scheduled verify recorded yet"),
    (WEEKLY_VERIFY, datetime(2026, 11, 29, 5, tzinfo=UTC), "ok", "OK", "last verify passed"),
    # The Sunday 12-06 verify missed: 2 h after its due time it is late.
    (WEEKLY_VERIFY, datetime(2026, 11, 29, 5, tzinfo=UTC), "ok", "WARNING", "none since the verify due 2026-12-06"),
    (WEEKLY_VERIFY, datetime(2026, 12, 6, 5, tzinfo=UTC), "failed", "CRITICAL", "failed: repository main is damaged"),
    # No verify schedule and no verify run: no finding at all.
    ('schedule = { cron = "0 2 * * *" }', None, "ok", None, None),
])
def test_the_last_scheduled_verify_is_checked(tmp_path: Path, schedule: str, verified: datetime | None, result: str,
                                              status: str | None, words: str | None) -> None:
    config = load(make_config(tmp_path, schedule))
    history = History(config.state_dir)
    if verified is not None:
        add_verify_at(history, verified, result, "repository main is damaged: stored data does not match its checksum"
                      if result == "failed" else None)
    now = datetime(2026, 12, 6, 7, 1, tzinfo=UTC) if status == "WARNING" else datetime(2026, 12, 6, 6, tzinfo=UTC)
    found = [f for f in check(config, "app", now=now)["instances"][0]["findings"] if f["rule"] == "verify"]
    if status is None:
        assert found == []
    else:
        assert found[0]["status"] == status and words in found[0]["message"], found


def test_a_verify_still_running_for_its_due_time_is_not_late(tmp_path: Path) -> None:
    config = load(make_config(tmp_path, WEEKLY_VERIFY))
    history = History(config.state_dir)
    add_verify_at(history, datetime(2026, 11, 29, 5, tzinfo=UTC))
    running = history.record_start("app", "verify")  # this process: alive
    with history._connect() as db:
        db.execute("UPDATE runs SET started=? WHERE id=?", (datetime(2026, 12, 6, 5, tzinfo=UTC).timestamp(), running))
    found = [f for f in check(config, "app", now=datetime(2026, 12, 6, 7, 1, tzinfo=UTC))["instances"][0]["findings"]
             if f["rule"] == "verify"]
    assert found[0]["status"] == "OK", found


def test_schedule_install_writes_the_verify_job(tmp_path: Path) -> None:
    path = make_config(tmp_path, 'schedule = { cron = "0 2 * * *", verify = "0 5 * * sun" }')
    proc = run_cli("schedule", "install", "--dir", str(tmp_path / "units"), config=path)
    assert proc.returncode == 0, proc.stderr
    service = (tmp_path / "units" / "safehold-verify-app.service").read_text()
    assert "verify --instance app --scheduled --config" in service
    assert "OnCalendar=Sun *-*-* 5:0:00 UTC" in (tmp_path / "units" / "safehold-verify-app.timer").read_text()
    proc = run_cli("schedule", "install", "--format", "cron", "--dir", str(tmp_path / "cron"), config=path)
    assert proc.returncode == 0 and "0 5 * * sun root " in (tmp_path / "cron" / "safehold").read_text()


def test_a_first_partial_run_is_a_warning_as_the_docs_say(tmp_path: Path) -> None:
    # docs/offhost.md: the point is stored in the first repository; only a copy lacks it.
    config = load(make_config(tmp_path))
    add_backups(History(tmp_path / "state"), [10 * MB], result="partial",
                error="point r1 stored in main, but copy to nas failed: connection lost")
    result = check(config, "app")
    assert rules(result)["freshness"] == "OK" and rules(result)["last-run"] == "WARNING"
    assert result["status"] == "WARNING" and "copy to nas failed" in result["line"]
