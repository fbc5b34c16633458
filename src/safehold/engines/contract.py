"""The contract every database engine module fulfils; `ENGINES` is typed with it, so mypy checks each
engine module against it (modules implement protocols as classes do)."""

from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path
from typing import IO, Protocol

from safehold.engines.scratch import Server
from safehold.models import Database, DatabaseReport
from safehold.output import Reporter


class Engine(Protocol):
    """A database engine: dump, restore, inspect and manage databases of one kind of server."""

    def suffix(self, db: Database) -> str:
        """File name suffix of the stream `dump` writes (".sql", ".tar", ".sqlite")."""
        ...

    def compressed(self, db: Database) -> bool:
        """True when that stream is compressed already (restic then stores it as is)."""
        ...

    def dump(self, db: Database, out: IO[bytes], progress: Reporter) -> DatabaseReport:
        """Write one consistent dump of `db` to `out` (never a full temporary copy for server databases)."""
        ...

    def restore(self, db: Database, into: str, stream: IO[bytes], progress: Reporter,
                method: str) -> DatabaseReport:
        """Load a dump written by `method` into the database (or file) `into`, which exists and is empty."""
        ...

    def inspect(self, db: Database, name: str) -> DatabaseReport:
        """Row counts (and checksums where cheap) of a live database."""
        ...

    def is_empty(self, db: Database, name: str) -> bool:
        """Missing, or holding no tables, views or routines."""
        ...

    def exists(self, db: Database, name: str) -> bool:
        """Whether database `name` exists on db's server."""
        ...

    def create(self, db: Database, name: str) -> None:
        """Create database `name` (or the folder of a database file)."""
        ...

    def drop(self, db: Database, name: str) -> None:
        """Remove database `name`."""
        ...

    def names(self, db: Database, prefix: str) -> list[str]:
        """Databases on db's server whose name starts with `prefix` ([] for file-based engines)."""
        ...

    def check_dump(self, db: Database) -> None:
        """Raise when the dump tool would not get in the way `inspect` did (`backup --dry-run`)."""
        ...

    def check_load(self, db: Database, method: str) -> None:
        """Raise when db's server would refuse to load a dump written by `method`."""
        ...

    def foreign_reference(self, method: str, stream: IO[bytes], name: str) -> str | None:
        """A statement in a dump of `name` that names `name` itself (None if none)."""
        ...

    def server_version(self, db: Database) -> str:
        """The server's version string."""
        ...

    def private_server(self, name: str, point_version: str | None = None,
                       cache: Path | None = None) -> AbstractContextManager[Server] | None:
        """A throwaway server from this host's binaries for a drill, or None."""
        ...
