"""GLPI profile end to end on the local MariaDB.

GLPI's sources are not in ../shared, so the install is built by the test in GLPI's own formats
(glpi-project/glpi, see ../shared/APPS-NEXT.md §1): `config/config_db.php` exactly as
`DBConnection::createMainConfig()` writes it (`src/DBConnection.php` @0042059c: `<?php`, `class DB
extends DBmysql {`, one `   public $name = var_export(value);` line per property, the password
rawurlencode()d), `glpicrypt.key` as `GLPIKey::generate()` makes it (32 random bytes), secrets
encrypted as `GLPIKey::encrypt()` does it (`src/GLPIKey.php`: PHP's own
sodium_crypto_aead_xchacha20poly1305_ietf_encrypt with the nonce as additional data, run through
`php`), the `glpi_configs` rows `Update::getCurrents()` and the maintenance command read and write,
and the files/ layout of `inc/based_config.php`.
"""

from __future__ import annotations

import base64
import json
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.conftest import mariadb_dump, need, run_cli, sql
from tests.integration.appkit import app_user, backup_killed_while_paused, held_instance, ok, put, tree_state

RUNTIME = ("files/_cache", "files/_sessions", "files/_log", "files/_tmp", "files/_lock", "files/_cron")
SCHEMA = [
    "CREATE TABLE glpi_configs (id int unsigned NOT NULL AUTO_INCREMENT PRIMARY KEY, context varchar(150), "
    "name varchar(150), value text, UNIQUE KEY unicity (context, name)) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 "
    "COLLATE=utf8mb4_unicode_ci",
    "CREATE TABLE glpi_authldaps (id int unsigned NOT NULL AUTO_INCREMENT PRIMARY KEY, name varchar(255), "
    "host varchar(255), rootdn varchar(255), rootdn_passwd varchar(255)) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
    "CREATE TABLE glpi_documents (id int unsigned NOT NULL AUTO_INCREMENT PRIMARY KEY, name varchar(255), "
    "filename varchar(255), filepath varchar(255), mime varchar(255), sha1sum char(40)) ENGINE=InnoDB",
]


def glpi_encrypt(plaintext: str, key: bytes) -> str:
    """GLPIKey::encrypt(), run by PHP's sodium extension."""
    need(shutil.which("php") is not None, "PHP (with sodium) is not installed")
    code = ("$k = base64_decode($argv[1]); $n = random_bytes(SODIUM_CRYPTO_AEAD_XCHACHA20POLY1305_IETF_NPUBBYTES);"
            " echo base64_encode($n . sodium_crypto_aead_xchacha20poly1305_ietf_encrypt($argv[2], $n, $n, $k));")
    return subprocess.run(["php", "-r", code, base64.b64encode(key).decode(), plaintext], check=True,
                          capture_output=True, text=True).stdout


def config_db(host: str, user: str, password: str, database: str) -> str:
    """config_db.php as DBConnection::createMainConfig() writes it (var_export per property)."""
    def export(value: object) -> str:
        if isinstance(value, bool):
            return "true" if value else "false"
        return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"
    properties = {"dbhost": host, "dbuser": user, "dbpassword": quote(password, safe="-_.~"), "dbdefault": database,
                  "use_timezones": True, "use_utf8mb4": True, "allow_myisam": False, "allow_datetime": False,
                  "allow_signed_keys": False}
    return ("<?php\nclass DB extends DBmysql {\n"
            + "".join(f"   public ${name} = {export(value)};\n" for name, value in properties.items()) + "}\n")


