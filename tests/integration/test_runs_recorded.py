"""Every restore and verify in the history (failed ones too), `show NAME RUN`, the version guard's own flag,
and a restore from nothing: planned by --dry-run, with no safety point of nothing.

On a small ITFlow-shaped instance (config.php, a settings table) on the real MariaDB and restic.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from safehold import hostinfo
from tests.conftest import files_instances, mariadb_dump, run_cli, sql
from tests.conftest import write_config as write_config_text
from tests.integration.appkit import ok, put, tree_state, write_config


def _itflow(root: Path, database: str, password: str = "") -> None:
    put(root / "config.php", f"<?php\n$dbhost = '127.0.0.1';\n$dbusername = 'root';\n$dbpassword = '{password}';\n"
                             f"$database = '{database}';\n$config_enable_setup = 0;\n", 0o640)
    put(root / "includes" / "app_version.php", '<?php\nDEFINE("APP_VERSION", "26.08.2");\n')
    put(root / "index.php", "<?php require_once 'config.php';\n")
    put(root / "uploads" / "clients" / "1" / "contract.pdf", b"%PDF-1.4 " + bytes(range(256)) * 8, 0o640)
    put(root / "uploads" / ".htaccess", "php_flag engine off\n")
    put(root / "uploads" / "index.php", "")


@pytest.fixture
def site(tmp_path: Path, repo: dict[str, str], new_db: Callable[[str], str]) -> dict[str, object]:
    database = new_db("t_runs")
    root = tmp_path / "www" / "itflow"
    _itflow(root, database)
    sql(["CREATE TABLE settings (company_id INT PRIMARY KEY, config_current_database_version VARCHAR(10), "
         "config_enable_cron TINYINT NOT NULL DEFAULT 0)",
         "INSERT INTO settings VALUES (1, '2.6.7', 1)",
         "CREATE TABLE clients (client_id INT AUTO_INCREMENT PRIMARY KEY, client_name VARCHAR(200))",
         "INSERT INTO clients (client_name) VALUES ('Acme'), ('Émile & Söhne')"], database)
    config = write_config(tmp_path, repo, "itflow", "itflow", root)
    return {"root": root, "db": database, "config": config, "repo": repo}


def _history(config: Path, kind: str) -> list[dict[str, object]]:
    return json.loads(ok(run_cli("history", "itflow", "--kind", kind, "--json", config=config)).stdout)


def test_restore_from_nothing_is_planned_by_dry_run_and_saves_nothing_first(site: dict[str, object]) -> None:
    root, database, config = Path(str(site["root"])), str(site["db"]), Path(str(site["config"]))
    ok(run_cli("backup", "itflow", config=config))
    dump, files = mariadb_dump(database), tree_state(root)
    sql(f"DROP DATABASE `{database}`")
    shutil.rmtree(root)

    # This host's PHP without its extension .ini files stands for a new host lacking the packages.
    bare_php = {"PHP_INI_SCAN_DIR": str(root.parent / "no-php-ini")}
    planned = ok(run_cli("restore", "itflow", "latest", "--dry-run", config=config, env=bare_php))
    if shutil.which("php"):
        assert "PHP here lacks the extension(s) the point's itflow had loaded: " in planned.stderr, planned.stderr
        assert "mysqli" in planned.stderr and "php8.2-mysql" in planned.stderr
    assert f"config file {root / 'config.php'} comes back from the point first" in planned.stdout, planned.stdout
    assert f"database {database} → {database}" in planned.stdout and f"files {root} → /" in planned.stdout
    assert "(replaces the live one)" not in planned.stdout and "(has data)" not in planned.stdout
    assert "nothing to save: no safety point" in planned.stdout and "dry run: nothing was changed" in planned.stdout
    plan = json.loads(ok(run_cli("restore", "itflow", "latest", "--dry-run", "--json", config=config)).stdout)["plan"]
    assert plan["config_from_point"] == str(root / "config.php") and plan["safety_point"] is False
    assert not root.exists() and not sql(f"SHOW DATABASES LIKE '{database}'")
    assert not _history(config, "restore")  # a dry run is not a run

    done = ok(run_cli("restore", "itflow", "latest", "--json", config=config, env=bare_php))
    assert ("host_lacks" in json.loads(done.stdout)) == bool(shutil.which("php"))
    assert "nothing to save: no safety point" in done.stderr and "safety point of the current state" not in done.stderr
    assert "safety_point" not in json.loads(done.stdout)
    points = json.loads(ok(run_cli("list", "itflow", "--json", config=config)).stdout)
    assert len(points) == 1 and not points[0]["safety_point"]
    assert mariadb_dump(database) == dump
    assert tree_state(root) == files
    assert _history(config, "restore")[0]["result"] == "ok"

    # Over a live instance the safety point stays: something would be replaced.
    again = json.loads(ok(run_cli("restore", "itflow", "latest", "--force", "--json", config=config)).stdout)
    assert again["safety_point"]


def test_failed_restores_and_verifies_are_in_the_history_and_the_report(site: dict[str, object]) -> None:
    root, config = Path(str(site["root"])), Path(str(site["config"]))
    ok(run_cli("backup", "itflow", config=config))
    run_id = json.loads(ok(run_cli("show", "itflow", "latest", "--json", config=config)).stdout)["run_id"]

    refused = run_cli("restore", "itflow", "latest", config=config)
    assert refused.returncode == 1 and "already hold data" in refused.stderr
    last = _history(config, "restore")[0]
    assert last["result"] == "failed" and "already hold data" in str(last["error"])
    assert last["details"]["run_id"] == run_id  # type: ignore[index]

    # A wrong database password: refused by the server before anything was loaded, recorded all the same.
    text = (root / "config.php").read_text()
    (root / "config.php").write_text(text.replace("$dbpassword = ''", "$dbpassword = 'not-the-password'"))
    denied = run_cli("restore", "itflow", "latest", "--force", config=config)
    assert denied.returncode == 1
    assert _history(config, "restore")[0]["error"] == denied.stderr.strip().splitlines()[-1].removeprefix("error: ")
    (root / "config.php").write_text(text)

    # No such point: the run fails before it reads anything, and is recorded.
    unknown = run_cli("restore", "itflow", "19990101", config=config)
    assert unknown.returncode == 2 and "no point" in _history(config, "restore")[0]["error"]  # type: ignore[operator]

    ok(run_cli("verify", config=config))
    assert _history(config, "verify")[0]["result"] == "ok"
    manifest = json.loads(ok(run_cli("show", "itflow", run_id[:15], "--json", config=config)).stdout)
    repo = site["repo"]
    env = {**os.environ, "RESTIC_REPOSITORY": repo["url"], "RESTIC_PASSWORD_FILE": repo["password_file"]}  # type: ignore[index]
    subprocess.run(["restic", "forget", manifest["files_snapshot"]], env=env, check=True, capture_output=True)
    damaged = run_cli("verify", "latest", "--instance", "itflow", config=config)
    assert damaged.returncode == 1
    last = _history(config, "verify")[0]
    assert last["result"] == "failed" and "snapshot of files is missing" in str(last["error"])

    report = json.loads(ok(run_cli("report", "itflow", "--json", config=config)).stdout)
    failures = [(f["what"], f["message"]) for f in report["instances"][0]["failures"]]
    assert ("verify", f"verify of point latest: {run_id}: snapshot of files is missing") in failures, failures
    assert sum(what == "restore" for what, _ in failures) == 3, failures
    assert any(m.startswith(f"restore of point {run_id}: ") and "already hold data" in m for _, m in failures)


def test_show_takes_name_and_run_like_restore(site: dict[str, object]) -> None:
    config = Path(str(site["config"]))
    ok(run_cli("backup", "itflow", config=config))
    newest = json.loads(ok(run_cli("show", "itflow", "--json", config=config)).stdout)
    assert newest["instance"] == "itflow"
    for argv in (("itflow", "latest"), ("itflow", newest["run_id"][:16]), (newest["run_id"],),
                 ("latest", "--instance", "itflow")):
        assert json.loads(ok(run_cli("show", *argv, "--json", config=config)).stdout)["run_id"] == newest["run_id"]
    other = run_cli("show", "nosuch", "latest", config=config)
    assert other.returncode == 2 and "nosuch" in other.stderr
    both = run_cli("show", "itflow", "latest", "--instance", "other", config=config)
    assert both.returncode == 2 and "give one: safehold show itflow latest" in both.stderr


def test_version_guard_has_its_own_flag(site: dict[str, object]) -> None:
    root, database, config = Path(str(site["root"])), str(site["db"]), Path(str(site["config"]))
    ok(run_cli("backup", "itflow", config=config))
    put(root / "includes" / "app_version.php", '<?php\nDEFINE("APP_VERSION", "26.09.1");\n')
    sql("UPDATE settings SET config_current_database_version = '2.6.8'", database)
    for extra in ((), ("--force",)):
        refused = run_cli("restore", "itflow", "latest", "--only", "db", *extra, config=config)
        assert refused.returncode == 1 and "app version 26.09.1 here but 26.08.2 in the point" in refused.stderr
        assert "--allow-version-change restores it anyway (--force does not)" in refused.stderr
    assert sql("SELECT config_current_database_version FROM settings", database) == [("2.6.8",)]
    planned = ok(run_cli("restore", "itflow", "latest", "--only", "db", "--allow-version-change", "--dry-run",
                         config=config))
    assert "version change allowed" in planned.stdout
    # Allowed, it still needs --force to overwrite the database that holds data.
    busy = run_cli("restore", "itflow", "latest", "--only", "db", "--allow-version-change", config=config)
    assert busy.returncode == 1 and "already hold data" in busy.stderr
    done = ok(run_cli("restore", "itflow", "latest", "--only", "db", "--force", "--allow-version-change",
                      config=config))
    assert "restoring across a version change (--allow-version-change)" in done.stderr
    assert "restored across a version change" in done.stdout
    assert sql("SELECT config_current_database_version FROM settings", database) == [("2.6.7",)]
    last = _history(config, "restore")[0]
    assert last["result"] == "ok" and "26.09.1" in last["details"]["version_change"][0]  # type: ignore[index]


def test_point_and_kit_name_what_the_host_provides(site: dict[str, object], tmp_path: Path) -> None:
    config = Path(str(site["config"]))
    ok(run_cli("backup", "itflow", config=config))
    recorded = json.loads(ok(run_cli("show", "itflow", "--json", config=config)).stdout)["requirements"]
    assert recorded["web_servers"] == hostinfo.web_servers()
    kit = tmp_path / "kit.html"
    ok(run_cli("key", "kit", "--output", str(kit), config=config))
    page = kit.read_text()
    if shutil.which("php") is None:
        assert recorded["php_version"] is None
        return
    assert recorded["php_version"] == hostinfo.php_version() and "mysqli" in recorded["php_extensions"]
    series = hostinfo.HostRequirements(**recorded).php_series()
    assert f"<pre class='install' data-instance='itflow'>apt-get install -y php{series}-cli" in page
    assert f"php{series}-mysql" in page and "Install these packages before restoring it" in page


def test_a_verify_is_recorded_for_the_instances_it_looked_at(tmp_path: Path, repo: dict[str, str]) -> None:
    files = tmp_path / "files"
    put(files / "a.txt", "important\n")
    config = write_config_text(tmp_path, repo, files_instances(files, app=["main"], crm=["main"]))
    ok(run_cli("backup", "app", config=config))
    run_id = json.loads(ok(run_cli("show", "app", "--json", config=config)).stdout)["run_id"]
    several = run_cli("show", "latest", config=config)
    assert several.returncode == 2 and "safehold show NAME latest" in several.stderr

    def verifies(instance: str) -> list[dict[str, object]]:
        return json.loads(ok(run_cli("history", instance, "--kind", "verify", "--json", config=config)).stdout)

    ok(run_cli("verify", run_id, config=config))  # a run id names one instance's point: only that one has a run
    assert [(r["result"], r["details"]["points_checked"]) for r in verifies("app")] == [("ok", 1)]  # type: ignore[index]
    assert verifies("crm") == []
    ok(run_cli("verify", config=config))  # every point of every instance: a run each
    assert len(verifies("app")) == 2 and [r["result"] for r in verifies("crm")] == ["ok"]
