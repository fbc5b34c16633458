"""A restore stopped by SIGTERM cleans up on the way out; one killed by SIGKILL is cleaned up by the next run;
an application a killed backup left paused is resumed by `safehold check`, which says so."""

from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import SRC, database_config, run_cli, sql
from tests.integration.appkit import held_stop, kill_group, start_cli, wait_for
from tests.integration.unattended import make_instance


@pytest.fixture
def big_point(tmp_path: Path, repo: dict[str, str], new_db: Callable[[str], str]) -> tuple[Path, str]:
    """A point of a database that takes a few seconds to load (~120 MB of rows)."""
    db = new_db("t_stop")
    sql(["CREATE TABLE notes (id INT PRIMARY KEY, body MEDIUMTEXT, n INT)",
         "INSERT INTO notes SELECT seq, CONCAT(seq, ' ', REPEAT(MD5(seq), 60)), seq % 7 FROM seq_1_to_60000"], db)
    config = database_config(tmp_path, repo, "app", "mariadb", "root", db)
    assert run_cli("backup", config=config).returncode == 0
    return config, db


def _own_tmp(config: Path) -> dict[str, str]:
    """A temp dir of this test's own: a restore in a parallel test removes the spool a killed one left in /tmp."""
    folder = config.parent / "tmp"
    folder.mkdir(exist_ok=True)
    return {"TMPDIR": str(folder)}


def _restore_in_background(config: Path, into: str) -> subprocess.Popen[str]:
    argv = [sys.executable, "-m", "safehold", "restore", "app", "latest", "--to-db", into, "--config", str(config)]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(SRC), **_own_tmp(config)})


def _spool_of(config: Path, pid: int, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = glob.glob(os.path.join(_own_tmp(config)["TMPDIR"], f"safehold-spool-{pid}-*"))
        if found:
            return found[0]
        time.sleep(0.05)
    raise AssertionError("the restore never started loading")


def test_sigterm_during_restore_cleans_up_and_says_so(big_point: tuple[Path, str], new_db) -> None:  # noqa: ANN001
    config, db = big_point
    into = new_db("t_stop_r")
    sql(f"DROP DATABASE `{into}`")
    child = _restore_in_background(config, into)
    spool = _spool_of(config, child.pid)
    child.send_signal(signal.SIGTERM)
    _, stderr = child.communicate(timeout=60)
    assert child.returncode == 128 + signal.SIGTERM, stderr
    assert "stopped by SIGTERM — the last complete recovery point is untouched" in stderr
    assert "Traceback" not in stderr and not os.path.exists(spool)
    assert not glob.glob(f"/dev/shm/safehold-load-{child.pid}-*")
    history = run_cli("history", "app", "--json", config=config)
    assert "stopped by SIGTERM" in history.stdout


def test_leftovers_of_a_killed_restore_go_with_the_next_one(big_point: tuple[Path, str], new_db) -> None:  # noqa: ANN001
    config, db = big_point
    first, second = new_db("t_stop_r"), new_db("t_stop_r")
    sql([f"DROP DATABASE `{first}`", f"DROP DATABASE `{second}`"])
    child = _restore_in_background(config, first)
    spool = _spool_of(config, child.pid)
    child.kill()
    child.wait(timeout=60)
    assert os.path.exists(spool)  # nothing runs after SIGKILL
    again = run_cli("restore", "app", "latest", "--to-db", second, config=config, env=_own_tmp(config))
    assert again.returncode == 0, again.stderr
    assert not os.path.exists(spool)
    assert f"removed {spool}, left behind by a safehold run that was killed" in again.stderr
    assert sql("SELECT COUNT(*) FROM notes", second) == [(60000,)]


def test_an_app_a_killed_backup_left_paused_is_resumed_by_check(tmp_path: Path, repo: dict[str, str]) -> None:
    log, hold = tmp_path / "quiesce.log", tmp_path / "hold"
    config = make_instance(tmp_path, repo, held_stop(log, hold))
    hold.touch()
    proc = start_cli("backup", "app", config=config)
    try:
        wait_for(lambda: log.exists() and "stopped" in log.read_text())
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        hold.unlink()
        kill_group(proc)
    marker = tmp_path / "state" / "quiesce" / "app.json"
    assert marker.exists() and log.read_text() == "stopped\n"  # killed: nothing could resume

    result = run_cli("check", "app", "--json", config=config)
    data = json.loads(result.stdout)
    assert result.returncode == 2, result.stdout  # the killed run itself is the last run: CRITICAL
    found = {f["rule"]: f for f in data["instances"][0]["findings"]}
    assert "interrupted" in found["last-run"]["message"]
    assert found["paused"]["status"] == "WARNING"
    message = found["paused"]["message"]
    assert message.startswith(f"resumed now: stopped by the quiesce commands (start: sh -c echo started >> {log})")
    assert f"left paused since {time.strftime('%Y-%m-%d', time.gmtime())}" in message and f"pid {proc.pid}" in message
    assert log.read_text() == "stopped\nstarted\n" and not marker.exists()
    again = json.loads(run_cli("check", "app", "--json", config=config).stdout)
    assert "paused" not in {f["rule"] for f in again["instances"][0]["findings"]}
