"""safehold.toml → validated models. Secrets stay references here; they are resolved at use."""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from safehold.errors import ConfigError
from safehold.mounts import on_network_filesystem
from safehold.sftp_url import parse_sftp

DEFAULT_PATHS = (Path("safehold.toml"), Path("/etc/safehold/safehold.toml"))
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"
SECRET_PATTERN = r"^(env:[A-Za-z_][A-Za-z0-9_]*|file:.+)$"
WEEK_DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


class Model(BaseModel):
    """Base for config sections: unknown keys are errors, so typos do not pass silently."""

    model_config = ConfigDict(extra="forbid", frozen=False)


SecretRef = str


def _absolute(value: str | list[str] | None) -> str | list[str] | None:
    # Runs start from cron, systemd and the web console, each in another working folder.
    for path in [value] if isinstance(value, str) else value or []:
        if problem := impossible_path(path):
            raise ValueError(problem)
        if not os.path.isabs(os.path.expanduser(path)):
            raise ValueError(f"{path!r} is a relative path; give the full path (starting with /)")
    return value


NAME_MAX, PATH_MAX = 255, 4095  # Linux: bytes in one name, in a whole path


def impossible_path(path: str) -> str | None:
    """Why no file system can hold `path` (a NUL byte, a name or path too long), or None."""
    if "\0" in path:
        return f"{path!r} holds a NUL byte, which no path can"
    if len(path.encode(errors="surrogateescape")) > PATH_MAX:
        return f"{path[:40]!r}... is longer than any path ({PATH_MAX} bytes)"
    if any(len(part.encode(errors="surrogateescape")) > NAME_MAX for part in path.split("/")):
        return f"{path!r} has a name longer than {NAME_MAX} bytes, which no file system holds"
    return None


def _nul_in(data: object, where: str = "") -> str | None:
    """The key path of the first string value of the config holding a NUL byte (no path, name or secret
    reference can), or None."""
    if isinstance(data, str):
        return where if "\0" in data else None
    items = data.items() if isinstance(data, dict) else enumerate(data) if isinstance(data, list) else ()
    for key, value in items:
        if (found := _nul_in(value, f"{where}.{key}" if where else str(key))) is not None:
            return found
    return None


def _check_secret(value: str | None) -> str | None:
    if value is not None and not re.match(SECRET_PATTERN, value):
        raise ValueError('must be a secret reference "env:NAME" or "file:/path" (never the secret itself)')
    return value


# restic URL schemes that store somewhere else; anything else (a path, local:) is on this host.
REMOTE_SCHEMES = ("sftp:", "s3:", "rest:", "rclone:", "b2:", "azure:", "gs:", "swift:")


def local_path(url: str) -> Path | None:
    """The folder of a repository on this host (a path, or local:path); None for a remote one."""
    return None if url.startswith(REMOTE_SCHEMES) else Path(url.removeprefix("local:"))


# What the S3 client inside restic accepts as a bucket name; it checks only when the repository is opened.
S3_BUCKET = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{1,61}[A-Za-z0-9]")
S3_FORM = "write s3:https://HOST/BUCKET or s3:https://HOST/BUCKET/PREFIX"


def s3_location(url: str) -> tuple[str, str, str, str]:
    """An s3: URL split as restic splits it: (scheme, endpoint, bucket, prefix); the scheme is https unless
    the URL says http."""
    if url.startswith("s3:http"):
        parts = urlsplit(url.removeprefix("s3:"))
        scheme, endpoint, path = parts.scheme, parts.netloc, parts.path.removeprefix("/")
    else:
        scheme = "https"
        endpoint, _, path = url.removeprefix("s3://" if url.startswith("s3://") else "s3:").partition("/")
    bucket, _, prefix = path.partition("/")
    return scheme, endpoint, bucket, prefix.strip("/")


def _check_s3_url(url: str) -> None:
    """Refuse an s3: URL without an endpoint or a valid bucket, split as restic splits it.

    restic takes the first part after the endpoint as the bucket: `s3:https://host` fails only when
    the repository is opened, with "Bucket name cannot be empty" that reads like a repository not
    created yet, and `s3:backups/x` (the endpoint left out) makes `backups` the host.
    """
    _, endpoint, bucket, _ = s3_location(url)
    if not endpoint:
        raise ValueError(f"the s3: URL names no endpoint; {S3_FORM}")
    if not bucket:
        raise ValueError(f"the s3: URL names no bucket after the endpoint; {S3_FORM}")
    if not S3_BUCKET.fullmatch(bucket):
        raise ValueError(f"{bucket!r} is not a valid S3 bucket name (3 to 63 letters, digits, dots and hyphens); "
                         f"{S3_FORM}")


