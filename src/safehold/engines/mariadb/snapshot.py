"""N reader connections that all see one consistent state of the server.

With the RELOAD privilege: FLUSH TABLES WITH READ LOCK on the first connection, START TRANSACTION
WITH CONSISTENT SNAPSHOT on every connection, and the lock is released as soon as the
non-transactional tables (read first, by the first connection) are done, usually at once.
Without RELOAD the lock is impossible, so one connection reads everything inside its single
snapshot (consistent for InnoDB; other engines are read as they are), and a note says so.

The lock waits for every running statement to close its tables, and while it waits the
application's new statements queue behind it: a 10-minute report query would freeze the
application for 10 minutes. So the lock waits at most LOCK_WAIT_SECONDS, and if it cannot be
had by then the dump goes the no-RELOAD way (one connection) and says why.
"""

from __future__ import annotations

import contextlib
import time

import MySQLdb

from safehold.engines.mariadb import client
from safehold.models import Database

LOCK_WAIT_READING = 120  # seconds a read may wait for a table's metadata lock (DDL running)
SESSION = ("SET SESSION net_write_timeout=3600, net_read_timeout=3600, time_zone='+00:00',"
           f" lock_wait_timeout={LOCK_WAIT_READING}",
           # Its own statement: MariaDB and MySQL 8 name the variable differently, this form works on both.
           "SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
NO_PRIVILEGE = {1044, 1045, 1142, 1227}
LOCK_WAIT_TIMEOUT = 1205
LOCK_WAIT_SECONDS = 10


class Snapshot:
    """Open connections in one snapshot; `locked` tells whether the global read lock is still held."""

    def __init__(self, db: Database, count: int) -> None:
        self.db = db
        self.connections: list[MySQLdb.Connection] = []
        self.locked = False
        self.notes: list[str] = []
        self.lock_seconds = 0.0
        self._locked_at = 0.0
        try:
            self._open(count)
        except BaseException:
            self.close()
            raise

    def _open(self, count: int) -> None:
        self.connections = [client.connect(self.db.connection, self.db.name) for _ in range(count)]
        for connection in self.connections:
            for statement in SESSION:
                connection.cursor().execute(statement)
        if count > 1:
            first = self.connections[0].cursor()
            try:
                first.execute(f"SET SESSION lock_wait_timeout={LOCK_WAIT_SECONDS}")
                first.execute("FLUSH TABLES WITH READ LOCK")
                self.locked = True
                self._locked_at = time.monotonic()
            except MySQLdb.OperationalError as exc:
                if exc.args[0] not in (*NO_PRIVILEGE, LOCK_WAIT_TIMEOUT):
                    raise client.explain(exc, self.db.connection, self.db.name) from None
                for extra in self.connections[1:]:
                    extra.close()
                self.connections = self.connections[:1]
                self.notes.append(
                    f"a long-running statement kept the global read lock away for {LOCK_WAIT_SECONDS} s: "
                    "read with one connection (consistent for InnoDB tables only)"
                    if exc.args[0] == LOCK_WAIT_TIMEOUT else
                    "no RELOAD privilege for a global read lock: read with one connection "
                    "(consistent for InnoDB tables only); grant RELOAD for parallel reading")
            first.execute(f"SET SESSION lock_wait_timeout={LOCK_WAIT_READING}")
        for connection in self.connections:
            connection.cursor().execute("START TRANSACTION WITH CONSISTENT SNAPSHOT")

    def unlock(self) -> None:
        """Release the global read lock (the snapshot transactions stay open)."""
        if self.locked:
            self.connections[0].cursor().execute("UNLOCK TABLES")
            self.locked = False
            self.lock_seconds = round(time.monotonic() - self._locked_at, 3)

    def close(self) -> None:
        """End the transactions and close every connection."""
        for connection in self.connections:
            with contextlib.suppress(MySQLdb.Error):
                connection.close()
        self.connections = []
        self.locked = False
