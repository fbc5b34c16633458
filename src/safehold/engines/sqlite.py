"""SQLite engine: a consistent copy through SQLite's online backup API, restored by atomic rename."""

from __future__ import annotations

import contextlib
import hashlib
import os
import sqlite3
import tempfile
from pathlib import Path
from typing import IO

from safehold.errors import DatabaseError
from safehold.files import make_folder
from safehold.models import Database, DatabaseReport, TableReport
from safehold.output import Reporter

SUFFIX = ".sqlite"
METHOD = "sqlite-backup"
COPY_BUFFER = 1 << 20


def suffix(db: Database) -> str:
    return SUFFIX


def compressed(db: Database) -> bool:
    """A database file: restic compresses it."""
    return False


def _path(db: Database, name: str | None = None) -> Path:
    return Path(name) if name else Path(db.connection.path or db.name)


def _open(path: Path, readonly: bool = True) -> sqlite3.Connection:
    if path.is_dir():
        raise DatabaseError(f"SQLite database {path} is a folder, not a database file",
                            "give the path of the database file itself (path in the config, or --to-db)")
    if not path.is_file():
        raise DatabaseError(f"SQLite database {path} does not exist", "check the path in the config")
    uri = f"file:{path}?mode=ro" if readonly else f"file:{path}"
    try:
        return sqlite3.connect(uri, uri=True)
    except sqlite3.Error as exc:
        raise DatabaseError(f"cannot open SQLite database {path}: {exc}",
                            "check the file and its permissions") from None


def _report(conn: sqlite3.Connection, db: Database, name: str) -> DatabaseReport:
    report = DatabaseReport(key=db.key, engine="sqlite", name=name, method=METHOD,
                            server_version=sqlite3.sqlite_version)
    tables = [r[0] for r in conn.execute(
        "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%' ORDER BY name")]
    for table in tables:
        quoted = '"' + table.replace('"', '""') + '"'
        digest = hashlib.sha256()
        rows = 0
        for row in conn.execute(f"SELECT * FROM {quoted} ORDER BY rowid"):
            digest.update(repr(row).encode())
            rows += 1
        report.tables[table] = TableReport(rows=rows, checksum=digest.hexdigest()[:16])
    for kind, sql_type in (("views", "view"), ("triggers", "trigger"), ("indexes", "index")):
        report.objects[kind] = conn.execute(
            "SELECT COUNT(*) FROM sqlite_master WHERE type=? AND name NOT LIKE 'sqlite_%'", (sql_type,)
        ).fetchone()[0]
    return report


def dump(db: Database, out: IO[bytes], progress: Reporter) -> DatabaseReport:
    """Copy the live database with the online backup API, then stream the copy."""
    source_path = _path(db)
    source = _open(source_path)
    with tempfile.TemporaryDirectory(prefix="safehold-sqlite-") as folder:
        copy_path = Path(folder) / "copy.sqlite"
        target = sqlite3.connect(copy_path)
        try:
            source.backup(target)
        except sqlite3.Error as exc:
            raise DatabaseError(f"SQLite backup of {source_path} failed: {exc}", "check the file") from None
        finally:
            source.close()
        report = _report(target, db, str(source_path))
        target.close()
        size = 0
        with copy_path.open("rb") as fh:
            while block := fh.read(COPY_BUFFER):
                out.write(block)
                size += len(block)
    report.bytes = size
    report.self_reference = ""  # a copy is self-contained
    return report


def restore(db: Database, into: str, stream: IO[bytes], progress: Reporter, method: str = METHOD) -> DatabaseReport:
    """Write the stored copy next to `into` and rename it into place (never a half-written file)."""
    target = Path(into)
    create(db, into)
    fd, temp = tempfile.mkstemp(prefix=".safehold-", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            done = 0
            while block := stream.read(COPY_BUFFER):
                fh.write(block)
                done += len(block)
                progress.advance(f"restore {target.name}", done)
            fh.flush()
            os.fsync(fh.fileno())
        with contextlib.closing(_open(Path(temp))) as check:
            if check.execute("PRAGMA integrity_check").fetchone()[0] != "ok":
                raise DatabaseError(f"restored copy of {target} fails SQLite's integrity check",
                                    "the point is damaged: try an older one")
        os.replace(temp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise
    return inspect(db, into)


def inspect(db: Database, name: str) -> DatabaseReport:
    """Row counts and content checksums per table."""
    with contextlib.closing(_open(_path(db, name))) as conn:
        return _report(conn, db, name)


def exists(db: Database, name: str) -> bool:
    return Path(name).exists()


def is_empty(db: Database, name: str) -> bool:
    """A missing or zero-length file is empty; otherwise one with no tables."""
    path = Path(name)
    if not path.exists() or path.stat().st_size == 0:
        return True
    with contextlib.closing(_open(path)) as conn:
        return conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()[0] == 0


def create(db: Database, name: str) -> None:
    """The folder the database file `name` goes into."""
    make_folder(Path(name).parent, "the folder of SQLite database", "give --to-db a path in a folder")


def drop(db: Database, name: str) -> None:
    for extra in ("", "-wal", "-shm", "-journal"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name + extra)


def check_dump(db: Database) -> None:
    """A file is read in-process, as `inspect` read it: nothing more to prove."""


def check_load(db: Database, method: str) -> None:
    """A file needs no server setting: nothing to check before a load."""


def foreign_reference(method: str, stream: IO[bytes], name: str) -> str | None:
    """An SQLite copy is self-contained: loading it elsewhere never writes into the original."""
    return None


def names(db: Database, prefix: str) -> list[str]:
    """SQLite databases are files, not names on a server: there is nothing to list."""
    return []


def server_version(db: Database) -> str:
    return sqlite3.sqlite_version


def private_server(name: str, point_version: str | None = None, cache: Path | None = None) -> None:
    """A file needs no server: a drill restores SQLite databases into its scratch folder."""
    return None
