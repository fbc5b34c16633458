"""Due times (week_days + time, cron, time zones, DST) and the systemd/cron forms of a schedule."""

from __future__ import annotations

import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from safehold.actions.schedule_install import cron_line, on_calendar
from safehold.config import ScheduleConfig, parse
from safehold.errors import ConfigError
from safehold.output import Silent
from safehold.schedule import DEFAULT_GAP, EARLY, GRACE, Schedule
from safehold.scheduler import Scheduler
from tests.conftest import write_config

BERLIN = ZoneInfo("Europe/Berlin")


def test_week_days_and_time_in_a_time_zone() -> None:
    schedule = Schedule(ScheduleConfig(week_days=["monday", "friday"], time="23:30", timezone="Europe/Berlin"))
    wednesday = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)
    assert schedule.next_run(wednesday) == datetime(2026, 11, 27, 23, 30, tzinfo=BERLIN)
    assert schedule.prev_run(wednesday) == datetime(2026, 11, 23, 23, 30, tzinfo=BERLIN)
    # Due time itself: next_run is strictly after, prev_run includes it.
    due = datetime(2026, 11, 27, 22, 30, tzinfo=UTC)
    assert schedule.next_run(due) == datetime(2026, 11, 30, 23, 30, tzinfo=BERLIN)
    assert schedule.prev_run(due) == due


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now


def _utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


# The evening before each change (ticks run for 9 hours from there unless a case says otherwise).
SPRING, AUTUMN = _utc("2026-03-28T20:00"), _utc("2026-10-24T20:00")


@pytest.mark.parametrize(("schedule", "start", "hours", "runs"), [
    # Autumn: 02:00-03:00 Berlin comes twice (CEST, then CET); each wall-clock time runs once, the first time.
    ('{ cron = "30 2 * * *", timezone = "Europe/Berlin" }', AUTUMN, 9, ["2026-10-25T00:30"]),
    ('{ week_days = ["sunday"], time = "02:30", timezone = "Europe/Berlin" }', AUTUMN, 9, ["2026-10-25T00:30"]),
    # An hourly job skips the repeated hour, as a systemd timer does (02:00 CET = 01:00 UTC).
    ('{ cron = "0 * * * *", timezone = "Europe/Berlin" }', _utc("2026-10-24T23:30"), 3,
     ["2026-10-25T00:00", "2026-10-25T02:00"]),
    # Spring: 02:00-03:00 does not exist; a time in it runs once, when the clock jumps to 03:00.
    ('{ cron = "30 2 * * *", timezone = "Europe/Berlin" }', SPRING, 9, ["2026-03-29T01:00"]),
    ('{ week_days = ["sunday"], time = "02:30", timezone = "Europe/Berlin" }', SPRING, 9, ["2026-03-29T01:00"]),
    ('{ week_days = ["sunday"], time = "03:30", timezone = "Europe/Berlin" }', SPRING, 9, ["2026-03-29T01:30"]),
    # The next day keeps its wall-clock time (an hour earlier in UTC than before the change).
    ('{ week_days = ["sunday", "monday"], time = "02:30", timezone = "Europe/Berlin" }', SPRING, 30,
     ["2026-03-29T01:00", "2026-03-30T00:30"]),
])
def test_serve_runs_each_wall_clock_time_once_across_dst(tmp_path: Path, schedule: str, start: datetime,
                                                        hours: int, runs: list[str]) -> None:
    config = write_config(tmp_path, {"url": "/x", "password_file": "/x"},
                          f'[instances.app]\nrepositories = ["main"]\nfiles = ["/etc/hostname"]\n'
                          f"schedule = {schedule}\n")
    clock = Clock(start)
    scheduler = Scheduler(config, Silent(), clock=clock, workers=1, jobs={"backup": lambda *_: None})
    try:
        # serve ticks every second; every 5 minutes hits each due time here and keeps the test quick.
        while clock.now <= start + timedelta(hours=hours):
            scheduler.tick()
            clock.now += timedelta(minutes=5)
    finally:
        scheduler.stop()
    assert [due.astimezone(UTC) for _, _, due in scheduler.started] == [_utc(run) for run in runs]


def test_cron_with_time_zone_and_seconds() -> None:
    nightly = Schedule(ScheduleConfig(cron="0 2 * * *", timezone="America/New_York"))
    now = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
    assert nightly.next_run(now).astimezone(UTC) == datetime(2026, 11, 26, 7, 0, tzinfo=UTC)
    assert nightly.prev_run(now).astimezone(UTC) == datetime(2026, 11, 25, 7, 0, tzinfo=UTC)
    every2s = Schedule(ScheduleConfig(cron="* * * * * */2"))
    assert every2s.next_run(datetime(2026, 1, 1, 0, 0, 1, tzinfo=UTC)) == datetime(2026, 1, 1, 0, 0, 2, tzinfo=UTC)


