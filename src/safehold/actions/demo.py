"""`safehold demo`: prove the whole cycle with no configuration and no database server.

It builds a small instance (SQLite database, uploaded files, a config file) in a working folder,
backs it up into a local repository, damages it (deletes rows and files, edits the config),
restores the point and checks that every byte came back.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import sqlite3
import time
from pathlib import Path

from safehold.actions.backup import backup_instance
from safehold.actions.restore import restore
from safehold.actions.verify import verify
from safehold.config import parse
from safehold.errors import SafeholdError
from safehold.output import Reporter
from safehold.secrets import write_private

MARKER = ".safehold-demo"
CUSTOMERS = ["Acme GmbH", "Globex Ltd", "Initech", "Umbrella SA", "Soylent Corp", "Hooli", "Vandelay Ind."]


def _build_app(app: Path) -> None:
    (app / "uploads" / "clients" / "acme").mkdir(parents=True)
    (app / "uploads" / "tickets" / "2026").mkdir(parents=True)
    db = sqlite3.connect(app / "app.db")
    db.executescript("""
        CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT NOT NULL);
        CREATE TABLE tickets (id INTEGER PRIMARY KEY, customer_id INTEGER REFERENCES customers(id),
                              subject TEXT, body TEXT);
        CREATE VIEW open_tickets AS SELECT t.id, c.name, t.subject FROM tickets t JOIN customers c
                                    ON c.id = t.customer_id;
    """)
    db.executemany("INSERT INTO customers(name) VALUES (?)", [(n,) for n in CUSTOMERS])
    db.executemany("INSERT INTO tickets(customer_id, subject, body) VALUES (?,?,?)",
                   [(1 + i % len(CUSTOMERS), f"Ticket {i}: printer on fire ✓", "Details… " * (i % 20))
                    for i in range(500)])
    db.commit()
    db.close()
    (app / "uploads" / "clients" / "acme" / "contract.pdf").write_bytes(os.urandom(64 * 1024))
    (app / "uploads" / "tickets" / "2026" / "screenshot 1.png").write_bytes(os.urandom(32 * 1024))
    (app / "uploads" / "tickets" / "2026" / "notes – ü.txt").write_text("remember the backup\n")
    (app / "uploads" / "empty.txt").write_text("")
    write_private(app / "config.ini", "[db]\npath = app.db\n[mail]\nsmtp = mail.example\n")


def _fingerprint(app: Path) -> dict[str, str]:
    """sha256 of every file plus the SQLite content, to compare before and after."""
    result: dict[str, str] = {}
    for path in sorted(app.rglob("*")):
        if path.is_file() and path.name != "app.db":
            st = path.stat()
            result[str(path.relative_to(app))] = (
                hashlib.sha256(path.read_bytes()).hexdigest() + f" {st.st_mode:o} {int(st.st_mtime)}")
    db = sqlite3.connect(app / "app.db")
    result["app.db"] = hashlib.sha256("\n".join(db.iterdump()).encode()).hexdigest()
    db.close()
    return result


def _damage(app: Path) -> list[str]:
    db = sqlite3.connect(app / "app.db")
    db.execute("DELETE FROM tickets WHERE id % 3 = 0")
    db.execute("DELETE FROM customers WHERE id = 2")
    db.commit()
    db.close()
    (app / "uploads" / "clients" / "acme" / "contract.pdf").unlink()
    shutil.rmtree(app / "uploads" / "tickets")
    (app / "config.ini").write_text("[db]\npath = broken\n")
    return ["deleted 167 tickets and 1 customer", "deleted contract.pdf and the tickets/ folder",
            "overwrote config.ini"]


def _prepare(workdir: Path) -> None:
    if workdir.exists():
        if not (workdir / MARKER).exists():
            raise SafeholdError(f"{workdir} exists and is not a safehold demo folder",
                                "remove it or pass --workdir to another path")
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    (workdir / MARKER).write_text("created by safehold demo\n")


def run_demo(workdir: Path, reporter: Reporter) -> dict[str, object]:
    """Build, back up, damage, restore, verify; return the checks and whether all passed."""
    started = time.monotonic()
    workdir = workdir.resolve()
    _prepare(workdir)
    app = workdir / "app"
    app.mkdir()
    reporter.step(f"building a demo instance in {app}")
    _build_app(app)
    write_private(workdir / "repo.pass", secrets.token_urlsafe(32))
    config_path = workdir / "safehold.toml"
    config_path.write_text(f'''# written by `safehold demo`; try: safehold list --config {config_path}
[settings]
state_dir = "{workdir / 'state'}"

[repositories.local]
url = "{workdir / 'repository'}"
password = "file:{workdir / 'repo.pass'}"

[instances.demo]
repositories = ["local"]
files = ["{app / 'uploads'}"]
config_files = ["{app / 'config.ini'}"]

[[instances.demo.databases]]
engine = "sqlite"
path = "{app / 'app.db'}"
''')
    config = parse(config_path.read_text(), config_path)
    before = _fingerprint(app)
    point = backup_instance(config, "demo", reporter)
    reporter.step("damaging the instance: " + "; ".join(_damage(app)))
    damaged = _fingerprint(app)
    result = restore(config, "demo", str(point["run_id"]), reporter, force=True)
    after = _fingerprint(app)
    integrity = verify(config, str(point["run_id"]), False, reporter)
    checks = [
        {"check": "damage really changed the instance", "ok": damaged != before},
        {"check": "database rows match the manifest", "ok": bool(result["ok"])},
        {"check": "database content identical to before", "ok": after["app.db"] == before["app.db"]},
        {"check": "every file back with content, mode and mtime",
         "ok": {k: v for k, v in after.items() if k != "app.db"} == {k: v for k, v in before.items() if k != "app.db"}},
        {"check": "a safety point of the damaged state was taken first", "ok": bool(result.get("safety_point"))},
        {"check": "repository and point pass verify", "ok": bool(integrity["ok"])},
    ]
    return {"ok": all(c["ok"] for c in checks), "checks": checks, "run_id": point["run_id"],
            "workdir": str(workdir), "config": str(config_path), "seconds": round(time.monotonic() - started, 1)}
