"""PostgreSQL engine: `pg_dump -Fc` streamed into the repository, `pg_restore` streamed back.

The custom format is written uncompressed (-Z0): restic compresses and deduplicates, and stable
bytes from night to night deduplicate far better than a compressed stream. The password reaches
the tools through a 0600 PGPASSFILE, never argv. Row counts come from the same server just before
the dump; under concurrent writes they can differ slightly, which the manifest notes.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import IO

from safehold import runner
from safehold.engines import postgres_scratch
from safehold.engines.scratch import Server
from safehold.errors import DatabaseError
from safehold.models import Database, DatabaseReport, TableReport, default_port
from safehold.output import Reporter
from safehold.secrets import secret_text_file

SUFFIX = ".pgdump"
METHOD = "pg_dump"
TABLES_QUERY = ("SELECT quote_ident(schemaname) || '.' || quote_ident(tablename) FROM pg_tables"
                " WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1")
FIELD_SEPARATOR = "\x1f"  # ASCII unit separator: never inside a name or a version
OBJECT_QUERIES = {
    "views": "SELECT count(*) FROM pg_views WHERE schemaname NOT IN ('pg_catalog','information_schema')",
    "routines": "SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace"
                " WHERE n.nspname NOT IN ('pg_catalog','information_schema')",
    "triggers": "SELECT count(*) FROM pg_trigger WHERE NOT tgisinternal",
    "sequences": "SELECT count(*) FROM pg_sequences",
}


def suffix(db: Database) -> str:
    return SUFFIX


def compressed(db: Database) -> bool:
    """pg_dump -Z0: restic compresses it."""
    return False


@contextlib.contextmanager
def _environment(db: Database, name: str) -> Iterator[dict[str, str]]:
    conn = db.connection
    env = {"PGHOST": conn.socket or conn.host, "PGPORT": str(conn.port or default_port("postgres")),
           "PGUSER": conn.user or "postgres", "PGDATABASE": name, "PGCONNECT_TIMEOUT": "10"}
    if conn.password is None:
        yield env
        return
    escaped = conn.password.reveal().replace("\\", "\\\\").replace(":", "\\:")
    with secret_text_file("pgpass", f"*:*:*:*:{escaped}") as passfile:
        yield {**env, "PGPASSFILE": str(passfile)}


def _error(exc: runner.ProcessFailed, db: Database, name: str) -> DatabaseError:
    text = exc.stderr.lower()
    where = db.connection.describe()
    if "password authentication failed" in text or "no password supplied" in text:
        return DatabaseError(f"cannot log in to {where}: authentication failed", "check the user and password")
    if re.search(r'role "[^"]*" does not exist', text):
        return DatabaseError(f"cannot log in to {where}: the server has no such user", "check the database user")
    if "connection refused" in text or "could not connect" in text or "timeout expired" in text:
        return DatabaseError(f"database server {where} is unreachable", "is PostgreSQL running and the port right?")
    if "does not exist" in text and "database" in text:
        return DatabaseError(f"database {name!r} does not exist on {where}", "check the database name")
    if "permission denied" in text:
        return DatabaseError(f"{where}: permission denied on {name}", "grant the backup user read access")
    last = exc.stderr.strip().splitlines()[-1] if exc.stderr.strip() else f"exit {exc.returncode}"
    return DatabaseError(f"{exc.what} failed for {name}: {last[:300]}", "see the log for details")


def _psql(db: Database, name: str, query: str, separator: str = "|") -> list[str]:
    with _environment(db, name) as env:
        try:
            out = runner.run(["psql", "-X", "-At", "-F", separator, "-v", "ON_ERROR_STOP=1", "-c", query],
                             what="psql", env=env, secrets=db.connection.secrets())
        except runner.ProcessFailed as exc:
            raise _error(exc, db, name) from None
    return [line for line in out.decode().splitlines() if line]


def rows(db: Database, name: str, query: str) -> list[list[str]]:
    """The rows of a read query in database `name`, every field as text (NULL as '')."""
    return [line.split(FIELD_SEPARATOR) for line in _psql(db, name, query, FIELD_SEPARATOR)]


def _maintenance(db: Database, query: str) -> None:
    _psql(db, "postgres", query)


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def inspect(db: Database, name: str) -> DatabaseReport:
    """Exact row counts per table and object counts."""
    report = DatabaseReport(key=db.key, engine="postgres", name=name, method="inspect")
    tables = _psql(db, name, TABLES_QUERY)
    if tables:
        union = " UNION ALL ".join(f"SELECT '{t.replace(chr(39), chr(39) * 2)}', count(*) FROM {t}" for t in tables)
        for line in _psql(db, name, union):
            table, _, rows = line.rpartition("|")
            report.tables[table] = TableReport(rows=int(rows))
    for kind, query in OBJECT_QUERIES.items():
        report.objects[kind] = int(_psql(db, name, query)[0])
    report.server_version = _psql(db, name, "SHOW server_version")[0]
    return report


def dump(db: Database, out: IO[bytes], progress: Reporter) -> DatabaseReport:
    """Stream `pg_dump -Fc -Z0` of one database into `out`."""
    report = inspect(db, db.name)
    with _environment(db, db.name) as env:
        try:
            size = runner.stream_out(["pg_dump", "-Fc", "-Z0", "--no-password", "--", db.name], out, what="pg_dump",
                                     env=env, secrets=db.connection.secrets())
        except runner.ProcessFailed as exc:
            raise _error(exc, db, db.name) from None
    report.method, report.bytes = METHOD, size
    report.self_reference = ""  # a PostgreSQL database cannot write into another one
    report.notes.append("row counts taken just before the dump; concurrent writes can make them differ")
    return report


def restore(db: Database, into: str, stream: IO[bytes], progress: Reporter, method: str = METHOD) -> DatabaseReport:
    """Stream a custom-format dump into `pg_restore` connected to the empty database `into`."""
    create(db, into)
    with _environment(db, into) as env:
        argv = ["pg_restore", "--no-password", "--no-owner", "--exit-on-error", "-d", into]
        try:
            runner.stream_in(argv, stream, what="pg_restore", env=env, secrets=db.connection.secrets(),
                             on_bytes=lambda n: progress.advance(f"load {into}", n))
        except runner.ProcessFailed as exc:
            raise _error(exc, db, into) from None
    report = inspect(db, into)
    report.method = METHOD
    return report


def exists(db: Database, name: str) -> bool:
    literal = name.replace("'", "''")
    return _psql(db, "postgres", f"SELECT count(*) FROM pg_database WHERE datname = '{literal}'")[0] == "1"


def is_empty(db: Database, name: str) -> bool:
    """Missing, or no tables, views or functions outside the system schemas."""
    if not exists(db, name):
        return True
    return not _psql(db, name, TABLES_QUERY) and all(
        _psql(db, name, OBJECT_QUERIES[k])[0] == "0" for k in ("views", "routines"))


def create(db: Database, name: str) -> None:
    if not exists(db, name):
        _maintenance(db, f"CREATE DATABASE {_quote(name)}")


def drop(db: Database, name: str) -> None:
    """Drop the database; an application's own role that may not create databases (NetBox's, as its guide makes
    it) instead drops everything it owns inside it, so the database it could not create again stays."""
    if exists(db, name) and not _can_create_databases(db):
        _psql(db, name, "DROP OWNED BY CURRENT_USER")
        return
    _maintenance(db, f"DROP DATABASE IF EXISTS {_quote(name)} WITH (FORCE)")


def _can_create_databases(db: Database) -> bool:
    return _psql(db, "postgres", "SELECT rolsuper OR rolcreatedb FROM pg_roles WHERE rolname = current_user") == ["t"]


def names(db: Database, prefix: str) -> list[str]:
    """Databases on the server whose name starts with `prefix`."""
    pattern = prefix.replace("'", "''").replace("\\", "\\\\").replace("_", "\\_").replace("%", "\\%")
    return sorted(_psql(db, "postgres", f"SELECT datname FROM pg_database WHERE datname LIKE '{pattern}%'"))


def check_dump(db: Database) -> None:
    """Nothing more to prove: `inspect` ran psql with the environment pg_dump gets (same libpq, host, user)."""


def check_load(db: Database, method: str) -> None:
    """pg_restore needs no server setting a restore could lack: nothing to check before a load."""


def foreign_reference(method: str, stream: IO[bytes], name: str) -> str | None:
    """A PostgreSQL database cannot write into another one: a dump is always safe to load elsewhere."""
    return None


def server_version(db: Database) -> str:
    return _psql(db, "postgres", "SHOW server_version")[0]


def private_server(name: str, point_version: str | None = None,
                   cache: Path | None = None) -> AbstractContextManager[Server] | None:
    """A throwaway PostgreSQL server for a drill (see postgres_scratch.py), or None without local binaries."""
    if not postgres_scratch.available(point_version):
        return None
    return postgres_scratch.private_server(name, point_version, cache)
