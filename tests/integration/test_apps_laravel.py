"""Snipe-IT and BookStack profiles end to end on the local MariaDB.

Their sources are not in ../shared, so each install is built by the test in the apps' own formats
(../shared/APPS-NEXT.md §2-3): `.env` lines as in `snipe:.env.example` (snipe/snipe-it @5aa5c480)
and `bs:.env.example` (BookStackApp/BookStack @6f1c54d0), Snipe-IT's `config/version.php` (`return
array('app_version' => …)`), BookStack's `version` file, the `migrations` table Laravel's migrator
keeps, the tables the profiles read (`settings.ldap_pword`, `custom_fields` + an encrypted asset
column for Snipe-IT, `mfa_values.value` for BookStack), and values encrypted exactly as Laravel's
`Illuminate\\Encryption\\Encrypter::encrypt()` does it, run by PHP's openssl extension.
"""

from __future__ import annotations

import base64
import json
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import mariadb_dump, need, run_cli, sql
from tests.integration.appkit import app_user, backup_killed_while_paused, held_instance, ok, put, tree_state

REGENERABLE = ("storage/framework/cache", "storage/framework/sessions", "storage/framework/views", "storage/logs",
               "bootstrap/cache")


def laravel_encrypt(value: str, key: bytes) -> str:
    """Encrypter::encrypt($value) (serialize = true) with AES-256-CBC, as Laravel writes it."""
    need(shutil.which("php") is not None, "PHP is not installed")
    code = ("$key = base64_decode($argv[1]); $iv = random_bytes(16);"
            " $value = openssl_encrypt(serialize($argv[2]), 'aes-256-cbc', $key, 0, $iv);"
            " $iv = base64_encode($iv); $mac = hash_hmac('sha256', $iv.$value, $key); $tag = '';"
            " echo base64_encode(json_encode(compact('iv', 'value', 'mac', 'tag'), JSON_UNESCAPED_SLASHES));")
    return subprocess.run(["php", "-r", code, base64.b64encode(key).decode(), value], check=True,
                          capture_output=True, text=True).stdout


@dataclass
class App:
    name: str
    version_file: str
    version_text: str
    older_text: str
    uploads: tuple[str, ...]
    skipped: tuple[str, ...]
    schema: tuple[str, ...]
    secret_table: str


SNIPE = App(
    "snipeit", "config/version.php",
    "<?php\nreturn array (\n  'app_version' => 'v8.1.4',\n  'full_app_version' => 'v8.1.4 - build 17000-g5aa5c480',\n"
    "  'build_version' => '17000',\n  'prerelease_version' => '',\n  'hash_version' => 'g5aa5c480',\n"
    "  'full_hash' => 'v8.1.4-12-g5aa5c480',\n  'branch' => 'master',\n);\n",
    "<?php\nreturn array (\n  'app_version' => 'v7.1.17',\n);\n",
    ("public/uploads/assets/asset-7.jpg", "public/uploads/avatars/u1.png", "storage/private_uploads/assets/invoice.pdf",
     "storage/private_uploads/eula-pdfs/eula.pdf", "storage/oauth-private.key", "storage/oauth-public.key"),
    ("public/uploads/barcodes", "storage/app/backups"),
    ("CREATE TABLE settings (id int unsigned AUTO_INCREMENT PRIMARY KEY, site_name varchar(100), "
     "ldap_pword text) ENGINE=InnoDB",
     "CREATE TABLE custom_fields (id int unsigned AUTO_INCREMENT PRIMARY KEY, name varchar(255), "
     "db_column varchar(255), field_encrypted tinyint(1) NOT NULL DEFAULT 0) ENGINE=InnoDB",
     "CREATE TABLE assets (id int unsigned AUTO_INCREMENT PRIMARY KEY, name varchar(255), asset_tag varchar(255), "
     "_snipeit_serial_2 text) ENGINE=InnoDB"),
    "settings.ldap_pword")
BOOKSTACK = App(
    "bookstack", "version", "v24.10.2\n", "v23.12\n",
    ("public/uploads/images/gallery/2026-12/photo.png", "storage/uploads/files/2026-12/manual.pdf",
     "storage/uploads/images/gallery/2026-12/secure.png", "themes/custom/functions.php"),
    (),
    ("CREATE TABLE users (id int unsigned AUTO_INCREMENT PRIMARY KEY, name varchar(255), email varchar(255)) "
     "ENGINE=InnoDB",
     "CREATE TABLE mfa_values (id int unsigned AUTO_INCREMENT PRIMARY KEY, user_id int unsigned, method varchar(20), "
     "value text, created_at timestamp NULL, updated_at timestamp NULL) ENGINE=InnoDB"),
    "mfa_values")


