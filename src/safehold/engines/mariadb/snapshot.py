"""N reader connections that all see one consistent state of the server.

With the RELOAD privilege: FLUSH TABLES WITH READ LOCK on the first connection, START TRANSACTION
WITH CONSISTENT SNAPSHOT on every connection, and the lock is released as soon as the
non-transactional tables (read first, by the first connection) are done, usually at once.
Without RELOAD the lock is impossible, so one connection reads everything inside its single
snapshot (consistent for InnoDB; other engines are read as they are), and a note says so.
"""

from __future__ import annotations

import contextlib
import time

import MySQLdb

from safehold.engines.mariadb import client
from safehold.models import Database

SESSION = ("SET SESSION net_write_timeout=3600, net_read_timeout=3600, time_zone='+00:00', lock_wait_timeout=120",
           # Its own statement: MariaDB and MySQL 8 name the variable differently, this form works on both.
           "SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
NO_PRIVILEGE = {1044, 1045, 1142, 1227}


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
            try:
                self.connections[0].cursor().execute("FLUSH TABLES WITH READ LOCK")
                self.locked = True
                self._locked_at = time.monotonic()
            except MySQLdb.OperationalError as exc:
                if exc.args[0] not in NO_PRIVILEGE:
                    raise client.explain(exc, self.db.connection, self.db.name) from None
                for extra in self.connections[1:]:
                    extra.close()
                self.connections = self.connections[:1]
                self.notes.append("no RELOAD privilege for a global read lock: read with one connection "
                                  "(consistent for InnoDB tables only); grant RELOAD for parallel reading")
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
