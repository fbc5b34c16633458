"""The real ITFlow 26.08.2 (installed by its own web setup, data made through its agent pages) backed up,
destroyed — database, DB user and install folder — and restored with one `safehold restore`, then used
through the app; the same without administrative DB access; a drill with no rights beyond the app's own
database; a restore from nothing driven only by the recovery kit."""

from __future__ import annotations

import html
import os
import re
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import mariadb_dump as dump
from tests.conftest import run_cli, sql
from tests.integration.appkit import ok, safehold_on_path, write_config
from tests.integration.realapps.common import (
    SOCKET,
    drill_watching_the_server,
    drop_db_account,
    php_server,
    protective_files,
)
from tests.integration.realapps.itflow import (
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    Install,
    check_through_the_app,
    itflow_install,
    tree_state,
)

ESCROW_ENV = {"ITFLOW_ADMIN_PW": ADMIN_PASSWORD}


@pytest.fixture
def itflow(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path, mariadb: dict[str, object]) -> Iterator[Install]:
    yield from itflow_install(tmp_path_factory, tmp_path)


def _configured(install: Install, tmp_path: Path, repo: dict[str, str], name: str = "itflow") -> Path:
    """safehold.toml with the install as instance `name`, its master key escrowed with the admin's password."""
    config = write_config(tmp_path, repo, name, "itflow", install.root)
    escrowed = ok(run_cli("key", "escrow", name, "--password-ref", "env:ITFLOW_ADMIN_PW", "--user", ADMIN_EMAIL,
                          config=config, env=ESCROW_ENV))
    assert "decrypts credential" in escrowed.stdout
    return config


def _destroy(install: Install) -> None:
    """The server is gone: no database, no DB user, no install folder."""
    drop_db_account(install.database, install.user)
    shutil.rmtree(install.root)
    assert not sql(f"SELECT 1 FROM mysql.user WHERE user = '{install.user}'")


def _assert_restored(install: Install, dump_before: bytes, tree_before: dict[str, tuple[object, ...]],
                     guards_before: set[str]) -> None:
    """Exact data and tree (before the app writes anything), every guard file, then the app itself."""
    assert dump(install.database) == dump_before
    assert tree_state(install.root) == tree_before
    assert protective_files(install.root) >= guards_before
    assert (install.root / "uploads" / "tmp" / ".htaccess").is_file()
    assert sql(f"SHOW GRANTS FOR '{install.user}'@'localhost'")
    with php_server(install.root) as url:
        check_through_the_app(install, url)


def test_restore_from_nothing_through_the_app(itflow: Install, tmp_path: Path, repo: dict[str, str]) -> None:
    config = _configured(itflow, tmp_path, repo)
    dump_before, tree_before = dump(itflow.database), tree_state(itflow.root)
    guards_before = protective_files(itflow.root)
    assert {"uploads/tmp/.htaccess", "uploads/tmp/index.php", "uploads/backups/.htaccess"} <= guards_before
    ok(run_cli("backup", "itflow", config=config))

    _destroy(itflow)
    restored = ok(run_cli("restore", "itflow", "latest", config=config))
    assert ADMIN_PASSWORD not in restored.stdout + restored.stderr
    assert itflow.password not in restored.stdout + restored.stderr
    _assert_restored(itflow, dump_before, tree_before, guards_before)


def test_restore_without_admin_access_prints_the_sql(itflow: Install, tmp_path: Path, repo: dict[str, str]) -> None:
    """No administrative connection: restore changes nothing, prints the SQL; once run, the same command finishes."""
    config = _configured(itflow, tmp_path, repo)
    dump_before, tree_before = dump(itflow.database), tree_state(itflow.root)
    guards_before = protective_files(itflow.root)
    ok(run_cli("backup", "itflow", config=config))
    _destroy(itflow)
    # The administrative login is one the server does not know (there is no other way to lack root here).
    no_admin = write_config(tmp_path, repo, "itflow", "itflow", itflow.root,
                            f'db_admin = {{ user = "t_no_admin_{secrets.token_hex(3)}" }}')

    stopped = run_cli("restore", "itflow", "latest", config=no_admin)
    assert stopped.returncode != 0, stopped.stdout + stopped.stderr
    # Nothing changed: not even config.php is put back before the stop.
    assert not itflow.root.exists(), f"the stopped restore wrote {sorted(map(str, itflow.root.rglob('*')))}"
    assert not sql(f"SHOW DATABASES LIKE '{itflow.database}'")
    text = stopped.stdout + stopped.stderr
    assert itflow.password not in text
    statements = _printed_sql(text)
    assert any(s.upper().startswith("CREATE USER") and itflow.user in s and "localhost" in s for s in statements), text
    # The admin runs it as root over the socket, putting the app's password where the placeholder is.
    script = "\n".join(re.sub(r"<[^<>]*password[^<>]*>", itflow.password, line) for line in statements)
    subprocess.run(["mariadb", "-uroot", f"--socket={SOCKET}"], input=script.encode(), check=True)

    ok(run_cli("restore", "itflow", "latest", config=no_admin))
    _assert_restored(itflow, dump_before, tree_before, guards_before)


def _printed_sql(text: str) -> list[str]:
    """The SQL statements the output asks the admin to run (a line each)."""
    found = [line.strip() for line in text.splitlines() if re.match(r"\s*(CREATE|GRANT|ALTER)\s", line)]
    assert found, f"no SQL to run in the output:\n{text}"
    return [line if line.endswith(";") else line + ";" for line in found]


def test_drill_needs_no_rights_on_the_live_server(itflow: Install, tmp_path: Path, repo: dict[str, str]) -> None:
    """The app's user may use its own database only; the drill creates no database on the live server and
    leaves nothing behind."""
    name = f"itflow{secrets.token_hex(3)}"  # what a drill names its scratch space after
    config = _configured(itflow, tmp_path, repo, name)
    ok(run_cli("backup", name, config=config))
    created = drill_watching_the_server(name, config, itflow.user, tmp_path)
    # Other tests create databases on this server meanwhile; the drill's would carry the instance's name or the
    # app database's.
    ours = [db for db in created if name in db.lower() or itflow.database in db]
    assert ours == [], f"the drill created databases on the live server: {ours}"


def test_recovery_kit_alone_brings_itflow_back(itflow: Install, tmp_path: Path, repo: dict[str, str]) -> None:
    """Only the printed kit survives: in a fresh folder, its steps restore ITFlow, which then works."""
    config = _configured(itflow, tmp_path, repo)
    dump_before, tree_before = dump(itflow.database), tree_state(itflow.root)
    guards_before = protective_files(itflow.root)
    ok(run_cli("backup", "itflow", config=config))
    kit = tmp_path / "kit.html"
    ok(run_cli("key", "kit", "--output", str(kit), config=config))
    page = kit.read_text()

    _destroy(itflow)
    config.unlink()
    shutil.rmtree(tmp_path / "state")
    Path(repo["password_file"]).unlink()

    steps = [html.unescape(s) for s in re.findall(r"<pre class='step'>(.*?)</pre>", page, re.S)]
    assert steps, "the kit has no restore steps"
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    bin_dir = safehold_on_path(tmp_path / "bin")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAFEHOLD_") and k != "PYTHONPATH"}
    env.update(HOME=str(fresh), PATH=f"{bin_dir}:{env['PATH']}")
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", "\n".join(steps)], cwd=fresh, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    _assert_restored(itflow, dump_before, tree_before, guards_before)
