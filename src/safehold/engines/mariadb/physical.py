"""The `physical` method: one database's InnoDB files copied by mariadb-backup, put back by IMPORT TABLESPACE.

Chosen per database in the config (`method = "physical"`); the logical dump stays the default
because this copy grows the repository far more after a small change (pages, not rows, change:
bench/RESULTS.md "Physical method"), while its restore does no row parsing and no index build.

Applies only when safehold runs on the database host (socket or loopback address, the server's
datadir readable for a backup, writable for a restore), with a mariadb-backup of the server's own
release, and every table of the database InnoDB and not partitioned; otherwise it refuses in one
line, before anything is written, and names the logical method.

Stream: a header line, a JSON line (database, server release, schema length), the schema
(`mariadb-dump --no-data` with routines, triggers and events, taken before and after the copy and
required equal, so the tables match the files), then mariadb-backup's mbstream to the end; it
goes into the repository as it is made, never staged on disk. Restore: the mbstream is unpacked
next to the datadir (same filesystem, so the files are moved, not copied), `mariadb-backup
--prepare --export` makes it consistent and writes each table's .cfg, the schema is loaded, and
per table the empty tablespace is discarded, the .ibd/.cfg moved in (owned as the database's
folder is) and imported. The staging folder is removed afterwards; the password reaches
mariadb-backup through a 0600 option file, never argv.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import IO

import MySQLdb

from safehold import runner
from safehold.engines.mariadb import client, dumptool, parallel
from safehold.errors import DatabaseError
from safehold.models import Database, DatabaseReport
from safehold.output import Reporter

SUFFIX = ".physical"
COMPRESSED = False  # InnoDB pages: restic compresses them
METHOD = "physical"
MAGIC = b"safehold-physical 1\n"
LOGICAL = 'set method = "auto" for this database (the logical dump works everywhere)'
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}
STAGE_PREFIX = ".safehold-physical-"
# Names mariadb-backup's --databases takes literally and whose file name this module can derive.
PLAIN_NAME = re.compile(r"[A-Za-z0-9_$-]+")
FULLTEXT_NAME = re.compile(r"FULLTEXT KEY (`(?:[^`]|``)+`)")
TROUBLE = re.compile(r"error|fatal|fail|cannot|can't|denied", re.IGNORECASE)
AUTO_INCREMENT = re.compile(rb"(?m)^(\).*) AUTO_INCREMENT=\d+")


def _refuse(db: Database, reason: str) -> DatabaseError:
    return DatabaseError(f"the physical method cannot be used for {db.name}: {reason}", LOGICAL)


def file_name(name: str) -> str:
    """The server's file name for a database or table name (its `filename` character set) for ASCII names."""
    return "".join(c if c.isascii() and (c.isalnum() or c == "_") else f"@{ord(c):04x}" for c in name)


def _release(version: str) -> str:
    """"10.11.19" of "10.11.19-MariaDB-0+deb12u1"."""
    return version.split("-", 1)[0]


