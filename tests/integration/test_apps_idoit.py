"""i-doit end to end: system DB + three tenants (own credentials, one inactive), the whole folder,
system config files, stop/start commands around the snapshot, SIGTERM, version guard."""

from __future__ import annotations

import json
import shutil
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from safehold import config as config_module
from safehold.actions.keys import escrow
from safehold.actions.restore import restore
from safehold.apps import idoit
from safehold.errors import ConfigError, SafeholdError
from safehold.output import Silent
from safehold.secrets import Secret
from tests.conftest import mariadb_dump, run_cli, sql
from tests.integration.appkit import (
    WEB_GID,
    WEB_UID,
    db_user,
    drop_users,
    held_stop,
    ok,
    put,
    start_cli,
    tree_state,
    wait_for,
    write_config,
)

WEB = (WEB_UID, WEB_GID)
CRYPTO_HASH = "3f786850e387550fdab836ed7e6dc881de23001b"

SYSTEM_SCHEMA = [
    """CREATE TABLE `isys_mandator` (`isys_mandator__id` int(10) unsigned NOT NULL AUTO_INCREMENT,
       `isys_mandator__title` varchar(255) DEFAULT NULL, `isys_mandator__description` text,
       `isys_mandator__dir_cache` varchar(255) DEFAULT NULL, `isys_mandator__dir_tpl` varchar(255) DEFAULT NULL,
       `isys_mandator__db_host` varchar(255) DEFAULT NULL, `isys_mandator__db_port` int(10) unsigned DEFAULT 3306,
       `isys_mandator__db_name` varchar(255) DEFAULT NULL, `isys_mandator__db_user` varchar(255) DEFAULT NULL,
       `isys_mandator__db_pass` varchar(255) DEFAULT NULL, `isys_mandator__apikey` varchar(255) DEFAULT NULL,
       `isys_mandator__sort` int(10) unsigned DEFAULT 0, `isys_mandator__active` int(1) unsigned DEFAULT 1,
       PRIMARY KEY (`isys_mandator__id`)) ENGINE=InnoDB""",
    """CREATE TABLE `isys_db_init` (`isys_db_init__id` int(10) unsigned NOT NULL AUTO_INCREMENT,
       `isys_db_init__key` varchar(255) DEFAULT NULL, `isys_db_init__value` varchar(255) DEFAULT NULL,
       PRIMARY KEY (`isys_db_init__id`)) ENGINE=InnoDB""",
    """CREATE TABLE `isys_settings` (`isys_settings__key` varchar(255) NOT NULL, `isys_settings__value` text,
       `isys_settings__isys_mandator__id` int(10) unsigned DEFAULT NULL) ENGINE=InnoDB""",
]
TENANT_SCHEMA = [
    SYSTEM_SCHEMA[1],
    """CREATE TABLE `isys_obj` (`isys_obj__id` int(10) unsigned NOT NULL AUTO_INCREMENT,
       `isys_obj__title` varchar(255) DEFAULT NULL, PRIMARY KEY (`isys_obj__id`)) ENGINE=InnoDB""",
    """CREATE TABLE `isys_catg_ip_list` (`isys_catg_ip_list__id` int(10) unsigned NOT NULL AUTO_INCREMENT,
       `isys_catg_ip_list__isys_obj__id` int(10) unsigned NOT NULL, `isys_catg_ip_list__title` varchar(255),
       PRIMARY KEY (`isys_catg_ip_list__id`), CONSTRAINT `isys_catg_ip_list_ibfk_1` FOREIGN KEY
       (`isys_catg_ip_list__isys_obj__id`) REFERENCES `isys_obj` (`isys_obj__id`) ON DELETE CASCADE) ENGINE=InnoDB""",
]


def versions(version: str) -> list[str]:
    return [f"INSERT INTO isys_db_init (isys_db_init__key, isys_db_init__value) VALUES ('title', 'i-doit'), "
            f"('version', '{version}'), ('revision', '202312'), ('type', 'open')"]


