"""Tables shared between restore lanes (INSERTs for AUTO_INCREMENT tables): byte-identical, loud on failure."""

from __future__ import annotations

import glob
import io
import os
import tempfile
import threading
import time

import pytest

from safehold.engines.mariadb import inserts, loader, parallel
from safehold.errors import DatabaseError
from safehold.output import Silent
from tests.conftest import sql
from tests.integration import sakila_like
from tests.integration.test_mariadb_engine import (  # noqa: F401 - small_chunks is a fixture
    PREFIX,
    database,
    dump_bytes,
    load_edge,
    reference_dump,
    round_trip,
    small_chunks,
)


@pytest.fixture
def shared(monkeypatch: pytest.MonkeyPatch, small_chunks) -> list[str]:  # noqa: ANN001, F811
    """Every table that may be shared is shared from its first chunk; returns the tables loaded by INSERT."""
    monkeypatch.setattr(loader, "SHARE_BYTES", 0)
    used: list[str] = []
    real = inserts.statement

    def spy(table, database, data, limit):  # noqa: ANN001, ANN202
        found = real(table, database, data, limit)
        if found is not None:
            used.append(table.name)
        return found

    monkeypatch.setattr(inserts, "statement", spy)
    return used


def _mixed(name: str) -> None:
    """Auto-increment tables (narrow, split text, BLOBs, a counter above max(id)), a trigger, keyless and BIT tables."""
    sql(["CREATE TABLE replies (id INT AUTO_INCREMENT PRIMARY KEY, body LONGTEXT, kind VARCHAR(10),"
         " note VARCHAR(40) CHARACTER SET latin1, at DATETIME, KEY (kind))",
         "CREATE TABLE files (id BIGINT UNSIGNED AUTO_INCREMENT PRIMARY KEY, data LONGBLOB, name VARCHAR(50))",
         "CREATE TABLE logs (id INT AUTO_INCREMENT PRIMARY KEY, msg VARCHAR(300), n DECIMAL(10,2), d DATE,"
         " e ENUM('a','b'), f DOUBLE)",
         "CREATE TABLE tags (tag VARCHAR(40) PRIMARY KEY, v VARCHAR(200))",
         "CREATE TABLE nokey (a INT, v VARCHAR(100))",
         "CREATE TABLE flags (id INT AUTO_INCREMENT PRIMARY KEY, b BIT(7), v VARCHAR(100))",
         "CREATE TABLE audit (id INT AUTO_INCREMENT PRIMARY KEY, what VARCHAR(100))",
         "CREATE TRIGGER replies_audit AFTER INSERT ON replies FOR EACH ROW INSERT INTO audit (what) VALUES (NEW.id)",
         # Quotes, backslashes, TAB/LF/CR, NUL, text that reads as \N or _binary'\N', multibyte and latin1 bytes.
         "INSERT INTO replies (body, kind, note, at) SELECT CONCAT('it''s \\\\N \\t', CHAR(0), '\\n\\r é 漢 ',"
         " '_binary''\\\\N''', REPEAT(MD5(seq), 1 + seq % 300)), IF(seq % 7, 'public', NULL),"
         " IF(seq % 5, CONCAT('café ', seq), '\\\\N'), '2026-01-02 03:04:05' + INTERVAL seq MINUTE FROM seq_1_to_3000",
         "INSERT INTO files (data, name) SELECT IF(seq % 9, RANDOM_BYTES(1 + seq % 1024), NULL), CONCAT('f', seq)"
         " FROM seq_1_to_1500",
         "INSERT INTO files (data, name) VALUES (X'275C0009000A0D27', 'quote-backslash-nul'), ('', '')",
         "INSERT INTO logs (msg, n, d, e, f) SELECT CONCAT('line ', seq, ' \\'quoted\\' ', REPEAT('x', seq % 200)),"
         " seq / 7, '2025-01-01' + INTERVAL seq DAY, IF(seq % 2, 'a', 'b'), seq / 3 FROM seq_1_to_6000",
         "SET SESSION sql_mode='NO_AUTO_VALUE_ON_ZERO'", "INSERT INTO logs (id, msg) VALUES (0, 'zero id kept')",
         "INSERT INTO tags SELECT CONCAT('tag-', seq), REPEAT('t', seq % 150) FROM seq_1_to_3000",
         "INSERT INTO nokey SELECT 5000 - seq, REPEAT('n', seq % 90) FROM seq_1_to_3000",
         "INSERT INTO flags (b, v) SELECT seq % 128, REPEAT('f', seq % 90) FROM seq_1_to_3000",
         "ALTER TABLE replies AUTO_INCREMENT=900000",
         "DELETE FROM logs WHERE id > 5990"], name)  # a counter above max(id) without an explicit option