@pytest.fixture
def glpi(tmp_path: Path, new_db, repo: dict[str, str]) -> Iterator[dict[str, object]]:  # noqa: ANN001
    database = new_db("t_glpi")
    user, password = f"t_glpi_{secrets.token_hex(3)}", "p@ss%w0rd/" + secrets.token_hex(4)
    with app_user(database, user, password):
        root = tmp_path / "www" / "glpi"
        key = secrets.token_bytes(32)
        put(root / "inc" / "based_config.php", "<?php\n// stand-in: GLPI's path logic, read by safehold as data\n")
        put(root / "inc" / "define.php", "<?php\ndefine('GLPI_VERSION', '10.0.16');\n")
        put(root / "config" / "config_db.php", config_db("127.0.0.1", user, password, database), 0o640)
        put(root / "config" / "glpicrypt.key", key, 0o600)
        put(root / "files" / ".htaccess", "Require all denied\n")
        put(root / "files" / "PNG" / "3f" / "a1b2c3.PNG", secrets.token_bytes(2048))
        put(root / "files" / "_pictures" / "7e" / "avatar.jpg", secrets.token_bytes(512))
        put(root / "files" / "_dumps" / "glpi-backup.sql", "-- GLPI's own dump\n")
        for folder in RUNTIME:
            put(root / folder / "remove.txt", "")
            put(root / folder / "runtime.dat", secrets.token_bytes(64))
        put(root / "files" / "_sessions" / ".htaccess", "Require all denied\n")
        put(root / "marketplace" / "formcreator" / "setup.php", "<?php\n")
        put(root / "plugins" / "fields" / "setup.php", "<?php\n")
        sql(SCHEMA, database)
        smtp = glpi_encrypt("smtp-secret-2026", key)
        ldap = glpi_encrypt("ldap-bind-secret", key)
        sql([f"INSERT INTO glpi_configs (context, name, value) VALUES ('core', 'version', '10.0.16'), "
             f"('core', 'dbversion', '10.0.16'), ('core', 'maintenance_mode', '0'), ('core', 'smtp_passwd', '{smtp}')",
             "INSERT INTO glpi_authldaps (name, host, rootdn, rootdn_passwd) VALUES "
             f"('AD', 'dc1', 'cn=glpi', '{ldap}')",
             "INSERT INTO glpi_documents (name, filename, filepath, mime, sha1sum) VALUES ('photo', 'a1b2c3.PNG', "
             "'PNG/3f/a1b2c3.PNG', 'image/png', repeat('a', 40))"], database)
        yield {"root": root, "db": database, "key": key, **held_instance(tmp_path, repo, "glpi", root)}


def maintenance(database: str) -> str:
    return str(sql("SELECT value FROM glpi_configs WHERE context = 'core' AND name = 'maintenance_mode'",
                   database)[0][0])


def test_restored_from_nothing_identical_and_not_left_in_maintenance(glpi: dict[str, object]) -> None:
    root, database, config = Path(str(glpi["root"])), str(glpi["db"]), Path(str(glpi["config"]))
    planned = ok(run_cli("backup", "glpi", "--dry-run", config=config))
    assert f"files {root}" in planned.stdout and "switch GLPI to maintenance mode" in planned.stdout
    assert f"{root}/files/_cache/*" in planned.stdout and "glpi_crypt_key" in planned.stdout
    dump_before, tree_before = mariadb_dump(database), tree_state(root, RUNTIME)
    backup = ok(run_cli("backup", "glpi", config=config))
    assert "GLPI switched to maintenance mode" in backup.stderr and "back to 0" in backup.stderr
    assert maintenance(database) == "0"
    ok(run_cli("key", "verify", "glpi", "latest", config=config))

    sql(f"DROP DATABASE `{database}`")
    shutil.rmtree(root)
    restored = ok(run_cli("restore", "glpi", "latest", config=config))
    assert "GLPI maintenance mode back to 0" in restored.stderr
    assert mariadb_dump(database) == dump_before  # not stuck in maintenance: the dump's '1' was put back to '0'
    assert tree_state(root, RUNTIME) == tree_before
    for folder in RUNTIME:  # regenerable runtime content is not in the point; its guards are
        assert not (root / folder / "runtime.dat").exists()
    assert (root / "files" / "_sessions" / ".htaccess").is_file()


def test_key_escrow_warning_and_verify(glpi: dict[str, object]) -> None:
    root, config, key = Path(str(glpi["root"])), Path(str(glpi["config"])), bytes(glpi["key"])  # type: ignore[arg-type]
    key_file = root / "config" / "glpicrypt.key"
    ok(run_cli("backup", "glpi", config=config))
    ok(run_cli("key", "verify", "glpi", "latest", config=config))
    key_file.write_bytes(secrets.token_bytes(32))  # another key: what GLPI makes when the old one is missing
    failed = run_cli("key", "verify", "glpi", "latest", config=config)
    assert failed.returncode != 0 and "differs from the point's glpicrypt.key" in failed.stdout + failed.stderr
    key_file.write_bytes(key)
    ok(run_cli("key", "verify", "glpi", "latest", config=config))

    key_file.unlink()
    missing = ok(run_cli("backup", "glpi", config=config))
    assert "glpicrypt.key is MISSING" in missing.stderr and "creates a NEW one" in missing.stderr
    no_key = run_cli("key", "verify", "glpi", "latest", config=config)
    assert no_key.returncode != 0


