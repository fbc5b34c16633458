"""The parallel MariaDB method against the real server: byte-identical round trips, determinism, checks."""

from __future__ import annotations

import io
import json
import os
import random
import secrets
import subprocess
import threading
import time
from pathlib import Path

import pytest

from safehold.engines import mariadb as engine
from safehold.engines.mariadb import parallel, reader, stream
from safehold.errors import DatabaseError
from safehold.models import Connection, Database, DatabaseReport
from safehold.output import Silent
from safehold.secrets import Secret
from tests.conftest import mariadb_dump, sql
from tests.integration import sakila_like

PREFIX = "t_mariadb"
EDGE = Path(__file__).parent / "fixtures" / "mariadb_edge.sql"


def database(name: str, **options: object) -> Database:
    return Database(Connection("mariadb", user="root"), name, **options)


def load_edge(name: str) -> None:
    statements = [s.strip() for s in EDGE.read_text().split(";;\n") if s.strip()]
    statements = [s for s in statements if not all(line.startswith("--") for line in s.splitlines())]
    sql(statements, database=name)


def dump_bytes(db: Database) -> tuple[bytes, object]:
    out = io.BytesIO()
    report = parallel.dump(db, out, Silent())
    return out.getvalue(), report


def reference_dump(name: str) -> bytes:
    """conftest's mariadb_dump, plus --single-transaction: its default LOCK TABLES fails on a view whose
    definer no longer exists (error 1449); the option does not change the output."""
    return subprocess.run(
        ["mariadb-dump", "-h127.0.0.1", "-uroot", "--single-transaction", "--skip-dump-date", "--routines", "--events",
         "--triggers", "--hex-blob", name], check=True, capture_output=True).stdout


def round_trip(name: str, workers: int = 2, reference=mariadb_dump, **options: object):  # noqa: ANN001, ANN201
    """Dump, drop the database, restore it under the same name; the reference dump must not change."""
    before = reference(name)
    data, report = dump_bytes(database(name, workers=workers, **options))
    sql(f"DROP DATABASE `{name}`")
    restored = parallel.restore(database(name, workers=workers, **options), name, io.BytesIO(data), Silent())
    after = reference(name)
    assert after == before, _first_difference(before, after)
    return report, restored


