"""The `parallel` method: consistent multi-connection dump and parallel load of MariaDB/MySQL.

Dump: mariadb-dump writes the schema (tables and views) and the post-data objects (triggers,
routines, events); then N connections in one snapshot (see snapshot.py) read key ranges of the
tables, the server formatting each row as LOAD DATA text, and the rows go out in key order as
content-defined chunks of a deterministic tar stream (see stream.py), ending with row counts and
CRC32 per table. A table with wide columns (text, blobs) is read as two column groups written as
two chunk streams one after the other (the wide one waits in a temporary file), so updating a
status or a timestamp re-stores the narrow stream only; the restore pairs their lines back.

Restore: tables are created without secondary indexes and foreign keys (a dominant table of wide
rows keeps its indexes: see Table.keep_indexes), chunks are loaded on N connections, one table per
connection at a time (LOAD DATA LOCAL INFILE, checks off), each table's secondary indexes built as
soon as its rows are in (while the next tables load), then foreign keys added, and
triggers/routines/events created last so no trigger fires during the load. Row counts and CRC32
of what was loaded are compared with the stream's report.

Memory bound (dump): workers × (QUEUE_DEPTH + 1) × PIECE_BYTES (5 MiB per worker) of row pieces,
plus (workers + 3) × CHUNK_MAX (4 MiB) for the chunk being cut and those being compressed and
written, plus the largest single row: about 40 MiB with 2 workers; (restore): one compressed
chunk per lane plus its decompressed scratch file (in /dev/shm when available), and on disk a
spool of compressed chunks read ahead of the lanes, at most SPOOL_BYTES (2 GiB). Both are
independent of database size. On disk, temporarily: the compressed wide columns of the split
table being dumped, and the compressed narrow columns of the split table being restored.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
import tempfile
import time
import zlib
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import IO, Any, TypedDict

import MySQLdb
import zstandard

from safehold import runner
from safehold.engines.mariadb import client, dumptool, handscript
from safehold.engines.mariadb.loader import ChunkLoader, run_statements, session
from safehold.engines.mariadb.reader import ParallelReader, plan
from safehold.engines.mariadb.schema import Deferred, defer, split, statements
from safehold.engines.mariadb.snapshot import Snapshot
from safehold.engines.mariadb.stream import (
    CHUNK_MIN,
    POST_MEMBER,
    REPORT_MEMBER,
    SCHEMA_MEMBER,
    SCRIPT_MEMBER,
    TABLES_MEMBER,
    WIDE_SUFFIX,
    Chunker,
    TarWriter,
    Zipper,
    compress,
    data_member,
    data_part,
    members,
    read_frame,
    table_checksum,
    write_frame,
)
from safehold.engines.mariadb.tables import Table, describe, mark_dominant
from safehold.errors import DatabaseError
from safehold.models import Database, DatabaseReport, TableReport
from safehold.output import Reporter
from safehold.tempdirs import room_in

SUFFIX = ".tar"
COMPRESSED = True  # every row chunk is a zstd frame
METHOD = "parallel"
# 2: tables with wide columns travel as two streams (see stream.py); 3: wide values always come raw
# and last in a line, also in tables that are not split (Table.wide_last)
FORMAT = 3
SCHEMA_OPTIONS = ["--single-transaction", "--no-data", "--skip-triggers", "--skip-dump-date",
                  "--default-character-set=utf8mb4", "--max-allowed-packet=1G"]
POST_OPTIONS = ["--single-transaction", "--no-data", "--no-create-info", "--triggers", "--skip-dump-date",
                "--default-character-set=utf8mb4", "--max-allowed-packet=1G"]


class _Sums(TypedDict):
    """The table being dumped so far: its rows and the CRC32 of its narrow and of its wide stream."""

    rows: int
    crc: list[int]


class _Joined(TypedDict):
    """The split table being restored and its paired lines not yet loaded."""

    table: Table | None
    rows: bytearray


def workers(db: Database) -> int:
    """Connections to use: configured, else one per CPU (at least 2 so reading overlaps writing)."""
    return db.workers or max(2, os.cpu_count() or 2)


def mariadb_dump_of(db: Database, options: list[str], objects: list[str]) -> bytes:
    """`mariadb-dump OPTIONS -- DB OBJECTS` of `db`, whole in memory (schema and post-data objects, never rows)."""
    with client.option_file(db.connection) as defaults:
        argv = ["mariadb-dump", f"--defaults-extra-file={defaults}", *options, "--", db.name, *objects]
        try:
            return runner.run(argv, what="mariadb-dump", secrets=db.connection.secrets())
        except runner.ProcessFailed as exc:
            raise dumptool.tool_error(exc, db) from None


def _run_sql(db: Database, into: str, script: bytes) -> None:
    """Run a mariadb-dump script (DELIMITER blocks, conditional comments) with the mariadb client."""
    if not script.strip():
        return
    with client.option_file(db.connection) as defaults:
        argv = ["mariadb", f"--defaults-extra-file={defaults}", "--binary-mode", "--default-character-set=utf8mb4",
                "--max-allowed-packet=1G", "--", into]
        try:
            runner.run(argv, what="mariadb", input=script, secrets=db.connection.secrets())
        except runner.ProcessFailed as exc:
            raise dumptool.tool_error(exc, db) from None


def _objects(db: Database) -> tuple[list[Table], list[str], dict[str, int], str, list[str]]:
    """Tables, prefixed views (iTop), object counts, server version and database charset/collation."""
    with client.cursor(db.connection, db.name) as cur:
        tables = describe(cur, db.name, db.table_prefix)
        # Non-transactional tables first: they are read under the global lock, which ends once they are done.
        tables.sort(key=lambda t: (t.transactional, t.name))
        for index, table in enumerate(tables):
            table.index = index
        views: list[str] = []
        if db.table_prefix:
            cur.execute("SELECT TABLE_NAME FROM information_schema.VIEWS WHERE TABLE_SCHEMA=%s", (db.name,))
            views = sorted(v for (v,) in cur.fetchall() if v.startswith(db.table_prefix))
        counts = {}
        for kind, query in client.OBJECT_QUERIES.items():
            cur.execute(query, (db.name,))
            counts[kind] = int(cur.fetchone()[0])
        cur.execute("SELECT VERSION()")
        version = str(cur.fetchone()[0])
        cur.execute("SELECT DEFAULT_CHARACTER_SET_NAME, DEFAULT_COLLATION_NAME FROM information_schema.SCHEMATA"
                    " WHERE SCHEMA_NAME=%s", (db.name,))
        charset = [str(v) for v in cur.fetchone()]
    return tables, views, counts, version, charset


def dump(db: Database, out: IO[bytes], progress: Reporter) -> DatabaseReport:
    """Write schema, rows (parallel, one snapshot) and post-data objects of `db` as one tar stream."""
    report = DatabaseReport(key=db.key, engine="mariadb", name=db.name, method=METHOD)
    started = time.monotonic()
    tables, views, report.objects, report.server_version, charset = _objects(db)
    mark_dominant(tables)
    if db.table_prefix and not tables:
        raise DatabaseError(f"no tables starting with {db.table_prefix!r} in {db.name}",
                            "check the table prefix (db_subname)")
    selection = sorted([t.name for t in tables] + views) if db.table_prefix else []
    post_options = POST_OPTIONS + ([] if db.table_prefix else ["--routines", "--events"])
    with ThreadPoolExecutor(2) as pool:  # two independent mariadb-dump runs: overlap their round trips
        schema_run = pool.submit(mariadb_dump_of, db, SCHEMA_OPTIONS, selection)
        post_run = pool.submit(mariadb_dump_of, db, post_options, selection)
        schema, post = schema_run.result(), post_run.result()
    report.phases["schema"] = round(time.monotonic() - started, 3)
    writer = TarWriter(out)
    header = {"format": FORMAT, "database": db.name, "charset": charset, "tables": [t.to_json() for t in tables]}
    writer.add(TABLES_MEMBER, json.dumps(header, indent=1).encode())
    writer.add(SCRIPT_MEMBER, handscript.script(header).encode())
    writer.add(SCHEMA_MEMBER, schema)
    writer.add(POST_MEMBER, post)
    report.self_reference = dumptool.foreign_reference(io.BytesIO(post), db.name) or ""
    t0 = time.monotonic()
    snapshot = Snapshot(db, workers(db), tables)
    report.notes += snapshot.notes
    try:
        with client.cursor(db.connection, db.name) as cur:
            tasks = plan(cur, db.name, tables)
        progress.step(f"reading {len(tables)} tables of {db.name} in {len(tasks)} ranges "
                      f"on {len(snapshot.connections)} connection(s)")
        reader = ParallelReader(snapshot, tasks)
        try:
            _write_rows(reader, tasks, writer, report, len(snapshot.connections) + 1)
        except MySQLdb.Error as exc:
            raise client.explain(exc, db.connection, db.name) from None
        finally:
            reader.close()
    finally:
        snapshot.unlock()
        snapshot.close()
    report.phases["data"] = round(time.monotonic() - t0, 3)
    report.phases["global lock"] = snapshot.lock_seconds
    _record_reads(db, tables, snapshot.lock, report)
    summary = {"tables": {name: {"rows": t.rows, "checksum": t.checksum} for name, t in report.tables.items()},
               "objects": report.objects}
    writer.add(REPORT_MEMBER, json.dumps(summary, indent=1, sort_keys=True).encode())
    writer.close()
    report.bytes = writer.size  # the stored file's size, which `verify` compares
    return report


def _record_reads(db: Database, tables: list[Table], lock: str | None, report: DatabaseReport) -> None:
    """How each table was read (`snapshot`, `locked`, `unlocked`); unlocked ones are a warning."""
    for table in tables:
        report.tables[table.name].read = "snapshot" if table.transactional else "locked" if lock else "unlocked"
    if unlocked := [t.name for t in tables if report.tables[t.name].read == "unlocked"]:
        report.warnings.append(f"database {db.name}: non-transactional table(s) {', '.join(unlocked)} read without "
                               "a lock, so writes during the backup can leave them inconsistent with the rest — "
                               f"grant the backup user LOCK TABLES on {db.name} (or RELOAD)")


def _write_rows(reader: ParallelReader, tasks: list, writer: TarWriter, report: DatabaseReport,
                threads: int) -> None:
    """Cut each table's rows into chunks, compress them on `threads` threads, write them in order.

    A split table's wide chunks wait, compressed, in a private temporary file until its narrow
    chunks are written (one read of the table; the file holds one table's wide columns at most).
    """
    current: Table | None = None
    chunkers: list[Chunker] = []
    state: _Sums = {"rows": 0, "crc": [0, 0]}
    pending: deque[tuple[str, Future[bytes]]] = deque()
    held: list[IO[bytes]] = []  # the temporary file of the current split table's wide chunks

    def flush(keep: int) -> None:
        while len(pending) > keep:
            member, frame = pending.popleft()
            data = frame.result()
            if member.endswith(WIDE_SUFFIX):
                with room_in(tempfile.gettempdir(), "a split table's wide rows"):
                    write_frame(held[0], data)
            else:
                writer.add(member, data)

    def emit(chunk: bytes | memoryview, wide: bool = False) -> None:
        assert current is not None  # chunkers exist only while a table is read
        state["crc"][wide] = zlib.crc32(chunk, state["crc"][wide])
        pending.append((data_member(current.index, wide), pool.submit(compress, chunk)))
        flush(threads)

    def close_table() -> None:
        if current is None:
            return
        for chunker in chunkers:
            chunker.finish()
        flush(0)
        if held:
            spool = held.pop()
            spool.seek(0)
            while (frame := read_frame(spool)) is not None:
                writer.add(data_member(current.index, True), frame)
            spool.close()
        crcs = state["crc"] if current.split else state["crc"][:1]
        report.tables[current.name] = TableReport(rows=state["rows"], checksum=table_checksum(*crcs))
        state.update({"rows": 0, "crc": [0, 0]})

    try:
        with ThreadPoolExecutor(threads, thread_name_prefix="zstd") as pool:
            for task in tasks:
                if task.table is not current:
                    close_table()
                    current = task.table
                    chunkers = [Chunker(emit)]
                    if current.split:
                        chunkers.append(Chunker(lambda c: emit(c, True)))
                        held.append(tempfile.TemporaryFile(prefix="safehold-wide-"))  # noqa: SIM115
                for piece in reader.pieces(task):
                    if isinstance(piece, tuple):
                        chunkers[0].feed(piece[0])
                        chunkers[1].feed(piece[1])
                    else:
                        chunkers[0].feed(piece)
                state["rows"] += task.rows
            close_table()
    finally:
        for spool in held:
            spool.close()


def restore(db: Database, into: str, stream: IO[bytes], progress: Reporter) -> DatabaseReport:
    """Load a `parallel` stream into the empty database `into`; checks rows and checksums against the stream."""
    report = DatabaseReport(key=db.key, engine="mariadb", name=into, method=METHOD)
    client.create(db, into)
    count = workers(db)
    tables: dict[int, Table] = {}
    source = ""
    post = b""
    expected: dict[str, Any] = {}
    deferred: list[Deferred] = []
    loader: ChunkLoader | None = None
    zippers: dict[int, Zipper] = {}
    joined: _Joined = {"table": None, "rows": bytearray()}  # paired lines of a split table, not yet loaded

    def load_joined() -> None:
        if joined["rows"]:
            # Rows are joined only for a table of the stream, after its schema member started the loader.
            assert loader is not None and joined["table"] is not None
            loader.submit(joined["table"], bytes(joined["rows"]), compressed=False)
            joined["rows"] = bytearray()

    def end_split_table() -> None:
        load_joined()
        table, joined["table"] = joined["table"], None
        assert table is not None  # called only while a split table is being joined
        try:
            zippers[table.index].finish()
        except ValueError as exc:
            raise DatabaseError(f"table {table.name}: the dump's two column streams do not match ({exc})",
                                "the stored point is damaged: restore another") from None

    t0 = time.monotonic()
    try:
        for name, data in members(stream):
            part = data_part(name)
            if joined["table"] is not None and (part is None or part[0] != joined["table"].index):
                end_split_table()
            if name == TABLES_MEMBER:
                header = json.loads(data)
                if header["format"] > FORMAT:
                    raise DatabaseError("this dump was written by a newer safehold", "upgrade safehold to restore it")
                source = header["database"]
                tables = {t.index: t for t in map(Table.from_json, header["tables"])}
                if not db.table_prefix:  # a whole database: give it back its defaults (new tables use them)
                    _set_charset(db, into, header["charset"])
            elif name == SCHEMA_MEMBER:
                text, deferred = defer(data.decode("utf-8", "surrogateescape"),
                                       frozenset(t.name for t in tables.values() if t.keep_indexes))
                _create_tables(db, into, count, text, source, report)
                report.phases["schema"] = round(time.monotonic() - t0, 3)
                progress.step(f"tables of {into} created; loading rows on {count} connections")
                by_name = {t.name: t.index for t in tables.values()}
                loader = ChunkLoader(db, into, count, {by_name[d.table]: d.index_statements(into)
                                                       for d in deferred if d.indexes and d.table in by_name})
            elif name == POST_MEMBER:
                post = data
            elif part is not None:
                assert loader is not None  # row chunks follow the schema member, which started the loader
                index, wide = part
                report.bytes += len(data)
                table = tables[index]
                if table.split:
                    joined["table"] = table
                    try:
                        joined["rows"] += zippers.setdefault(index, Zipper(loader.spool)).add(wide, data)
                    except ValueError as exc:
                        raise DatabaseError(f"table {table.name}: the dump's two column streams do not match "
                                            f"({exc})", "the stored point is damaged: restore another") from None
                    if len(joined["rows"]) >= CHUNK_MIN:
                        load_joined()
                else:
                    loader.submit(table, data)
                progress.advance(f"load {into}", report.bytes)
            elif name == REPORT_MEMBER:
                expected = json.loads(data)
        if loader is not None:
            loader.finish()
    except MySQLdb.Error as exc:
        raise client.explain(exc, db.connection, into) from None
    except (tarfile.TarError, zstandard.ZstdError):
        expected = {}  # a cut or damaged stream: reported below like a missing report
    finally:
        for zipper in zippers.values():
            zipper.close()
        if loader is not None:
            loader.close()
    if not expected or loader is None:
        raise DatabaseError(f"the dump of {source or into} is incomplete or damaged",
                            "restore an older point; this one was cut short")
    report.phases["load"] = round(time.monotonic() - t0 - report.phases["schema"], 3)
    report.phases["indexes (during load)"] = round(loader.after_load_seconds, 3)
    _finish(db, into, count, deferred, {tables[i].name for i in loader.done_after_load}, post, report)
    _check(tables, loader, zippers, expected, report, progress)
    if source and source != into and f"`{source}`.".encode() in post:
        report.notes.append(f"triggers/routines/events name the original database `{source}`; "
                            "check them after restoring under another name")
    return report


def _set_charset(db: Database, into: str, charset: list[str]) -> None:
    character_set, collation = charset
    with client.cursor(db.connection, into) as cur:
        cur.execute(f"ALTER DATABASE {client.quote(into)} CHARACTER SET {character_set} COLLATE {collation}")


def foreign_reference(stream: IO[bytes], name: str) -> str | None:
    """A trigger/routine/event statement of a dump of `name` that names `name` itself, or None.

    Views are moved to the new name on restore (see _create_tables); post-data objects keep their
    text, so one written as `live`.`trg` would be created in `live` again. Reads only up to post.sql.
    """
    try:
        for member, data in members(stream):
            if member == POST_MEMBER:
                return dumptool.foreign_reference(io.BytesIO(data), name)
    except tarfile.TarError:
        pass  # a damaged stream: the restore itself reports it
    return None


def _create_tables(db: Database, into: str, count: int, schema: str, source: str, report: DatabaseReport) -> None:
    """Tables in parallel (each with the dump's session settings), then views with the mariadb client.

    The server writes view bodies with columns qualified by the database name, so a restore
    under another name points them at the new name.
    """
    prelude, before, sections, rest = split(schema)
    if source and source != into and f"{client.quote(source)}." in rest:
        rest = rest.replace(f"{client.quote(source)}.", f"{client.quote(into)}.")
        report.notes.append(f"view definitions moved from database {source} to {into}")
    if before:
        _run_sql(db, into, (prelude + before).encode("utf-8", "surrogateescape"))
    session_settings = statements(prelude)
    run_statements(db, into, count, [session_settings + statements(section) for section in sections])
    _run_sql(db, into, (prelude + rest).encode("utf-8", "surrogateescape"))


def _finish(db: Database, into: str, count: int, deferred: list, built: set[str], post: bytes,
            report: DatabaseReport) -> None:
    """Secondary indexes the load did not build (empty tables), foreign keys, then triggers/routines/events."""
    t0 = time.monotonic()
    try:
        missing = [d.index_statements(into) for d in deferred if d.indexes and d.table not in built]
        run_statements(db, into, count, missing)
        report.phases["indexes"] = round(time.monotonic() - t0, 3)
        t1 = time.monotonic()
        foreign = [s for d in deferred if (s := d.foreign_key_statement(into))]
        if foreign:
            connection = client.connect(db.connection, into, autocommit=True)
            try:
                session(connection)
                for statement in foreign:
                    connection.cursor().execute(statement)
            finally:
                connection.close()
        report.phases["foreign keys"] = round(time.monotonic() - t1, 3)
    except MySQLdb.Error as exc:
        raise client.explain(exc, db.connection, into) from None
    t2 = time.monotonic()
    _run_sql(db, into, post)
    report.phases["post-data objects"] = round(time.monotonic() - t2, 3)


def _check(tables: dict[int, Table], loader: ChunkLoader, zippers: dict[int, Zipper], expected: dict,
           report: DatabaseReport, progress: Reporter) -> None:
    """Compare loaded rows and checksums with the stream's report; anything off is a warning and a note."""
    for index, table in sorted(tables.items()):
        if table.split:
            checksum = zippers[index].checksum() if index in zippers else table_checksum(0, 0)
        else:
            checksum = table_checksum(loader.crcs.get(index, 0))
        report.tables[table.name] = TableReport(rows=loader.rows.get(index, 0), checksum=checksum)
        want = expected["tables"].get(table.name, {})
        if want.get("checksum") != checksum:
            raise DatabaseError(f"table {table.name}: the dump's data does not match its checksum",
                                "the stored point is damaged: run `safehold verify --read-data`, restore another")
    report.objects = dict(expected.get("objects", {}))
    for warning in loader.warnings[:20]:
        report.notes.append(f"load warning: {warning}")
        progress.warn(f"load warning: {warning}")
