"""`safehold backup --dry-run` against the real MariaDB and restic: what a backup would take, each part's
problems named, and nothing changed (no history, no lock, no repository, no pause)."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import database_config, private_file, run_cli, sql, write_config
from tests.integration.appkit import db_user, drop_users, itflow_encrypt, ok
from tests.integration.appkit import write_config as app_config
from tests.integration.test_apps_itflow import ADMIN_PASSWORD, MASTER, build_itflow, cron, fill_database


def folder_state(root: Path) -> dict[str, tuple[int, int]]:
    """Every path under `root` (nothing when it does not exist) with its size and mtime."""
    state: dict[str, tuple[int, int]] = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            info = os.lstat(os.path.join(folder, name))
            state[os.path.relpath(os.path.join(folder, name), root)] = (info.st_size, info.st_mtime_ns)
    return state


def plan_of(result: subprocess.CompletedProcess[str]) -> dict[str, object]:
    """The one instance's plan from `backup --dry-run --json`."""
    plans = json.loads(result.stdout)
    assert len(plans) == 1, plans
    return plans[0]


@pytest.fixture
def generic(tmp_path: Path, repo: dict[str, str], new_db: Callable[[str], str]) -> dict[str, object]:
    """A generic instance: a MariaDB database (2 tables, 3 rows), uploads, a config file, a quiesce command
    that would leave a mark, and a metrics file; its repository is not initialised yet."""
    db = new_db("t_plan")
    sql(["CREATE TABLE customers (id INT PRIMARY KEY, name VARCHAR(50))",
         "CREATE TABLE tickets (id INT PRIMARY KEY, subject TEXT)",
         "INSERT INTO customers VALUES (1, 'Acme'), (2, 'Émile')", "INSERT INTO tickets VALUES (1, 'printer')"], db)
    app = tmp_path / "app"
    (app / "uploads" / "tmp").mkdir(parents=True)
    (app / "uploads" / "contract.pdf").write_bytes(b"x" * 1000)
    (app / "uploads" / "tmp" / "scratch").write_bytes(b"y" * 500)
    (app / "app.ini").write_text("[app]\n")
    mark = tmp_path / "quiesced"
    config = write_config(tmp_path, repo, f"""
[instances.app]
repositories = ["main"]
files = ["{app / 'uploads'}"]
config_files = ["{app / 'app.ini'}"]
exclude = ["{app / 'uploads' / 'tmp'}/*"]
quiesce = {{ stop = [["touch", "{mark}"]], start = [["true"]] }}
[[instances.app.databases]]
engine = "mariadb"
user = "root"
names = ["{db}"]
""", settings=f'metrics_textfile = "{tmp_path / "metrics" / "safehold.prom"}"')
    return {"db": db, "app": app, "config": config, "mark": mark, "state": tmp_path / "state",
            "metrics": tmp_path / "metrics"}


def test_a_healthy_instance_is_described_and_nothing_changes(generic: dict[str, object],
                                                             repo: dict[str, str]) -> None:
    config, state = Path(str(generic["config"])), Path(str(generic["state"]))
    app = Path(str(generic["app"]))
    before = folder_state(state)

    human = ok(run_cli("backup", "app", "--dry-run", config=config))
    assert f"database mariadb {generic['db']} on mariadb root@127.0.0.1:3306: 2 tables, 3 rows" in human.stdout
    assert f"files {app / 'uploads'}: 2 file(s)" in human.stdout and "before excludes" in human.stdout
    assert f"config {app / 'app.ini'}: 1 file(s)" in human.stdout
    assert f"exclude: {app / 'uploads' / 'tmp'}/*" in human.stdout
    assert f"quiesce: run touch {generic['mark']}" in human.stdout
    assert "repository main" in human.stdout and "would be initialised on the first run" in human.stdout
    assert "problem:" not in human.stdout
    assert human.stdout.rstrip().endswith("dry run: nothing was changed")

    plan = plan_of(ok(run_cli("backup", "--dry-run", "--json", config=config)))
    assert plan["problems"] == []
    assert plan["databases"][0]["tables"] == 2 and plan["databases"][0]["rows"] == 3
    assert {t["path"]: (t["files"], t["bytes"]) for t in plan["trees"]} == {
        str(app / "uploads"): (2, 1500), str(app / "app.ini"): (1, 6)}
    assert plan["repositories"] == [{"name": "main", "url": repo["url"], "state": "new", "problem": None}]

    # Nothing was made: no repository, no lock, no history, no metrics, no pause.
    assert not Path(repo["url"]).exists()
    assert folder_state(state) == before
    assert not Path(str(generic["mark"])).exists()
    assert not Path(str(generic["metrics"])).exists()
    assert json.loads(ok(run_cli("history", "--json", config=config)).stdout) == []


def test_an_initialised_repository_is_opened_without_writing_to_it(generic: dict[str, object],
                                                                   repo: dict[str, str]) -> None:
    config = Path(str(generic["config"]))
    ok(run_cli("backup", "app", config=config))
    history = json.loads(ok(run_cli("history", "--json", config=config)).stdout)
    stored = folder_state(Path(repo["url"]))

    plan = plan_of(ok(run_cli("backup", "app", "--dry-run", "--json", config=config)))
    assert plan["repositories"][0]["state"] == "ready"
    assert folder_state(Path(repo["url"])) == stored  # not even a lock file came and went
    assert json.loads(ok(run_cli("history", "--json", config=config)).stdout) == history


