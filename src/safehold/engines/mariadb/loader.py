"""Loads row chunks with LOAD DATA LOCAL INFILE on N connections, and runs per-table DDL in parallel.

A chunk waits in a private temporary file (0700 folder, in /dev/shm when available) until a
connection loads it; at most 2 × workers chunk files exist at once. Chunks of tables whose row
order is physical (no clustered key, non-InnoDB) load one after another, in stream order, so
the restored table lists its rows in the same order as the original.
"""

from __future__ import annotations

import contextlib
import os
import queue
import tempfile
import threading
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import MySQLdb

from safehold.engines.mariadb import client
from safehold.engines.mariadb.tables import Table
from safehold.models import Database

LOAD_SESSION = ("SET SESSION foreign_key_checks=0, unique_checks=0, sql_mode='NO_AUTO_VALUE_ON_ZERO',"
                " time_zone='+00:00', net_read_timeout=3600, net_write_timeout=3600")
HISTORY_SESSION = "SET SESSION system_versioning_insert_history=1"
POLL_SECONDS = 0.5


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
    return tempfile.mkdtemp(prefix="safehold-load-", dir=base)


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
    """Feeds chunks to a Pool and keeps per-table loaded row counts and warnings."""

    def __init__(self, db: Database, into: str, count: int) -> None:
        self.into = into
        self.folder = scratch_folder()
        self.rows: dict[int, int] = defaultdict(int)
        self.warnings: list[str] = []
        self._submitted: dict[int, int] = defaultdict(int)
        self._done: dict[int, int] = defaultdict(int)
        self._turn = threading.Condition()
        self._files = 0
        self.pool = Pool(db, into, count, self._load)

    def submit(self, table: Table, data: bytes) -> None:
        """Write one chunk to a scratch file and queue its load."""
        path = os.path.join(self.folder, f"{self._files}.tsv")
        self._files += 1
        with open(path, "wb") as handle:
            handle.write(data)
        sequence = self._submitted[table.index]
        self._submitted[table.index] += 1
        try:
            self.pool.submit((table, path, sequence))
        except BaseException:
            os.unlink(path)
            raise

    def _load(self, connection: MySQLdb.Connection, job: object) -> None:
        table, path, sequence = job  # type: ignore[misc]
        try:
            if table.ordered:
                with self._turn:
                    # Earlier chunks of this table were queued first, so they are loading or done.
                    self._turn.wait_for(lambda: self._done[table.index] == sequence or self.pool.error is not None)
                if self.pool.error is not None:
                    return
            cur = connection.cursor()
            cur.execute(table.load(self.into, path))
            loaded = max(cur.rowcount, 0)
            warnings = []
            if connection.warning_count():
                cur.execute("SHOW WARNINGS LIMIT 3")
                warnings = [f"{table.name}: {row[2]}" for row in cur.fetchall()]
            with self._turn:
                self.rows[table.index] += loaded
                self.warnings += warnings
        finally:
            os.unlink(path)
            with self._turn:
                self._done[table.index] += 1
                self._turn.notify_all()

    def finish(self) -> None:
        """Wait for all loads; remove the scratch folder."""
        try:
            self.pool.finish()
        finally:
            for name in os.listdir(self.folder):
                os.unlink(os.path.join(self.folder, name))
            os.rmdir(self.folder)


def run_statements(db: Database, into: str, count: int, groups: list[list[str]]) -> None:
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
