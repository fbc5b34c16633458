"""NetBox profile on the real NetBox 4.6.8 tree (../shared/apps) and the local PostgreSQL: where its
configuration is found, the services stopped as the pause (also resumed after a SIGKILL), the key
check, the version guard, and `init`. The full restore from nothing through NetBox's own API is in
test_real_netbox.py."""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import need, run_cli, write_config
from tests.integration import netbox_real
from tests.integration.appkit import backup_killed_while_paused, held_stop
from tests.integration.netbox_real import psql, unpack, write_configuration

FAKE_SYSTEMCTL = """#!/bin/sh
# systemd is not PID 1 in the test containers: units are files in $FAKE_SYSTEMD, every call is logged.
state="$FAKE_SYSTEMD/$2"
case "$1" in
  is-active) if [ -e "$state" ]; then echo active; exit 0; else echo inactive; exit 3; fi ;;
  stop) rm -f "$state"; echo "stop $2" >> "$FAKE_SYSTEMD/log" ;;
  start) touch "$state"; echo "start $2" >> "$FAKE_SYSTEMD/log" ;;
esac
"""


@pytest.fixture(scope="module")
def netbox_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    need(netbox_real.TARBALL.is_file(), f"the NetBox source {netbox_real.TARBALL} is missing (../shared/apps)")
    return unpack(tmp_path_factory.mktemp("netbox-src"))


