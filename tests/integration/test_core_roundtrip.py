"""Issue 3: a generic instance (MariaDB + SQLite + files) survives backup → destroy → restore exactly."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest

from tests.conftest import mariadb_dump, run_cli, sql, write_config

MARIADB_SCHEMA = [
    "CREATE TABLE customers (id INT PRIMARY KEY AUTO_INCREMENT, name VARCHAR(100) NOT NULL,"
    " note TEXT) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
    "CREATE TABLE tickets (id INT PRIMARY KEY AUTO_INCREMENT, customer_id INT NOT NULL, subject VARCHAR(200),"
    " body MEDIUMTEXT, attachment BLOB, created DATETIME(6),"
    " CONSTRAINT fk_customer FOREIGN KEY (customer_id) REFERENCES customers(id)) ENGINE=InnoDB",
    "CREATE TABLE replies (id BIGINT PRIMARY KEY AUTO_INCREMENT, ticket_id INT NOT NULL, body TEXT,"
    " FOREIGN KEY (ticket_id) REFERENCES tickets(id) ON DELETE CASCADE)",
    "CREATE TABLE audit (id INT PRIMARY KEY AUTO_INCREMENT, what VARCHAR(50))",
    "CREATE VIEW open_tickets AS SELECT t.id, c.name, t.subject FROM tickets t JOIN customers c"
    " ON c.id = t.customer_id",
    "CREATE TRIGGER tickets_audit AFTER INSERT ON tickets FOR EACH ROW INSERT INTO audit(what)"
    " VALUES (CONCAT('ticket ', NEW.id))",
    "CREATE FUNCTION ticket_count(cid INT) RETURNS INT READS SQL DATA"
    " RETURN (SELECT COUNT(*) FROM tickets WHERE customer_id = cid)",
]


def fill_mariadb(db: str) -> None:
    sql(MARIADB_SCHEMA, db)
    statements = [
        "INSERT INTO customers(name, note) VALUES ('Müller & Söhne', 'emoji 🚀 and ✓'),"
        " ('Ōsaka 株式会社', NULL), ('Tab\there', 'new\nline \\\\ backslash')",
    ]
    for i in range(300):
        statements.append(
            f"INSERT INTO tickets(customer_id, subject, body, attachment, created) VALUES ({1 + i % 3},"
            f" 'Ticket {i} ✓', REPEAT('body {i} ', {1 + i % 50}), UNHEX(SHA2('{i}', 256)),"
            f" '2026-01-01 00:00:00.{i:06d}')")
    statements.append("INSERT INTO replies(ticket_id, body) SELECT id, CONCAT('reply to ', id) FROM tickets")
    sql(statements, db)


def build_files(root: Path) -> None:
    (root / "uploads" / "nested" / "deeper").mkdir(parents=True)
    (root / "uploads" / "nested" / "deeper" / "file with spaces.txt").write_text("spaces\n")
    (root / "uploads" / "ünïcødé – name.pdf").write_bytes(os.urandom(20000))
    (root / "uploads" / "empty").write_text("")
    (root / "uploads" / "link-to-pdf").symlink_to("ünïcødé – name.pdf")
    secret = root / "uploads" / "private.key"
    secret.write_text("not really a key\n")
    secret.chmod(0o600)
    os.chown(secret, 4242, 4343)
    os.utime(root / "uploads" / "nested" / "deeper" / "file with spaces.txt", (1_600_000_000, 1_600_000_000))
    (root / "app.ini").write_text("[app]\nname = demo\n")


def tree_state(root: Path) -> dict[str, tuple]:
    """Everything about every path: type, content, mode, owner, mtime (symlinks not followed)."""
    state: dict[str, tuple] = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        content = os.readlink(path) if path.is_symlink() else (path.read_bytes() if path.is_file() else b"")
        state[str(path.relative_to(root))] = (st.st_mode, st.st_uid, st.st_gid, int(st.st_mtime), content)
    return state


def sqlite_dump(path: Path) -> str:
    conn = sqlite3.connect(path)
    try:
        return "\n".join(conn.iterdump())
    finally:
        conn.close()


def app_config(tmp_path: Path, repo: dict[str, str], db: str, app: Path) -> Path:
    return write_config(tmp_path, repo, f"""