def _first_difference(before: bytes, after: bytes) -> str:
    for left, right in zip(before.splitlines(), after.splitlines(), strict=False):
        if left != right:
            return f"first difference:\n- {left[:300]!r}\n+ {right[:300]!r}"
    return f"lengths differ: {len(before)} vs {len(after)}"


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tiny chunks and ranges so small tables exercise multi-range reading and multi-chunk loading."""
    monkeypatch.setattr(stream, "CHUNK_MIN", 16 << 10)
    monkeypatch.setattr(stream, "CHUNK_MAX", 64 << 10)
    monkeypatch.setattr(stream, "CUT_MASK", 0x0F)
    monkeypatch.setattr(reader, "RANGE_BYTES", 16 << 10)


def test_auto_uses_parallel() -> None:
    assert engine.suffix(database("x")) == ".tar"
    assert engine.suffix(database("x", method="mariadb-dump")) == ".sql"


def test_edge_cases_round_trip_byte_identical(new_db) -> None:  # noqa: ANN001
    name = new_db(PREFIX)
    load_edge(name)
    history = sql("SELECT COUNT(*) FROM hist FOR SYSTEM_TIME ALL", name)[0][0]
    history2 = sql("SELECT COUNT(*), MIN(rs) FROM hist2 FOR SYSTEM_TIME ALL", name)[0]
    report, restored = round_trip(name, reference=reference_dump)
    assert report.tables["hist"].rows == history == 3
    assert sql("SELECT COUNT(*) FROM hist FOR SYSTEM_TIME ALL", name)[0][0] == history
    assert sql("SELECT COUNT(*), MIN(rs) FROM hist2 FOR SYSTEM_TIME ALL", name)[0] == history2
    assert sql("SELECT secret FROM gen ORDER BY id", name) == [(9,), (None,), (7,)]
    assert "seq1" not in report.tables and report.tables["empty_table"].rows == 0
    assert {t: r.rows for t, r in restored.tables.items()} == {t: r.rows for t, r in report.tables.items()}
    assert {t: r.checksum for t, r in restored.tables.items()} == {t: r.checksum for t, r in report.tables.items()}
    assert report.objects == {"views": 3, "routines": 2, "triggers": 2, "events": 1}
    assert not restored.notes, restored.notes
    assert report.phases["global lock"] < 5
    assert set(restored.phases) >= {"schema", "load", "indexes", "foreign keys", "post-data objects"}


def test_values_over_half_of_max_allowed_packet_survive_in_tables_that_are_not_split(new_db) -> None:  # noqa: ANN001
    # The server returns NULL (with only a warning) for a HEX()/REPLACE() result over max_allowed_packet:
    # before format 3 such a blob in a table without a key, in MyISAM or in an all-wide table was lost.
    name = new_db(PREFIX)
    size = int(sql("SELECT @@max_allowed_packet")[0][0]) * 3 // 5
    sql(["CREATE TABLE nokey (a INT, b LONGBLOB, c VARCHAR(20)) ENGINE=InnoDB",
         "CREATE TABLE old (id INT PRIMARY KEY, t LONGTEXT) ENGINE=MyISAM CHARSET latin1",
         "CREATE TABLE allwide (b LONGBLOB, t MEDIUMTEXT) ENGINE=Aria",
         f"INSERT INTO nokey VALUES (1, CONCAT(REPEAT('\\\t', 10), RANDOM_BYTES(1024), REPEAT('x', {size})), 'a'),"
         " (2, NULL, NULL), (3, '', '\\N')",
         f"INSERT INTO old VALUES (1, CONCAT('é\n', REPEAT('y', {size})))",
         f"INSERT INTO allwide VALUES (REPEAT(X'00FF', {size // 2}), 'short'), (NULL, NULL)"], name)
    checks = ["SELECT MD5(GROUP_CONCAT(MD5(IFNULL(b, 'null')), c ORDER BY a)) FROM nokey",
              "SELECT MD5(t) FROM old", "SELECT MD5(GROUP_CONCAT(MD5(IFNULL(b, 'null')), t ORDER BY t)) FROM allwide"]
    before = [sql(check, name) for check in checks]
    report, restored = round_trip(name)
    assert [sql(check, name) for check in checks] == before
    assert restored.tables["nokey"].rows == 3 and restored.tables["old"].checksum == report.tables["old"].checksum


def test_a_value_the_server_will_not_hand_over_fails_the_dump(new_db) -> None:  # noqa: ANN001
    connection = parallel.client.connect(Connection("mariadb", user="root"))
    try:
        cur = connection.cursor()
        cur.execute("SELECT REPEAT('x', @@max_allowed_packet + 1)")  # NULL and warning 1301, as in a dump
        assert cur.fetchall() == ((None,),)
        with pytest.raises(DatabaseError, match="could not hand over a value .*max_allowed_packet"):
            reader._check_no_overflow(connection, reader.Table(0, "t", "InnoDB", False))
    finally:
        connection.close()


def test_sakila_round_trip_byte_identical_with_small_chunks(new_db, small_chunks) -> None:  # noqa: ANN001
    name = new_db(PREFIX)
    sql(sakila_like.statements(scale=4), name)
    sql(f"ANALYZE TABLE `{name}`.rental, `{name}`.film, `{name}`.payment")
    report, restored = round_trip(name, workers=3)
    assert report.tables["rental"].rows == sql("SELECT COUNT(*) FROM rental", name)[0][0] > 3000
    assert restored.tables["rental"].rows == report.tables["rental"].rows


def test_a_dominant_table_of_wide_rows_keeps_its_keys_at_restore_and_round_trips(new_db) -> None:  # noqa: ANN001
    name = new_db("t_mariadb_dominant")
    sql(["CREATE TABLE parent (id INT PRIMARY KEY)", "INSERT INTO parent SELECT seq FROM seq_1_to_50",
         "CREATE TABLE replies (id INT AUTO_INCREMENT PRIMARY KEY, parent_id INT NOT NULL, body TEXT,"
         " KEY by_parent (parent_id, id), FULLTEXT KEY words (body),"
         " CONSTRAINT to_parent FOREIGN KEY (parent_id) REFERENCES parent (id))",
         "INSERT INTO replies (parent_id, body) SELECT 1 + seq % 50, REPEAT(MD5(seq), 48) FROM seq_1_to_3000",
         "CREATE TABLE notes (id INT PRIMARY KEY, v VARCHAR(20), KEY by_v (v))",
         "INSERT INTO notes SELECT seq, seq FROM seq_1_to_100", "ANALYZE TABLE parent, replies, notes"], name)
    data, _ = dump_bytes(database(name))
    header = json.loads(dict(stream.members(io.BytesIO(data)))[stream.TABLES_MEMBER])
    assert [t["name"] for t in header["tables"] if t.get("keep_indexes")] == ["replies"]
    _, restored = round_trip(name)  # keys in CREATE TABLE, the FULLTEXT one and the foreign key after
    assert restored.tables["replies"].rows == 3000


def test_stream_is_deterministic_and_local_changes_stay_local(new_db, small_chunks) -> None:  # noqa: ANN001
    name = new_db(PREFIX)
    sql(sakila_like.statements(scale=4), name)
    first, _ = dump_bytes(database(name))
    second, _ = dump_bytes(database(name, workers=3))
    assert first == second
    sql("UPDATE rental SET return_date = '2005-09-30 10:00:00' WHERE rental_id = 1500", name)
    third, _ = dump_bytes(database(name))
    names = [n for n, _ in stream.members(io.BytesIO(third))]
    assert names.count(stream.data_member(0)) >= 1 and names[-1] == stream.REPORT_MEMBER
    old = {data for _, data in stream.members(io.BytesIO(first))}
    changed = [n for n, data in stream.members(io.BytesIO(third)) if data not in old]
    # One rental chunk, or two when the row sits on a content-defined boundary, plus the closing report.
    assert changed[-1] == stream.REPORT_MEMBER and 1 <= len(changed) - 1 <= 2, changed
    assert len(changed) <= len(names) / 10, (changed, len(names))


def test_status_updates_of_a_split_table_leave_its_wide_chunks_alone(new_db, small_chunks) -> None:  # noqa: ANN001
    name = new_db(PREFIX)
    sql(["CREATE TABLE tickets (id INT PRIMARY KEY, status INT NOT NULL, body MEDIUMTEXT, note TEXT, updated DATETIME)",
         "INSERT INTO tickets SELECT seq, seq % 5, REPEAT(MD5(seq), 40), IF(seq % 7, NULL, 'n'), '2026-01-01'"
         " FROM seq_1_to_3000"], name)
    first, _ = dump_bytes(database(name))
    sql("UPDATE tickets SET status = 9, updated = '2026-02-02 10:00:00' WHERE id % 100 = 3", name)
    second, _ = dump_bytes(database(name))
    names = [n for n, _ in stream.members(io.BytesIO(second))]
    assert names.count(stream.data_member(0, wide=True)) > 10 and names.count(stream.data_member(0)) > 1
    old = {data for _, data in stream.members(io.BytesIO(first))}
    changed = [n for n, data in stream.members(io.BytesIO(second)) if data not in old]
    assert changed and stream.data_member(0, wide=True) not in changed, changed
    report, restored = round_trip(name, workers=3)
    assert restored.tables["tickets"].checksum == report.tables["tickets"].checksum


def test_table_prefix_limits_the_dump(new_db) -> None:  # noqa: ANN001
    name = new_db(PREFIX)
    sql(["CREATE TABLE itop_a (id INT PRIMARY KEY, x INT)", "CREATE TABLE other (id INT PRIMARY KEY)",
         "INSERT INTO itop_a VALUES (1, 2)", "INSERT INTO other VALUES (5)",
         "CREATE VIEW itop_v AS SELECT x FROM itop_a"], name)
    data, report = dump_bytes(database(name, table_prefix="itop_"))
    assert set(report.tables) == {"itop_a"}
    target = new_db(PREFIX)
    sql("CREATE TABLE keep_me (id INT)", target)
    restored = parallel.restore(database(name, table_prefix="itop_"), target, io.BytesIO(data), Silent())
    assert restored.tables["itop_a"].rows == 1
    tables = {row[0] for row in sql(f"SHOW FULL TABLES FROM `{target}`")}
    assert tables == {"itop_a", "itop_v", "keep_me"}
    with pytest.raises(DatabaseError, match="no tables starting with"):
        dump_bytes(database(name, table_prefix="nothing_"))


def test_damaged_stream_is_refused(new_db) -> None:  # noqa: ANN001
    name = new_db(PREFIX)
    sql(["CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(20))", "INSERT INTO t VALUES (1, 'aaaaaaaaaa')"], name)
    data, _ = dump_bytes(database(name))
    target = new_db(PREFIX)
    with pytest.raises(DatabaseError, match="incomplete or damaged"):
        parallel.restore(database(name), target, io.BytesIO(data[: len(data) // 2]), Silent())
    flipped = bytearray(data)
    member = data.index(stream.data_member(0).encode() + b"\0")  # the first chunk's tar header
    flipped[member + 512 + 20] ^= 0xFF  # inside the first compressed chunk
    with pytest.raises(DatabaseError, match="damaged"):
        parallel.restore(database(name), new_db(PREFIX), io.BytesIO(bytes(flipped)), Silent())
    out = io.BytesIO()
    writer = stream.TarWriter(out)
    for member_name, content in stream.members(io.BytesIO(data)):
        if stream.data_part(member_name) is not None:
            content = stream.compress(stream.decompress(content).replace(b"aaaaaaaaaa", b"aaaaaaaaab"))
        writer.add(member_name, content)
    writer.close()
    with pytest.raises(DatabaseError, match="checksum"):
        parallel.restore(database(name), new_db(PREFIX), io.BytesIO(out.getvalue()), Silent())


ACCOUNTS = 3000
START_AMOUNT = 1000


def _bank(name: str) -> None:
    """accounts (sum invariant) + transfers (each transfer adds one row and two moves)."""
    sql(["CREATE TABLE accounts (id INT PRIMARY KEY, amount BIGINT NOT NULL, moves INT NOT NULL DEFAULT 0,"
         " pad VARCHAR(200))",
         "CREATE TABLE transfers (id INT AUTO_INCREMENT PRIMARY KEY, src INT, dst INT, amount INT)",
         "INSERT INTO accounts (id, amount, pad) SELECT seq, 1000, REPEAT('p', 150) FROM seq_1_to_3000",
         "ANALYZE TABLE accounts"], name)


def _writer(name: str, stop: threading.Event, done: list[int]) -> None:
    import MySQLdb

    connection = MySQLdb.connect(host="127.0.0.1", user="root", database=name)
    rng = random.Random(1)
    cur = connection.cursor()
    while not stop.is_set():
        src, dst, amount = rng.randint(1, ACCOUNTS), rng.randint(1, ACCOUNTS), rng.randint(1, 50)
        cur.execute("UPDATE accounts SET amount = amount - %s, moves = moves + 1 WHERE id = %s", (amount, src))
        cur.execute("UPDATE accounts SET amount = amount + %s, moves = moves + 1 WHERE id = %s", (amount, dst))
        cur.execute("INSERT INTO transfers (src, dst, amount) VALUES (%s, %s, %s)", (src, dst, amount))
        connection.commit()
        done[0] += 1
    connection.close()


def _consistent_copy(name: str, db: Database, new_db) -> DatabaseReport:  # noqa: ANN001
    """Dump while a writer runs; restore; the copy must satisfy the invariants."""
    stop, done = threading.Event(), [0]
    thread = threading.Thread(target=_writer, args=(name, stop, done))
    thread.start()
    try:
        while done[0] < 20:
            time.sleep(0.01)
        before = done[0]
        data, report = dump_bytes(db)
        during = done[0] - before
    finally:
        stop.set()
        thread.join()
    assert during > 0, "the writer did not run during the dump"
    target = new_db(PREFIX)
    parallel.restore(database(name, workers=3), target, io.BytesIO(data), Silent())
    total, moves = sql("SELECT SUM(amount), SUM(moves) FROM accounts", target)[0]
    transfers = sql("SELECT COUNT(*) FROM transfers", target)[0][0]
    assert total == ACCOUNTS * START_AMOUNT
    assert moves == 2 * transfers > 0
    assert report.tables["transfers"].rows == transfers
    return report


def test_consistent_under_concurrent_writes(new_db, small_chunks) -> None:  # noqa: ANN001
    name = new_db(PREFIX)
    _bank(name)
    report = _consistent_copy(name, database(name, workers=3), new_db)
    assert not report.notes


def test_consistent_without_reload_privilege(new_db, small_chunks) -> None:  # noqa: ANN001
    name = new_db(PREFIX)
    _bank(name)
    user, password = f"{PREFIX}_{secrets.token_hex(3)}", secrets.token_urlsafe(12)
    sql([f"CREATE USER '{user}'@'%' IDENTIFIED BY '{password}'",
         f"GRANT SELECT, SHOW VIEW, TRIGGER, EVENT, LOCK TABLES ON `{name}`.* TO '{user}'@'%'"])
    try:
        limited = Database(Connection("mariadb", user=user, password=Secret(password)), name, workers=3)
        report = _consistent_copy(name, limited, new_db)
    finally:
        sql(f"DROP USER '{user}'@'%'")
    assert any("no RELOAD privilege" in note for note in report.notes)


def test_a_long_query_does_not_freeze_the_application_behind_the_global_lock(new_db, monkeypatch) -> None:  # noqa: ANN001
    # FLUSH TABLES WITH READ LOCK waits for running writes (MariaDB 10.11 lets reads run on), and new
    # statements queue behind it: the wait is cut short and the dump goes on with one connection.
    from safehold.engines.mariadb import snapshot

    monkeypatch.setattr(snapshot, "LOCK_WAIT_SECONDS", 1)
    name = new_db(PREFIX)
    sql(["CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(10))", "INSERT INTO t VALUES (1, 'a'), (2, 'b')"], name)
    before = mariadb_dump(name)
    long_query = threading.Thread(target=sql, args=("UPDATE t SET v = CONCAT('a', SLEEP(8)) WHERE id = 1", name))
    long_query.start()
    deadline = time.monotonic() + 5  # until the write runs (its connection may be slow to come on a busy machine)
    while not sql("SELECT 1 FROM information_schema.PROCESSLIST WHERE STATE = 'User sleep' AND INFO LIKE 'UPDATE t%'"):
        assert time.monotonic() < deadline, "the long write did not start"
        time.sleep(0.02)
    started = time.monotonic()
    try:
        data, report = dump_bytes(database(name))
        waited = time.monotonic() - started
    finally:
        long_query.join()
    assert waited < 6, waited  # did not wait for the long write
    assert any("long-running statement kept the global read lock away for 1 s" in note for note in report.notes)
    target = new_db(PREFIX)
    parallel.restore(database(name), target, io.BytesIO(data), Silent())
    assert mariadb_dump(target).replace(target.encode(), name.encode()) == before  # the state before the write


def test_restore_under_another_name_keeps_views_working_and_charset(new_db) -> None:  # noqa: ANN001
    name = new_db(PREFIX)
    sql([f"ALTER DATABASE `{name}` CHARACTER SET latin1 COLLATE latin1_swedish_ci",
         "CREATE TABLE t (id INT PRIMARY KEY, label VARCHAR(10))", "INSERT INTO t VALUES (1, 'one')",
         "CREATE VIEW v AS SELECT id, label FROM t", "CREATE VIEW vv AS SELECT label FROM v",
         "CREATE DEFINER = `t_mariadb_gone`@`localhost` VIEW vo AS SELECT id FROM t"], name)
    data, _ = dump_bytes(database(name))
    sql(f"DROP DATABASE `{name}`")
    target = new_db(PREFIX)
    parallel.restore(database(name), target, io.BytesIO(data), Silent())
    assert sql("SELECT label FROM vv", target) == [("one",)]  # the original database is gone: no stale reference
    assert "`" + target + "`.`t`" in sql(f"SHOW CREATE VIEW `{target}`.vo")[0][1]
    charset = sql(f"SELECT DEFAULT_CHARACTER_SET_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME='{target}'")
    assert charset == [("latin1",)]


@pytest.mark.parametrize("fixture", ["edge", "sakila"])
def test_hand_script_restores_without_safehold(tmp_path: Path, new_db, small_chunks, fixture: str) -> None:  # noqa: ANN001
    """The script every parallel dump carries restores it with bash, tar, zstd, paste and the mariadb client only."""
    name = new_db(PREFIX)
    if fixture == "edge":
        load_edge(name)
    else:
        sql(sakila_like.statements(scale=2), name)
    before = reference_dump(name)
    data, report = dump_bytes(database(name))
    dump = tmp_path / "dump.tar"
    dump.write_bytes(data)
    script = tmp_path / "restore.sh"
    subprocess.run(f"tar -xOf {dump} {stream.SCRIPT_MEMBER} > {script}", shell=True, check=True)
    sql(f"DROP DATABASE `{name}`")
    scratch = tmp_path / "tmp"  # the script's own mktemp folder, apart from other tests running at once
    scratch.mkdir()
    run = subprocess.run(["bash", str(script), str(dump), name, "-h127.0.0.1", "-uroot"], capture_output=True,
                         text=True, cwd=tmp_path, env={**os.environ, "TMPDIR": str(scratch)})
    assert run.returncode == 0, run.stderr
    assert f"{len(report.tables)} tables: every row count matches the dump" in run.stdout
    after = reference_dump(name)
    assert after == before, _first_difference(before, after)
    assert not list(scratch.iterdir()), "the script leaves no rows behind"
    history = {t: " FOR SYSTEM_TIME ALL" if t.startswith("hist") else "" for t in report.tables}
    counts = {t: sql(f"SELECT COUNT(*) FROM `{t}`{history[t]}", name)[0][0] for t in report.tables}
    assert counts == {t: r.rows for t, r in report.tables.items()}


def test_hand_script_refuses_damage_and_bad_input(tmp_path: Path, new_db, small_chunks) -> None:  # noqa: ANN001
    name = new_db(PREFIX)
    sql(sakila_like.statements(scale=1), name)
    data, _ = dump_bytes(database(name))
    (tmp_path / "dump.tar").write_bytes(data)
    script = tmp_path / "restore.sh"
    script.write_bytes(dict(stream.members(io.BytesIO(data)))[stream.SCRIPT_MEMBER])
    usage = subprocess.run(["bash", str(script)], capture_output=True, text=True)
    assert usage.returncode == 2 and "usage:" in usage.stderr
    hostile = subprocess.run(["bash", str(script), "dump.tar", "x`; DROP DATABASE mysql; --"], capture_output=True,
                             text=True)
    assert hostile.returncode == 2 and "plain database name" in hostile.stderr
    exists = subprocess.run(["bash", str(script), str(tmp_path / "dump.tar"), name, "-h127.0.0.1", "-uroot"],
                            capture_output=True, text=True)
    assert exists.returncode != 0 and "exists" in exists.stderr  # never loads into a live database
    cut = tmp_path / "cut.tar"
    cut.write_bytes(data[:len(data) // 2])
    damaged = subprocess.run(["bash", str(script), str(cut), f"{name}_cut", "-h127.0.0.1", "-uroot"],
                             capture_output=True, text=True)
    new_db.created.append(f"{name}_cut")
    assert damaged.returncode != 0  # a cut dump stops the script (tar's error), it does not end "done"
    assert "done:" not in damaged.stdout
    # A dump whose report disagrees with its rows (one table's count altered) fails the final check.
    out = io.BytesIO()
    writer = stream.TarWriter(out)
    for member_name, content in stream.members(io.BytesIO(data)):
        if member_name == stream.REPORT_MEMBER:
            summary = json.loads(content)
            summary["tables"]["rental"]["rows"] += 1
            content = json.dumps(summary, indent=1, sort_keys=True).encode()
        writer.add(member_name, content)
    writer.close()
    (tmp_path / "altered.tar").write_bytes(out.getvalue())
    new_db.created.append(f"{name}_alt")
    altered = subprocess.run(["bash", str(script), str(tmp_path / "altered.tar"), f"{name}_alt", "-h127.0.0.1",
                              "-uroot"], capture_output=True, text=True)
    assert altered.returncode == 1 and "table rental:" in altered.stderr and "done:" not in altered.stdout
