"""Run history: every backup, drill, prune and restore with its start, end, result, bytes and error.

Kept in SQLite at STATE_DIR/history.sqlite so `check`, metrics, notifications and the web UI read the
same facts. Each call opens its own connection, so threads (the scheduler's pool) and processes (a
cron-started backup next to `safehold serve`) can record at the same time; SQLite serialises writes.

A run that was killed never records its end. Its row keeps finished NULL and the PID of the process
that started it; the next read notices the PID is gone and marks it failed ("interrupted").

Writers: an action wraps its work in `safehold.lifecycle.tracked(config, instance, kind,
reporter)`, which records here and then runs retention, notifications and metrics; plain
`record_start`/`record_end` record without those hooks. Readers (check, metrics, web UI):
`runs`, `last_run`, `last_success`, `last_stored`, `last_drill`, `failures`, `running`, `recent_sizes`, `median_size`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import socket
import sqlite3
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from safehold.errors import SafeholdError
from safehold.runner import process_alive

Kind = Literal["backup", "drill", "prune", "restore", "verify"]
Result = Literal["ok", "failed", "partial", "running"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    instance TEXT NOT NULL,
    kind TEXT NOT NULL,
    started REAL NOT NULL,
    finished REAL,
    result TEXT NOT NULL DEFAULT 'running',
    bytes_added INTEGER,
    bytes_total INTEGER,
    duration REAL,
    error TEXT,
    details TEXT NOT NULL DEFAULT '{}',
    host TEXT NOT NULL,
    pid INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS runs_instance_kind ON runs (instance, kind, started);
CREATE TABLE IF NOT EXISTS incidents (
    instance TEXT NOT NULL,
    system TEXT NOT NULL,
    ticket TEXT NOT NULL,
    opened REAL NOT NULL,
    closed REAL,
    run INTEGER
);
CREATE INDEX IF NOT EXISTS incidents_open ON incidents (instance, system, closed);
"""