def test_shared_tables_round_trip_byte_identical(new_db, shared) -> None:  # noqa: ANN001
    name = new_db(PREFIX)
    _mixed(name)
    audit = sql("SELECT COUNT(*) FROM audit", name)[0][0]
    report, restored = round_trip(name, reference=reference_dump)
    # Split tables and narrow ones went through INSERT; BIT and keyless tables were never shared.
    assert {"replies", "files", "logs"} <= set(shared)
    assert not {"flags", "nokey", "tags"} & set(shared)
    assert sql("SELECT COUNT(*) FROM audit", name)[0][0] == audit  # the trigger did not fire during the load
    assert "AUTO_INCREMENT=900000" in sql("SHOW CREATE TABLE replies", name)[0][1]
    assert {t: r.checksum for t, r in restored.tables.items()} == {t: r.checksum for t, r in report.tables.items()}
    assert not restored.notes, restored.notes


def test_edge_cases_and_sakila_with_every_table_shared(new_db, shared) -> None:  # noqa: ANN001
    name = new_db(PREFIX)
    load_edge(name)
    round_trip(name, reference=reference_dump)
    name = new_db(PREFIX)
    sql(sakila_like.statements(scale=2), name)
    round_trip(name, workers=3)
    assert shared


def test_a_killed_lane_fails_the_restore_clearly(new_db, shared) -> None:  # noqa: ANN001
    name = new_db(PREFIX)
    sql(["CREATE TABLE big (id INT AUTO_INCREMENT PRIMARY KEY, v VARCHAR(200))",
         "INSERT INTO big (v) SELECT REPEAT(MD5(seq), 6) FROM seq_1_to_200000"], name)
    data, _ = dump_bytes(database(name))
    target = new_db(PREFIX)
    killed: list[int] = []

    def kill_an_insert() -> None:
        deadline = time.monotonic() + 60
        while not killed and time.monotonic() < deadline:
            for thread_id, info in sql(f"SELECT ID, INFO FROM information_schema.PROCESSLIST WHERE DB='{target}'"):
                if info and info.startswith("INSERT IGNORE INTO"):
                    sql(f"KILL {thread_id}")
                    killed.append(thread_id)
                    return
            time.sleep(0.005)

    watcher = threading.Thread(target=kill_an_insert)
    watcher.start()
    try:
        with pytest.raises(DatabaseError) as failure:
            parallel.restore(database(name), target, io.BytesIO(data), Silent())
    finally:
        watcher.join()
    assert killed, "no INSERT of a shared table was seen"
    assert "127.0.0.1:3306" in str(failure.value) and failure.value.code in (1927, 2006, 2013), failure.value
    assert failure.value.__suppress_context__  # one line, no MySQLdb traceback
    # The lanes' folders (chunks read ahead, the chunk being loaded) are gone.
    assert not glob.glob(f"/dev/shm/safehold-load-{os.getpid()}-*")
    assert not glob.glob(os.path.join(tempfile.gettempdir(), f"safehold-spool-{os.getpid()}-*"))
