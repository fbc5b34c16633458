"""Loads row chunks with LOAD DATA LOCAL INFILE on N connections, and runs per-table DDL in parallel.

Compressed chunks wait in a private spool folder on disk (0700, at most SPOOL_BYTES); a lane
decompresses one chunk at a time into a scratch file (in /dev/shm when available) and loads it.
"""

from __future__ import annotations

import collections
import contextlib
import os
import queue
import threading
import time
import zlib
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path

import MySQLdb

from safehold.engines.mariadb import client
from safehold.engines.mariadb.stream import decompress
from safehold.engines.mariadb.tables import Table
from safehold.models import Database
from safehold.tempdirs import private_dir, room_in

LOAD_SESSION = ("SET SESSION foreign_key_checks=0, unique_checks=0, sql_mode='NO_AUTO_VALUE_ON_ZERO',"
                " time_zone='+00:00', net_read_timeout=3600, net_write_timeout=3600")
HISTORY_SESSION = "SET SESSION system_versioning_insert_history=1"
POLL_SECONDS = 0.5
READY = object()  # queued on every lane when a loaded table's index builds are ready to take
SPOOL_BYTES = 2 << 30  # compressed chunks read ahead of the lanes, on disk


def session(connection: MySQLdb.Connection) -> None:
    """Settings every restore connection uses (no checks, dump-compatible sql_mode and time zone)."""
    cur = connection.cursor()
    cur.execute(LOAD_SESSION)
    # Servers before 10.11 cannot write system-versioned history; loading such a table then fails clearly.
    with contextlib.suppress(MySQLdb.OperationalError):
        cur.execute(HISTORY_SESSION)


def scratch_folder() -> str:
    """A private folder for chunk files, in RAM when the system offers it."""
    shm = Path("/dev/shm")
    base = str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None
    return str(private_dir("safehold-load-", base))


class Pool:
    """N worker threads, each with its own restore connection, running jobs from one bounded queue."""

    def __init__(self, db: Database, into: str, count: int, run: Callable[[MySQLdb.Connection, object], None]) -> None:
        self.jobs: queue.Queue[object] = queue.Queue(maxsize=count)
        self.error: BaseException | None = None
        self.run = run
        self.connections = [client.connect(db.connection, into, autocommit=True) for _ in range(count)]
        for connection in self.connections:
            session(connection)
        self.threads = [threading.Thread(target=self._work, args=(c,), daemon=True) for c in self.connections]
        for thread in self.threads:
            thread.start()

    def _work(self, connection: MySQLdb.Connection) -> None:
        while (job := self.jobs.get()) is not None:
            if self.error is not None:
                continue  # drain without working after a failure
            try:
                self.run(connection, job)
            except BaseException as exc:  # re-raised by submit/finish in the caller's thread
                self.error = exc

    def submit(self, job: object) -> None:
        """Queue a job (blocks while all workers are busy and the queue is full)."""
        while True:
            if self.error is not None:
                raise self.error
            try:
                self.jobs.put(job, timeout=POLL_SECONDS)
                return
            except queue.Full:
                continue

    def finish(self) -> None:
        """Wait for every job, close the connections, raise the first failure."""
        for _ in self.threads:
            self.jobs.put(None)
        for thread in self.threads:
            thread.join()
        for connection in self.connections:
            connection.close()
        if self.error is not None:
            raise self.error