def test_max_age_follows_the_latest_due_run() -> None:
    weekdays = Schedule(ScheduleConfig(time="23:30", timezone="UTC"))  # monday..friday
    monday_noon = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
    # Friday 23:30 was due and its grace has passed: the point must be Friday's (or one started just before).
    assert weekdays.due_by(monday_noon) == datetime(2026, 11, 20, 23, 30, tzinfo=UTC)
    assert weekdays.max_age(monday_noon) == monday_noon - datetime(2026, 11, 20, 23, 30, tzinfo=UTC) + EARLY
    # CRITICAL after twice the gap that follows the missed run (the weekend) plus grace.
    assert weekdays.critical_age(monday_noon) == 2 * (timedelta(days=3) + GRACE)
    fixed = Schedule(ScheduleConfig(max_age_hours=6))
    assert fixed.max_age(monday_noon) == timedelta(hours=6)
    assert fixed.critical_age(monday_noon) == timedelta(hours=12)


THURSDAYS = ScheduleConfig(cron="0 7 * * thu")


@pytest.mark.parametrize(("config", "now", "due"), [
    # Within the grace of the latest due time, the one before it is still the one expected.
    (THURSDAYS, datetime(2026, 12, 3, 8, 59, tzinfo=UTC), datetime(2026, 11, 26, 7, tzinfo=UTC)),
    (THURSDAYS, datetime(2026, 12, 3, 9, 0, tzinfo=UTC), datetime(2026, 12, 3, 7, tzinfo=UTC)),
    (THURSDAYS, datetime(2026, 12, 9, 23, tzinfo=UTC), datetime(2026, 12, 3, 7, tzinfo=UTC)),
    (ScheduleConfig(cron="0 2 * * *"), datetime(2026, 12, 2, 14, tzinfo=UTC), datetime(2026, 12, 2, 2, tzinfo=UTC)),
    (ScheduleConfig(week_days=["monday", "friday"], time="23:30", timezone="Europe/Berlin"),
     datetime(2026, 11, 28, 0, 29, tzinfo=UTC), datetime(2026, 11, 23, 23, 30, tzinfo=BERLIN)),
    (ScheduleConfig(week_days=["monday", "friday"], time="23:30", timezone="Europe/Berlin"),
     datetime(2026, 11, 28, 0, 30, tzinfo=UTC), datetime(2026, 11, 27, 23, 30, tzinfo=BERLIN)),
    (ScheduleConfig(cron="0 2 * * *", timezone="America/New_York"), datetime(2026, 12, 2, 9, 0, tzinfo=UTC),
     datetime(2026, 12, 2, 7, 0, tzinfo=UTC)),
    # The autumn night's 02:30 Berlin ran at its first occurrence (00:30 UTC) only; check expects that point.
    (ScheduleConfig(cron="30 2 * * *", timezone="Europe/Berlin"), datetime(2026, 10, 25, 4, tzinfo=UTC),
     datetime(2026, 10, 25, 0, 30, tzinfo=UTC)),
    # Disabled: the due times are still the schedule's (check reports the disabled schedule itself).
    (ScheduleConfig(cron="0 2 * * *", enabled=False), datetime(2026, 12, 2, 14, tzinfo=UTC),
     datetime(2026, 12, 2, 2, tzinfo=UTC)),
    (ScheduleConfig(week_days=[]), datetime(2026, 12, 2, 14, tzinfo=UTC), None),
])
def test_due_by_is_the_latest_due_time_past_its_grace(config: ScheduleConfig, now: datetime,
                                                       due: datetime | None) -> None:
    schedule = Schedule(config)
    found = schedule.due_by(now)
    # In UTC: a time of the hour autumn repeats equals no time of another zone, and compares to one of its
    # own zone without its fold (PEP 495).
    assert (found and found.astimezone(UTC)) == (due and due.astimezone(UTC))
    if due is None:
        assert schedule.max_age(now) == DEFAULT_GAP + GRACE
    else:
        assert schedule.max_age(now) == now - due + EARLY


def test_an_empty_week_never_runs() -> None:
    assert Schedule(ScheduleConfig(week_days=[])).next_run(datetime.now(UTC)) is None


@pytest.mark.parametrize(("toml", "message"), [
    ('timezone = "Mars/Olympus"', "unknown time zone"),
    ('cron = "61 * * * *"', "is not a cron expression"),
    ('time = "24:00"', "must be HH:MM"),
    ('week_days = ["funday"]', "week_days"),
])
def test_bad_schedules_are_config_errors(tmp_path, toml: str, message: str) -> None:
    text = f'[repositories.r]\nurl = "/x"\npassword = "env:P"\n[instances.a]\nfiles = ["/etc/hostname"]\n' \
           f'repositories = ["r"]\n[instances.a.schedule]\n{toml}\n'
    with pytest.raises(ConfigError, match=message):
        parse(text, tmp_path / "safehold.toml")


