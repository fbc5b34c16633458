"""MariaDB/MySQL engine: the engine interface, dispatching to a dump method.

Methods: `parallel` (default for `auto`: consistent multi-connection reader, parallel load; see
parallel.py), `mariadb-dump` (single consistent SQL stream from the reference tool, the fallback) and
`physical` (mariadb-backup's copy of the InnoDB files, chosen in the config; see physical.py).
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path
from typing import IO

from safehold.engines.mariadb import client, dumptool, parallel, physical, scratch_server
from safehold.engines.scratch import Server
from safehold.models import Database, DatabaseReport
from safehold.output import Reporter

METHODS = {"parallel": parallel, "mariadb-dump": dumptool, "physical": physical}


def _method(db: Database):  # noqa: ANN202 - returns a method module
    name = "parallel" if db.method == "auto" else db.method
    return METHODS[name]


def suffix(db: Database) -> str:
    """File suffix of the stream `dump` writes for this database."""
    return _method(db).SUFFIX


def compressed(db: Database) -> bool:
    """True when the stream `dump` writes is compressed already."""
    return _method(db).COMPRESSED


def dump(db: Database, out: IO[bytes], progress: Reporter) -> DatabaseReport:
    """Write one consistent dump of `db` to `out`."""
    return _method(db).dump(db, out, progress)


def restore(db: Database, into: str, stream: IO[bytes], progress: Reporter, method: str) -> DatabaseReport:
    """Load a dump written by `method` into the empty database `into`."""
    return METHODS[method].restore(db, into, stream, progress)


def check_load(db: Database, method: str) -> None:
    """Refuse a server that would refuse the load (LOAD DATA LOCAL INFILE off, or a physical copy it cannot
    take here) while nothing is changed yet."""
    if method == parallel.METHOD:
        client.require_local_infile(db)
    if method == physical.METHOD:
        physical.check_load(db)


def foreign_reference(method: str, stream: IO[bytes], name: str) -> str | None:
    """A statement in a dump of `name` that would write into `name` even when loaded under another name."""
    return METHODS[method].foreign_reference(stream, name)


def private_server(name: str, point_version: str | None = None,
                   cache: Path | None = None) -> AbstractContextManager[Server] | None:
    """A throwaway MariaDB server for a drill (see scratch_server.py), or None without local binaries."""
    return scratch_server.private_server(name, point_version, cache) if scratch_server.available() else None


def check_dump(db: Database) -> None:
    """Log in as the dump tool will (`backup --dry-run`); for the physical method, also refuse when it cannot apply."""
    dumptool.check_dump(db)
    if db.method == physical.METHOD:
        physical.check(db, writing=False)


inspect = client.inspect
is_empty = client.is_empty
exists = client.exists
create = client.create
drop = client.drop
names = client.names
server_version = client.server_version