@pytest.fixture
def idoit_site(tmp_path: Path, repo: dict[str, str], new_db: Callable[[str], str]) -> Iterator[dict[str, object]]:
    users: list[str] = []
    system = new_db("t_apps")
    tenants = [new_db("t_apps") for _ in range(3)]
    tenant_user, tenant_password = db_user(users)
    sql(SYSTEM_SCHEMA + versions("1.12.4"), system)
    for index, tenant in enumerate(tenants, start=1):
        sql(TENANT_SCHEMA + versions("1.12.4") + [
            f"INSERT INTO isys_obj (isys_obj__title) VALUES ('server-{index}'), ('switch-{index}')",
            "INSERT INTO isys_catg_ip_list (isys_catg_ip_list__isys_obj__id, isys_catg_ip_list__title) "
            f"VALUES (1, '10.0.{index}.1'), (2, '10.0.{index}.2')"], tenant)
        if index > 1:
            sql(f"GRANT ALL ON `{tenant}`.* TO '{tenant_user}'@'%'")
        user, password = ("root", "") if index == 1 else (tenant_user, tenant_password.replace("'", "\\'"))
        sql("INSERT INTO isys_mandator (isys_mandator__title, isys_mandator__db_host, isys_mandator__db_port, "
            "isys_mandator__db_name, isys_mandator__db_user, isys_mandator__db_pass, isys_mandator__active) "
            f"VALUES ('Tenant {index}', '127.0.0.1', 3306, '{tenant}', '{user}', '{password}', {int(index != 3)})",
            system)
    sql("INSERT INTO isys_settings VALUES ('system.dir.file-upload', '', 0)", system)

    root = tmp_path / "www" / "i-doit"
    put(root / "src" / "config.inc.php", f"""<?php
/**
 * i-doit
 *
 * Basic configuration
 */
$g_db_system = [
    "type" => 'mysqli',
    "host" => "127.0.0.1",
    "port" => "3306",
    "user" => "root",
    "pass" => "",
    "name" => "{system}"
];

$g_admin_auth = [
    'admin' => '$2y$10$3TqRmQ3VZp1Rl7G1xGq8ue',
];

// $g_dirs = [
//     'temp' => '/tmp/i-doit/'
// ];

$g_license_token = '';

/**
 * Crypto hash used as key for encription with phpseclib
 */
$g_crypto_hash = '{CRYPTO_HASH}';

$g_disable_addon_upload = '0';
""", 0o664, WEB)
    put(root / "src" / "version.inc.php", "<?php\n$g_product_info = [\n    'version' => '1.12.4',\n"
        "    'step'    => '',\n    'type'    => 'OPEN'\n];\n", 0o664, WEB)
    put(root / "index.php", "<?php include 'src/bootstrap.inc.php';\n", 0o664, WEB)
    put(root / "upload" / "files" / "manual.pdf", b"%PDF" + bytes(range(256)) * 32, 0o664, WEB)
    put(root / "upload" / "images" / "rack.png", b"\x89PNG" + bytes(200), 0o664, WEB)
    put(root / "temp" / "cache_x" / "smarty.php", "cache", 0o664, WEB)
    put(root / "temp" / ".htaccess", "Require all denied\n", 0o644, WEB)  # a guard an admin added: kept
    put(root / "src" / "classes" / "modules" / "api" / "init.php", "<?php // add-on\n", 0o644, WEB)
    for folder in (root, root / "upload", root / "upload" / "files", root / "upload" / "images", root / "temp"):
        folder.chmod(0o775)
        shutil.chown(folder, WEB_UID, WEB_GID)
    etc = tmp_path / "etc"
    put(etc / "apache2" / "sites-available" / "i-doit.conf", "<VirtualHost *:80>\nDocumentRoot /var/www\n")
    put(etc / "php" / "8.2" / "apache2" / "conf.d" / "99-i-doit.ini", "memory_limit = 256M\n")
    log, hold = tmp_path / "quiesce.log", tmp_path / "hold"
    extra = f'config_files = ["{etc / "apache2"}", "{etc / "php"}"]\n{held_stop(log, hold)}\n'
    config = write_config(tmp_path, repo, "idoit", "idoit", root, extra)
    yield {"root": root, "system": system, "tenants": tenants, "config": config, "etc": etc, "log": log,
           "hold": hold, "tenant_user": tenant_user, "state": tmp_path / "state"}
    drop_users(users)