def test_a_key_that_does_not_open_the_stored_secrets_is_reported(glpi: dict[str, object]) -> None:
    root, database, config = Path(str(glpi["root"])), str(glpi["db"]), Path(str(glpi["config"]))
    other = secrets.token_bytes(32)
    (root / "config" / "glpicrypt.key").write_bytes(other)  # key file and database no longer belong together
    ok(run_cli("backup", "glpi", config=config))
    failed = run_cli("key", "verify", "glpi", "latest", config=config)
    assert failed.returncode != 0
    assert "does not decrypt glpi_configs smtp_passwd" in failed.stdout + failed.stderr
    drill = run_cli("drill", "glpi", config=config)  # the drill proves the key on its restored copy
    assert drill.returncode != 0 and "does not decrypt glpi_configs smtp_passwd" in drill.stdout + drill.stderr
    sql(f"UPDATE glpi_configs SET value = '{glpi_encrypt('x', other)}' WHERE name = 'smtp_passwd'", database)
    sql(f"UPDATE glpi_authldaps SET rootdn_passwd = '{glpi_encrypt('y', other)}'", database)
    ok(run_cli("backup", "glpi", config=config))
    ok(run_cli("key", "verify", "glpi", "latest", config=config))
    ok(run_cli("drill", "glpi", config=config))


def test_killed_backup_left_in_maintenance_is_resumed_by_check(glpi: dict[str, object]) -> None:
    database, config, state = str(glpi["db"]), Path(str(glpi["config"])), Path(str(glpi["state"]))

    def in_maintenance() -> None:
        assert maintenance(database) == "1"

    backup_killed_while_paused(glpi, "glpi", in_maintenance)
    assert maintenance(database) == "1" and (state / "quiesce" / "glpi.json").exists()
    checked = json.loads(run_cli("check", "glpi", "--json", config=config).stdout)
    found = {f["rule"]: f for f in checked["instances"][0]["findings"]}
    assert found["paused"]["message"].startswith("resumed now: GLPI maintenance mode on"), found["paused"]
    assert maintenance(database) == "0" and not (state / "quiesce" / "glpi.json").exists()


def test_downgrade_refused_before_anything_changes(glpi: dict[str, object]) -> None:
    root, database, config = Path(str(glpi["root"])), str(glpi["db"]), Path(str(glpi["config"]))
    ok(run_cli("backup", "glpi", config=config))
    sql("INSERT INTO glpi_documents (name) VALUES ('after the backup')", database)
    put(root / "inc" / "define.php", "<?php\ndefine('GLPI_VERSION', '10.0.9');\n")
    refused = run_cli("restore", "glpi", "latest", "--only", "db", config=config)
    assert refused.returncode == 1
    assert "the code here is 10.0.9 but the point's database is 10.0.16" in refused.stderr
    assert "GLPI refuses downgrades" in refused.stderr
    assert sql("SELECT count(*) FROM glpi_documents", database) == [(2,)]


def test_folders_moved_by_local_define_and_init(glpi: dict[str, object], tmp_path: Path) -> None:
    root, config = Path(str(glpi["root"])), Path(str(glpi["config"]))
    var = tmp_path / "var-lib-glpi"
    shutil.move(str(root / "files"), var)
    put(root / "config" / "local_define.php", f"<?php\ndefine('GLPI_VAR_DIR', '{var}');\n")
    planned = ok(run_cli("backup", "glpi", "--dry-run", config=config))
    assert f"files {var}" in planned.stdout and f"{var}/_sessions/*" in planned.stdout
    put(root / "config" / "local_define.php", "<?php\ndefine('GLPI_VAR_DIR', getenv('GLPI_VAR'));\n")
    refused = run_cli("backup", "glpi", "--dry-run", config=config)
    assert refused.returncode != 0 and "constant GLPI_VAR_DIR is set by a call to getenv()" in (
        refused.stdout + refused.stderr)
    out = tmp_path / "init.toml"
    ok(run_cli("init", "--root", str(root), "--output", str(out)))
    assert 'app = "glpi"' in out.read_text()