@pytest.mark.parametrize(("setting", "says"), [
    ("password", "cannot log in to mariadb {user}@127.0.0.1:3306: access denied"),
    ("port", "database server mariadb {user}@127.0.0.1:1 is unreachable"),
])
def test_a_database_it_cannot_reach_is_a_problem_and_no_password_shows(
        tmp_path: Path, repo: dict[str, str], new_db: Callable[[str], str], setting: str, says: str) -> None:
    db, users = new_db("t_plan"), []
    try:
        user, password = db_user(users)
        sql(f"GRANT ALL ON `{db}`.* TO '{user}'@'%'")
        wrong = "Wr0ng-" + password  # what the config holds: never printed either
        secret = private_file(tmp_path / "secrets" / "db.pass", wrong if setting == "password" else password)
        config = database_config(tmp_path, repo, "app", "mariadb", user, db,
                                 f'password = "file:{secret}"\n' + ("port = 1" if setting == "port" else ""))
        for args in ((), ("--json",)):
            result = run_cli("backup", "app", "--dry-run", *args, config=config)
            assert result.returncode == 1, result.stderr
            assert says.format(user=user) in result.stdout
            assert password not in result.stdout + result.stderr and wrong not in result.stdout + result.stderr
        assert "problem: database " + db in run_cli("backup", "app", "--dry-run", config=config).stdout
    finally:
        drop_users(users)


def test_a_missing_database_is_a_problem(tmp_path: Path, repo: dict[str, str], mariadb: dict[str, object]) -> None:
    config = write_config(tmp_path, repo, """
[instances.app]
repositories = ["main"]
[[instances.app.databases]]
engine = "mariadb"
user = "root"
names = ["t_plan_never_created"]
""")
    result = run_cli("backup", "app", "--dry-run", config=config)
    assert result.returncode == 1
    assert "problem: database t_plan_never_created: database 't_plan_never_created' does not exist" in result.stdout


def test_a_missing_tree_is_a_problem(generic: dict[str, object]) -> None:
    config = Path(str(generic["config"]))
    gone = Path(str(generic["app"])) / "mounted-share"
    config.write_text(config.read_text().replace('files = ["', f'files = ["{gone}", "'))
    result = run_cli("backup", "app", "--dry-run", config=config)
    assert result.returncode == 1, result.stderr
    assert f"files {gone}: MISSING" in result.stdout
    assert f"problem: {gone} does not exist, so a backup would make no point" in result.stdout
    assert result.stdout.rstrip().endswith("dry run: nothing was changed")


def test_a_repository_with_the_wrong_password_is_a_problem(generic: dict[str, object],
                                                           repo: dict[str, str]) -> None:
    config = Path(str(generic["config"]))
    ok(run_cli("backup", "app", config=config))
    Path(repo["password_file"]).write_text("not the password")
    result = run_cli("backup", "app", "--dry-run", config=config)
    assert result.returncode == 1
    assert "problem: wrong password for repository main — check its password reference" in result.stdout
    plan = plan_of(run_cli("backup", "app", "--dry-run", "--json", config=config))
    assert plan["repositories"][0]["state"] == "problem"
    assert "not the password" not in result.stdout + result.stderr


def test_note_and_keep_days_are_checked_and_shown(generic: dict[str, object]) -> None:
    config = Path(str(generic["config"]))
    result = ok(run_cli("backup", "app", "--dry-run", "--note", "before update", "--keep-days", "30", config=config))
    assert "note: before update" in result.stdout and "kept 30 days" in result.stdout
    assert run_cli("backup", "app", "--dry-run", "--keep-days", "0", config=config).returncode == 2


def test_itflow_shows_its_version_and_the_pause_it_would_make(tmp_path: Path, repo: dict[str, str],
                                                              new_db: Callable[[str], str]) -> None:
    database = new_db("t_apps")
    root = tmp_path / "www" / "itflow"
    build_itflow(root, database)
    fill_database(database)
    config = app_config(tmp_path, repo, "itflow", "itflow", root)

    result = ok(run_cli("backup", "--dry-run", config=config))
    assert "itflow (itflow, version 26.08.2, schema 2.6.7)" in result.stdout
    assert "quiesce: pause ITFlow cron (settings.config_enable_cron = 0), afterwards back to 1" in result.stdout
    assert "escrowed keys: itflow_config_backup_key" in result.stdout
    assert "warning: no ITFlow master key is escrowed for itflow: run `safehold key escrow itflow`" in result.stdout
    assert f"database mariadb {database} on mariadb root@127.0.0.1:3306" in result.stdout
    assert "k3yK3y" not in result.stdout + result.stderr  # the backup key is named, never shown
    assert cron(database) == 1  # looked at, never switched
    assert not (tmp_path / "state" / "quiesce").exists()
    assert not Path(repo["url"]).exists()

    # Escrowed, the key is proven on a stored credential; one that no longer decrypts it is a warning.
    ok(run_cli("key", "escrow", "itflow", "--password-ref", "env:ITFLOW_PW", config=config,
               env={"ITFLOW_PW": ADMIN_PASSWORD}))
    escrowed = ok(run_cli("backup", "--dry-run", config=config))
    assert "escrowed keys: itflow_config_backup_key, itflow_master_key" in escrowed.stdout
    assert "warning" not in escrowed.stdout and MASTER not in escrowed.stdout + escrowed.stderr
    sql(f"UPDATE credentials SET credential_password = '{itflow_encrypt('x', 'Other_key_123456')}'", database)
    stale = ok(run_cli("backup", "--dry-run", config=config))
    assert "does not decrypt credential #1" in stale.stdout