class ChunkLoader:
    """Loads each table on one connection (a lane), several tables at once, reading the stream ahead.

    Two connections filling one InnoDB table contend on the same index pages and gain nothing,
    while different tables load side by side. The stream holds tables one after another, so
    compressed chunks are spooled to a private folder on disk (at most SPOOL_BYTES) until their
    lane takes them; each lane keeps its tables' chunks in stream order, which also keeps the
    physical row order of tables without a clustered key. Once a table's last chunk is loaded, its
    `after_load` statements (its deferred secondary indexes) become ready for whichever lane is free
    first: the lane that loaded it may still have the next table's chunks queued, while another has
    run out of work (measured on the 3 GB benchmark: one lane idled for the last 7 s of 42 while the
    other loaded a table behind an index build of its own). A lane takes a ready index build only
    when it reaches the wake-up posted behind the chunks queued on it, so loading goes first, and
    at the end each lane builds what is still ready before it stops.
    """

    def __init__(self, db: Database, into: str, count: int, after_load: dict[int, list[str]] | None = None) -> None:
        self.into = into
        self.after_load = after_load or {}
        self.done_after_load: set[int] = set()  # tables whose after_load statements ran
        self.after_load_seconds = 0.0
        self._ready: collections.deque[Table] = collections.deque()  # loaded tables waiting for after_load
        self._ready_lock = threading.Lock()
        self._last: Table | None = None
        self.spool = self.scratch = ""  # set below, inside the try that removes them again
        self.rows: dict[int, int] = defaultdict(int)
        self.crcs: dict[int, int] = defaultdict(int)
        self.warnings: list[str] = []
        self.error: BaseException | None = None
        self._lane_of: dict[int, int] = {}
        self._files = 0
        self._stopped = False
        self._spooled = 0
        self._space = threading.Condition()
        self.connections: list[MySQLdb.Connection] = []
        try:  # a SIGTERM or a refused login while connecting must not leave the folders behind
            self.spool = str(private_dir("safehold-spool-"))
            self.scratch = scratch_folder()
            for _ in range(count):
                self.connections.append(client.connect(db.connection, into, autocommit=True))
                session(self.connections[-1])
        except BaseException:
            self._release()
            raise
        self.queues: list[queue.Queue] = [queue.Queue() for _ in range(count)]
        self.pending = [0] * count  # spooled bytes waiting per lane
        self.threads = [threading.Thread(target=self._lane, args=(n,), daemon=True) for n in range(count)]
        for thread in self.threads:
            thread.start()

    def submit(self, table: Table, frame: bytes, compressed: bool = True) -> None:
        """Spool one chunk (a zstd frame, or rows already checked) and queue it on its table's lane.

        Blocks while the spool is full.
        """
        with self._space:
            while self._spooled + len(frame) > SPOOL_BYTES and self._spooled and self.error is None:
                self._space.wait(POLL_SECONDS)
            if self.error is not None:
                raise self.error
            lane = self._lane_of.setdefault(table.index, min(range(len(self.queues)), key=self.pending.__getitem__))
            self._spooled += len(frame)
            self.pending[lane] += len(frame)
        if self._last is not None and self._last.index != table.index:
            self._table_complete(self._last)
        self._last = table
        path = os.path.join(self.spool, f"{self._files}.zst" if compressed else f"{self._files}.tsv")
        self._files += 1
        with room_in(self.spool, "the chunks waiting to be loaded (up to 2 GiB)"), open(path, "wb") as handle:
            handle.write(frame)
        self.queues[lane].put((table, path, len(frame)))

    def _table_complete(self, table: Table) -> None:
        """The stream moved past `table`: behind its chunks, its lane learns that it is loaded."""
        if table.index in self.after_load:
            self.queues[self._lane_of[table.index]].put((table, None, 0))

    def _loaded(self, table: Table) -> None:
        """Every chunk of `table` is in: its after_load statements are ready for any lane."""
        with self._ready_lock:
            self._ready.append(table)
        for lane in self.queues:
            lane.put(READY)

    def _build_ready(self, connection: MySQLdb.Connection) -> None:
        """Run the after_load statements of every ready table no other lane took yet."""
        while True:
            with self._ready_lock:
                if not self._ready:
                    return
                table = self._ready.popleft()
            try:
                if self.error is None:
                    t0 = time.monotonic()
                    cur = connection.cursor()
                    for statement in self.after_load[table.index]:
                        cur.execute(statement)
                    with self._ready_lock:
                        self.done_after_load.add(table.index)
                        self.after_load_seconds += time.monotonic() - t0
            except BaseException as exc:  # re-raised in the reading thread by submit/finish
                self.error = self.error or exc

    def _lane(self, number: int) -> None:
        connection = self.connections[number]
        scratch = os.path.join(self.scratch, f"lane{number}.tsv")
        while (job := self.queues[number].get()) is not None:
            if job is READY:
                self._build_ready(connection)
                continue
            table, path, size = job
            if path is None:
                self._loaded(table)
                continue
            try:
                if self.error is None and path.endswith(".tsv"):  # rows checked by the reader already
                    self._load(connection, table, path)
                elif self.error is None:
                    with open(path, "rb") as handle:
                        data = decompress(handle.read())
                    self.crcs[table.index] = zlib.crc32(data, self.crcs[table.index])
                    with room_in(self.scratch, "the chunk being loaded"), open(scratch, "wb") as handle:
                        handle.write(data)
                    del data
                    self._load(connection, table, scratch)
            except BaseException as exc:  # re-raised in the reading thread by submit/finish
                self.error = self.error or exc
            finally:
                os.unlink(path)
                with self._space:
                    self._spooled -= size
                    self.pending[number] -= size
                    self._space.notify_all()
        # A lane posts its tables' index builds before it meets its stop, so what another lane did not
        # take before stopping is still built here.
        self._build_ready(connection)

    def _load(self, connection: MySQLdb.Connection, table: Table, path: str) -> None:
        cur = connection.cursor()
        cur.execute(table.load(self.into, path))
        self.rows[table.index] += max(cur.rowcount, 0)
        if connection.warning_count():
            cur.execute("SHOW WARNINGS LIMIT 3")
            self.warnings += [f"{table.name}: {row[2]}" for row in cur.fetchall()]

    def _stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        for lane in self.queues:
            lane.put(None)
        for thread in self.threads:
            thread.join()

    def finish(self) -> None:
        """Wait until every queued chunk is loaded (and after_load has run); raise the first failure."""
        if self._last is not None:
            self._table_complete(self._last)
        self._stop()
        if self.error is not None:
            raise self.error

    def close(self) -> None:
        """Stop (skipping what is still queued after a failure), close connections, remove the folders."""
        if not self._stopped:
            self.error = self.error or RuntimeError("restore aborted")  # lanes skip the rest
            self._stop()
        self._release()

    def _release(self) -> None:
        """Close the connections and remove the spool and scratch folders."""
        for connection in self.connections:
            connection.close()
        self.connections = []
        for folder in filter(None, (self.spool, self.scratch)):
            for name in os.listdir(folder):
                os.unlink(os.path.join(folder, name))
            os.rmdir(folder)


def run_statements(db: Database, into: str, count: int, groups: Sequence[Sequence[str | bytes]]) -> None:
    """Run groups of statements in parallel (statements inside a group run in order)."""
    if not groups:
        return

    def run(connection: MySQLdb.Connection, statements: object) -> None:
        cur = connection.cursor()
        for statement in statements:  # type: ignore[attr-defined]
            cur.execute(statement)

    pool = Pool(db, into, min(count, len(groups)), run)
    try:
        for group in groups:
            pool.submit(group)
    finally:
        pool.finish()
