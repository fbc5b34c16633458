"""The `mariadb-dump` method: one consistent SQL stream from the reference tool, and `mariadb` to load it.

Kept as the fallback for servers the parallel reader cannot handle. Row counts are taken in a
consistent-snapshot transaction just before the dump starts; under concurrent writes they can
differ slightly from the dump, which the manifest notes.
"""

from __future__ import annotations

import re
from typing import IO

from safehold import runner
from safehold.engines.mariadb import client
from safehold.errors import DatabaseError
from safehold.models import Database, DatabaseReport
from safehold.output import Reporter

SUFFIX = ".sql"
COMPRESSED = False  # plain SQL: restic compresses it
METHOD = "mariadb-dump"
DUMP_OPTIONS = [
    "--single-transaction", "--routines", "--events", "--triggers", "--hex-blob",
    "--default-character-set=utf8mb4", "--skip-dump-date", "--quick", "--max-allowed-packet=1G",
]


def tool_error(exc: runner.ProcessFailed, db: Database) -> DatabaseError:
    """Translate a mariadb/mariadb-dump failure into one line."""
    text = exc.stderr.lower()
    where = db.connection.describe()
    # A failed login says "(using password: …)"; "access denied … to database" (1044) is a missing privilege.
    if "access denied for user" in text and "using password" in text:
        return DatabaseError(f"cannot log in to {where}: access denied", "check the database user and password")
    if "can't connect" in text or "unknown server host" in text:
        return DatabaseError(f"database server {where} is unreachable",
                             f"is MariaDB running and the {'socket' if db.connection.socket else 'host/port'} right?")
    if "set user" in text or "super" in text:
        return DatabaseError(f"{where}: the dump holds views/routines/triggers with another DEFINER",
                             "restore with a user that has the SET USER (or SUPER) privilege")
    if "insufficient privileges" in text or "command denied" in text or "access denied" in text:
        detail = exc.stderr.strip().splitlines()[-1].removeprefix("mariadb-dump: ")
        return DatabaseError(f"{where}: the backup user lacks a privilege ({detail[:200]})",
                             "grant SELECT, SHOW VIEW, TRIGGER, EVENT, LOCK TABLES, RELOAD and SELECT ON mysql.proc")
    if "unknown database" in text:
        return DatabaseError(f"database {db.name!r} does not exist on {where}", "check the database name")
    last = exc.stderr.strip().splitlines()[-1] if exc.stderr.strip() else f"exit {exc.returncode}"
    return DatabaseError(f"{exc.what} failed for {db.name}: {last[:300]}", "see the log for details")


def dump(db: Database, out: IO[bytes], progress: Reporter) -> DatabaseReport:
    """Stream `mariadb-dump` of one database into `out`."""
    before = client.inspect(db, db.name)
    tables = list(before.tables) if db.table_prefix else []
    if db.table_prefix and not tables:
        raise DatabaseError(f"no tables starting with {db.table_prefix!r} in {db.name}",
                            "check the table prefix (db_subname)")
    with client.option_file(db.connection) as options:
        argv = ["mariadb-dump", f"--defaults-extra-file={options}", *DUMP_OPTIONS, "--", db.name, *tables]
        try:
            size = runner.stream_out(argv, out, what="mariadb-dump", secrets=db.connection.secrets())
        except runner.ProcessFailed as exc:
            raise tool_error(exc, db) from None
    before.method = METHOD
    before.bytes = size
    before.notes.append("row counts taken just before the dump; concurrent writes can make them differ")
    return before


def check_dump(db: Database) -> None:
    """Log in with mariadb-dump exactly as a backup will (same option file, so the same transport and
    user) and open the database, dumping nothing: `backup --dry-run` proves the tools' connection too."""
    with client.option_file(db.connection) as options:
        argv = ["mariadb-dump", f"--defaults-extra-file={options}", "--no-data", "--no-create-info",
                "--skip-triggers", "--no-create-db", "--skip-comments", "--", db.name]
        try:
            runner.run(argv, what="mariadb-dump", secrets=db.connection.secrets())
        except runner.ProcessFailed as exc:
            raise tool_error(exc, db) from None


def restore(db: Database, into: str, stream: IO[bytes], progress: Reporter) -> DatabaseReport:
    """Pipe an SQL dump into `mariadb` connected to the database `into`."""
    client.create(db, into)
    with client.option_file(db.connection) as options:
        argv = ["mariadb", f"--defaults-extra-file={options}", "--binary-mode", "--default-character-set=utf8mb4",
                "--max-allowed-packet=1G", "--", into]
        try:
            runner.stream_in(argv, stream, what="mariadb", secrets=db.connection.secrets(),
                             on_bytes=lambda n: progress.advance(f"load {into}", n))
        except runner.ProcessFailed as exc:
            raise tool_error(exc, db) from None
    report = client.inspect(db, into)
    report.method = METHOD
    return report


def foreign_reference(stream: IO[bytes], name: str) -> str | None:
    """The first statement of an SQL dump of `name` that names `name` itself (e.g. `name`.trigger), or None.

    mariadb-dump keeps trigger statements as they were written; one created as `live.trg` is created
    in `live` again when the dump is loaded under another name. Data lines are skipped.
    """
    pattern = re.compile(rb"(?<![A-Za-z0-9_$`])`?" + re.escape(name.encode()) + rb"`?\s*\.")
    for line in stream:
        if line.startswith((b"INSERT INTO", b"--")):
            continue
        if pattern.search(line):
            return line.strip()[:120].decode("utf-8", "replace")
    return None
