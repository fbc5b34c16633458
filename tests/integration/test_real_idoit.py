"""The real i-doit OPEN 1.12.4 (two tenants, installed by its own web installer, data made through its
web UI) restored from nothing: every database dropped, the app's DB account dropped, the install
folder deleted; one `safehold restore NAME latest` brings it back, proven through i-doit itself."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import run_cli, sql
from tests.integration import real_idoit
from tests.integration.appkit import ok, write_config
from tests.integration.real_idoit import Install, Web

# Regenerable: `index.php` offers ?IDOIT_DELETE_TEMP, which deletes all of $g_dirs['temp'] (temp/:
# smarty's compiled templates and each tenant's cache_* folder, rebuilt on the next request).
EXCLUDED = ("temp",)
PLACEHOLDER = "<the app database password>"  # where the printed SQL wants the password
PROTECTIVE = (".htaccess", "vendor/tecnickcom/tcpdf/tools/.htaccess")


@pytest.fixture(scope="session")
def idoit_shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The folder every xdist worker of this run shares (the install lives there, built once)."""
    real_idoit.tarball()
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    with real_idoit.lease(shared):
        yield shared


@pytest.fixture
def idoit(idoit_shared: Path, tmp_path: Path, repo: dict[str, str]) -> Iterator[dict[str, object]]:
    """The run's i-doit for this test alone, and a safehold config for it (its own repository)."""
    with real_idoit.exclusive(idoit_shared) as install:
        root = Path(install.root)
        # The host's own /etc/php and /etc/mysql (the profile's default config_files) belong to the shared
        # test servers: this "web server config" stands in for them, and goes with the server.
        vhost = tmp_path / "etc" / "apache2" / "sites-available" / "i-doit.conf"
        vhost.parent.mkdir(parents=True)
        vhost.write_text(f"<VirtualHost *:80>\n  DocumentRoot {root}\n</VirtualHost>\n")
        config = write_config(tmp_path, repo, "idoit", "idoit", root, f'config_files = ["{tmp_path / "etc"}"]')
        web = Web(root)
        try:
            yield {"install": install, "root": root, "config": config, "web": web, "etc": tmp_path / "etc"}
        finally:
            web.stop()


def destroy(idoit: dict[str, object]) -> None:
    """The server is gone: every database of the app, its DB account, the install folder, the web config."""
    install = idoit["install"]
    assert isinstance(install, Install)
    for name in install.databases:
        sql(f"DROP DATABASE `{name}`")
    sql(f"DROP USER '{install.user}'@'localhost'")
    shutil.rmtree(install.root)
    shutil.rmtree(str(idoit["etc"]))


def state(idoit: dict[str, object]) -> tuple[dict[str, bytes], dict[str, tuple[object, ...]], object]:
    install = idoit["install"]
    assert isinstance(install, Install)
    return ({db: real_idoit.dump(db) for db in install.databases},
            real_idoit.tree(Path(install.root), EXCLUDED), real_idoit.tree(Path(str(idoit["etc"]))))


def works(web: Web, install: Install) -> None:
    """Through i-doit: admin logs in to each tenant, the objects are there, the file downloads
    byte-identical, and a write (a new object) succeeds."""
    web.start()
    titles = list(install.objects)
    with real_idoit.login(web, 1) as client:
        for title in titles[:2]:
            assert title in real_idoit.object_page(client, install.objects[title])
        assert real_idoit.download_file(client, install.objects[titles[1]]) == install.upload.read_bytes()
        real_idoit.create_object(client, real_idoit.SERVER_TYPE, f"after-restore-{time.time_ns()}")
    with real_idoit.login(web, 2) as client:
        assert titles[2] in real_idoit.object_page(client, install.objects[titles[2]])
        real_idoit.create_object(client, real_idoit.SERVER_TYPE, f"after-restore-{time.time_ns()}")
    web.stop()


def test_restore_from_nothing(idoit: dict[str, object]) -> None:
    install, config, web = idoit["install"], Path(str(idoit["config"])), idoit["web"]
    assert isinstance(install, Install) and isinstance(web, Web)
    ok(run_cli("backup", "idoit", config=config))
    before = state(idoit)

    destroy(idoit)
    started = time.monotonic()
    restored = ok(run_cli("restore", "idoit", "latest", config=config))
    seconds = time.monotonic() - started
    assert "taking a safety point" not in restored.stderr  # nothing existed to save

    dumps, files, etc = state(idoit)
    assert dumps == before[0]
    assert files == before[1]
    assert etc == before[2]
    for protective in PROTECTIVE:
        assert (Path(install.root) / protective).is_file()
    works(web, install)
    print(f"i-doit install {install.install_seconds}s, data {install.data_seconds}s, restore {seconds:.1f}s")


