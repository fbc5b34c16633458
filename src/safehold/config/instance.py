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

    enabled: bool = True
    week_days: list[Literal[WEEK_DAYS]] = Field(default_factory=lambda: list(WEEK_DAYS[:5]))  # type: ignore[valid-type]
    time: str = "23:30"
    cron: str | None = None
    timezone: str = "UTC"
    drill: str | None = Field(default=None, description="cron expression for scheduled drills")
    verify: str | None = Field(default=None, description="cron expression for scheduled repository checks")
    verify_read_data: str = Field(
        default="5%", description="what a scheduled verify reads of the stored data: none, all, a share of the "
                                  "pack files chosen at random each time (5%) or an amount (2G)")
    max_age_hours: float | None = Field(
        default=None, gt=0, description="check: a point older than this is stale (default: 2 h after a due "
                                         "time, the point of that run must exist)")

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

    last: int | None = Field(default=None, ge=1)
    hourly: int | None = Field(default=None, ge=0)
    daily: int | None = Field(default=None, ge=0)
    weekly: int | None = Field(default=None, ge=0)
    monthly: int | None = Field(default=None, ge=0)
    yearly: int | None = Field(default=None, ge=0)
    safety_days: int = Field(default=14, ge=1, description="days a safety point taken before a restore is kept; "
                                                           "safety points never take a slot of the rules above")
    after_backup: bool = Field(default=True, description="apply after each backup that stored its point (also when "
                                                         "a copy failed), never after a failed one")

    @model_validator(mode="after")
    def _keeps_something(self) -> RetentionConfig:
        # An empty table or all-zero counts would silently keep only the newest point.
        if not any((self.last, self.hourly, self.daily, self.weekly, self.monthly, self.yearly)):
            raise ValueError("keeps no point besides the newest; set last = N or hourly/daily/weekly/monthly/yearly"
                             " counts above 0 (e.g. { daily = 7, weekly = 4 }), or leave retention out for last = 14")
        return self


class QuiesceConfig(Model):
    """Commands that pause and resume the application around a snapshot (run without a shell)."""

    stop: list[list[str]] = Field(default_factory=list)
    start: list[list[str]] = Field(default_factory=list)
    enabled: bool = True
    units: list[str] | None = Field(
        default=None, description="systemd units the profile stops while paused (netbox: netbox, netbox-rq)")



class InstanceConfig(Model):
    """One protected application instance."""

    app: Literal["itflow", "idoit", "itop", "glpi", "snipeit", "bookstack", "netbox", "generic"] = "generic"
    root: str | None = None
    config_module: str | None = Field(
        default=None, description="netbox: the NETBOX_CONFIGURATION module its services set (default: NetBox's own "
                                  "search: conf/configuration.py, then netbox/netbox/configuration.py)")
    repositories: list[str] = Field(min_length=1)
    files: list[str] = Field(default_factory=list)
    config_files: list[str] = Field(default_factory=list)
    exclude: list[str] = Field(default_factory=list)
    databases: list[DatabaseConfig] = Field(default_factory=list)
    schedule: ScheduleConfig | None = None
    retention: RetentionConfig = Field(default_factory=lambda: RetentionConfig(last=14))
    quiesce: QuiesceConfig = Field(default_factory=QuiesceConfig)
    owner: str | None = Field(default=None, description="user:group the app's files belong to")
    drill_interval_hours: int = Field(default=8 * 24, ge=1)
    db_admin: DbAdminConfig | None = Field(
        default=None, description="administrative database login for re-creating a missing app account or "
                                  "database on restore (default: root over the local socket, no password)")
    drill_server: ScratchServerConfig | None = Field(
        default=None, description="server for drill scratch databases (default: a private throwaway server "
                                  "started from this host's MariaDB binaries, else the instance's own server)")

    _absolute_paths = field_validator("root", "files", "config_files")(check_absolute)

    @model_validator(mode="after")
    def _shape(self) -> InstanceConfig:
        if self.app == "generic":
            if not (self.databases or self.files or self.config_files):
                raise ValueError("a generic instance needs at least one of databases, files, config_files")
        elif not self.root:
            raise ValueError(f'app = "{self.app}" needs root = "/path/to/the/{self.app}/install"')
        return self

