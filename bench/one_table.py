"""Benchmark: ways to load one big table on two connections, with the server's own CPU time.

Not a test. Run explicitly (from the repository root), on a database built by bench/shapes.py:

    PYTHONPATH=src python bench/one_table.py --database t_lanes_dom --table ticket_replies --rows 100000

It reads the first `--rows` rows of the table as safehold's chunks (LOAD DATA text, wide values
last, ~4 MiB each), then loads them into an empty copy of the table (primary key only, as the
restore does) in each of these ways, printing wall seconds, mysqld's CPU seconds (/proc/PID/stat),
this process's CPU seconds, and how often a sample of information_schema.INNODB_TRX (every 20 ms)
found a loading statement RUNNING or in LOCK WAIT:
- LOAD DATA on 1 and on 2 connections (the table's AUTO-INC lock makes the two take turns),
- multi-row INSERTs on 2 connections (bench/inserts.py: a simple insert takes no AUTO-INC table lock),
- LOAD DATA on 2 connections into the table created without AUTO_INCREMENT, then the ALTER TABLE
  that adds it back (ALGORITHM=COPY on MariaDB 10.11; INSTANT/NOCOPY/INPLACE are refused).
"""

from __future__ import annotations

import argparse
import os
import queue
import resource
import threading
import time

import inserts
import MySQLdb
from lanes import mysqld_cpu
from shapes import connect

from safehold.engines.mariadb import loader, tables

COPY = "t_one_table_bench"
# The first statements of two connections into the still empty table both ask for InnoDB's table-X lock
# of its bulk-insert path; one is rolled back whole as a deadlock victim and is run again.
DEADLOCK, DEADLOCK_RETRIES = 1213, 5


class Chunks:
    """The first rows of a table as safehold's LOAD DATA chunks, with what recreating the table needs."""

    def __init__(self, database: str, name: str, rows: int) -> None:
        cur = connect(database).cursor()
        self.table = next(t for t in tables.describe(cur, database, None) if t.name == name)
        self.table.split, self.table.wide_last = False, any(c.wide for c in self.table.columns)
        cur.execute(self.table.select(database) + f" LIMIT {int(rows)}")
        found = cur.fetchall()
        lines = self.table.lines(found) if self.table.wide_last else [row[0] for row in found]
        self.chunks: list[bytes] = []
        start, size = 0, 0
        for end, line in enumerate(lines, 1):
            size += len(line) + 1
            if size >= 4 << 20 or end == len(lines):
                self.chunks.append(b"\n".join(lines[start:end]) + b"\n")
                start, size = end, 0
        cur.execute(f"SHOW CREATE TABLE `{name}`")
        self.create = cur.fetchone()[1]
        cur.execute(f"SHOW COLUMNS FROM `{name}` LIKE %s", (self.table.key[0],))
        self.key_type = cur.fetchone()[1]


def one_way(chunks: Chunks, label: str, lanes: int, insert: bool, autoincrement: bool = True) -> None:
    """Load every chunk into a fresh copy of the table on `lanes` connections; print the measures."""
    table, key = chunks.table, chunks.table.key[0]
    admin = connect()
    admin.cursor().execute(f"DROP DATABASE IF EXISTS {COPY}")
    admin.cursor().execute(f"CREATE DATABASE {COPY}")
    cur = connect(COPY).cursor()
    cur.execute(chunks.create)
    cur.execute(f"SHOW INDEX FROM `{table.name}`")
    for index in {row[2] for row in cur.fetchall() if row[2] != "PRIMARY"}:
        cur.execute(f"ALTER TABLE `{table.name}` DROP INDEX `{index}`")
    if not autoincrement:
        cur.execute(f"ALTER TABLE `{table.name}` MODIFY `{key}` {chunks.key_type} NOT NULL")
    work: queue.Queue[bytes] = queue.Queue()
    for chunk in chunks.chunks:
        work.put(chunk)

    def lane(number: int) -> None:
        connection = connect(COPY)
        lane_cur = connection.cursor()
        lane_cur.execute(loader.LOAD_SESSION)
        path = f"/dev/shm/one-table-{os.getpid()}-{number}.tsv"
        while True:
            try:
                chunk = work.get_nowait()
            except queue.Empty:
                break
            if not insert:
                with open(path, "wb") as handle:
                    handle.write(chunk)
            statement = inserts.statement(table, COPY, chunk, 1 << 30) if insert else table.load(COPY, path)
            for _ in range(DEADLOCK_RETRIES + 1):
                try:
                    lane_cur.execute(statement)
                    break
                except MySQLdb.OperationalError as exc:
                    if exc.args[0] != DEADLOCK:
                        raise
        connection.close()
        if not insert:
            os.unlink(path)

    samples: dict[str, int] = {}
    done = threading.Event()

    def sample() -> None:
        sample_cur = connect().cursor()
        while not done.is_set():
            sample_cur.execute("SELECT trx_state FROM information_schema.INNODB_TRX WHERE trx_query LIKE 'LOAD DATA%'"
                               " OR trx_query LIKE 'INSERT IGNORE%'")
            for (state,) in sample_cur.fetchall():
                samples[state] = samples.get(state, 0) + 1
            time.sleep(0.02)

    sampler = threading.Thread(target=sample)
    sampler.start()
    ours, server, started = resource.getrusage(resource.RUSAGE_SELF), mysqld_cpu(), time.monotonic()
    threads = [threading.Thread(target=lane, args=(n,)) for n in range(lanes)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall, server = time.monotonic() - started, mysqld_cpu() - server
    after = resource.getrusage(resource.RUSAGE_SELF)
    done.set()
    sampler.join()
    client = after.ru_utime + after.ru_stime - ours.ru_utime - ours.ru_stime
    extra = ""
    if not autoincrement:
        alter_server, alter_started = mysqld_cpu(), time.monotonic()
        cur.execute(f"ALTER TABLE `{table.name}` MODIFY `{key}` {chunks.key_type} NOT NULL AUTO_INCREMENT")
        extra = (f"; ALTER back (COPY) {time.monotonic() - alter_started:.1f} s, "
                 f"mysqld {mysqld_cpu() - alter_server:.1f} CPU-s")
    print(f"{label}: {wall:.1f} s, mysqld {server:.1f} CPU-s, client {client:.1f} CPU-s, statement samples "
          f"{samples}{extra} (load average {os.getloadavg()[0]:.1f})", flush=True)
    admin.cursor().execute(f"DROP DATABASE {COPY}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", required=True)
    parser.add_argument("--table", required=True)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    chunks = Chunks(args.database, args.table, args.rows)
    print(f"{args.table}: {len(chunks.chunks)} chunks, {sum(map(len, chunks.chunks)) / 1e6:.0f} MB", flush=True)
    for _ in range(args.rounds):
        one_way(chunks, "LOAD DATA, 1 connection", 1, insert=False)
        one_way(chunks, "LOAD DATA, 2 connections", 2, insert=False)
        one_way(chunks, "INSERT, 2 connections", 2, insert=True)
        one_way(chunks, "LOAD DATA, 2 connections, no AUTO_INCREMENT, then ALTER back", 2, insert=False,
                autoincrement=False)


if __name__ == "__main__":
    main()