[instances.app]
repositories = ["main"]
files = ["{app / 'uploads'}"]
config_files = ["{app / 'app.ini'}"]
[[instances.app.databases]]
engine = "mariadb"
user = "root"
names = ["{db}"]
[[instances.app.databases]]
engine = "sqlite"
path = "{app / 'app.sqlite'}"
""")


@pytest.fixture
def instance(tmp_path: Path, repo: dict[str, str], new_db) -> dict[str, object]:
    db = new_db("t_core")
    fill_mariadb(db)
    app = tmp_path / "app"
    build_files(app)
    conn = sqlite3.connect(app / "app.sqlite")
    conn.executescript("CREATE TABLE notes(id INTEGER PRIMARY KEY, body TEXT, data BLOB);"
                       "INSERT INTO notes(body, data) VALUES ('ä', x'00ff'), ('b', NULL);"
                       "CREATE VIEW v AS SELECT body FROM notes;")
    conn.commit()
    conn.close()
    return {"db": db, "app": app, "config": app_config(tmp_path, repo, db, app)}


def test_round_trip_is_exact(instance: dict[str, object]) -> None:
    db, app, config = instance["db"], instance["app"], instance["config"]
    before_db, before_sqlite, before_files = mariadb_dump(db), sqlite_dump(app / "app.sqlite"), tree_state(app)

    result = run_cli("backup", "app", "--json", config=config)
    assert result.returncode == 0, result.stderr
    run_id = json.loads(result.stdout)[0]["run_id"]

    sql(f"DROP DATABASE `{db}`")
    shutil.rmtree(app)

    result = run_cli("restore", "app", run_id, "--json", config=config)
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout)
    assert outcome["ok"] and all(row["ok"] for row in outcome["comparison"])
    assert "safety_point" not in outcome  # nothing to protect: targets were empty

    assert mariadb_dump(db) == before_db
    assert sqlite_dump(app / "app.sqlite") == before_sqlite
    history = json.loads(run_cli("history", "app", "--kind", "restore", "--json", config=config).stdout)
    assert [(r["kind"], r["result"]) for r in history] == [("restore", "ok")]
    after = tree_state(app)
    assert {k: v for k, v in after.items() if k != "app.sqlite"} == \
        {k: v for k, v in before_files.items() if k != "app.sqlite"}


def test_unchanged_second_backup_adds_almost_nothing(instance: dict[str, object], repo: dict[str, str]) -> None:
    config, db = instance["config"], instance["db"]
    # Realistic volume, so restic's fixed per-snapshot metadata (a few KB) is not what is measured.
    (instance["app"] / "uploads" / "big.bin").write_bytes(os.urandom(2_000_000))
    sql(["INSERT INTO replies(ticket_id, body) SELECT t.id, SHA2(CONCAT(t.id, '-', r.id, RAND()), 512)"
         " FROM tickets t JOIN replies r LIMIT 20000"], db)
    first = run_cli("backup", "app", config=config)
    assert first.returncode == 0, first.stderr
    size_first = repo_size(repo)
    second = run_cli("backup", "app", config=config)
    assert second.returncode == 0, second.stderr
    growth = repo_size(repo) - size_first
    assert growth < 0.02 * size_first, (growth, size_first)


def repo_size(repo: dict[str, str]) -> int:
    return sum(p.stat().st_size for p in Path(repo["url"]).rglob("*") if p.is_file())


def test_restore_refuses_non_empty_database_then_force_takes_safety_point(instance: dict[str, object]) -> None:
    db, config = instance["db"], instance["config"]
    assert run_cli("backup", "app", config=config).returncode == 0
    before = mariadb_dump(db)
    sql("DELETE FROM replies WHERE id > 10", db)

    refused = run_cli("restore", "app", "latest", "--only", "db", config=config)
    assert refused.returncode == 1
    assert "already hold data" in refused.stderr and "--force" in refused.stderr

    forced = run_cli("restore", "app", "latest", "--only", "db", "--force", "--json", config=config)
    assert forced.returncode == 0, forced.stderr
    assert json.loads(forced.stdout)["safety_point"]
    assert mariadb_dump(db) == before

    listing = json.loads(run_cli("list", "app", "--json", config=config).stdout)
    assert [row["safety_point"] for row in listing].count(True) == 1


def test_force_into_other_databases_holding_data_saves_those_databases_first(instance: dict[str, object],
                                                                             tmp_path: Path, new_db) -> None:
    db, app, config = instance["db"], instance["app"], instance["config"]
    assert run_cli("backup", "app", config=config).returncode == 0
    other = new_db("t_other")
    sql(["CREATE TABLE keep (id INT PRIMARY KEY)", "INSERT INTO keep VALUES (42)"], other)
    copy = tmp_path / "copy.sqlite"
    conn = sqlite3.connect(copy)
    conn.executescript("CREATE TABLE mine(v TEXT); INSERT INTO mine VALUES ('only here');")
    conn.close()
    forced = run_cli("restore", "app", "latest", "--only", "db", "--to-db", f"{db}={other}",
                     "--to-db", f"{app / 'app.sqlite'}={copy}", "--force", "--json", config=config)
    assert forced.returncode == 0, forced.stderr
    safety = json.loads(forced.stdout)["safety_point"]
    # The safety point holds what was overwritten (the targets), not the point's untouched source databases.
    shown = json.loads(run_cli("show", safety, "--json", config=config).stdout)
    assert sorted(d["name"] for d in shown["databases"]) == sorted([other, str(copy)])
    # Databases the instance does not declare go back under their own names only when named on purpose.
    back = run_cli("restore", "app", safety, "--only", "db", "--force", config=config)
    assert back.returncode == 1 and f"--to-db {other}={other}" in back.stderr, back.stderr
    back = run_cli("restore", "app", safety, "--only", "db", "--to-db", f"{other}={other}", "--to-db",
                   f"{copy}={copy}", "--force", config=config)
    assert back.returncode == 0, back.stderr
    assert sql("SELECT id FROM keep", other) == [(42,)]
    assert "only here" in sqlite_dump(copy)


def test_restore_to_other_database_and_files_elsewhere(instance: dict[str, object], tmp_path: Path,
                                                       new_db) -> None:
    db, app, config = instance["db"], instance["app"], instance["config"]
    assert run_cli("backup", "app", config=config).returncode == 0
    other = f"{db}_copy"
    new_db.created.append(other)
    result = run_cli("restore", "app", "latest", "--only", "db", "--to-db", f"{db}={other}",
                     "--to-db", f"{app / 'app.sqlite'}={tmp_path / 'copy.sqlite'}", config=config)
    assert result.returncode == 0, result.stderr
    assert mariadb_dump(other).replace(other.encode(), db.encode()) == mariadb_dump(db)
    files = run_cli("restore", "app", "latest", "--only", "files", "--files-to", str(tmp_path / "elsewhere"),
                    config=config)
    assert files.returncode == 0, files.stderr
    assert (tmp_path / "elsewhere" / str(app / "uploads" / "empty").lstrip("/")).exists()


def test_in_place_restore_makes_the_folder_as_it_was(instance: dict[str, object]) -> None:
    app, config = instance["app"], instance["config"]
    before = tree_state(app / "uploads")
    assert run_cli("backup", "app", config=config).returncode == 0
    (app / "uploads" / "created-later.txt").write_text("not in the point")
    (app / "uploads" / "nested" / "deeper" / "file with spaces.txt").write_text("changed")
    result = run_cli("restore", "app", "latest", "--only", "files", "--json", config=config)
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout)["safety_point"]
    assert tree_state(app / "uploads") == before
    assert not [p for p in app.iterdir() if p.name.startswith(".")]  # no staging left behind


def test_rename_refused_when_dump_names_the_live_database(instance: dict[str, object], new_db,
                                                          tmp_path: Path) -> None:
    db, app, config = instance["db"], instance["app"], instance["config"]
    sql(f"CREATE TRIGGER `{db}`.replies_audit AFTER INSERT ON `{db}`.replies FOR EACH ROW"
        f" INSERT INTO `{db}`.audit(what) VALUES ('reply')", db)
    assert run_cli("backup", "app", config=config).returncode == 0
    before = mariadb_dump(db)
    new_db.created.append(f"{db}_copy")
    result = run_cli("restore", "app", "latest", "--only", "db", "--to-db", f"{db}={db}_copy",
                     "--to-db", f"{app / 'app.sqlite'}={tmp_path / 'copy.sqlite'}", config=config)
    assert result.returncode == 1
    assert f"would write into {db}" in result.stderr
    assert mariadb_dump(db) == before
    assert not sql(f"SHOW DATABASES LIKE '{db}_copy'")


def test_dry_run_changes_nothing(instance: dict[str, object]) -> None:
    db, config = instance["db"], instance["config"]
    assert run_cli("backup", "app", config=config).returncode == 0
    sql("DELETE FROM replies", db)
    before = mariadb_dump(db)
    plan = run_cli("restore", "app", "latest", "--dry-run", "--json", config=config)
    assert plan.returncode == 0, plan.stderr
    described = json.loads(plan.stdout)["plan"]
    assert described["databases"][0]["target_has_data"] is True
    assert described["replaces"] == described["paths"] and described["paths"]  # the live trees are there
    shown = run_cli("restore", "app", "latest", "--dry-run", config=config)
    assert shown.stdout.count("(replaces the live one)") == len(described["paths"]), shown.stdout
    assert "(has data)" in shown.stdout
    assert mariadb_dump(db) == before


def test_verify_and_show(instance: dict[str, object]) -> None:
    config = instance["config"]
    backup = json.loads(run_cli("backup", "app", "--json", config=config).stdout)[0]
    verify = run_cli("verify", "--json", config=config)
    assert verify.returncode == 0, verify.stderr
    assert json.loads(verify.stdout)["ok"]
    show = json.loads(run_cli("show", backup["run_id"][:12], "--json", config=config).stdout)
    assert show["format"] == 1 and show["instance"] == "app"
    assert {d["engine"] for d in show["databases"]} == {"mariadb", "sqlite"}
    assert show["databases"][0]["tables"]["tickets"]["rows"] == 300


def test_prune_keeps_count(instance: dict[str, object], tmp_path: Path) -> None:
    config = instance["config"]
    # after_backup = false: this test applies retention itself (`safehold prune`), not after each backup.
    config.write_text(config.read_text().replace(
        'repositories = ["main"]', 'repositories = ["main"]\nretention = { last = 2, after_backup = false }'))
    runs = [json.loads(run_cli("backup", "app", "--json", config=config).stdout)[0]["run_id"] for _ in range(3)]
    dry = json.loads(run_cli("prune", "--dry-run", "--json", config=config).stdout)[0]
    assert dry["remove"] == [runs[0]]
    assert len(json.loads(run_cli("list", "--json", config=config).stdout)) == 3
    pruned = run_cli("prune", "--json", config=config)
    assert pruned.returncode == 0, pruned.stderr
    listed = [row["run_id"] for row in json.loads(run_cli("list", "--json", config=config).stdout)]
    assert sorted(listed) == sorted(runs[1:])


def test_demo_passes(tmp_path: Path) -> None:
    result = subprocess.run(["python3", "-m", "safehold", "demo", "--workdir", str(tmp_path / "demo")],
                            capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(
                                Path(__file__).resolve().parents[2] / "src")}, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "demo passed" in result.stdout