class RepositoryConfig(Model):
    """One restic repository: a local path or any restic URL (sftp:, s3:, rest:, rclone:)."""

    url: str
    password: SecretRef
    env: dict[str, SecretRef] = Field(
        default_factory=dict, description="extra environment for restic, e.g. AWS_ACCESS_KEY_ID"
    )
    known_hosts: str | None = Field(default=None, description="SSH known_hosts line(s) for sftp:")
    ssh_key: str | None = Field(default=None, description="private key file for sftp:")
    # An office uplink that nightly uploads must not fill: restic's own limiter, in KiB/s.
    limit_upload: int | None = Field(default=None, ge=1, strict=True, description="upload limit in KiB/s")
    limit_download: int | None = Field(default=None, ge=1, strict=True, description="download limit in KiB/s")

    _secret_password = field_validator("password")(_check_secret)

    @field_validator("url")
    @classmethod
    def _url_shape(cls, value: str) -> str:
        if (path := local_path(value)) is not None:
            _absolute(str(path))
        elif value.startswith("s3:"):
            _check_s3_url(value)
        else:
            try:
                parse_sftp(value)
            except ConfigError as exc:  # shown after the file and key, as the other URL errors
                raise ValueError(f"{exc.message}; {exc.hint}") from None
        return value

    def is_remote(self) -> bool:
        """True when the repository lies off this host: a remote URL, or a path on a network file system
        (NFS, CIFS…), whose data survives this host's disks."""
        folder = self.local_path()
        return folder is None or on_network_filesystem(folder) is not None

    def local_path(self) -> Path | None:
        """The folder of a repository on this host; None for a remote one."""
        return local_path(self.url)

    def rate_limits(self) -> list[str]:
        """restic's options for the configured upload and download limits."""
        return [*(["--limit-upload", str(self.limit_upload)] if self.limit_upload else []),
                *(["--limit-download", str(self.limit_download)] if self.limit_download else [])]

    @field_validator("env")
    @classmethod
    def _env_refs(cls, value: dict[str, str]) -> dict[str, str]:
        for item in value.values():
            _check_secret(item)
        return value


class DatabaseConfig(Model):
    """A database the instance owns (generic profile) or an override for a profile's database."""

    engine: Literal["mariadb", "postgres", "sqlite"]
    host: str = "127.0.0.1"
    port: int | None = Field(default=None, ge=1, le=65535)
    socket: str | None = None
    user: str | None = None
    password: SecretRef | None = None
    names: list[str] = Field(default_factory=list)
    path: str | None = Field(default=None, description="SQLite database file")
    method: Literal["auto", "parallel", "mariadb-dump"] = "auto"
    table_prefix: str | None = None
    workers: int | None = Field(default=None, ge=1, le=64)

    _secret_password = field_validator("password")(_check_secret)
    _absolute_path = field_validator("path")(_absolute)

    @field_validator("names")
    @classmethod
    def _names_once(cls, value: list[str]) -> list[str]:
        if twice := sorted({n for n in value if value.count(n) > 1}):
            raise ValueError(f"lists {', '.join(twice)} more than once")
        return value

    @model_validator(mode="after")
    def _shape(self) -> DatabaseConfig:
        if self.engine == "sqlite" and not self.path:
            raise ValueError("an sqlite database needs path = \"/path/to/file.db\"")
        if self.engine != "sqlite" and not self.names:
            raise ValueError(f"a {self.engine} database needs names = [\"dbname\", ...]")
        return self


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


class ScratchServerConfig(Model):
    """A MariaDB server where `safehold drill` may create its scratch databases (instead of the instance's own)."""

    engine: Literal["mariadb"] = "mariadb"
    host: str = "127.0.0.1"
    port: int | None = Field(default=None, ge=1, le=65535)
    socket: str | None = None
    user: str | None = None
    password: SecretRef | None = None

    _secret_password = field_validator("password")(_check_secret)


class DbAdminConfig(Model):
    """An administrative MariaDB login that re-creates the app's missing database account and databases on
    restore (default: root over the local server's Unix socket without a password, i.e. unix_socket auth)."""

    user: str = "root"
    password: SecretRef | None = None
    host: str = Field(default="localhost", description="localhost = the Unix socket, as for the app's own host")
    port: int | None = Field(default=None, ge=1, le=65535)
    socket: str | None = None

    _secret_password = field_validator("password")(_check_secret)


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

    _absolute_paths = field_validator("root", "files", "config_files")(_absolute)

    @model_validator(mode="after")
    def _shape(self) -> InstanceConfig:
        if self.app == "generic":
            if not (self.databases or self.files or self.config_files):
                raise ValueError("a generic instance needs at least one of databases, files, config_files")
        elif not self.root:
            raise ValueError(f'app = "{self.app}" needs root = "/path/to/the/{self.app}/install"')
        return self


