"""Reads key-range tasks on the snapshot connections in parallel, handing rows over in stream order.

Each task owns a small queue of pieces (complete rows, about PIECE_BYTES each); workers take
tasks in stream order and block when their task's queue is full, so at most
workers × (QUEUE_DEPTH + 1) pieces are in memory however big the database is.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import MySQLdb
import MySQLdb.cursors

from safehold.engines.mariadb.snapshot import Snapshot
from safehold.engines.mariadb.tables import INTEGER_TYPES, Table, wide_line
from safehold.errors import DatabaseError

PIECE_BYTES = 1 << 20
QUEUE_DEPTH = 4
RANGE_BYTES = 32 << 20  # tables bigger than this are split into key ranges
MAX_RANGES = 256
POLL_SECONDS = 0.5
END = None


class Stopped(Exception):
    """The consumer gave up; workers stop quietly."""


@dataclass
class Task:
    """One key range of one table."""

    table: Table
    sql: str
    batch: int
    rows: int = 0  # read so far; final once the task's pieces end
    pieces: queue.Queue = field(default_factory=lambda: queue.Queue(QUEUE_DEPTH))


def plan(cur, database: str, tables: list[Table]) -> list[Task]:  # noqa: ANN001 - MySQLdb cursor
    """Tasks in stream order: big tables with an integer key split into equal key ranges.

    The first range is open below and the last open above, so rows written after planning are
    still read (the snapshot decides what is seen, not the plan).
    """
    tasks: list[Task] = []
    for table in tables:
        batch = max(1, min(10_000, PIECE_BYTES // max(table.avg_row_length, 64)))
        parts = min(MAX_RANGES, table.data_length // RANGE_BYTES + 1)
        bounds: list[int] = []
        if parts > 1 and not table.ordered and table.key_type in INTEGER_TYPES:
            column = "`" + table.key[0].replace("`", "``") + "`"
            cur.execute(f"SELECT MIN({column}), MAX({column}) FROM {table.source(database)}")
            low, high = cur.fetchone()
            if low is not None and high > low:
                step = (int(high) - int(low)) / parts
                bounds = sorted({int(low) + int(step * i) for i in range(1, parts)})
        edges = [None, *bounds, None]
        for low, high in zip(edges, edges[1:], strict=False):
            tasks.append(Task(table, table.select(database, low, high), batch))
    return tasks


PACKET_OVERFLOW = 1301  # ER_WARN_ALLOWED_PACKET_OVERFLOWED: a function gave NULL instead of a too long result


def _check_no_overflow(connection: MySQLdb.Connection, table: Table) -> None:
    """Refuse a read in which the server replaced a too long value by NULL (it only warns)."""
    if not connection.warning_count():
        return
    cur = connection.cursor()
    cur.execute("SHOW WARNINGS")
    for _, code, message in cur.fetchall():
        if int(code) == PACKET_OVERFLOW:
            text = message.decode(errors="replace") if isinstance(message, bytes) else str(message)
            raise DatabaseError(f"table {table.name}: the server could not hand over a value ({text})",
                                "raise max_allowed_packet on the database server and back up again")


class ParallelReader:
    """Runs tasks on the snapshot's connections; iterate `pieces(task)` in stream order."""

    def __init__(self, snapshot: Snapshot, tasks: list[Task]) -> None:
        self.snapshot = snapshot
        self.stop = threading.Event()
        self.error: BaseException | None = None
        locked_first = [t for t in tasks if not t.table.transactional] if snapshot.locked else []
        self.shared: queue.Queue[Task] = queue.Queue()
        for task in tasks:
            if task not in locked_first:
                self.shared.put(task)
        self.threads = [threading.Thread(target=self._work, args=(conn, n == 0, locked_first if n == 0 else []),
                                         daemon=True, name=f"reader-{n}")
                        for n, conn in enumerate(snapshot.connections)]
        for thread in self.threads:
            thread.start()

    def _work(self, connection: MySQLdb.Connection, first: bool, own: list[Task]) -> None:
        task: Task | None = None
        try:
            for task in own:
                self._read(connection, task)
            if first:  # the lock holder: non-transactional tables are read, let writers go on
                self.snapshot.unlock()
                if self.snapshot.lock == "tables":  # it holds no snapshot: the others read the rest
                    return
            while not self.stop.is_set():
                try:
                    task = self.shared.get_nowait()
                except queue.Empty:
                    return
                self._read(connection, task)
        except Stopped:
            return
        except BaseException as exc:  # handed to the consumer, which raises it
            self.error = exc
            if task is not None:
                task.pieces.put(exc)

    def _put(self, task: Task, item: object) -> None:
        while True:
            try:
                task.pieces.put(item, timeout=POLL_SECONDS)
                return
            except queue.Full:
                if self.stop.is_set():
                    raise Stopped from None

    def _read(self, connection: MySQLdb.Connection, task: Task) -> None:
        cur = connection.cursor(MySQLdb.cursors.SSCursor)
        try:
            cur.execute(task.sql)
            while rows := cur.fetchmany(task.batch):
                task.rows += len(rows)
                # A last empty line makes each piece end in LF without copying it again.
                if task.table.split:  # narrow and wide column groups of the same rows
                    narrow = [row[0] for row in rows]
                    narrow.append(b"")
                    wide = [wide_line(row[1:]) for row in rows]
                    wide.append(b"")
                    self._put(task, (b"\n".join(narrow), b"\n".join(wide)))
                else:
                    lines = task.table.lines(rows) if task.table.wide_last else [row[0] for row in rows]
                    lines.append(b"")
                    self._put(task, b"\n".join(lines))
        finally:
            cur.close()
        _check_no_overflow(connection, task.table)
        self._put(task, END)

    def pieces(self, task: Task) -> Iterator[bytes | tuple[bytes, bytes]]:
        """The rows of one task, in key order, as pieces of complete lines (a pair for a split table)."""
        while True:
            try:
                item = task.pieces.get(timeout=POLL_SECONDS)
            except queue.Empty:
                if self.error is not None:
                    raise self.error from None
                continue
            if item is END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def close(self) -> None:
        """Stop the workers (after success or failure) and wait for them."""
        self.stop.set()
        for thread in self.threads:
            thread.join()
