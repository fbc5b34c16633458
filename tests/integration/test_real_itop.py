"""The real iTop 3.2.0 (installed by its own unattended installer with table prefix `it_` and sample data,
data made through its REST API) backed up, destroyed — database, DB user and install root — and restored
with one `safehold restore`, then used through iTop; the same without administrative DB access; a drill
with no rights beyond the app's own database."""

from __future__ import annotations

import re
import secrets
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from safehold.actions.drill_scratch import is_scratch
from tests.conftest import mariadb_dump, run_cli, sql
from tests.integration.appkit import ok, write_config
from tests.integration.realapps.common import drill_watching_the_server, drop_db_account, php_server, protective_files
from tests.integration.realapps.itop import (
    ADMIN_PASSWORD,
    Install,
    check_through_the_app,
    itop_install,
    tree_state,
)


@pytest.fixture
def itop(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path, mariadb: dict[str, object]) -> Iterator[Install]:
    yield from itop_install(tmp_path_factory, tmp_path)


def _dump(install: Install) -> bytes:
    return mariadb_dump(install.database)


def _destroy(install: Install) -> None:
    """The server is gone: no database, no DB user, no install root."""
    drop_db_account(install.database, install.user)
    shutil.rmtree(install.root)
    assert not sql(f"SELECT 1 FROM mysql.user WHERE user = '{install.user}'")


def _assert_restored(install: Install, dump_before: bytes, tree_before: dict[str, tuple[object, ...]],
                     guards_before: set[str]) -> None:
    """Exact data and tree (before iTop writes anything), every guard file, then iTop itself."""
    assert _dump(install) == dump_before
    tree_after = tree_state(install.root)
    differ = sorted(set(tree_before.items()) ^ set(tree_after.items()))
    assert tree_after == tree_before, f"{len(differ)} entries differ, e.g. {differ[:6]}"
    assert protective_files(install.root) >= guards_before
    # What iTop regenerates is not in the point: log/ (its setup log, the install XML with the DB password)
    # and the compiled cache come back as their guards only.
    assert sorted(p.name for p in (install.root / "log").iterdir()) == [".htaccess", "index.php", "web.config"]
    assert not any((install.root / "data" / "cache-production").iterdir())
    assert sql(f"SHOW GRANTS FOR '{install.user}'@'localhost'")
    with php_server(install.root) as url:
        check_through_the_app(install, url)


def test_restore_from_nothing_through_itop(itop: Install, tmp_path: Path, repo: dict[str, str]) -> None:
    started = time.monotonic()
    config = write_config(tmp_path, repo, "itop", "itop", itop.root)
    guards_before = protective_files(itop.root)
    assert {"conf/.htaccess", "data/.htaccess", "log/.htaccess", "log/web.config", "env-production/.htaccess",
            "web.config"} <= guards_before
    assert (itop.root / "log" / "setup.log").is_file() and any((itop.root / "data" / "cache-production").iterdir())
    ok(run_cli("backup", "itop", config=config))
    dump_before, tree_before = _dump(itop), tree_state(itop.root)
    backed_up = time.monotonic()

    _destroy(itop)
    restored = ok(run_cli("restore", "itop", "latest", config=config))
    assert ADMIN_PASSWORD not in restored.stdout + restored.stderr
    assert itop.password not in restored.stdout + restored.stderr
    _assert_restored(itop, dump_before, tree_before, guards_before)
    print(f"iTop template built in {itop.timings} s; backup {backed_up - started:.1f} s, "
          f"restore and checks {time.monotonic() - backed_up:.1f} s")


def _printed_sql(text: str) -> list[str]:
    """The SQL statements the output asks the admin to run (one per line, ending in ';')."""
    found = [line.strip().rstrip(";") for line in text.splitlines()
             if re.match(r"\s*(CREATE|GRANT|ALTER)\s", line, re.I) and line.rstrip().endswith(";")]
    assert found, f"no SQL to run in the output:\n{text}"
    return found


def test_restore_without_admin_access_prints_the_sql(itop: Install, tmp_path: Path, repo: dict[str, str]) -> None:
    """No administrative connection: restore changes nothing and prints the SQL; once run, the same command
    finishes."""
    config = write_config(tmp_path, repo, "itop", "itop", itop.root)
    guards_before = protective_files(itop.root)
    ok(run_cli("backup", "itop", config=config))
    dump_before, tree_before = _dump(itop), tree_state(itop.root)
    _destroy(itop)
    # The administrative login is one the server does not know (there is no other way to lack root here).
    no_admin = write_config(tmp_path, repo, "itop", "itop", itop.root,
                            f'db_admin = {{ user = "t_no_admin_{secrets.token_hex(3)}" }}')

    stopped = run_cli("restore", "itop", "latest", config=no_admin)
    assert stopped.returncode != 0, stopped.stdout + stopped.stderr
    assert not itop.root.exists(), "the restore changed the install root before stopping"
    assert not sql(f"SHOW DATABASES LIKE '{itop.database}'")
    text = stopped.stdout + stopped.stderr
    assert itop.password not in text
    statements = _printed_sql(text)
    account = re.compile(rf"[`']{itop.user}[`']@[`']localhost[`']")  # either quoting MariaDB accepts
    assert any(s.upper().startswith("CREATE USER") and account.search(s) for s in statements), text
    # The admin runs it, putting the app's password (from his own records) where the placeholder is.
    sql([re.sub(r"<[^>]*password[^>]*>|PASSWORD_HERE|\?\?\?", itop.password, s, flags=re.I) for s in statements])

    ok(run_cli("restore", "itop", "latest", config=no_admin))
    _assert_restored(itop, dump_before, tree_before, guards_before)


def test_drill_needs_no_rights_on_the_live_server(itop: Install, tmp_path: Path, repo: dict[str, str]) -> None:
    """The app's user may use its own database only; the drill creates no database on the live server and
    leaves nothing behind."""
    config = write_config(tmp_path, repo, "itop", "itop", itop.root)
    ok(run_cli("backup", "itop", config=config))
    created = sorted(drill_watching_the_server("itop", config, itop.user, tmp_path))
    # This instance's scratch names only: tests on other workers create databases on the same server.
    assert not [name for name in created if is_scratch("itop", name) or itop.database in name], (
        f"the drill created databases on the live server: {created}")