def env_text(app: App, database: str, user: str, password_line: str, key: bytes) -> str:
    """The .env lines each app's .env.example has, filled in."""
    host = "DB_HOST=127.0.0.1:3306\n" if app is BOOKSTACK else "DB_HOST=127.0.0.1\nDB_PORT=3306\n"
    head = ("APP_ENV=production\nAPP_DEBUG=false\n"
            f"APP_KEY=base64:{base64.b64encode(key).decode()}\n"
            f"APP_URL=https://{app.name}.example.org\n")
    db = f"DB_CONNECTION=mysql\n{host}DB_DATABASE={database}\nDB_USERNAME={user}\n{password_line}\n"
    tail = ("DB_PREFIX=null\n" if app is SNIPE else "STORAGE_TYPE=local\n") + "MAIL_FROM_NAME=\"${APP_NAME}\"\n"
    return head + db + tail


@pytest.fixture(params=[SNIPE, BOOKSTACK], ids=["snipeit", "bookstack"])
def laravel_app(request: pytest.FixtureRequest, tmp_path: Path, new_db,  # noqa: ANN001
                repo: dict[str, str]) -> Iterator[dict[str, object]]:
    app: App = request.param
    database = new_db(f"t_{app.name}")
    user, password = f"t_{app.name[:4]}_{secrets.token_hex(3)}", "pw#" + secrets.token_hex(6)
    with app_user(database, user, password):
        root = tmp_path / "www" / app.name
        key = secrets.token_bytes(32)
        if app is SNIPE:  # the Docker secrets form (docker/startup.sh file_env): DB_PASSWORD_FILE
            secret_file = put(tmp_path / "secrets" / "db_password", password + "\n", 0o600)
            password_line = f"DB_PASSWORD_FILE={secret_file}"
        else:
            password_line = f'DB_PASSWORD="{password}"'
        put(root / ".env", env_text(app, database, user, password_line, key), 0o640)
        put(root / "artisan", "#!/usr/bin/env php\n<?php\n")
        put(root / app.version_file, app.version_text)
        put(root / "vendor" / "autoload.php", "<?php\n")
        for rel in app.uploads:
            put(root / rel, secrets.token_bytes(700))
        for rel in (*REGENERABLE, *app.skipped):
            put(root / rel / ".gitignore", "*\n!.gitignore\n")
            put(root / rel / "regenerable.dat", secrets.token_bytes(100))
        sql(["CREATE TABLE migrations (id int unsigned AUTO_INCREMENT PRIMARY KEY, migration varchar(255) NOT NULL, "
             "batch int NOT NULL) ENGINE=InnoDB",
             "INSERT INTO migrations (migration, batch) VALUES ('2014_10_12_000000_create_users_table', 1), "
             "('2024_09_01_000000_latest', 2)", *app.schema], database)
        secret = laravel_encrypt("TOTP-SECRET-JBSWY3DPEHPK3PXP", key)
        if app is SNIPE:
            sql(["INSERT INTO settings (site_name, ldap_pword) VALUES ('Snipe', '" + secret + "')",
                 "INSERT INTO custom_fields (name, db_column, field_encrypted) VALUES "
                 "('Serial', '_snipeit_serial_2', 1)",
                 f"INSERT INTO assets (name, asset_tag, _snipeit_serial_2) VALUES ('Laptop', 'A-1', "
                 f"'{laravel_encrypt('SN-123', key)}')"], database)
        else:
            sql(["INSERT INTO users (name, email) VALUES ('Admin', 'admin@example.org')",
                 f"INSERT INTO mfa_values (user_id, method, value) VALUES (1, 'totp', '{secret}')"], database)
        yield {"app": app, "root": root, "db": database, "key": key, **held_instance(tmp_path, repo, app.name, root)}