@pytest.fixture
def netbox(netbox_tree: Path, tmp_path: Path, repo: dict[str, str],
           monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, object]]:
    ready = subprocess.run(["pg_isready", "-h", "127.0.0.1", "-q"], check=False).returncode == 0
    need(ready, "PostgreSQL on 127.0.0.1:5432 is not running")
    name = f"nbt_{secrets.token_hex(4)}"
    password = secrets.token_urlsafe(12)
    psql("postgres", f"CREATE ROLE {name} LOGIN PASSWORD '{password}'")
    psql("postgres", f"CREATE DATABASE {name} OWNER {name}")
    subprocess.run(["psql", "-h", "127.0.0.1", "-U", name, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", name, "-c",
                    "CREATE TABLE django_migrations (id bigserial PRIMARY KEY, app varchar(255), name varchar(255), "
                    "applied timestamptz DEFAULT now()); INSERT INTO django_migrations (app, name) VALUES "
                    "('dcim', '0001_initial'), ('extras', '0001_initial');"
                    "CREATE TABLE dcim_site (id bigserial PRIMARY KEY, name varchar(100));"
                    "INSERT INTO dcim_site (name) VALUES ('HQ');"],
                   check=True, env={**os.environ, "PGPASSWORD": password})
    root = tmp_path / "opt" / "netbox"
    shutil.copytree(netbox_tree, root, symlinks=True)
    write_configuration(root, database=name, user=name, password=password, redis_port=6379,
                        secret_key="k" * 50, pepper="p" * 50)
    systemd = tmp_path / "systemd"
    systemd.mkdir()
    (systemd / "netbox").touch()
    (systemd / "netbox-rq").touch()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "systemctl").write_text(FAKE_SYSTEMCTL)
    (bin_dir / "systemctl").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SYSTEMD", str(systemd))
    log, hold = tmp_path / "quiesce.log", tmp_path / "hold"
    config = write_config(tmp_path, repo, f"""
[instances.nb]
app = "netbox"
root = "{root}"
repositories = ["main"]
{held_stop(log, hold)}
""")
    try:
        yield {"root": root, "db": name, "config": config, "systemd": systemd, "log": log, "hold": hold,
               "state": tmp_path / "state"}
    finally:
        psql("postgres", f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        psql("postgres", f"DROP ROLE IF EXISTS {name}")


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def test_services_stopped_around_the_backup_and_resumed_after_a_kill(netbox: dict[str, object]) -> None:
    config, systemd = Path(str(netbox["config"])), Path(str(netbox["systemd"]))
    state = Path(str(netbox["state"]))
    planned = ok(run_cli("backup", "nb", "--dry-run", config=config))
    assert "stop netbox, afterwards start it again" in planned.stdout
    assert "stop netbox-rq, afterwards start it again" in planned.stdout
    assert not (systemd / "log").exists()  # looked at, nothing stopped

    ok(run_cli("backup", "nb", config=config))
    assert (systemd / "log").read_text().splitlines() == ["stop netbox", "stop netbox-rq", "start netbox-rq",
                                                         "start netbox"]

    backup_killed_while_paused(netbox, "nb", stops=2)
    assert not (systemd / "netbox").exists() and (state / "quiesce" / "nb.json").exists()  # killed: still stopped

    checked = run_cli("check", "nb", "--json", config=config)
    found = {f["rule"]: f for f in json.loads(checked.stdout)["instances"][0]["findings"]}
    assert found["paused"]["message"].startswith("resumed now"), found["paused"]
    assert "stopped systemd units netbox" in found["paused"]["message"]
    assert (systemd / "netbox").exists() and (systemd / "netbox-rq").exists()
    assert not (state / "quiesce" / "nb.json").exists()


def test_key_verify_names_the_key_that_differs(netbox: dict[str, object]) -> None:
    config, root = Path(str(netbox["config"])), Path(str(netbox["root"]))
    ok(run_cli("backup", "nb", config=config))
    ok(run_cli("key", "verify", "nb", "latest", config=config))
    drill = ok(run_cli("drill", "nb", "--json", config=config))
    assert all(run["ok"] for run in json.loads(drill.stdout)), drill.stdout
    path = root / "netbox" / "netbox" / "configuration.py"
    path.write_text(re.sub(r"^API_TOKEN_PEPPERS = .*$", "API_TOKEN_PEPPERS = {1: '" + "q" * 50 + "'}",
                           path.read_text(), flags=re.M))
    failed = run_cli("key", "verify", "nb", "latest", config=config)
    assert failed.returncode != 0, failed.stdout
    assert "API_TOKEN_PEPPERS differs from the point's" in failed.stdout + failed.stderr
    assert "SECRET_KEY" not in failed.stdout + failed.stderr
    assert "q" * 50 not in failed.stdout + failed.stderr and "p" * 50 not in failed.stdout + failed.stderr
    drill = run_cli("drill", "nb", config=config)
    assert drill.returncode != 0 and "API_TOKEN_PEPPERS differs" in drill.stdout + drill.stderr


def test_version_guard_refuses_older_code_before_anything_changes(netbox: dict[str, object]) -> None:
    config, root, db = Path(str(netbox["config"])), Path(str(netbox["root"])), str(netbox["db"])
    ok(run_cli("backup", "nb", config=config))
    psql(db, "INSERT INTO dcim_site (name) VALUES ('after the backup')")
    release = root / "netbox" / "release.yaml"
    release.write_text(release.read_text().replace('version: "4.6.8"', 'version: "4.5.2"'))
    refused = run_cli("restore", "nb", "latest", "--only", "db", config=config)
    assert refused.returncode == 1, refused.stdout
    assert "the code here is 4.5.2 but the point's database was migrated by 4.6.8" in refused.stderr
    assert "no down-migrations" in refused.stderr
    assert psql(db, "SELECT count(*) FROM dcim_site").strip() == "2"  # nothing changed
    release.write_text(release.read_text().replace('version: "4.5.2"', 'version: "4.7.0"'))
    newer = ok(run_cli("restore", "nb", "latest", "--only", "db", "--force", config=config))
    assert "run `manage.py migrate`" in newer.stderr
    assert psql(db, "SELECT count(*) FROM dcim_site").strip() == "1"


def test_config_found_where_netbox_looks_and_non_literals_refused(netbox: dict[str, object]) -> None:
    config, root = Path(str(netbox["config"])), Path(str(netbox["root"]))
    classic = root / "netbox" / "netbox" / "configuration.py"
    text = classic.read_text()
    # A module named by NETBOX_CONFIGURATION (safehold.toml config_module) wins over the classic path.
    (root / "netbox" / "netbox" / "configuration_prod.py").write_text(text.replace("'NAME': ", "'NAME': 'x' and "))
    body = config.read_text().replace('app = "netbox"', 'app = "netbox"\nconfig_module = "netbox.configuration_prod"')
    config.write_text(body)
    refused = run_cli("backup", "nb", "--dry-run", config=config)
    assert refused.returncode != 0
    assert re.search(r"configuration_prod\.py line \d+: DATABASES\['default'\]\['NAME'\] is set with an expression, "
                     "not a literal value", refused.stdout + refused.stderr), refused.stdout
    # The legacy DATABASE dict is read too; both at once is refused as NetBox refuses it.
    config.write_text(body.replace('config_module = "netbox.configuration_prod"\n', ""))
    settings = re.search(r"^DATABASES = \{\n    'default': (\{.*?\n    \}),?\n\}", text, re.M | re.S)
    assert settings is not None
    classic.write_text(text.replace(settings.group(0), f"DATABASE = {settings.group(1)}"))
    legacy = ok(run_cli("backup", "nb", "--dry-run", config=config))
    assert f"database postgres {netbox['db']}" in legacy.stdout
    classic.write_text(text + "\nDATABASE = {'NAME': 'other'}\n")
    both = run_cli("backup", "nb", "--dry-run", config=config)
    assert both.returncode != 0 and "sets both DATABASES and DATABASE" in both.stdout + both.stderr


def test_init_writes_a_netbox_instance(netbox_tree: Path, tmp_path: Path) -> None:
    target = tmp_path / "safehold.toml"
    made = ok(run_cli("init", "--app", "netbox", "--root", str(netbox_tree), "--output", str(target)))
    assert 'app = "netbox"' in target.read_text(), made.stdout
    found = tmp_path / "found.toml"
    ok(run_cli("init", "--root", str(netbox_tree), "--output", str(found)))  # no --app: found from the folder
    assert 'app = "netbox"' in found.read_text()
    refused = run_cli("init", "--app", "netbox", "--root", str(tmp_path), "--output", str(tmp_path / "x.toml"))
    assert refused.returncode != 0 and "does not look like a NetBox install" in refused.stderr
