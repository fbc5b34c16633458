"""When runs are due: iTop-style `week_days` + `time`, or a cron expression, in an explicit time zone.

Pure time arithmetic (no clock of its own), so the scheduler, `check` and the unit-file writer
share it and tests can ask about any moment.
"""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from typing import overload
from zoneinfo import ZoneInfo

from croniter import croniter

from safehold.config import ScheduleConfig

# Without a schedule, `check` expects a point at least daily.
DEFAULT_GAP = timedelta(hours=24)
GRACE = timedelta(hours=2)
# A point started this long before a due time counts for it (a run by hand just before the scheduled one,
# which then finds the instance busy).
EARLY = timedelta(minutes=15)


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
        return time.fromisoformat(self.config.time)  # HH:MM or HH:MM:SS, as the config validates

    @property
    def names_a_day(self) -> bool:
        """False for a week_days schedule with no day in it: it is never due (a cron expression always is)."""
        return bool(self.cron or self.config.week_days)

    def describe(self) -> str:
        """One human line, e.g. `monday,friday at 23:30 Europe/Berlin` or `cron 0 2 * * * UTC`."""
        when = f"cron {self.cron}" if self.cron else f"{','.join(self.config.week_days) or 'no day'} at " \
            f"{self.config.time}"
        return f"{when} {self.config.timezone}" + ("" if self.enabled else " (disabled)")

    @property
    def expression(self) -> str:
        """The schedule as a cron expression; a week_days schedule becomes `M H * * mon,fri` (`S` last when
        its time has seconds), so both kinds get croniter's, and the DST rules below, alike."""
        if self.cron:
            return self.cron
        hour, minute, *second = (int(part) for part in self.config.time.split(":"))
        days = ",".join(day[:3] for day in self.config.week_days)
        return " ".join(str(field) for field in (minute, hour, "*", "*", days, *second))

    def _repeated(self, due: datetime) -> bool:
        """Whether `due` is the second occurrence of a wall-clock time the autumn DST change repeats."""
        return due.fold == 1 and due.replace(fold=0).utcoffset() != due.utcoffset()

    def _runs(self, start: datetime, *, forward: bool) -> datetime:
        """The due time nearest `start` in one direction, by the wall clock of the schedule's zone.

        DST, as systemd's timers (which `schedule install` writes) and Debian's cron have it for a
        fixed time: a wall-clock time the autumn change repeats is due once, at its first occurrence
        (croniter yields both, so a nightly 02:30 Berlin job ran twice). A time the spring change skips
        (02:30 on the night clocks jump 02:00 -> 03:00) is due once, at the first moment after the
        gap (03:00), as Debian's cron runs such jobs right after the jump; croniter already does that.
        systemd 252's timers skip that night instead (systemd-analyze calendar), so a timer-run
        backup is missing that day, while `serve` runs it late rather than not at all.
        """
        runs = croniter(self.expression, start.astimezone(self.zone))
        while True:
            due = runs.get_next(datetime) if forward else runs.get_prev(datetime)
            if not self._repeated(due):
                return due

    def next_run(self, after: datetime) -> datetime | None:
        """The first due time strictly after `after` (aware), ignoring `enabled`; None if never."""
        return self._runs(after, forward=True) if self.names_a_day else None

    def prev_run(self, before: datetime) -> datetime | None:
        """The last due time at or before `before`; None if never."""
        return self._runs(before + timedelta(seconds=1), forward=False) if self.names_a_day else None

    def skipped_by_dst(self, start: datetime, days: int = 366) -> list[datetime]:
        """Due times (naive, by the zone's wall clock) in the `days` after `start` that do not exist there,
        because the spring DST change jumps over them (02:30 on the night Berlin goes 02:00 -> 03:00),
        on a day with no other due time: systemd's timers skip such a run (see _runs), so that day has
        none, and the unit writer warns. A job that also runs earlier or later that day loses nothing that
        matters.
        """
        if not self.names_a_day:
            return []
        step, found = timedelta(minutes=15), []  # every zone changes its offset on a quarter hour
        instant = start.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
        before = instant.astimezone(self.zone).utcoffset()
        for _ in range(days * 96):
            instant += step
            after = instant.astimezone(self.zone).utcoffset()
            if before is not None and after is not None and after > before:
                # Wall-clock times from the change by the old offset up to it by the new one never occur.
                gap_start, gap_end = (instant + before).replace(tzinfo=None), (instant + after).replace(tzinfo=None)
                due = croniter(self.expression, gap_start - timedelta(seconds=1)).get_next(datetime)
                earlier = croniter(self.expression, gap_start).get_prev(datetime)
                later = croniter(self.expression, gap_end - timedelta(seconds=1)).get_next(datetime)
                if due < gap_end and due.date() not in (earlier.date(), later.date()):
                    found.append(due)
            before = after
        return found

    def due_by(self, now: datetime) -> datetime | None:
        """The latest due time whose grace period has passed at `now`: its point must exist by now.

        A run due at D may still be going until D + GRACE; after that, the newest point must have
        started at or after D (see EARLY). None when the schedule names no day.
        """
        return self.prev_run(now - GRACE)

    def max_age(self, now: datetime) -> timedelta:
        """How old (from its start) the newest point may be at `now` before it counts as stale.

        Unless max_age_hours says otherwise: the point must be that of the latest due time whose
        grace has passed (`due_by`), or one started up to EARLY before it. So a missed run is
        stale from its due time + GRACE on, not one whole schedule gap later.
        """
        if self.config.max_age_hours:
            return timedelta(hours=self.config.max_age_hours)
        due = self.due_by(now)
        if due is None:
            return DEFAULT_GAP + GRACE
        return now - due + EARLY

    def critical_age(self, now: datetime) -> timedelta:
        """The age from which a stale point is CRITICAL rather than a WARNING.

        Twice the normal allowance: max_age_hours, or the schedule's gap after the missed due time
        plus GRACE (so about two missed runs in a row; a missed Friday run of a weekday schedule is
        measured against the weekend's gap, not a weeknight's).
        """
        if self.config.max_age_hours:
            return 2 * timedelta(hours=self.config.max_age_hours)
        due = self.due_by(now)
        following = self.next_run(due) if due is not None else None
        if due is None or following is None:
            return 2 * (DEFAULT_GAP + GRACE)
        return 2 * (following - due + GRACE)


@overload
def backup_schedule(config: ScheduleConfig) -> Schedule: ...
@overload
def backup_schedule(config: ScheduleConfig | None) -> Schedule | None: ...
def backup_schedule(config: ScheduleConfig | None) -> Schedule | None:
    """The backup schedule of an instance (None: runs only by hand)."""
    return Schedule(config) if config is not None else None


def drill_schedule(config: ScheduleConfig | None) -> Schedule | None:
    """The drill schedule of an instance (a cron expression in schedule.drill), if any."""
    if config is None or not config.drill:
        return None
    return Schedule(config, cron=config.drill)


def verify_schedule(config: ScheduleConfig | None) -> Schedule | None:
    """The repository-check schedule of an instance (a cron expression in schedule.verify), if any."""
    if config is None or not config.verify:
        return None
    return Schedule(config, cron=config.verify)


KINDS = ("backup", "drill", "verify")


def job_schedules(config: ScheduleConfig | None) -> list[tuple[str, Schedule]]:
    """(kind, schedule) of every job an instance's schedule section asks for, enabled or not."""
    found = zip(KINDS, (backup_schedule(config), drill_schedule(config), verify_schedule(config)), strict=True)
    return [(kind, schedule) for kind, schedule in found if schedule is not None]
