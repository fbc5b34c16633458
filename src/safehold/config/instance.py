"""[instances.*]: one protected application, when it runs, what it keeps, how it is paused."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from safehold.config.base import Model, check_absolute
from safehold.config.database import DatabaseConfig, DbAdminConfig, ScratchServerConfig

WEEK_DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


class ScheduleConfig(Model):
    """When runs happen: iTop-style week_days + time, or a cron expression."""

    enabled: bool = Field(default=True, description="false pauses the schedule (`safehold check` then reports "
                                                   "it, CRITICAL once no point is fresh)")
    week_days: list[Literal[WEEK_DAYS]] = Field(  # type: ignore[valid-type]
        default_factory=lambda: list(WEEK_DAYS[:5]), description="the days a backup runs at `time`")
    time: str = Field(default="23:30", description="when a backup starts on week_days, HH:MM (24 h) in timezone")
    cron: str | None = Field(default=None, description="a cron expression used instead of week_days and time",
                             examples=["30 23 * * 1-5"])
    timezone: str = Field(default="UTC", description="the IANA time zone of time and the cron expressions")
    drill: str | None = Field(default=None, description="cron expression for scheduled drills; unset: no "
                                                        "scheduled drill", examples=["0 4 * * sun"])
    verify: str | None = Field(default=None, description="cron expression for scheduled repository checks; "
                                                         "unset: none", examples=["0 5 * * sun"])
    verify_read_data: str = Field(
        default="5%", description="what a scheduled verify reads of the stored data: none, all, a share of the "
                                  "pack files chosen at random each time (5%) or an amount (2G)")
    max_age_hours: float | None = Field(
        default=None, gt=0, description="check: a point older than this many hours is stale; unset: 2 h after a "
                                        "due time, the point of that run must exist", examples=[26])

    @field_validator("time")
    @classmethod
    def _time(cls, value: str) -> str:
        if not re.match(r"^([01]\d|2[0-3]):[0-5]\d(:[0-5]\d)?$", value):
            raise ValueError("must be HH:MM (24h)")
        return value

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        import zoneinfo

        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (use an IANA name such as Europe/Berlin)") from None
        return value

    @field_validator("verify_read_data")
    @classmethod
    def _read_data(cls, value: str) -> str:
        share = re.fullmatch(r"(\d+(\.\d+)?)%", value)
        if not (re.fullmatch(r"none|all|[1-9]\d*[kKmMgGtT]", value) or share and 0 < float(share[1]) <= 100):
            raise ValueError(f"{value!r}: use none, all, a share such as 5% or an amount such as 2G")
        return value

    @field_validator("cron", "drill", "verify")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        from croniter import croniter

        if value is not None and not croniter.is_valid(value):
            raise ValueError(f"{value!r} is not a cron expression (minute hour day month weekday [second])")
        return value


class RetentionConfig(Model):
    """How many points to keep: a plain count (`last`) and/or GFS buckets."""

    last: int | None = Field(default=None, ge=1, description="keep this many newest points", examples=[14])
    hourly: int | None = Field(default=None, ge=0, description="keep the newest point of this many hours",
                               examples=[24])
    daily: int | None = Field(default=None, ge=0, description="keep the newest point of this many days",
                              examples=[7])
    weekly: int | None = Field(default=None, ge=0, description="keep the newest point of this many weeks",
                               examples=[4])
    monthly: int | None = Field(default=None, ge=0, description="keep the newest point of this many months",
                                examples=[12])
    yearly: int | None = Field(default=None, ge=0, description="keep the newest point of this many years",
                               examples=[2])
    safety_days: int = Field(default=14, ge=1, description="days a safety point taken before a restore is kept; "
                                                           "safety points never take a slot of the rules above")
    after_backup: bool = Field(default=True, description="apply after each backup that stored its point (also when "
                                                         "a copy failed), never after a failed one; false: only by "
                                                         "hand with `safehold prune`")

    @model_validator(mode="after")
    def _keeps_something(self) -> RetentionConfig:
        # An empty table or all-zero counts would silently keep only the newest point.
        if not any((self.last, self.hourly, self.daily, self.weekly, self.monthly, self.yearly)):
            raise ValueError("keeps no point besides the newest; set last = N or hourly/daily/weekly/monthly/yearly"
                             " counts above 0 (e.g. { daily = 7, weekly = 4 }), or leave retention out for last = 14")
        return self


class QuiesceConfig(Model):
    """Commands that pause and resume the application around a snapshot (run without a shell)."""

    stop: list[list[str]] = Field(default_factory=list, description="commands run in order before a snapshot "
                                                                    "(and a restore), each a list of words",
                                  examples=[[["systemctl", "stop", "apache2"]]])
    start: list[list[str]] = Field(default_factory=list, description="commands run after it, usually the stop "
                                                                     "steps in reverse order",
                                   examples=[[["systemctl", "start", "apache2"]]])
    enabled: bool = Field(default=True, description="false: never pause (the app keeps running during a backup)")
    units: list[str] | None = Field(
        default=None, description="netbox: the systemd units paused; unset: netbox and netbox-rq",
        examples=[["netbox", "netbox-rq"]])


class InstanceConfig(Model):
    """One protected application instance."""

    app: Literal["itflow", "idoit", "itop", "glpi", "snipeit", "bookstack", "netbox", "generic"] = Field(
        default="generic", description="the application profile; generic keeps only what this table lists")
    root: str | None = Field(default=None, description="the folder the application is installed in (required "
                                                       "unless app is generic)", examples=["/var/www/app"])
    config_module: str | None = Field(
        default=None, description="netbox: the NETBOX_CONFIGURATION module its services set; unset: NetBox's own "
                                  "search (conf/configuration.py, then netbox/netbox/configuration.py)",
        examples=["netbox.configuration_prod"])
    repositories: list[str] = Field(min_length=1, description="names of [repositories.*]; the first receives "
                                                              "every run, the others receive copies",
                                    examples=[["main"]])
    files: list[str] = Field(default_factory=list, description="extra file trees to keep (full paths)",
                             examples=[["/srv/app/uploads"]])
    config_files: list[str] = Field(default_factory=list, description="configuration files or folders to keep "
                                                                      "(full paths)",
                                    examples=[["/etc/apache2", "/etc/php"]])
    exclude: list[str] = Field(default_factory=list, description="restic exclude patterns for the file trees",
                               examples=[["*/cache/*"]])
    databases: list[DatabaseConfig] = Field(
        default_factory=list, description="databases the instance owns (generic), or overrides of what the "
                                          "profile reads from the app's own config file")
    schedule: ScheduleConfig | None = Field(default=None, description="when `safehold serve` or the installed "
                                                                      "timers run backups; unset: by hand only")
    retention: RetentionConfig = Field(default_factory=lambda: RetentionConfig(last=14),
                                       description="which points to keep; unset: the last 14")
    quiesce: QuiesceConfig = Field(default_factory=QuiesceConfig,
                                   description="pause the application around a snapshot; unset: what the profile "
                                               "does on its own")
    owner: str | None = Field(default=None, description="i-doit, iTop: user:group the app's files are given "
                                                        "after a restore; unset: as stored",
                              examples=["www-data:www-data"])
    drill_interval_hours: int = Field(default=8 * 24, ge=1, description="`safehold check`: a passed drill older "
                                                                        "than this is late (when no drill schedule "
                                                                        "says otherwise)")
    db_admin: DbAdminConfig | None = Field(
        default=None, description="administrative database login for re-creating a missing app account or "
                                  "database on restore; unset: root over the local socket, no password (without "
                                  "a working login restore prints the SQL)")
    drill_server: ScratchServerConfig | None = Field(
        default=None, description="server for drill scratch databases; unset: a private throwaway server "
                                  "started from this host's MariaDB binaries, else the instance's own server")

    _absolute_paths = field_validator("root", "files", "config_files")(check_absolute)

    @model_validator(mode="after")
    def _shape(self) -> InstanceConfig:
        if self.app == "generic":
            if not (self.databases or self.files or self.config_files):
                raise ValueError("a generic instance needs at least one of databases, files, config_files")
        elif not self.root:
            raise ValueError(f'app = "{self.app}" needs root = "/path/to/the/{self.app}/install"')
        return self