def test_describe_reads_every_tenant_with_its_own_credentials(idoit_site: dict[str, object]) -> None:
    config = config_module.load(Path(str(idoit_site["config"])))
    instance = idoit.describe("idoit", config.instance("idoit"))
    names = [db.name for db in instance.databases]
    assert names == [idoit_site["system"], *idoit_site["tenants"]]  # type: ignore[misc]
    assert [db.connection.user for db in instance.databases] == ["root", "root", idoit_site["tenant_user"],
                                                                 idoit_site["tenant_user"]]
    assert [t["active"] for t in instance.details["tenants"]] == [True, True, False]  # type: ignore[index]
    assert instance.app_version == "1.12.4" and instance.schema_version == "1.12.4"
    assert idoit.read_schema_version(instance, str(idoit_site["system"])) == "1.12.4"
    root = Path(str(idoit_site["root"]))
    assert str(root / "temp" / "*") in instance.exclude
    assert Path(str(idoit_site["etc"])) / "apache2" in instance.config_files
    assert instance.files == [root]

    # Upload folders moved out of the install by the system settings are kept too.
    elsewhere = root.parent / "idoit-images"
    sql(f"INSERT INTO isys_settings VALUES ('system.dir.image-upload', '{elsewhere}', 0)",
        str(idoit_site["system"]))
    assert idoit.describe("idoit", config.instance("idoit")).files == [root, elsewhere]


def test_config_errors(idoit_site: dict[str, object]) -> None:
    config = config_module.load(Path(str(idoit_site["config"])))
    with pytest.raises(ConfigError, match="only ITFlow has a master key to escrow"):
        escrow(config, "idoit", Secret("pw"), None, Silent())
    settings = Path(str(idoit_site["root"])) / "src" / "config.inc.php"
    settings.write_text(settings.read_text().replace('"pass" => ""', '"pass" => "pa$sword"'))
    with pytest.raises(ConfigError, match=r"config.inc.php, line 12: \$g_db_system\['pass'\] is set by a double-quoted "
                       "string with a variable in it") as caught:
        idoit.describe("idoit", config.instance("idoit"))
    assert "pa$sword" not in caught.value.line()  # the expression of a password may be the password
    settings.write_text("<?php\n$g_crypto_hash = 'x';\n")
    with pytest.raises(SafeholdError, match="does not look like an i-doit install"):
        idoit.describe("idoit", config.instance("idoit"))
    settings.unlink()
    with pytest.raises(ConfigError, match="i-doit config file .* does not exist"):
        idoit.describe("idoit", config.instance("idoit"))


def test_three_tenants_backup_destroy_restore(idoit_site: dict[str, object]) -> None:
    root, etc, config = Path(str(idoit_site["root"])), Path(str(idoit_site["etc"])), Path(str(idoit_site["config"]))
    databases = [str(idoit_site["system"]), *idoit_site["tenants"]]  # type: ignore[misc]
    dumps = {db: mariadb_dump(db) for db in databases}
    files = tree_state(root, ("temp/cache_x",))
    system_files = tree_state(etc)
    ok(run_cli("backup", "idoit", config=config))
    assert Path(str(idoit_site["log"])).read_text() == "stopped\nstarted\n"
    show = json.loads(ok(run_cli("show", "latest", "--json", config=config)).stdout)
    assert sorted(d["name"] for d in show["databases"]) == sorted(databases)
    assert show["quiesce"]["method"] == "commands" and show["keys"] == ["idoit_crypto_hash"]
    assert CRYPTO_HASH not in json.dumps(show)

    for db in databases:
        sql(f"DROP DATABASE `{db}`")
    shutil.rmtree(root)
    shutil.rmtree(etc)
    ok(run_cli("restore", "idoit", "latest", config=config))
    assert {db: mariadb_dump(db) for db in databases} == dumps
    assert tree_state(root) == files  # temp/ is back, empty but for its guard (caches are rebuilt)
    assert tree_state(etc) == system_files


def test_restore_onto_a_server_without_the_tenant_account_names_it(idoit_site: dict[str, object]) -> None:
    config, tenant_user = Path(str(idoit_site["config"])), str(idoit_site["tenant_user"])
    tenants = list(idoit_site["tenants"])  # type: ignore[call-overload]
    dumps = {db: mariadb_dump(db) for db in tenants}
    ok(run_cli("backup", "idoit", config=config))
    for db in [str(idoit_site["system"]), *tenants]:
        sql(f"DROP DATABASE `{db}`")
    sql(f"DROP USER '{tenant_user}'@'%'")  # a new server: i-doit's tenant account is not there
    restored = ok(run_cli("restore", "idoit", "latest", "--only", "db", config=config))
    assert {db: mariadb_dump(db) for db in tenants} == dumps
    missing = [line for line in restored.stderr.splitlines() if "which this server refuses" in line]
    assert len(missing) == 2 and all(tenant_user in line for line in missing), restored.stderr
    assert "Tenant 2" in missing[0] and tenants[1] in missing[0]


