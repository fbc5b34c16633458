"""`safehold schedule install`: systemd service + timer units or a cron file for each schedule.

For hosts that prefer their own timers to `safehold serve`. The units call the same `safehold
backup NAME` a person would, so history, locking, retention and notifications behave the same.
The time zone goes into OnCalendar (systemd >= 241) and into CRON_TZ (cronie; Debian's cron ignores
it, so the file says so).
"""

from __future__ import annotations

import re
import shlex
import shutil
import sys
from datetime import UTC, datetime
from pathlib import Path

from safehold.config import WEEK_DAYS, Config, ScheduleConfig
from safehold.errors import ConfigError
from safehold.schedule import KINDS, Schedule, backup_schedule, job_schedules

# systemd's default PATH for services. cron's own is /usr/bin:/bin, so a job would miss tools a timer
# finds (restic installed in /usr/local/bin because the distribution's is old).
SERVICE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DAY_NAMES = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
# cron's month names; systemd calendar specs only take numbers there.
MONTHS = {name: index for index, name in enumerate(
    ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"], start=1)}


def _command() -> list[str]:
    found = shutil.which("safehold")
    return [found] if found else [sys.executable, "-m", "safehold"]


def _fields(cron: str) -> list[str]:
    """The fields of a cron expression, refusing croniter's extensions (L, W, #, ?): the config accepts
    them, since croniter runs them under `serve`, but systemd ignores a timer and cron a line it cannot
    parse, so the job would silently never run."""
    fields = cron.split()
    names = {3: set(MONTHS), 4: {day[:3] for day in WEEK_DAYS}}  # month and weekday fields
    for index, value in enumerate(fields):
        words = re.findall(r"[A-Za-z]+", value)
        if re.search(r"[^0-9A-Za-z*,/-]", value) or any(w.lower() not in names.get(index, set()) for w in words):
            raise ConfigError(f"cron {cron!r}: {value!r} is a croniter extension neither systemd nor cron knows",
                              "write the schedule with numbers, names, ranges, lists and steps, or run it "
                              "with `safehold serve`")
    return fields


def _field(value: str, start: int, what: str, day: bool = False) -> str:
    """One cron field in systemd calendar syntax."""
    def one(item: str) -> str:
        if day:
            return DAY_NAMES[int(item)] if item.isdigit() else item[:3].capitalize()
        return str(MONTHS.get(item.lower(), item))

    parts = []
    for item in value.split(","):
        base, _, step = item.partition("/")
        if base == "*":
            base = "*" if not step else str(start)
        elif "-" in base:
            low, high = base.split("-", 1)
            if step:
                raise ConfigError(f"cron {what} {item!r} (a stepped range) has no systemd calendar form",
                                  "use --format cron, or list the values")
            base = f"{one(low)}..{one(high)}"
        else:
            base = one(base)
        if step and day:
            raise ConfigError(f"cron weekday step {item!r} has no systemd calendar form", "list the days instead")
        parts.append(f"{base}/{step}" if step else base)
    return ",".join(parts)


def on_calendar(schedule: ScheduleConfig, cron: str | None) -> list[str]:
    """The OnCalendar= values of a schedule (week_days+time or a cron expression) with its time zone.

    A timer elapses at the union of its OnCalendar= lines; one value is enough except for a cron
    expression that restricts both the day of the month and the weekday, which cron (and croniter, so
    `serve` and `check`) run on either day, and a single calendar spec would need both.
    """
    if cron is None:
        days = ",".join(d[:3].capitalize() for d in schedule.week_days)
        clock = schedule.time if schedule.time.count(":") == 2 else f"{schedule.time}:00"
        return [f"{days} *-*-* {clock} {schedule.timezone}"]
    fields = _fields(cron)
    if len(fields) not in (5, 6):
        raise ConfigError(f"cron {cron!r} needs 5 or 6 fields for a systemd timer", "use --format cron")
    minute, hour, dom, month, dow = fields[:5]
    second = _field(fields[5], 0, "second") if len(fields) == 6 else "00"
    clock = f"{_field(hour, 0, 'hour')}:{_field(minute, 0, 'minute')}:{second} {schedule.timezone}"
    months = _field(month, 1, "month")
    weekdays = "" if dow == "*" else _field(dow, 0, "weekday", day=True) + " "
    if dom != "*" and dow != "*":
        return [f"{weekdays}*-{months}-* {clock}", f"*-{months}-{_field(dom, 1, 'day')} {clock}"]
    return [f"{weekdays}*-{months}-{_field(dom, 1, 'day')} {clock}"]


def cron_line(schedule: ScheduleConfig, cron: str | None) -> str:
    """The five time fields of a cron entry."""
    if cron is not None:
        if len(_fields(cron)) != 5:
            raise ConfigError(f"cron {cron!r} has a seconds field cron cannot run", "use --format systemd")
        return cron
    hour, minute = schedule.time.split(":")[:2]
    days = ",".join(d[:3] for d in schedule.week_days)
    return f"{int(minute)} {int(hour)} * * {days}"


ENV_REFERENCE = re.compile(r"^env:([A-Za-z_][A-Za-z0-9_]*)$")


def _environment(value: object) -> set[str]:
    """The variables named by `env:` references anywhere in a dumped config section."""
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, list):
        return set().union(*(_environment(item) for item in value))
    found = ENV_REFERENCE.match(value) if isinstance(value, str) else None
    return {found.group(1)} if found else set()


# The names of the units install writes (safehold-KIND-INSTANCE.service/.timer).
# Where the other format's jobs live once installed, to warn about both running (module-level so a
# test can point them at a folder of its own).
SYSTEMD_DIR = Path("/etc/systemd/system")
CRON_FILE = Path("/etc/cron.d/safehold")
CRON_HEADER = "# safehold schedules (written by `safehold schedule install`)."
UNIT_NAME = re.compile(rf"^safehold-({'|'.join(KINDS)})-(.+)\.(service|timer)$")


def _description(kind: str, name: str) -> str:
    """The start of the Description= of both units of a job; also how an earlier install's units are known."""
    return f"Description=safehold {kind} of {name}"


def _stale_units(folder: Path, wanted: list[str]) -> list[Path]:
    """Units an earlier install wrote into `folder` that no enabled schedule wants any more (a schedule
    disabled, an instance or its drill removed). Only files with the name and the Description= install
    gives its units, so a unit of the admin's own is never taken."""
    stale = []
    for path in sorted(folder.iterdir()):
        found = UNIT_NAME.match(path.name)
        if found is None or path.name in wanted or not path.is_file() or path.is_symlink():
            continue
        try:
            ours = f"\n{_description(found.group(1), found.group(2))}" in path.read_text()
        except (OSError, UnicodeDecodeError):
            ours = False
        if ours:
            stale.append(path)
    return stale


def _ours(path: Path, marker: str) -> bool:
    try:
        return marker in path.read_text()
    except (OSError, UnicodeDecodeError):
        return False


def installed_elsewhere(fmt: str, folder: Path) -> list[str]:
    """Jobs of the other format an earlier install put in place (systemd timers in SYSTEMD_DIR when
    installing cron, CRON_FILE when installing systemd): left enabled, every run would start twice."""
    if fmt == "cron":
        if not SYSTEMD_DIR.is_dir() or SYSTEMD_DIR.resolve() == folder.resolve():
            return []
        return [str(path) for path in sorted(SYSTEMD_DIR.glob("safehold-*.timer"))
                if (found := UNIT_NAME.match(path.name)) is not None
                and _ours(path, f"\n{_description(found.group(1), found.group(2))}")]
    if CRON_FILE.parent.resolve() != folder.resolve() and _ours(CRON_FILE, CRON_HEADER):
        return [str(CRON_FILE)]
    return []


def _jobs(config: Config) -> list[tuple[str, str, ScheduleConfig, str | None]]:
    jobs = []
    for name, instance in config.instances.items():
        for kind, schedule in job_schedules(instance.schedule):
            # A schedule that names no day never runs under `safehold serve`; as a unit it would have
            # an empty weekday (systemd: every day; cron: a line whose user lands in the weekday field).
            if schedule.enabled and schedule.names_a_day:
                jobs.append((name, kind, schedule.config, schedule.cron))
    return jobs


def _dst_skipped(jobs: list[tuple[str, str, ScheduleConfig, str | None]], now: datetime) -> list[str]:
    """One warning per timer whose time does not exist on some day of the coming year (the spring DST
    change jumps over it): systemd skips that day's run, where `serve` and cron run it after the jump."""
    warnings = []
    for name, kind, schedule, cron in jobs:
        if skipped := Schedule(schedule, cron).skipped_by_dst(now):
            warnings.append(f"{kind} of {name}: {skipped[0]:%H:%M} {schedule.timezone} does not exist on "
                            f"{skipped[0]:%Y-%m-%d} (the clocks jump forward), so the systemd timer skips that "
                            "day's run; pick a time outside the jump, or use --format cron or `safehold serve`, "
                            "which run it right after")
    return warnings


def _argv(kind: str, name: str, config_file: str) -> str:
    """The command a unit or cron line runs: what a person would type for that job."""
    job = ["verify", "--instance", name, "--scheduled"] if kind == "verify" else [kind, name]
    return shlex.join([*_command(), *job, "--config", config_file])


def install(config: Config, folder: Path, fmt: str, user: str | None = None) -> dict[str, object]:
    """Write units (systemd) or one cron file (cron) into `folder`; disabled schedules, and backup schedules
    that name no day, are skipped, and units an earlier install wrote there for them are removed (the cron
    file is rewritten whole)."""
    if fmt not in ("systemd", "cron"):
        raise ConfigError(f"unknown format {fmt!r}", "use --format systemd or --format cron")
    config_file = str(Path(config.source).resolve()) if config.source else "/etc/safehold/safehold.toml"
    folder.mkdir(parents=True, exist_ok=True)
    written: list[str] = []
    removed: list[str] = []
    skipped = [name for name, inst in config.instances.items() if inst.schedule and not inst.schedule.enabled]
    no_day = [name for name, inst in config.instances.items()
              if inst.schedule and inst.schedule.enabled and not backup_schedule(inst.schedule).names_a_day]
    jobs = _jobs(config)
    dst_skipped: list[str] = []
    if fmt == "systemd":
        dst_skipped = _dst_skipped(jobs, datetime.now(UTC))
        for name, kind, schedule, cron in jobs:
            argv = _argv(kind, name, config_file)
            unit = f"safehold-{kind}-{name}"
            (folder / f"{unit}.service").write_text(
                f"[Unit]\n{_description(kind, name)}\nWants=network-online.target\n"
                f"After=network-online.target\n\n[Service]\nType=oneshot\nExecStart={argv}\n"
                + (f"User={user}\n" if user else "") + "Nice=10\nIOSchedulingClass=best-effort\n"
                "IOSchedulingPriority=7\n")
            (folder / f"{unit}.timer").write_text(
                f"[Unit]\n{_description(kind, name)} ({schedule.timezone})\n\n[Timer]\n"
                + "".join(f"OnCalendar={value}\n" for value in on_calendar(schedule, cron))
                + f"Persistent=true\nUnit={unit}.service\n\n"
                "[Install]\nWantedBy=timers.target\n")
            written += [f"{unit}.service", f"{unit}.timer"]
        steps = [f"copy them to /etc/systemd/system, then: systemctl daemon-reload && systemctl enable --now "
                 f"{' '.join(f'safehold-{k}-{n}.timer' for n, k, _, _ in jobs)}"] if jobs else []
        # Left in place, the units of a schedule since disabled (or of a removed instance or drill) would be
        # copied and enabled again with the others. An enabled timer also goes on running after its file is
        # gone, until it is stopped; `systemctl disable` still removes its timers.target.wants link then.
        for path in _stale_units(folder, written):
            path.unlink()
            removed.append(path.name)
        if elsewhere := installed_elsewhere(fmt, folder):
            steps.append(f"remove the cron file an earlier install left ({elsewhere[0]}), or every run starts twice")
        if removed:
            timers = " ".join(name for name in removed if name.endswith(".timer"))
            steps.append(f"stop the removed ones (and delete any copies of them, e.g. in /etc/systemd/system): "
                         f"systemctl disable --now {timers} && systemctl daemon-reload")
        hint = "; ".join(steps) or "nothing to install"
    else:
        lines = [CRON_HEADER,
                 "# CRON_TZ is honoured by cronie; Debian's cron runs in the system time zone instead.",
                 "SHELL=/bin/sh", f"PATH={SERVICE_PATH}", ""]
        for name, kind, schedule, cron in jobs:
            argv = _argv(kind, name, config_file)
            # The priorities the systemd units get (Nice=10, best-effort I/O at 7): the application keeps
            # answering while its backup reads the disk.
            lines += [f"CRON_TZ={schedule.timezone}",
                      f"{cron_line(schedule, cron)} {user or 'root'} nice -n 10 ionice -c 2 -n 7 {argv}"]
        (folder / "safehold").write_text("\n".join(lines) + "\n")
        written.append("safehold")
        hint = f"copy it to {CRON_FILE} (mode 0644)"
        if elsewhere := installed_elsewhere(fmt, folder):
            hint += (f"; disable the systemd timers an earlier install left, or every run starts twice: "
                     f"systemctl disable --now {' '.join(Path(p).name for p in elsewhere)}")
    # A unit or cron job starts with a bare environment; what a run reads (repositories, databases,
    # notifications) must come from an Environment= drop-in, the cron file, or a file: reference.
    needed = _environment(config.model_dump(include={"repositories", "instances", "notify"}))
    return {"folder": str(folder), "format": fmt, "written": written, "removed": removed,
            "installed_elsewhere": elsewhere, "dst_skipped": dst_skipped,
            "skipped_disabled": skipped,
            "environment": sorted(needed),
            "skipped_no_day": no_day, "next": hint}
