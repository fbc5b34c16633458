"""`safehold check` on real backups: a point much smaller than the recent median is flagged."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import time
from pathlib import Path

from safehold.actions.backup import backup_instance
from safehold.config import load
from safehold.output import Silent
from tests.conftest import run_cli
from tests.integration.unattended import make_instance


def test_shrunken_point_makes_check_critical_with_the_rule(tmp_path: Path, repo: dict[str, str]) -> None:
    config = make_instance(tmp_path, repo, 'schedule = { time = "02:00" }', rows=3000)
    for _ in range(3):
        backup_instance(load(config), "app", Silent())
    healthy = run_cli("check", "app", config=config)
    assert "size-shrink" not in healthy.stdout

    # Someone emptied the application's table: the run succeeds, but the point is suspicious.
    db = sqlite3.connect(tmp_path / "app" / "app.db")
    db.execute("DELETE FROM t")
    db.commit()
    db.execute("VACUUM")
    db.close()
    backup_instance(load(config), "app", Silent())
    proc = run_cli("check", "app", config=config)
    assert proc.returncode == 2, proc.stdout
    assert proc.stdout.startswith("SAFEHOLD CRITICAL - app size-shrink: newest point")
    assert "under 10% of the median" in proc.stdout


def test_stale_restic_lock_of_a_killed_run_is_reported_and_verify_clears_it(tmp_path: Path,
                                                                           repo: dict[str, str]) -> None:
    config = make_instance(tmp_path, repo)
    backup_instance(load(config), "app", Silent())
    assert "repository-locks" not in run_cli("check", "app", config=config).stdout
    # A restic killed while holding its lock (SIGKILL: no cleanup), as an hour ago.
    env = {**os.environ, "RESTIC_REPOSITORY": repo["url"], "RESTIC_PASSWORD_FILE": repo["password_file"]}
    child = subprocess.Popen(["restic", "backup", "--stdin", "--stdin-filename", "x"], env=env,
                             stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    locks = Path(repo["url"]) / "locks"
    deadline = time.monotonic() + 30
    while not any(locks.iterdir()):
        assert time.monotonic() < deadline, "restic took no lock"
        time.sleep(0.05)
    child.kill()
    child.wait()
    hour_ago = time.time() - 3600
    for lock in locks.iterdir():
        os.utime(lock, (hour_ago, hour_ago))
    proc = run_cli("check", "app", config=config)
    assert proc.returncode == 1, proc.stdout
    assert "repository-locks: repository main holds 1 restic lock(s) older than 30 min" in proc.stdout
    assert run_cli("verify", "--instance", "app", config=config).returncode == 0
    assert "repository-locks" not in run_cli("check", "app", config=config).stdout