def test_active_tenant_without_database_fails_naming_the_tenant(idoit_site: dict[str, object]) -> None:
    """The tenant database's name comes from isys_mandator, not safehold.toml: the refusal says which
    tenant and where the name comes from, before the app is stopped."""
    config, system, log = Path(str(idoit_site["config"])), str(idoit_site["system"]), Path(str(idoit_site["log"]))
    gone = idoit_site["tenants"][1]  # type: ignore[index]
    sql(f"DROP DATABASE `{gone}`")
    result = run_cli("backup", "idoit", config=config)
    assert result.returncode == 1, result.stderr
    error = result.stderr.strip().splitlines()[-1]
    assert (f"i-doit tenant 'Tenant 2' (isys_mandator__id 2, active, in system database {system}) uses database "
            f"{gone}, which does not exist, so no point was made") in error
    assert "isys_mandator__db_name" in error and "not from safehold.toml" in error
    assert not log.exists()  # refused before the stop commands ran
    history = json.loads(ok(run_cli("history", "--json", config=config)).stdout)
    assert "Tenant 2" in json.dumps(history)

    # The same tenant deactivated in i-doit: left out with a warning the point keeps, the others saved.
    sql("UPDATE isys_mandator SET isys_mandator__active = 0 WHERE isys_mandator__id = 2", system)
    result = ok(run_cli("backup", "idoit", config=config))
    warning = f"i-doit tenant 'Tenant 2' (isys_mandator__id 2, inactive, in system database {system}) is not in " \
              f"this point: its database {gone} does not exist"
    assert warning in result.stderr
    show = json.loads(ok(run_cli("show", "latest", "--json", config=config)).stdout)
    tenants = idoit_site["tenants"]  # type: ignore[index]
    assert sorted(d["name"] for d in show["databases"]) == sorted([system, tenants[0], tenants[2]])
    assert any(warning in line for line in show["warnings"])
    assert [t.get("skipped") for t in show["details"]["tenants"]] == [None, "database does not exist", None]


def test_tenant_account_refused_fails_naming_the_tenant(idoit_site: dict[str, object]) -> None:
    """An inactive tenant whose database exists but cannot be opened is not skipped: its data is there."""
    config = Path(str(idoit_site["config"]))
    sql("UPDATE isys_mandator SET isys_mandator__db_pass = 'wrong' WHERE isys_mandator__id = 3",
        str(idoit_site["system"]))
    result = run_cli("backup", "idoit", config=config)
    assert result.returncode == 1, result.stderr
    error = result.stderr.strip().splitlines()[-1]
    assert "i-doit tenant 'Tenant 3' (isys_mandator__id 3, inactive" in error and "access denied" in error
    assert "isys_mandator__db_host/__db_user/__db_pass" in error and "wrong" not in error


def test_sigterm_during_snapshot_resumes(idoit_site: dict[str, object]) -> None:
    log, hold, config = Path(str(idoit_site["log"])), Path(str(idoit_site["hold"])), Path(str(idoit_site["config"]))
    hold.touch()
    proc = start_cli("backup", "idoit", config=config)
    try:
        wait_for(lambda: log.exists() and "stopped" in log.read_text())
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
    finally:
        hold.unlink(missing_ok=True)
    assert proc.returncode == 1 and "stopped by SIGTERM" in stderr
    assert log.read_text() == "stopped\nstarted\n"
    assert not list((Path(str(idoit_site["state"])) / "quiesce").glob("*.json"))
    assert "idoit" not in run_cli("list", "--json", config=config).stdout  # no complete point was made


