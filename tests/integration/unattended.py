"""A small real instance for the unattended-operation tests: a SQLite app database and a file tree,
backed up into a real local restic repository."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from tests.conftest import write_config


def make_instance(tmp_path: Path, repo: dict[str, str], instance: str = "", settings: str = "",
                  top: str = "", rows: int = 200) -> Path:
    """Write the app's data and a safehold.toml (repository `main`); returns the config path.

    `instance` adds keys to [instances.app], `settings` to [settings], `top` whole sections ([notify]).
    """
    data = tmp_path / "app"
    (data / "files").mkdir(parents=True, exist_ok=True)
    (data / "files" / "upload.txt").write_text("attachment\n")
    db = sqlite3.connect(data / "app.db")
    db.execute("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, v TEXT)")
    db.executemany("INSERT INTO t (v) VALUES (?)", [(f"row {i}" * 5,) for i in range(rows)])
    db.commit()
    db.close()
    return write_config(tmp_path, repo, f"""
[instances.app]
app = "generic"
repositories = ["main"]
files = ["{data / 'files'}"]
{instance}

[[instances.app.databases]]
engine = "sqlite"
path = "{data / 'app.db'}"

{top}
""", settings=settings)