def tool_release() -> str | None:
    """The server release this host's mariadb-backup belongs to, or None when it is not installed."""
    try:  # it prints its version on stderr
        done = subprocess.run(["mariadb-backup", "--version"], capture_output=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (done.stdout + done.stderr).decode(errors="replace")
    found = re.search(r"based on MariaDB server (\S+)", text)
    return _release(found.group(1)) if found else None


def check(db: Database, writing: bool) -> tuple[Path, str]:
    """Refuse in one line when the method cannot apply to `db`; returns the server's datadir and version.

    `writing`: for a restore (the datadir must be writable and mbstream installed), else for a backup
    (the database's tables must all be InnoDB and their files where their names say).
    """
    if db.table_prefix:
        raise _refuse(db, "it copies whole databases, not the tables of one prefix")
    if not db.connection.socket and db.connection.host not in LOCAL_HOSTS:
        raise _refuse(db, f"the server is at {db.connection.host}, not on this host")
    if not PLAIN_NAME.fullmatch(db.name):
        raise _refuse(db, "the name holds characters other than letters, digits, _, $ and -")
    with client.cursor(db.connection) as cur:
        cur.execute("SELECT VERSION(), @@datadir")
        version, datadir_text = cur.fetchone()
        tables = [] if writing else _tables(cur, db.name)
    tool = tool_release()
    if tool is None:
        raise _refuse(db, "mariadb-backup is not installed on this host")
    if tool != _release(version):
        raise _refuse(db, f"this host's mariadb-backup is {tool}, the server is {_release(version)}")
    if writing and shutil.which("mbstream") is None:
        raise _refuse(db, "mbstream (package mariadb-backup) is not installed on this host")
    datadir = Path(datadir_text)
    if not os.access(datadir, os.R_OK | os.X_OK | (os.W_OK if writing else 0)):
        raise _refuse(db, f"the server's datadir {datadir} is not {'writable' if writing else 'readable'} here "
                          "(run safehold on the database host as root or the server's user)")
    if not writing:
        _check_tables(db, datadir, tables)
    return datadir, version


def _tables(cur, name: str) -> list[tuple[str, str, str]]:  # noqa: ANN001 - a MySQLdb cursor
    cur.execute("SELECT TABLE_NAME, COALESCE(ENGINE, ''), COALESCE(CREATE_OPTIONS, '') FROM information_schema.TABLES"
                " WHERE TABLE_SCHEMA=%s AND TABLE_TYPE <> 'VIEW' ORDER BY TABLE_NAME", (name,))
    def text(value: str | bytes) -> str:
        return value.decode() if isinstance(value, bytes) else value

    return [(text(name), text(engine), text(options)) for name, engine, options in cur.fetchall()]


def _check_tables(db: Database, datadir: Path, tables: list[tuple[str, str, str]]) -> None:
    folder = datadir / file_name(db.name)
    if not (folder / "db.opt").exists() and not any(folder.glob("*.frm")):
        raise _refuse(db, f"its folder {folder} is not in the datadir here (is the server on this host?)")
    if other := [f"{name} ({engine})" for name, engine, _ in tables if engine.lower() != "innodb"]:
        raise _refuse(db, f"table(s) not in InnoDB: {', '.join(other[:5])}")
    if parted := [name for name, _, options in tables if "partitioned" in options.lower()]:
        raise _refuse(db, f"partitioned table(s): {', '.join(parted[:5])}")
    if unmapped := [name for name, _, _ in tables if not (folder / f"{file_name(name)}.ibd").exists()]:
        raise _refuse(db, f"no data file found for table(s) {', '.join(unmapped[:5])} (names outside ASCII, "
                          "or tables in the system tablespace)")


def _schema(db: Database) -> bytes:
    return parallel.mariadb_dump_of(db, [*dumptool.DUMP_OPTIONS, "--no-data"], [])


def dump(db: Database, out: IO[bytes], progress: Reporter) -> DatabaseReport:
    """Stream the header, the schema and mariadb-backup's copy of `db` into `out`."""
    datadir, version = check(db, writing=False)
    started = time.monotonic()
    report = client.inspect(db, db.name)
    schema = _schema(db)
    head = MAGIC + json.dumps({"database": db.name, "server_version": version, "schema_bytes": len(schema)},
                              sort_keys=True).encode() + b"\n"
    out.write(head + schema)
    report.phases["schema"] = round(time.monotonic() - started, 3)
    t0 = time.monotonic()
    with client.option_file(db.connection) as options, tempfile.TemporaryDirectory(prefix="safehold-mb-") as work:
        # The option file must come first; --datadir: the server's own (a host can run several servers).
        argv = ["mariadb-backup", f"--defaults-extra-file={options}", "--backup", "--stream=mbstream",
                f"--databases={db.name}", f"--datadir={datadir}", f"--target-dir={work}"]
        said: list[str] = []  # its error lines: over a thousand lines of progress can follow them
        try:
            size = runner.stream_out(argv, out, what="mariadb-backup", secrets=db.connection.secrets(),
                                     on_bytes=lambda n: progress.advance(f"copy {db.name}", n),
                                     on_stderr_line=lambda line: said.append(line) if TROUBLE.search(line) else None)
        except runner.ProcessFailed as exc:
            raise _tool_failed(exc, db, said) from None
    report.phases["copy"] = round(time.monotonic() - t0, 3)
    if _without_counters(_schema(db)) != _without_counters(schema):
        raise DatabaseError(f"database {db.name}: its tables or objects changed while they were copied",
                            "back up again when no upgrade or migration is running")
    report.method = METHOD
    report.bytes = len(head) + len(schema) + size
    report.self_reference = dumptool.foreign_reference(io.BytesIO(schema), db.name) or ""
    report.notes.append("row counts taken just before the copy; concurrent writes can make them differ")
    return report


def _without_counters(schema: bytes) -> bytes:
    """The schema without AUTO_INCREMENT counters, which rows written during the copy move."""
    return AUTO_INCREMENT.sub(rb"\1", schema)


def _tool_failed(exc: runner.ProcessFailed, db: Database, said: list[str] | None = None) -> DatabaseError:
    """One line of a mariadb-backup/mbstream failure: the first line that says what went wrong, else its last."""
    lines = [line.strip() for line in [*(said or []), *exc.stderr.splitlines()] if line.strip()]
    line = next((line for line in lines if TROUBLE.search(line)), lines[-1] if lines else "")
    return DatabaseError(f"{exc.what} failed for {db.name} (exit {exc.returncode}): {line[:300]}",
                         "see the log for details")


def _header(stream: IO[bytes]) -> tuple[dict, bytes]:
    if stream.readline() != MAGIC:
        raise DatabaseError("this database file is not a physical copy made by safehold", "this is a bug: report it")
    meta = json.loads(stream.readline())
    schema = _read_exactly(stream, int(meta["schema_bytes"]))
    return meta, schema


def _read_exactly(stream: IO[bytes], size: int) -> bytes:
    parts, left = [], size
    while left and (part := stream.read(left)):
        parts.append(part)
        left -= len(part)
    if left:
        raise DatabaseError("the physical copy ends inside its schema", "restore another point")
    return b"".join(parts)


def check_load(db: Database) -> None:
    """Refuse, while nothing is changed yet, a restore this host cannot do physically."""
    check(db, writing=True)


def restore(db: Database, into: str, stream: IO[bytes], progress: Reporter) -> DatabaseReport:
    """Unpack, prepare and import a physical copy into the empty database `into`."""
    datadir, version = check(db, writing=True)
    meta, schema = _header(stream)
    if _release(meta["server_version"]) != _release(version):
        raise _refuse(db, f"the copy was made on MariaDB {_release(meta['server_version'])}, this server is "
                          f"{_release(version)} (restore on a server of that release)")
    timings: dict[str, float] = {}
    t0 = time.monotonic()
    stage = _stage(datadir.parent)
    try:
        try:
            runner.stream_in(["mbstream", "-x", "-C", str(stage)], stream, what="mbstream",
                             on_bytes=lambda n: progress.advance(f"unpack {into}", n))
            timings["unpack"] = round(time.monotonic() - t0, 3)
            runner.run(["mariadb-backup", "--prepare", "--export", f"--target-dir={stage}"],
                       what="mariadb-backup --prepare")
        except runner.ProcessFailed as exc:
            raise _tool_failed(exc, db) from None
        timings["prepare"] = round(time.monotonic() - t0 - timings["unpack"], 3)
        t1 = time.monotonic()
        dumptool.restore(db, into, io.BytesIO(schema), progress)
        _import(db, into, stage / file_name(meta["database"]), datadir / file_name(into))
        timings["import"] = round(time.monotonic() - t1, 3)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    report = client.inspect(db, into)
    report.method = METHOD
    report.phases = timings
    return report


def _stage(parent: Path) -> Path:
    """A new staging folder beside the datadir (the files then move in by rename), after removing those
    of restores that were killed (their process is gone); in the temporary folder if that is not writable."""
    for old in parent.glob(f"{STAGE_PREFIX}*"):
        pid = old.name.removeprefix(STAGE_PREFIX).split("-", 1)[0]
        if pid.isdigit() and not runner.process_alive(int(pid)):
            shutil.rmtree(old, ignore_errors=True)
    try:
        return Path(tempfile.mkdtemp(prefix=f"{STAGE_PREFIX}{os.getpid()}-", dir=parent))
    except OSError:
        return Path(tempfile.mkdtemp(prefix=f"{STAGE_PREFIX}{os.getpid()}-"))


def _import(db: Database, into: str, source: Path, target: Path) -> None:
    """Swap each table's empty tablespace for the copied one: DISCARD, move .ibd/.cfg in, IMPORT."""
    owner = target.stat()
    connection = client.connect(db.connection, into)
    try:
        cur = connection.cursor()
        cur.execute("SET SESSION foreign_key_checks=0")
        tables = client.base_tables(cur, into)
        if missing := [t for t in tables if not (source / f"{file_name(t)}.ibd").exists()]:
            raise DatabaseError(f"the physical copy of {db.name} has no data for table(s) {', '.join(missing[:5])}",
                                "restore another point")
        counters = _counters(cur, into)
        cur.execute("SELECT DISTINCT TABLE_NAME FROM information_schema.STATISTICS WHERE TABLE_SCHEMA=%s"
                    " AND INDEX_TYPE='FULLTEXT'", (into,))
        fulltext = {row[0] for row in cur.fetchall()}
        for table in tables:
            cur.execute(f"ALTER TABLE {client.quote(table)} DISCARD TABLESPACE")
            for suffix in (".ibd", ".cfg"):
                moved = target / f"{file_name(table)}{suffix}"
                shutil.move(source / moved.name, moved)  # a rename: the stage is on the datadir's filesystem
                os.chown(moved, owner.st_uid, owner.st_gid)
            cur.execute(f"ALTER TABLE {client.quote(table)} IMPORT TABLESPACE")
            (target / f"{file_name(table)}.cfg").unlink()
            if table in fulltext:
                _rebuild_fulltext(cur, table)  # before any other ALTER: none passes a corrupt FULLTEXT index
        # A file holds the highest value used; the schema has the server's counter, which bulk inserts move
        # further (values reserved, not used). Put back those the import left lower.
        for table, value in _counters(cur, into).items():
            if value < counters.get(table, 0):
                cur.execute(f"ALTER TABLE {client.quote(table)} AUTO_INCREMENT={counters[table]}")
    except MySQLdb.Error as exc:
        raise client.explain(exc, db.connection, into) from None
    finally:
        connection.close()


def _counters(cur, into: str) -> dict[str, int]:  # noqa: ANN001 - a MySQLdb cursor
    cur.execute("SELECT TABLE_NAME, AUTO_INCREMENT FROM information_schema.TABLES WHERE TABLE_SCHEMA=%s"
                " AND AUTO_INCREMENT IS NOT NULL", (into,))
    return {name: int(value) for name, value in cur.fetchall()}


def _rebuild_fulltext(cur, table: str) -> None:  # noqa: ANN001 - a MySQLdb cursor
    """Build an imported table's FULLTEXT indexes anew: IMPORT TABLESPACE leaves them corrupt (their words live
    in tables of their own), and on 10.11 dropping and re-adding one in place crashed the server. One ALTER with
    ALGORITHM=COPY rebuilds the table with them; FULLTEXT keys come last in a table's definition, so re-added in
    their order they keep their place (and the restored copy's `mariadb-dump` stays byte-identical)."""
    cur.execute(f"SHOW CREATE TABLE {client.quote(table)}")
    definition = cur.fetchone()[1]
    keys = [line.strip().rstrip(",") for line in definition.splitlines() if line.strip().startswith("FULLTEXT KEY")]
    if not keys:
        return
    drops = [f"DROP INDEX {FULLTEXT_NAME.match(key)[1]}" for key in keys]  # type: ignore[index]
    cur.execute(f"ALTER TABLE {client.quote(table)} {', '.join(drops + [f'ADD {k}' for k in keys])}, ALGORITHM=COPY")


def foreign_reference(stream: IO[bytes], name: str) -> str | None:
    """A statement of the copy's schema that names `name` itself (see dumptool.foreign_reference)."""
    return dumptool.foreign_reference(io.BytesIO(_header(stream)[1]), name)