def test_version_guard_counts_tenants(idoit_site: dict[str, object]) -> None:
    config = Path(str(idoit_site["config"]))
    ok(run_cli("backup", "idoit", config=config))
    tenant = idoit_site["tenants"][1]  # type: ignore[index]
    sql("UPDATE isys_db_init SET isys_db_init__value = '1.13' WHERE isys_db_init__key = 'version'", tenant)
    refused = run_cli("restore", "idoit", "latest", "--only", "db", config=config)
    assert refused.returncode == 1
    assert f"tenant {tenant} schema 1.13 here but 1.12.4 in the point" in refused.stderr
    assert run_cli("restore", "idoit", "latest", "--only", "db", "--force", config=config).returncode == 1
    ok(run_cli("restore", "idoit", "latest", "--only", "db", "--force", "--allow-version-change", config=config))
    assert sql("SELECT isys_db_init__value FROM isys_db_init WHERE isys_db_init__key='version'", tenant) == [
        ("1.12.4",)]


def test_restore_runs_with_the_web_server_stopped(idoit_site: dict[str, object]) -> None:
    """The guide stops the web server for the recovery as for the backup: the load, the files and the
    emptying of temp/ happen between the stop and start commands, and the safety point does not stop
    it a second time."""
    config, log = Path(str(idoit_site["config"])), Path(str(idoit_site["log"]))
    ok(run_cli("backup", "idoit", config=config))
    log.unlink()
    seen: list[str] = []
    reporter = Silent()
    reporter.listeners.append(lambda e: seen.append(log.read_text() if log.exists() else "running") if str(
        e.get("message")).startswith(("taking a safety point", "loading", "cleared")) else None)
    restore(config_module.load(config), "idoit", "latest", reporter, force=True)
    assert len(seen) == 1 + 4 + 1 and set(seen) == {"stopped\n"}, seen
    assert log.read_text() == "stopped\nstarted\n"


def test_one_tenant_restored_alone_under_another_name(idoit_site: dict[str, object], new_db) -> None:
    """`--to-db` names one tenant: only that copy is made, the system database and the other tenants are
    left alone (said in the output). With a copy of the system database too, the copy's isys_mandator
    points at the tenant copies, and a tenant not copied is named as still pointing at the live one."""
    config, system = Path(str(idoit_site["config"])), str(idoit_site["system"])
    tenants = list(idoit_site["tenants"])  # type: ignore[call-overload]
    ok(run_cli("backup", "idoit", config=config))
    before = {db: mariadb_dump(db) for db in [system, *tenants]}
    copy = f"{tenants[1]}_copy"
    new_db.created += [copy, f"{system}_copy", f"{tenants[0]}_copy"]
    # The tenant's own account loads its copy: the admin grants it the new name first (as for any new database).
    sql(f"GRANT ALL ON `{copy}`.* TO '{idoit_site['tenant_user']}'@'%'")
    alone = ok(run_cli("restore", "idoit", "latest", "--only", "db", "--to-db", f"{tenants[1]}={copy}",
                       config=config))
    assert mariadb_dump(copy).replace(copy.encode(), tenants[1].encode()) == before[tenants[1]]
    assert {db: mariadb_dump(db) for db in [system, *tenants]} == before  # nothing live was touched
    assert not sql(f"SHOW DATABASES LIKE '{system}_copy'")
    assert f"left alone: {system}, {tenants[0]}, {tenants[2]}" in alone.stderr
    assert f"i-doit tenant 'Tenant 2' copied to {copy}; system database {system} left alone" in alone.stderr

    both = ok(run_cli("restore", "idoit", "latest", "--only", "db", "--to-db", f"{system}={system}_copy",
                      "--to-db", f"{tenants[0]}={tenants[0]}_copy", config=config))
    rows = sql("SELECT isys_mandator__id, isys_mandator__db_name FROM isys_mandator ORDER BY 1", f"{system}_copy")
    assert rows == [(1, f"{tenants[0]}_copy"), (2, tenants[1]), (3, tenants[2])]
    live = sql("SELECT isys_mandator__db_name FROM isys_mandator ORDER BY isys_mandator__id", system)
    assert live == [(t,) for t in tenants]
    assert (f"in the copy {system}_copy, isys_mandator points tenant 'Tenant 1' (isys_mandator__id 1) at its copy "
            f"{tenants[0]}_copy") in both.stderr
    assert (f"in the copy {system}_copy, tenant 'Tenant 2' (isys_mandator__id 2) still points at the live "
            f"database {tenants[1]}") in both.stderr
