"""The physical MariaDB method (mariadb-backup + IMPORT TABLESPACE) against the real server and real restic:
byte-identical round trips through the CLI (to another name, in place, drill on a private server), clear
one-line refusals where it cannot apply, and a killed restore that is loud until finished."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from safehold.engines.mariadb import physical
from safehold.errors import DatabaseError
from safehold.models import Connection, Database
from tests.conftest import SRC, database_config, mariadb_dump, need, run_cli, sql
from tests.integration.test_core_roundtrip import fill_mariadb

EXTRA = [  # what the physical path handles specially: a FULLTEXT index, a name the datadir encodes, a gap
    "CREATE TABLE docs (id INT PRIMARY KEY AUTO_INCREMENT, title VARCHAR(80), body TEXT, KEY by_title (title),"
    " FULLTEXT KEY ft_body (body), FULLTEXT KEY ft_title (title))",
    "INSERT INTO docs (title, body) VALUES ('vpn', 'the vpn is down again'), ('fw', 'firewall rule for printer'),"
    " ('gone', 'deleted soon')",
    "DELETE FROM docs WHERE title = 'gone'",
    "CREATE TABLE `odd-name` (id INT PRIMARY KEY, doc_id INT, FOREIGN KEY (doc_id) REFERENCES docs(id))",
    "INSERT INTO `odd-name` VALUES (1, 1)",
]


@pytest.fixture(autouse=True)
def _tools() -> None:
    need(shutil.which("mariadb-backup") is not None, "mariadb-backup is not installed (apt-get install mariadb-backup)")
    need(os.geteuid() == 0, "the physical method moves files into the server's datadir: run as root")


def _config(tmp_path: Path, repo: dict[str, str], db: str) -> Path:
    return database_config(tmp_path, repo, "app", "mariadb", "root", db, 'method = "physical"')


def _renamed_dump(name: str, original: str) -> bytes:
    """mariadb-dump of a copy, its name written as the original's (the header line names it)."""
    return mariadb_dump(name).replace(name.encode(), original.encode())


def test_round_trip_to_another_name_in_place_and_drill(tmp_path: Path, repo: dict[str, str], new_db) -> None:
    db = new_db("t_physical")
    fill_mariadb(db)
    sql(EXTRA, db)
    before = mariadb_dump(db)
    config = _config(tmp_path, repo, db)
    made = run_cli("backup", "app", "--json", config=config)
    assert made.returncode == 0, made.stderr
    run = json.loads(made.stdout)[0]["run_id"]
    shown = json.loads(run_cli("show", run[:12], "--json", config=config).stdout)
    assert shown["databases"][0]["method"] == "physical"

    copy = f"{db}_copy"
    new_db.created.append(copy)
    restored = run_cli("restore", "app", run, "--to-db", f"{db}={copy}", "--json", config=config)
    assert restored.returncode == 0, restored.stderr
    assert all(row["ok"] for row in json.loads(restored.stdout)["comparison"])
    assert _renamed_dump(copy, db) == before
    # The FULLTEXT indexes work (IMPORT TABLESPACE alone leaves them corrupt) and the table takes new rows.
    assert sql("SELECT id FROM docs WHERE MATCH(body) AGAINST ('firewall')", copy) == [(2,)]
    sql("INSERT INTO docs (title, body) VALUES ('new', 'another firewall')", copy)
    assert sql("SELECT id FROM docs WHERE MATCH(body) AGAINST ('another')", copy) == [(4,)]

    sql(f"DROP DATABASE `{db}`")
    assert run_cli("restore", "app", run, config=config).returncode == 0
    assert mariadb_dump(db) == before
    assert not list(Path(sql("SELECT @@datadir")[0][0]).parent.glob(f"{physical.STAGE_PREFIX}*"))

    verified = run_cli("verify", "--json", config=config)
    assert verified.returncode == 0 and json.loads(verified.stdout)["ok"], verified.stdout + verified.stderr
    drilled = run_cli("drill", "app", "--json", config=config)  # into a private server started from this host
    assert drilled.returncode == 0, drilled.stdout + drilled.stderr


def test_a_myisam_table_is_refused_in_one_line(tmp_path: Path, repo: dict[str, str], new_db) -> None:
    db = new_db("t_physical_myisam")
    sql(["CREATE TABLE fine (id INT PRIMARY KEY)", "CREATE TABLE old (id INT PRIMARY KEY) ENGINE=MyISAM"], db)
    made = run_cli("backup", "app", config=_config(tmp_path, repo, db))
    assert made.returncode != 0
    said = [line for line in made.stderr.splitlines() if "physical method" in line]
    assert len(said) == 1 and "old (MyISAM)" in said[0] and 'method = "auto"' in said[0], made.stderr


def _database(name: str, **options: object) -> Database:
    return Database(Connection("mariadb", host="127.0.0.1", user="root"), name, **options)


