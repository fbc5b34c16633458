"""`safehold check` on real backups: a point much smaller than the recent median is flagged."""

from __future__ import annotations

import sqlite3
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
