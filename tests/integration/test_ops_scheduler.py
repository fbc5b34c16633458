"""The scheduler runs real backups at the configured times (fake clock, and `safehold serve` on a
5-second cron), runs nothing for a disabled schedule, and applies a changed schedule to the next run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from safehold.actions.check import check
from safehold.config import load
from safehold.history import History
from safehold.output import Silent
from safehold.scheduler import Scheduler
from tests.conftest import SRC
from tests.integration.unattended import make_instance


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now


def set_schedule(config: Path, schedule: str) -> None:
    lines = [line for line in config.read_text().splitlines() if not line.startswith("schedule =")]
    index = lines.index("[instances.app]") + 1
    config.write_text("\n".join([*lines[:index], f"schedule = {schedule}", *lines[index:]]) + "\n")


def wait_idle(scheduler: Scheduler) -> None:
    for future in scheduler.running.values():
        future.result(timeout=120)


def test_fake_clock_configured_times_changed_and_disabled_schedule(tmp_path: Path, repo: dict[str, str]) -> None:
    config = make_instance(tmp_path, repo)
    set_schedule(config, '{ cron = "0 2 * * *", timezone = "Europe/Berlin" }')  # 01:00 UTC in January
    clock = Clock(datetime(2026, 1, 10, 0, 59, 58, tzinfo=UTC))  # a Saturday
    scheduler = Scheduler(config, Silent(), clock=clock, workers=1)
    history = History(load(config).state_dir)
    try:
        assert scheduler.tick() == []
        clock.now += timedelta(seconds=1)
        assert scheduler.tick() == []
        clock.now += timedelta(seconds=1)  # 01:00:00 UTC = 02:00 Berlin
        assert scheduler.tick() == [("app", "backup")]
        wait_idle(scheduler)
        clock.now += timedelta(seconds=1)
        assert scheduler.tick() == []  # due once, runs once
        assert [r.result for r in history.runs("app", "backup")] == ["ok"]

        # Changed schedule: the very next due time is the new one (iTop would run the old one first).
        set_schedule(config, '{ week_days = ["saturday"], time = "03:00", timezone = "Europe/Berlin" }')
        clock.now = datetime(2026, 1, 10, 1, 59, 59, tzinfo=UTC)
        assert scheduler.tick() == []
        clock.now = datetime(2026, 1, 10, 2, 0, 0, tzinfo=UTC)
        assert scheduler.tick() == [("app", "backup")]
        wait_idle(scheduler)
        clock.now = datetime(2026, 1, 11, 1, 0, 0, tzinfo=UTC)  # the old cron time: nothing any more
        assert scheduler.tick() == []
        assert [due.astimezone(UTC) for _, _, due in scheduler.started] == [
            datetime(2026, 1, 10, 1, 0, tzinfo=UTC), datetime(2026, 1, 10, 2, 0, tzinfo=UTC)]

        # Disabled: its due time passes and nothing runs.
        set_schedule(config, '{ enabled = false, week_days = ["saturday"], time = "03:00", '
                             'timezone = "Europe/Berlin" }')
        clock.now = datetime(2026, 1, 17, 2, 0, 0, tzinfo=UTC)
        assert scheduler.tick() == []
        clock.now = datetime(2026, 1, 24, 2, 0, 0, tzinfo=UTC)
        assert scheduler.tick() == []
        assert len(history.runs("app", "backup")) == 2
    finally:
        scheduler.stop()
    # check reports the disabled schedule, CRITICAL once no point is fresh any more.
    result = check(load(config), "app")
    assert result["code"] >= 1 and "schedule disabled" in result["line"]
    later = check(load(config), "app", now=datetime.now(UTC) + timedelta(days=10))
    assert later["code"] == 2 and "schedule disabled and no fresh point" in later["line"]


def test_a_broken_config_edit_keeps_the_previous_schedule(tmp_path: Path, repo: dict[str, str]) -> None:
    config = make_instance(tmp_path, repo)
    set_schedule(config, '{ cron = "0 * * * *" }')
    scheduler = Scheduler(config, Silent(), clock=Clock(datetime(2026, 1, 1, tzinfo=UTC)))
    try:
        assert scheduler.tick() == []
        config.write_text(config.read_text().replace('cron = "0 * * * *"', 'cron = "not cron"'))
        scheduler.clock = Clock(datetime(2026, 1, 1, 0, 30, tzinfo=UTC))
        assert scheduler.tick() == []
        assert scheduler.config is not None and scheduler.config.instances["app"].schedule.cron == "0 * * * *"
    finally:
        scheduler.stop()


def test_serve_runs_backups_on_a_five_second_cron(tmp_path: Path, repo: dict[str, str]) -> None:
    config = make_instance(tmp_path, repo)
    set_schedule(config, '{ cron = "* * * * * */5" }')
    proc = subprocess.Popen([sys.executable, "-m", "safehold", "serve", "--tick", "0.2", "--listen", "127.0.0.1:0",
                             "--config", str(config)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(SRC)})
    history = History(load(config).state_dir)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not any(r.result == "ok" for r in history.runs("app", "backup")):
        time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    runs = history.runs("app", "backup")
    assert runs and all(r.result == "ok" for r in runs), err
    for run in runs:
        # Each run starts right after a due time (a multiple of 5 s), not at some arbitrary moment.
        assert run.started.timestamp() % 5 < 1.5, (run.started, err)
    assert "due at" in err
