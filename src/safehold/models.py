"""Typed values passed between layers: what an instance is made of, and what a run produced."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from safehold.secrets import Secret


@dataclass(frozen=True)
class Connection:
    """How to reach a database server (or an SQLite file, when `path` is set)."""

    engine: str  # mariadb | postgres | sqlite
    host: str = "127.0.0.1"
    port: int | None = None
    socket: str | None = None
    user: str | None = None
    password: Secret | None = None
    path: Path | None = None

    def describe(self) -> str:
        """Where the server is and how it is reached (socket path or host:port), without credentials."""
        if self.path is not None:
            return str(self.path)
        user = f"{self.user}@" if self.user else ""
        if self.socket:
            return f"{self.engine} {user}localhost via socket {self.socket}"
        return f"{self.engine} {user}{self.host}:{self.port or default_port(self.engine)}"

    def secrets(self) -> list[Secret]:
        """What a client tool run against this server must keep out of its output (the password, if any)."""
        return [self.password] if self.password else []


def default_port(engine: str) -> int:
    """The engine's standard TCP port."""
    return {"mariadb": 3306, "postgres": 5432}.get(engine, 0)


@dataclass(frozen=True)
class Database:
    """One database to protect: its server, its name and (iTop) the table prefix it owns."""

    connection: Connection
    name: str
    table_prefix: str | None = None
    method: str = "auto"
    workers: int | None = None

    @property
    def key(self) -> str:
        """Stable identifier of this database inside a recovery point, e.g. `mariadb-itflow`."""
        base = self.connection.path.name if self.connection.path else self.name
        return f"{self.connection.engine}-{base}".replace("/", "_")


@dataclass
class Instance:
    """What one application instance consists of, as a profile describes it."""

    name: str
    app: str
    root: Path | None
    databases: list[Database] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)
    config_files: list[Path] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)
    app_version: str | None = None
    schema_version: str | None = None
    owner: str | None = None
    details: dict[str, object] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)  # said by a backup and kept in its point


@dataclass
class TableReport:
    """Per-table facts recorded at backup and compared after restore."""

    rows: int
    checksum: str | None = None
    read: str | None = None  # snapshot | locked | unlocked: how the dump read it (None: not recorded)


@dataclass
class DatabaseReport:
    """What an engine recorded about one database dump or restore."""

    key: str
    engine: str
    name: str
    method: str
    tables: dict[str, TableReport] = field(default_factory=dict)
    objects: dict[str, int] = field(default_factory=dict)  # views, routines, triggers, events
    server_version: str | None = None
    bytes: int = 0
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # said by the backup and kept in the point's warnings
    phases: dict[str, float] = field(default_factory=dict)  # seconds per phase (load, indexes…)
    # A statement of the dump that names the database itself ("" = none; None = not known at dump time).
    self_reference: str | None = None
