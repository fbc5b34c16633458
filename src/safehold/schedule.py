"""When runs are due: iTop-style `week_days` + `time`, or a cron expression, in an explicit time zone.

Pure time arithmetic (no clock of its own), so the scheduler, `check` and the unit-file writer
share it and tests can ask about any moment.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from croniter import croniter

from safehold.config import WEEK_DAYS, ScheduleConfig

# Without a schedule, `check` expects a point at least daily.
DEFAULT_GAP = timedelta(hours=24)
GRACE = timedelta(hours=2)


class Schedule:
    """The due times of one job (backup or drill) of one instance."""

    def __init__(self, config: ScheduleConfig, cron: str | None = None) -> None:
        self.config = config
        self.cron = cron if cron is not None else config.cron
        self.zone = ZoneInfo(config.timezone)
        self.enabled = config.enabled

    @property
    def at(self) -> time:
        """The time of day of a week_days schedule."""
        parts = [int(p) for p in self.config.time.split(":")]
        return time(*parts)

    def describe(self) -> str:
        """One human line, e.g. `monday,friday at 23:30 Europe/Berlin` or `cron 0 2 * * * UTC`."""
        when = f"cron {self.cron}" if self.cron else f"{','.join(self.config.week_days) or 'no day'} at " \
            f"{self.config.time}"
        return f"{when} {self.config.timezone}" + ("" if self.enabled else " (disabled)")

    def _day_time(self, day: date) -> datetime | None:
        if WEEK_DAYS[day.weekday()] not in self.config.week_days:
            return None
        return datetime.combine(day, self.at, tzinfo=self.zone)

    def next_run(self, after: datetime) -> datetime | None:
        """The first due time strictly after `after` (aware), ignoring `enabled`; None if never."""
        if self.cron:
            return croniter(self.cron, after.astimezone(self.zone)).get_next(datetime)
        local = after.astimezone(self.zone).date()
        for offset in range(0, 9):
            due = self._day_time(local + timedelta(days=offset))
            if due is not None and due > after:
                return due
        return None

    def prev_run(self, before: datetime) -> datetime | None:
        """The last due time at or before `before`; None if never."""
        if self.cron:
            it = croniter(self.cron, (before + timedelta(seconds=1)).astimezone(self.zone))
            return it.get_prev(datetime)
        local = before.astimezone(self.zone).date()
        for offset in range(0, 9):
            due = self._day_time(local - timedelta(days=offset))
            if due is not None and due <= before:
                return due
        return None

    def max_age(self, now: datetime) -> timedelta:
        """How old the newest point may be at `now` before it counts as stale.

        The gap between the two latest due times (a weekend is a longer gap than a weeknight) plus a
        grace period for the run itself, unless max_age_hours says otherwise.
        """
        if self.config.max_age_hours:
            return timedelta(hours=self.config.max_age_hours)
        last = self.prev_run(now)
        before = self.prev_run(last - timedelta(seconds=1)) if last else None
        if last is None or before is None:
            return DEFAULT_GAP + GRACE
        # At `now` the run due at `last` may still be going, so the point must at least be that of `before`.
        return (now - before) + GRACE


def backup_schedule(config: ScheduleConfig | None) -> Schedule | None:
    """The backup schedule of an instance (None: runs only by hand)."""
    return Schedule(config) if config is not None else None


def drill_schedule(config: ScheduleConfig | None) -> Schedule | None:
    """The drill schedule of an instance (a cron expression in schedule.drill), if any."""
    if config is None or not config.drill:
        return None
    return Schedule(config, cron=config.drill)