@pytest.mark.parametrize(("config", "cron", "expected"), [
    (ScheduleConfig(week_days=["monday", "friday"], time="23:30", timezone="Europe/Berlin"), None,
     "Mon,Fri *-*-* 23:30:00 Europe/Berlin"),
    (ScheduleConfig(timezone="UTC"), "15 2 * * *", "*-*-* 2:15:00 UTC"),
    (ScheduleConfig(timezone="UTC"), "*/15 8-18 * * 1-5", "Mon..Fri *-*-* 8..18:0/15:00 UTC"),
    (ScheduleConfig(timezone="UTC"), "* * * * * */2", "*-*-* *:*:0/2 UTC"),
    (ScheduleConfig(timezone="UTC"), "0 2 * jan,jul-sep *", "*-1,7..9-* 2:0:00 UTC"),
])
def test_systemd_on_calendar(config: ScheduleConfig, cron: str | None, expected: str) -> None:
    assert on_calendar(config, cron) == [expected]
    if shutil.which("systemd-analyze"):
        # systemd itself must accept what we write.
        subprocess.run(["systemd-analyze", "calendar", expected], check=True, capture_output=True)


def test_day_of_month_and_weekday_both_given_run_on_either_as_in_cron() -> None:
    # cron (and croniter, which serve and check use) run "0 3 1 */3 sun,wed" on the 1st of the month and on
    # every Sunday and Wednesday of those months; one OnCalendar would need both. A timer takes the union
    # of its OnCalendar lines.
    config = ScheduleConfig(timezone="UTC")
    assert on_calendar(config, "0 3 1 */3 sun,wed") == ["Sun,Wed *-1/3-* 3:0:00 UTC", "*-1/3-1 3:0:00 UTC"]


@pytest.mark.parametrize("cron", ["0 2 L * *", "0 2 ? * *", "0 2 * * mon#1", "0 2 1W * *"])
def test_cron_extensions_neither_systemd_nor_cron_know_are_refused(cron: str) -> None:
    # croniter accepts them, but systemd ignores a timer it cannot parse and cron a line: the job would
    # silently never run.
    with pytest.raises(ConfigError, match="croniter extension"):
        on_calendar(ScheduleConfig(), cron)
    with pytest.raises(ConfigError, match="croniter extension"):
        cron_line(ScheduleConfig(), cron)


def test_cron_line() -> None:
    assert cron_line(ScheduleConfig(week_days=["monday", "friday"], time="23:05"), None) == "5 23 * * mon,fri"
    assert cron_line(ScheduleConfig(), "0 2 * * *") == "0 2 * * *"
    with pytest.raises(ConfigError):
        cron_line(ScheduleConfig(), "* * * * * */2")


def test_a_timer_time_the_spring_change_jumps_over_is_found_and_warned_about(tmp_path: Path) -> None:
    from safehold.actions.schedule_install import install
    from safehold.config import load

    start = _utc("2026-11-27T00:00")
    sunday = Schedule(ScheduleConfig(week_days=["sunday"], time="02:30", timezone="Europe/Berlin"))
    assert sunday.skipped_by_dst(start) == [datetime(2027, 3, 28, 2, 30)]
    assert Schedule(ScheduleConfig(cron="30 2 * * *", timezone="America/New_York")).skipped_by_dst(start) == [
        datetime(2027, 3, 14, 2, 30)]
    for fine in (ScheduleConfig(week_days=["sunday"], time="03:30", timezone="Europe/Berlin"),
                 ScheduleConfig(cron="30 2 * * *", timezone="UTC"),
                 ScheduleConfig(cron="*/20 * * * *", timezone="Europe/Berlin"),  # runs again later that day
                 ScheduleConfig(cron="30 0,2 * * *", timezone="Europe/Berlin")):  # ran earlier that day
        assert Schedule(fine).skipped_by_dst(start) == [], fine
    if shutil.which("systemd-analyze"):
        # systemd itself: the Sunday the clocks jump has no run.
        shown = subprocess.run(["systemd-analyze", "calendar", "--iterations=2", "--base-time=2027-03-20 00:00 UTC",
                                "Sun *-*-* 02:30:00 Europe/Berlin"], check=True, capture_output=True, text=True).stdout
        assert "2027-03-21" in shown and "2027-04-04" in shown and "2027-03-28" not in shown
    config = load(write_config(tmp_path, {"url": "/x", "password_file": "/x"},
                               '[instances.app]\nrepositories = ["main"]\nfiles = ["/etc/hostname"]\n'
                               'schedule = { week_days = ["sunday"], time = "02:30", timezone = "Europe/Berlin" }\n'))
    [warning] = install(config, tmp_path / "units", "systemd")["dst_skipped"]
    assert warning.startswith("backup of app: 02:30 Europe/Berlin does not exist on ") and "-03-" in warning
    assert "systemd timer skips that day's run" in warning
    assert install(config, tmp_path / "cron", "cron")["dst_skipped"] == []