def test_restored_from_nothing_identical(laravel_app: dict[str, object]) -> None:
    app: App = laravel_app["app"]  # type: ignore[assignment]
    root, database, config = Path(str(laravel_app["root"])), str(laravel_app["db"]), Path(str(laravel_app["config"]))
    planned = ok(run_cli("backup", app.name, "--dry-run", config=config))
    assert f"files {root}" in planned.stdout and "maintenance mode on" in planned.stdout
    assert f"{root}/storage/framework/cache/*" in planned.stdout and "laravel_app_key" in planned.stdout
    skip = (*REGENERABLE, *app.skipped)
    dump_before, tree_before = mariadb_dump(database), tree_state(root, skip)
    backup = ok(run_cli("backup", app.name, config=config))
    assert "maintenance mode on" in backup.stderr and not (root / "storage" / "framework" / "down").exists()
    ok(run_cli("key", "verify", app.name, "latest", config=config))

    sql(f"DROP DATABASE `{database}`")
    shutil.rmtree(root)
    ok(run_cli("restore", app.name, "latest", config=config))
    assert mariadb_dump(database) == dump_before
    assert tree_state(root, skip) == tree_before
    for folder in skip:  # regenerable content is not in the point, the guard files are
        assert not (root / folder / "regenerable.dat").exists() and (root / folder / ".gitignore").is_file()
    assert not (root / "storage" / "framework" / "down").exists()  # not back in maintenance


def test_app_key_checked_and_missing_key_warned(laravel_app: dict[str, object]) -> None:
    app: App = laravel_app["app"]  # type: ignore[assignment]
    root, config = Path(str(laravel_app["root"])), Path(str(laravel_app["config"]))
    env = root / ".env"
    original = env.read_text()
    ok(run_cli("backup", app.name, config=config))
    ok(run_cli("drill", app.name, config=config))
    other = "APP_KEY=base64:" + base64.b64encode(secrets.token_bytes(32)).decode()
    env.write_text("\n".join(other if line.startswith("APP_KEY=") else line for line in original.splitlines()) + "\n")
    failed = run_cli("key", "verify", app.name, "latest", config=config)
    assert failed.returncode != 0 and "has another APP_KEY than the point" in failed.stdout + failed.stderr
    ok(run_cli("backup", app.name, config=config))  # a point with the wrong key: it does not open the database
    wrong = run_cli("key", "verify", app.name, "latest", config=config)
    assert wrong.returncode != 0
    assert f"does not decrypt {app.secret_table}" in wrong.stdout + wrong.stderr
    drill = run_cli("drill", app.name, config=config)  # the drill proves the key on its restored copy
    assert drill.returncode != 0 and f"does not decrypt {app.secret_table}" in drill.stdout + drill.stderr
    env.write_text("\n".join(line for line in original.splitlines() if not line.startswith("APP_KEY=")) + "\n")
    missing = ok(run_cli("backup", app.name, config=config))
    assert "sets no APP_KEY" in missing.stderr


def test_killed_backup_left_in_maintenance_is_resumed_by_the_next_run(laravel_app: dict[str, object]) -> None:
    app: App = laravel_app["app"]  # type: ignore[assignment]
    root, config = Path(str(laravel_app["root"])), Path(str(laravel_app["config"]))
    state = Path(str(laravel_app["state"]))
    down = root / "storage" / "framework" / "down"

    def down_for_maintenance() -> None:
        assert json.loads(down.read_text())["status"] == 503  # what `artisan down` writes

    backup_killed_while_paused(laravel_app, app.name, down_for_maintenance)
    assert down.exists() and (state / "quiesce" / f"{app.name}.json").exists()
    again = ok(run_cli("backup", app.name, config=config))
    assert "left paused by run pid" in again.stderr
    assert not down.exists() and not (state / "quiesce" / f"{app.name}.json").exists()


def test_older_code_refused_before_anything_changes(laravel_app: dict[str, object]) -> None:
    app: App = laravel_app["app"]  # type: ignore[assignment]
    root, database, config = Path(str(laravel_app["root"])), str(laravel_app["db"]), Path(str(laravel_app["config"]))
    ok(run_cli("backup", app.name, config=config))
    sql("INSERT INTO migrations (migration, batch) VALUES ('after_the_backup', 3)", database)
    put(root / app.version_file, app.older_text)
    refused = run_cli("restore", app.name, "latest", "--only", "db", config=config)
    assert refused.returncode == 1 and "version mismatch: the code here is" in refused.stderr, refused.stderr
    assert sql("SELECT count(*) FROM migrations", database) == [(3,)]
    out = Path(str(laravel_app["tmp"])) / "init.toml"
    put(root / app.version_file, app.version_text)
    ok(run_cli("init", "--root", str(root), "--output", str(out)))  # the app is found from the folder
    assert f'app = "{app.name}"' in out.read_text()