class ItopTicketConfig(Model):
    """Open an iTop ticket through its REST/JSON API (`core/create`) when a run fails."""

    url: str = Field(description="iTop root, e.g. https://itop.example/ (webservices/rest.php is appended)")
    user: str
    password: SecretRef
    ticket_class: Literal["Incident", "UserRequest"] = "UserRequest"
    org_id: str | int = Field(description="organization key or OQL, e.g. \"SELECT Organization WHERE name='IT'\"")
    caller_id: str | int | None = None
    fields: dict[str, str | int] = Field(default_factory=dict, description="extra ticket fields (impact, urgency...)")
    api_version: str = "1.3"

    _secret_password = field_validator("password")(_check_secret)


class ItflowTicketConfig(Model):
    """Open an ITFlow ticket through its API (`/api/v1/tickets/create.php`) when a run fails."""

    url: str = Field(description="ITFlow root, e.g. https://itflow.example/")
    api_key: SecretRef
    client_id: int = 0
    contact_id: int = 0
    priority: Literal["Low", "Medium", "High", "Urgent"] = "High"

    _secret_key = field_validator("api_key")(_check_secret)


class NotifyConfig(Model):
    """Where failures (and optionally successes) are announced."""

    urls: list[SecretRef | str] = Field(default_factory=list, description="apprise URLs or secret refs to them")
    on_success: bool = False
    on_recovery: bool = True
    itop: ItopTicketConfig | None = None
    itflow: ItflowTicketConfig | None = None


class ExportConfig(Model):
    """Encryption for portable exports (`.age`)."""

    recipients: list[str] = Field(default_factory=list, description="age public keys (age1...)")
    passphrase: SecretRef | None = None
    identity: SecretRef | None = Field(default=None, description="age identity file for --from-file")

    _secret_passphrase = field_validator("passphrase", "identity")(_check_secret)


# A host name as a browser sends it in Host (a reverse proxy's public name), optionally `*.` for subdomains.
HOST_NAME = re.compile(r"(\*\.)?[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*")


def host_pattern(entry: str) -> str:
    """A host name lower-cased, an IPv6 address in brackets: as they are compared with the Host header."""
    try:
        return f"[{ipaddress.IPv6Address(entry.strip('[]'))}]"
    except ValueError:
        pass
    if not HOST_NAME.fullmatch(entry):
        raise ValueError(f"{entry!r} is not a host name (give the name only, without scheme or port, "
                         f"e.g. \"backup.example.org\")")
    return entry.lower()


