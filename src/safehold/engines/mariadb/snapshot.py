"""N reader connections that all see one consistent state of the server.

With the RELOAD privilege: FLUSH TABLES WITH READ LOCK on the first connection, START TRANSACTION
WITH CONSISTENT SNAPSHOT on every connection, and the lock is released as soon as the
non-transactional tables (read first, by the first connection) are done, usually at once.
Without RELOAD (an app's own user), the first connection takes `LOCK TABLES … READ` on every table
the dump reads (the LOCK TABLES privilege, which app users usually hold) and the other connections
start their snapshots under it: the same consistent state for the database, read in parallel. The
lock holder reads the non-transactional tables (MyISAM, Aria) and releases the lock; it starts no
transaction (that would release its locks), so it reads nothing else. Without LOCK TABLES either,
one connection reads everything inside its single snapshot (consistent for InnoDB; other engines
are read as they are, and each such table is reported as read `unlocked`).

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
from safehold.engines.mariadb.tables import Table
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
    """Open connections in one snapshot; `locked` tells whether the read lock is still held.

    `lock` says which lock the non-transactional tables are read under: "global" (FLUSH TABLES WITH READ
    LOCK), "tables" (LOCK TABLES … READ: the first connection holds it and has no snapshot) or None.
    """

    def __init__(self, db: Database, count: int, tables: list[Table] | None = None) -> None:
        self.db = db
        self.tables = [t.name for t in tables or []]
        if any(not t.transactional for t in tables or []):
            count = max(count, 2)  # a lock holder reads them, and it may hold no snapshot (LOCK TABLES)
        self.connections: list[MySQLdb.Connection] = []
        self.locked = False
        self.lock: str | None = None
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
            first.execute(f"SET SESSION lock_wait_timeout={LOCK_WAIT_SECONDS}")
            try:
                first.execute("FLUSH TABLES WITH READ LOCK")
                self._hold("global")
            except MySQLdb.OperationalError as exc:
                if exc.args[0] not in (*NO_PRIVILEGE, LOCK_WAIT_TIMEOUT):
                    raise client.explain(exc, self.db.connection, self.db.name) from None
                if exc.args[0] == LOCK_WAIT_TIMEOUT:
                    self._one_connection(f"a long-running statement kept the global read lock away for "
                                         f"{LOCK_WAIT_SECONDS} s: read with one connection (consistent for InnoDB "
                                         "tables only)")
                else:
                    self._lock_tables(first)
            first.execute(f"SET SESSION lock_wait_timeout={LOCK_WAIT_READING}")
        for connection in self.connections[1:] if self.lock == "tables" else self.connections:
            connection.cursor().execute("START TRANSACTION WITH CONSISTENT SNAPSHOT")

    def _hold(self, lock: str) -> None:
        self.locked, self.lock, self._locked_at = True, lock, time.monotonic()

    def _one_connection(self, note: str) -> None:
        for extra in self.connections[1:]:
            extra.close()
        self.connections = self.connections[:1]
        self.notes.append(note)

    def _lock_tables(self, first: MySQLdb.cursors.Cursor) -> None:
        """No RELOAD: lock the dump's tables for reading on the first connection (the others take their
        snapshots under it), or, without LOCK TABLES either, go on with one connection."""
        if not self.tables:
            self._one_connection("no RELOAD privilege for a global read lock: read with one connection")
            return
        names = ", ".join(f"{client.quote(self.db.name)}.{client.quote(t)} READ" for t in self.tables)
        try:
            first.execute(f"LOCK TABLES {names}")
        except MySQLdb.OperationalError as exc:
            if exc.args[0] not in (*NO_PRIVILEGE, LOCK_WAIT_TIMEOUT):
                raise client.explain(exc, self.db.connection, self.db.name) from None
            self._one_connection("no RELOAD privilege for a global read lock and LOCK TABLES failed "
                                 f"({exc.args[1] if len(exc.args) > 1 else exc}): read with one connection "
                                 "(consistent for InnoDB tables only); grant LOCK TABLES (or RELOAD)")
            return
        self._hold("tables")
        self.notes.append("no RELOAD privilege for a global read lock: the dump's tables were locked for "
                          "reading (LOCK TABLES … READ) while the snapshot was taken")

    def unlock(self) -> None:
        """Release the global read lock (the snapshot transactions stay open)."""
        if self.locked:
            # UNLOCK TABLES ends a global read lock and LOCK TABLES alike.
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
