"""Database engines. Every engine module exposes the same functions:

- `suffix(db) -> str`: file name suffix of the stream `dump` will write (".sql", ".tar", ".sqlite").
- `compressed(db) -> bool`: True when that stream is compressed already (restic then stores it as is
  instead of spending CPU on compressing it again).
- `dump(db, out, progress) -> DatabaseReport`: write one consistent dump of `db` to the binary
  stream `out` (never a full temporary copy on disk for server databases).
- `restore(db, into, stream, progress, method) -> DatabaseReport`: load a dump (written by
  `method`, as recorded in the manifest) read from `stream` into the
  database named `into` (or file path, for SQLite), which must exist and be empty.
- `inspect(db, name) -> DatabaseReport`: row counts (and checksums where cheap) of a live database.
- `is_empty(db, name) -> bool`, `exists(db, name) -> bool`, `create(db, name)`, `drop(db, name)`.
- `names(db, prefix) -> list[str]`: databases on db's server whose name starts with `prefix`
  (the drill finds its leftover scratch databases this way; [] for file-based engines).
- `check_dump(db)`: raise when the dump tool would not get in the way `inspect` did (same transport,
  user and database); `backup --dry-run` calls it.
- `check_load(db, method)`: raise when db's server would refuse to load a dump written by `method` (a
  restore asks before it changes anything).
- `foreign_reference(method, stream, name) -> str | None`: a statement in a dump of database `name`
  that names `name` itself, so loading it under another name would write into `name` (None if none).
- `server_version(db) -> str`.
- `private_server(name, point_version, cache) -> context manager of scratch.Server | None`: a
  throwaway server started from this host's binaries for a drill (socket only, removed on exit),
  None when the binaries are missing (or the engine needs no server).
"""

from __future__ import annotations

from types import ModuleType

from safehold.engines import mariadb, postgres, sqlite

ENGINES: dict[str, ModuleType] = {"mariadb": mariadb, "postgres": postgres, "sqlite": sqlite}


def engine_for(engine: str) -> ModuleType:
    """The engine module for a connection's engine name."""
    from safehold.errors import ConfigError

    if engine not in ENGINES:
        raise ConfigError(f"database engine {engine!r} is not supported yet", f"use one of {sorted(ENGINES)}")
    return ENGINES[engine]