def test_where_it_cannot_apply_it_says_why(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, new_db) -> None:
    db = new_db("t_physical_where")
    sql("CREATE TABLE t (id INT PRIMARY KEY)", db)
    remote = Database(Connection("mariadb", host="db.example.net", user="root"), db)
    with pytest.raises(DatabaseError, match="not on this host"):
        physical.check(remote, writing=False)
    with pytest.raises(DatabaseError, match="prefix"):
        physical.check(_database(db, table_prefix="itop_"), writing=False)
    assert physical.check(_database(db), writing=False)[1] == sql("SELECT VERSION()")[0][0]

    monkeypatch.setenv("PATH", str(tmp_path))  # no mariadb-backup at all
    with pytest.raises(DatabaseError, match="mariadb-backup is not installed") as missing:
        physical.check(_database(db), writing=True)
    assert 'method = "auto"' in missing.value.hint


def _fake_tool(folder: Path, release: str, backup: str = "") -> Path:
    """A mariadb-backup of `release` first on PATH, running the shell lines `backup` when not asked its version."""
    folder.mkdir(parents=True, exist_ok=True)
    tool = folder / "mariadb-backup"
    tool.write_text(f"#!/bin/sh\nif [ \"$1\" = --version ]; then\n"
                    f"  echo 'mariadb-backup based on MariaDB server {release}-MariaDB' >&2; exit 0\nfi\n{backup}\n")
    tool.chmod(0o755)
    return folder


def test_a_failed_copy_is_reported_by_its_error_line(tmp_path: Path, repo: dict[str, str], new_db) -> None:
    db = new_db("t_physical_fail")
    sql("CREATE TABLE t (id INT PRIMARY KEY)", db)
    release = sql("SELECT VERSION()")[0][0].split("-")[0]
    # As mariadb-backup does: the error, then many lines of shutting down, then a non-zero exit.
    fake = _fake_tool(tmp_path / "bin", release, "echo '[00] FATAL ERROR: log copying was too slow' >&2\n"
                      "for i in $(seq 200); do echo \"[00] InnoDB: note $i\" >&2; done\nexit 1")
    made = run_cli("backup", "app", config=_config(tmp_path, repo, db), env={"PATH": f"{fake}:{os.environ['PATH']}"})
    assert made.returncode != 0
    assert "mariadb-backup failed for " + db + " (exit 1): [00] FATAL ERROR: log copying was too slow" in made.stderr


def test_a_mismatched_tool_refuses_the_restore_before_touching_the_live_database(
        tmp_path: Path, repo: dict[str, str], new_db) -> None:
    db = new_db("t_physical_tool")
    sql(["CREATE TABLE t (id INT PRIMARY KEY, v TEXT)", "INSERT INTO t VALUES (1, 'point')"], db)
    config = _config(tmp_path, repo, db)
    assert run_cli("backup", "app", config=config).returncode == 0
    sql("UPDATE t SET v = 'live'", db)
    live = mariadb_dump(db)
    fake = _fake_tool(tmp_path / "bin", "10.6.99")
    refused = run_cli("restore", "app", "latest", "--force", config=config,
                      env={"PATH": f"{fake}:{os.environ['PATH']}"})
    assert refused.returncode != 0
    assert "mariadb-backup is 10.6.99, the server is" in refused.stderr and 'method = "auto"' in refused.stderr
    assert mariadb_dump(db) == live


def test_a_killed_restore_is_loud_until_finished(tmp_path: Path, repo: dict[str, str], new_db) -> None:
    db = new_db("t_physical_kill")
    sql(["CREATE TABLE big (id INT PRIMARY KEY, label CHAR(32), pad VARCHAR(200), KEY by_label (label))",
         "INSERT INTO big SELECT seq, MD5(seq), REPEAT('x', 200) FROM seq_1_to_300000"], db)
    config = _config(tmp_path, repo, db)
    made = run_cli("backup", "app", "--json", config=config)
    assert made.returncode == 0, made.stderr
    point = mariadb_dump(db)
    sql("DELETE FROM big WHERE id % 2 = 0", db)

    proc = subprocess.Popen([sys.executable, "-m", "safehold", "restore", "app", "latest", "--force", "--config",
                             str(config)], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                            env={**os.environ, "PYTHONPATH": str(SRC)}, start_new_session=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stderr.readline, "")), daemon=True)  # type: ignore[union-attr]
    reader.start()
    _wait_for(lambda: any(re.search(r"unpack \S+: ", line) for line in lines), proc, lines)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    reader.join(timeout=10)
    stage = Path(sql("SELECT @@datadir")[0][0]).parent
    assert list(stage.glob(f"{physical.STAGE_PREFIX}{proc.pid}-*")), "the killed restore left no staging folder"

    checked = run_cli("check", "app", "--json", config=config)
    assert checked.returncode == 2, checked.stdout
    (finding,) = [f for f in json.loads(checked.stdout)["instances"][0]["findings"] if f["rule"] == "restore"]
    assert finding["status"] == "CRITICAL", finding
    command = shlex.split(re.search(r"finish it with `([^`]+)`", finding["message"])[1])
    finished = run_cli(*command[1:])
    assert finished.returncode == 0, finished.stderr
    assert mariadb_dump(db) == point
    assert not list(stage.glob(f"{physical.STAGE_PREFIX}{proc.pid}-*")), "the next restore left the old staging"


def _wait_for(condition: Callable[[], bool], proc: subprocess.Popen, lines: list[str]) -> None:
    deadline = time.monotonic() + 300
    while not condition():
        assert proc.poll() is None, "the restore ended before the phase was reached:\n" + "".join(lines)
        assert time.monotonic() < deadline
        time.sleep(0.02)