def parse_listen(listen: str) -> tuple[str, int]:
    """`HOST:PORT` (IPv6 as `[::1]:8750`) → host and port."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535 or not host:
        raise ConfigError(f"--listen {listen!r} is not HOST:PORT", "e.g. --listen 127.0.0.1:8750")
    return host.strip("[]"), int(port)


class WebConfig(Model):
    """Admin console served by `safehold serve`."""

    listen: str = "127.0.0.1:8750"
    tls_cert: str | None = None
    tls_key: str | None = None
    proxy_auth_header: str | None = None
    # Without a trusted proxy, X-Forwarded-For/-Proto are ignored: any local process could otherwise
    # pick its apparent address (past the per-address login limit, into the audit log) and scheme.
    trusted_proxies: list[str] = Field(
        default_factory=list, description="addresses or networks of reverse proxies whose X-Forwarded-* count")
    # Requests naming any other host in Host are refused, so a page that rebinds its own DNS name to
    # 127.0.0.1 cannot reach the console (login, /metrics) from a browser on this host.
    allowed_hosts: list[str] = Field(
        default_factory=list, description="host names besides the listen address and localhost (a proxy's name)")

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        # Normalised, because uvicorn takes "10.0.0.1/8" (host bits set) for a name that never matches.
        try:
            return [str(ipaddress.ip_network(entry, strict=False) if "/" in entry else ipaddress.ip_address(entry))
                    for entry in value]
        except ValueError as exc:
            raise ValueError(f"{exc.args[0]}: give IP addresses or networks, e.g. [\"127.0.0.1\", \"::1\", "
                             f"\"10.0.0.0/24\"]") from None

    @field_validator("allowed_hosts")
    @classmethod
    def _host_names(cls, value: list[str]) -> list[str]:
        return [host_pattern(entry) for entry in value]

    @model_validator(mode="after")
    def _proxy_header_needs_proxies(self) -> WebConfig:
        # Honoured from any address, the header would let every local process (the backed-up PHP apps
        # among them) name itself an operator.
        if self.proxy_auth_header and not self.trusted_proxies:
            raise ValueError("proxy_auth_header is set but trusted_proxies is empty: the header would be believed "
                             "from any address (give the reverse proxy's address in trusted_proxies, e.g. "
                             "[\"127.0.0.1\"], or remove proxy_auth_header)")
        return self


class Settings(Model):
    """Process-wide settings."""

    state_dir: str | None = None
    lock_wait_seconds: int = Field(default=0, ge=0, description="0: a second run exits; >0: waits this long")
    repository_wait_seconds: int = Field(
        default=4 * 3600, ge=0, description="how long a restic command waits while another safehold run on this "
                                            "host prunes or checks the repository it needs (or the reverse)")
    metrics_textfile: str | None = None
    drill_prefix: str = Field(
        default="safehold_drill_", pattern=r"^[a-z][a-z0-9_]{0,14}_$",
        description="how the names of a drill's scratch databases and folders begin; a drill removes only names "
                    "of exactly its shape (lowercase letters, digits and _, ending in _, at most 16 characters, "
                    "so the names fit MariaDB's 64)")

    _absolute_paths = field_validator("state_dir", "metrics_textfile")(_absolute)


class Config(Model):
    """The whole validated configuration file."""

    settings: Settings = Field(default_factory=Settings)
    repositories: dict[str, RepositoryConfig] = Field(default_factory=dict)
    instances: dict[str, InstanceConfig] = Field(default_factory=dict)
    notify: NotifyConfig = Field(default_factory=NotifyConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)
    web: WebConfig = Field(default_factory=WebConfig)
    source: Path | None = Field(default=None, exclude=True)

    @model_validator(mode="after")
    def _references(self) -> Config:
        for name, instance in self.instances.items():
            if not re.match(NAME_PATTERN, name):
                raise ValueError(f"instance name {name!r} must match {NAME_PATTERN}")
            for repo in instance.repositories:
                if repo not in self.repositories:
                    known = ", ".join(sorted(self.repositories)) or "none defined"
                    raise ValueError(
                        f"instances.{name}.repositories names {repo!r}, not a [repositories.*] ({known})"
                    )
        return self

    @property
    def state_dir(self) -> Path:
        """Where run history, locks and escrowed keys live (0700)."""
        if self.settings.state_dir:
            return Path(self.settings.state_dir).expanduser()
        if os.geteuid() == 0:
            return Path("/var/lib/safehold")
        return Path(os.environ.get("XDG_STATE_HOME", "~/.local/state")).expanduser() / "safehold"

    def own_folders(self) -> dict[str, Path]:
        """safehold's own folders on this host (local repositories, the state folder), by what they are."""
        folders = {f"repository {name}": path for name, repo in self.repositories.items()
                   if (path := repo.local_path()) is not None}
        folders["the state folder"] = self.state_dir
        return folders

    def instance(self, name: str) -> InstanceConfig:
        """The instance called `name`, or a ConfigError listing the known ones."""
        if name not in self.instances:
            known = ", ".join(sorted(self.instances)) or "none"
            raise ConfigError(f"no instance {name!r} in {self.source}", f"known instances: {known}")
        return self.instances[name]

    def select(self, name: str | None) -> dict[str, InstanceConfig]:
        """One named instance, or all of them when `name` is None."""
        if name is None:
            if not self.instances:
                raise ConfigError(f"{self.source} defines no [instances.*]", "add one (see safehold init)")
            return dict(self.instances)
        return {name: self.instance(name)}


def find_config(explicit: Path | None) -> Path:
    """--config, then $SAFEHOLD_CONFIG, then ./safehold.toml, then /etc/safehold/safehold.toml."""
    if explicit is not None:
        candidates: tuple[Path, ...] = (explicit,)
    elif os.environ.get("SAFEHOLD_CONFIG"):
        candidates = (Path(os.environ["SAFEHOLD_CONFIG"]),)
    else:
        candidates = DEFAULT_PATHS
    for path in candidates:
        if path.is_file():
            return path
    raise ConfigError(
        f"no config file found (looked at {', '.join(str(p) for p in candidates)})",
        "run `safehold init` to write one, or `safehold demo` to try safehold without one",
    )


def _format_loc(loc: tuple[object, ...]) -> str:
    return ".".join(str(part) for part in loc if not str(part).startswith("function-after"))


def parse(text: str, source: Path) -> Config:
    """Validate TOML text; errors name the file, the key path and what is allowed."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}", "fix the syntax at that line") from None
    if (key := _nul_in(data)) is not None:
        raise ConfigError(f"{source}: {key}: holds a NUL byte (\\u0000), which no path, name or secret reference "
                          "can", "fix the config file")
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = _format_loc(first["loc"])
        msg = first["msg"].removeprefix("Value error, ")
        if first["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling; `safehold init` writes every allowed key)"
        where = f"{source}: {loc}: " if loc else f"{source}: "
        more = f" (+{len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
        raise ConfigError(f"{where}{msg}{more}", "fix the config file") from None
    config.source = source
    return config


def load(explicit: Path | None = None) -> Config:
    """Find, read and validate the config file."""
    path = find_config(explicit)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}", "check the path and its permissions") from None
    return parse(text, path)