def test_restore_without_admin_access_prints_the_sql(idoit: dict[str, object]) -> None:
    """No administrative DB access: restore stops before changing anything and prints the SQL that,
    once run by the admin, lets the same command finish."""
    install, config, web = idoit["install"], Path(str(idoit["config"])), idoit["web"]
    assert isinstance(install, Install) and isinstance(web, Web)
    ok(run_cli("backup", "idoit", config=config))
    before = state(idoit)
    destroy(idoit)
    nobody = f"t_no_admin_{secrets.token_hex(3)}"  # an administrative login this server does not have
    config.write_text(config.read_text() + f'db_admin = {{ user = "{nobody}" }}\n')

    stopped = run_cli("restore", "idoit", "latest", config=config)
    assert stopped.returncode == 1, stopped.stderr
    assert f"'{install.user}'@'localhost' is missing" in stopped.stderr
    root = Path(install.root)
    left = sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []  # asserted last
    assert not {name for (name,) in sql("SHOW DATABASES")} & set(install.databases)
    script = [line for line in stopped.stderr.splitlines() if line.startswith(("CREATE ", "GRANT "))]
    assert script and any(PLACEHOLDER in line for line in script), stopped.stderr
    assert install.password not in stopped.stdout + stopped.stderr
    # The admin runs it, as root over the socket, with the app's password in place of the placeholder.
    text = "\n".join(script).replace(PLACEHOLDER, install.password)
    subprocess.run(["mariadb", "-uroot", f"--socket={real_idoit.SOCKET}"], input=text.encode(), check=True)

    ok(run_cli("restore", "idoit", "latest", config=config))
    assert state(idoit) == before
    works(web, install)
    assert not left, f"the restore that stopped had already put back {left}"


def test_drill_touches_no_live_database(idoit: dict[str, object]) -> None:
    """The app's user has rights on its own databases only (as i-doit's installer grants them); the
    drill restores the point elsewhere: the live server shows no new database, nothing is left."""
    install, config = idoit["install"], Path(str(idoit["config"]))
    assert isinstance(install, Install)
    grants = sql(f"SHOW GRANTS FOR '{install.user}'@'localhost'")
    assert all(" ON *.* " not in grant or "USAGE" in grant for (grant,) in grants)
    ok(run_cli("backup", "idoit", config=config))
    live = {name for (name,) in sql("SHOW DATABASES")}
    seen: set[str] = set()
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            seen.update(name for (name,) in sql("SHOW DATABASES"))
            time.sleep(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        drilled = run_cli("drill", "idoit", config=config)
    finally:
        done.set()
        watcher.join()
    ok(drilled)
    ours = [name for name in seen - live if "drill" in name or any(db in name for db in install.databases)]
    assert not ours, f"the drill created databases on the live server: {ours}"
    assert {name for (name,) in sql("SHOW DATABASES")} & set(install.databases) == set(install.databases)


def test_one_tenant_restored_alone_under_another_name(idoit: dict[str, object]) -> None:
    """`--to-db` naming one tenant loads that tenant alone under the new name; the system database and
    the other tenant stay as they are, and the output says the copy is no tenant of i-doit yet."""
    install, config = idoit["install"], Path(str(idoit["config"]))
    assert isinstance(install, Install)
    ok(run_cli("backup", "idoit", config=config))
    live = {db: real_idoit.dump(db) for db in install.databases}
    tenant, copy = install.tenants[1], f"{install.tenants[1]}_copy"
    sql(f"GRANT ALL ON `{copy}`.* TO '{install.user}'@'localhost'")  # the admin lets the app's account load it
    try:
        copied = ok(run_cli("restore", "idoit", "latest", "--only", "db", "--to-db", f"{tenant}={copy}",
                            config=config))
        assert real_idoit.dump(copy).replace(copy.encode(), tenant.encode()) == live[tenant]
        assert {db: real_idoit.dump(db) for db in install.databases} == live
        assert f"left alone: {install.system}, {install.tenants[0]}" in copied.stderr
        assert (f"i-doit tenant 'Tenant Two' copied to {copy}; system database {install.system} left alone"
                in copied.stderr)
    finally:
        sql(f"DROP DATABASE IF EXISTS `{copy}`")
        sql(f"REVOKE ALL ON `{copy}`.* FROM '{install.user}'@'localhost'")