@dataclass
class Run:
    """One row of the history."""

    id: int
    instance: str
    kind: str
    started: datetime
    finished: datetime | None
    result: str
    bytes_added: int | None
    bytes_total: int | None
    duration: float | None
    error: str | None
    details: dict[str, Any] = field(default_factory=dict)

    def reason(self) -> str | None:
        """Why the run failed, in one line: a drill's first problems (its error names only one), else its error."""
        if self.kind in ("drill", "verify") and self.details.get("problems"):
            return "; ".join(str(p) for p in self.details["problems"][:3])
        return self.error

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (times as ISO strings in UTC)."""
        return {
            "id": self.id, "instance": self.instance, "kind": self.kind, "started": self.started.isoformat(),
            "finished": self.finished.isoformat() if self.finished else None, "result": self.result,
            "bytes_added": self.bytes_added, "bytes_total": self.bytes_total, "duration": self.duration,
            "error": self.error, "details": self.details,
        }


def _when(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, UTC)


def _row(row: sqlite3.Row) -> Run:
    return Run(id=row["id"], instance=row["instance"], kind=row["kind"], started=_when(row["started"]),  # type: ignore[arg-type]
               finished=_when(row["finished"]), result=row["result"], bytes_added=row["bytes_added"],
               bytes_total=row["bytes_total"], duration=row["duration"], error=row["error"],
               details=json.loads(row["details"] or "{}"))


# How long a busy history file is waited for. Runs wait long: their record must not be lost to a
# moment of contention. `safehold check` reads with READ_TIMEOUT: a monitoring agent gives up on a plugin
# after about 10 s (Nagios, check_nrpe) and should get UNKNOWN with the reason before that.
WRITE_TIMEOUT = 30.0
READ_TIMEOUT = 3.0

DAMAGED = re.compile(r"file is not a database|malformed", re.I)  # SQLite's words for a damaged file


def _disk_full(folder: Path) -> bool:
    """True when the file system holding `folder` has (next to) no space left for this user."""
    try:
        stats = os.statvfs(folder)
    except OSError:
        return False
    return stats.f_bavail * stats.f_frsize < 64 * 1024


class History:
    """The run history of one state directory."""

    def __init__(self, state_dir: Path, busy_timeout: float = WRITE_TIMEOUT) -> None:
        """`busy_timeout`: how long to wait for another process's lock on the file before giving up."""
        self.path = Path(state_dir) / "history.sqlite"
        self.busy_timeout = busy_timeout
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            try:
                with self._connect() as db:
                    db.executescript(SCHEMA)
                    # A broken page past the header only shows when a query reaches it, and then in the
                    # middle of a run: look at every page now (a few ms for years of history).
                    found = db.execute("PRAGMA quick_check(1)").fetchone()[0]
                    if found != "ok":
                        raise sqlite3.DatabaseError(f"database disk image is malformed ({' '.join(found.split())})")
            except sqlite3.DatabaseError as exc:
                if not DAMAGED.search(str(exc)):
                    raise
                # A damaged history must not stop backups: keep it for inspection, start a new one, say so.
                aside = self.path.with_name(f"{self.path.name}.damaged-{datetime.now(UTC):%Y%m%dT%H%M%SZ}")
                self.path.rename(aside)
                logging.getLogger("safehold").warning(
                    "the run history %s was damaged (%s): moved to %s, a new one starts now; recovery points "
                    "are not affected", self.path, exc, aside.name)
                with self._connect() as db:
                    db.executescript(SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            if _disk_full(self.path.parent):  # SQLite says "disk I/O error" as often as "disk is full"
                raise SafeholdError(f"the disk holding the state directory {self.path.parent} is full, so the run "
                                    "history cannot be written",
                                    "free space there (it holds the run history, locks and the manifest cache); "
                                    "recovery points are not affected") from None
            raise SafeholdError(f"cannot open the run history {self.path}: {exc}",
                                "check that settings.state_dir exists and is writable by this user") from None

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        fresh = not self.path.exists()
        db = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None)
        try:
            if fresh:
                self.path.chmod(0o600)
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA journal_mode=WAL")
            yield db
        except sqlite3.OperationalError as exc:
            # SQLite's words once busy_timeout ran out; said as such, not as a state_dir that is not writable.
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
            raise SafeholdError(f"the run history {self.path} is locked by another process ({exc} after "
                                f"{self.busy_timeout:g} s); try again",
                                "safehold's own runs hold it only for a moment per write; `fuser -v "
                                f"{self.path}` shows which processes have it open") from None
        finally:
            db.close()

    # -- recording ---------------------------------------------------------------------------

    def record_start(self, instance: str, kind: Kind, details: dict[str, Any] | None = None) -> int:
        """Insert a running row; returns its id for record_end."""
        with self._connect() as db:
            cur = db.execute("INSERT INTO runs (instance, kind, started, details, host, pid) VALUES (?,?,?,?,?,?)",
                             (instance, kind, time.time(), json.dumps(details or {}, default=str),
                              socket.gethostname(), os.getpid()))
            return int(cur.lastrowid)  # type: ignore[arg-type]

    def record_end(self, run: int, result: Result, bytes_added: int | None = None, bytes_total: int | None = None,
                   error: str | None = None, details: dict[str, Any] | None = None) -> Run:
        """Close a running row with its result; `details` are merged into those given at start."""
        now = time.time()
        with self._connect() as db:
            row = db.execute("SELECT started, details FROM runs WHERE id = ?", (run,)).fetchone()
            merged = {**json.loads(row["details"] or "{}"), **(details or {})}
            db.execute("UPDATE runs SET finished=?, result=?, bytes_added=?, bytes_total=?, duration=?, error=?, "
                       "details=? WHERE id=?", (now, result, bytes_added, bytes_total, round(now - row["started"], 3),
                                                error, json.dumps(merged, default=str), run))
        return self.get(run)

    def discard(self, run: int) -> None:
        """Forget a row that turned out not to be a run (e.g. refused because the instance was busy)."""
        with self._connect() as db:
            db.execute("DELETE FROM runs WHERE id = ?", (run,))

    def add_details(self, run: int, details: dict[str, Any]) -> None:
        """Merge facts learnt after a run ended (e.g. points left after retention) into its details."""
        with self._connect() as db:
            row = db.execute("SELECT details FROM runs WHERE id = ?", (run,)).fetchone()
            merged = {**json.loads(row["details"] or "{}"), **details}
            db.execute("UPDATE runs SET details=? WHERE id=?", (json.dumps(merged, default=str), run))

    # -- queries -----------------------------------------------------------------------------

    def _reap(self, db: sqlite3.Connection) -> None:
        # Rows left running by a process that is gone (SIGKILL, power loss) become failed runs.
        host = socket.gethostname()
        for row in db.execute("SELECT id, pid, started FROM runs WHERE finished IS NULL AND host = ?", (host,)):
            if not process_alive(row["pid"]):
                db.execute("UPDATE runs SET finished=?, result='failed', error=? WHERE id=? AND finished IS NULL",
                           (time.time(), f"interrupted: process {row['pid']} ended without recording a result",
                            row["id"]))

    def _query(self, sql: str, args: tuple[Any, ...] = ()) -> list[Run]:
        with self._connect() as db:
            self._reap(db)
            return [_row(r) for r in db.execute(sql, args)]

    def get(self, run: int) -> Run:
        """One run by id."""
        return self._query("SELECT * FROM runs WHERE id = ?", (run,))[0]

    def runs(self, instance: str | None = None, kind: str | None = None, limit: int = 50) -> list[Run]:
        """Newest first, optionally for one instance and/or kind."""
        where, args = [], []
        if instance:
            where.append("instance = ?")
            args.append(instance)
        if kind:
            where.append("kind = ?")
            args.append(kind)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        return self._query(f"SELECT * FROM runs {clause} ORDER BY started DESC, id DESC LIMIT ?", (*args, limit))

    def last_run(self, instance: str, kind: str = "backup") -> Run | None:
        """The newest finished run of that kind (running ones are not a result yet)."""
        rows = self._query("SELECT * FROM runs WHERE instance=? AND kind=? AND finished IS NOT NULL "
                           "ORDER BY started DESC, id DESC LIMIT 1", (instance, kind))
        return rows[0] if rows else None

    def last_success(self, instance: str, kind: str = "backup") -> Run | None:
        """The newest run of that kind that ended ok."""
        rows = self._query("SELECT * FROM runs WHERE instance=? AND kind=? AND result='ok' "
                           "ORDER BY started DESC, id DESC LIMIT 1", (instance, kind))
        return rows[0] if rows else None

    def last_stored(self, instance: str) -> Run | None:
        """The newest backup whose point is stored: ok, or partial (a copy repository lacks it, the first
        repository holds it complete)."""
        rows = self._query("SELECT * FROM runs WHERE instance=? AND kind='backup' AND result IN ('ok', 'partial') "
                           "ORDER BY started DESC, id DESC LIMIT 1", (instance,))
        return rows[0] if rows else None

    def last_drill(self, instance: str) -> Run | None:
        """The newest finished drill (None until one ran)."""
        return self.last_run(instance, "drill")

    def failures(self, instance: str, since: datetime) -> list[Run]:
        """Runs of every kind started since `since` that failed (killed ones too) or were partial, newest first."""
        return self._query("SELECT * FROM runs WHERE instance=? AND started>=? AND result IN ('failed', 'partial') "
                           "ORDER BY started DESC, id DESC", (instance, since.timestamp()))

    def running(self, instance: str | None = None) -> list[Run]:
        """Runs in progress right now (their process is alive)."""
        args: tuple[Any, ...] = (instance,) if instance else ()
        return self._query("SELECT * FROM runs WHERE finished IS NULL" + (" AND instance=?" if instance else ""), args)

    def recent_sizes(self, instance: str, limit: int = 10) -> list[int]:
        """bytes_total of the newest successful backups, newest first."""
        rows = self._query("SELECT * FROM runs WHERE instance=? AND kind='backup' AND result='ok' "
                           "AND bytes_total IS NOT NULL ORDER BY started DESC, id DESC LIMIT ?", (instance, limit))
        return [r.bytes_total for r in rows if r.bytes_total is not None]

    def median_size(self, instance: str, limit: int = 10) -> float | None:
        """Median bytes_total of the successful backups before the newest one (None with fewer than 3)."""
        sizes = self.recent_sizes(instance, limit + 1)[1:]
        return statistics.median(sizes) if len(sizes) >= 3 else None

    def instances(self) -> list[str]:
        """Every instance that has history."""
        with self._connect() as db:
            return [r[0] for r in db.execute("SELECT DISTINCT instance FROM runs ORDER BY instance")]

    # -- incident tickets (one open outage -> one ticket) ------------------------------------

    def open_ticket(self, instance: str, system: str) -> str | None:
        """The ticket reference of the open outage for (instance, "itop:backup"-style system), if any."""
        with self._connect() as db:
            row = db.execute("SELECT ticket FROM incidents WHERE instance=? AND system=? AND closed IS NULL",
                             (instance, system)).fetchone()
        return row["ticket"] if row else None

    def add_ticket(self, instance: str, system: str, ticket: str, run: int | None) -> None:
        """Remember the ticket opened for the current outage."""
        with self._connect() as db:
            db.execute("INSERT INTO incidents (instance, system, ticket, opened, run) VALUES (?,?,?,?,?)",
                       (instance, system, ticket, time.time(), run))

    def close_tickets(self, instance: str, kind: str) -> list[tuple[str, str]]:
        """Mark the instance's open outages of `kind` over (after an ok run); returns (system, ticket) pairs."""
        with self._connect() as db:
            rows = db.execute("SELECT system, ticket FROM incidents WHERE instance=? AND system LIKE ? "
                              "AND closed IS NULL", (instance, f"%:{kind}")).fetchall()
            db.execute("UPDATE incidents SET closed=? WHERE instance=? AND system LIKE ? AND closed IS NULL",
                       (time.time(), instance, f"%:{kind}"))
        return [(r["system"].split(":")[0], r["ticket"]) for r in rows]
