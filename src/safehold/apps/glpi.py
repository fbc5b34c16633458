"""GLPI profile: one MariaDB database, the whole install root minus GLPI's runtime folders, and the
security key `glpicrypt.key`.

Facts (glpi-project/glpi 10.x/11.x, see ../shared/APPS-NEXT.md §1):
- `GLPI_CONFIG_DIR/config_db.php` holds `class DB extends DBmysql { public $dbhost = '…'; … }`
  written with var_export per property; `dbpassword` is stored rawurlencode()d and decoded at
  connect time (`src/DBConnection.php` createMainConfig(), `src/DBmysql.php` connect()). `dbhost`
  is `host`, `host:port`, `host:/socket`, or an array (round robin: the first is used).
- Folders: `GLPI_CONFIG_DIR` (default `<root>/config`), `GLPI_VAR_DIR` (default `<root>/files`),
  overridden by `define()`s in `inc/downstream.php` (distribution packages) and
  `GLPI_CONFIG_DIR/local_define.php` (`inc/based_config.php`). Runtime folders under the var dir:
  `_cache _cron _graphs _lock _log _rss _sessions _tmp _uploads` (same file).
- Key: `glpicrypt.key`, 32 raw bytes (`src/GLPIKey.php`); legacy `glpi.key` (9.4.6–9.4.x). When
  it is missing, `Update::doUpdates()` generates a NEW key (`src/Update.php`) and every stored
  secret (LDAP bind, SMTP, mail collectors, API tokens) decrypts to '' from then on.
- Maintenance mode is `glpi_configs` (context `core`) `maintenance_mode = '1'`: exactly what
  `bin/console glpi:maintenance:enable` writes (`src/Console/Maintenance/EnableMaintenanceModeCommand.php`).
  safehold writes the flag itself rather than run GLPI's code as root.
- Versions: `GLPI_VERSION` in `inc/define.php` (≤10) or `src/autoload/constants.php` (11);
  `glpi_configs` core `version`/`dbversion`. Downgrades are refused by GLPI (`src/Update.php`).
"""

from __future__ import annotations

import base64
import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from safehold.appconfig.php import PhpFile, find_define, parse_file
from safehold.apps import common, defaults, glpi_crypto
from safehold.apps.dbhost import mariadb_connection
from safehold.apps.guards import no_downgrade, require_install
from safehold.apps.quiesce import paused, resumer
from safehold.config import InstanceConfig
from safehold.engines.mariadb import client
from safehold.engines.mariadb.lookup import first_filled, query_or_none
from safehold.errors import ConfigError
from safehold.models import Database, Instance
from safehold.output import Reporter
from safehold.repository.manifest import Manifest
from safehold.secrets import Secret

CONFIG_DB = "config_db.php"
KEY_FILE = "glpicrypt.key"
LEGACY_KEY_FILE = "glpi.key"
CRYPT_KEY = "glpi_crypt_key"
LEGACY_KEY = "glpi_legacy_key"
APP_KEYS = "GLPI's security key (glpicrypt.key)"
RUNS_ON_PHP = True  # its points record PHP's version and extensions
VERSION_FILES = ("inc/define.php", "src/autoload/constants.php")
RUNTIME = ("_cache", "_cron", "_graphs", "_lock", "_log", "_rss", "_sessions", "_tmp", "_uploads")
# Secured values GLPIKey lists (`$configs['core']`, `$fields`): any one proves the key.
SECURED_CONFIGS = ("smtp_passwd", "proxy_passwd", "smtp_oauth_client_secret", "smtp_oauth_refresh_token",
                   "glpinetwork_registration_key")
SECURED_FIELDS = (("glpi_authldaps", "rootdn_passwd"), ("glpi_mailcollectors", "passwd"),
                  ("glpi_snmpcredentials", "auth_passphrase"), ("glpi_apiclients", "app_token"))


def detect(root: Path) -> bool:
    """A GLPI root holds inc/based_config.php, or (all a restore from nothing has first) config/config_db.php."""
    return (root / "inc" / "based_config.php").is_file() or (root / "config" / CONFIG_DB).is_file()


def _defines(path: Path) -> PhpFile | None:
    return parse_file(path, "GLPI path definitions") if path.is_file() else None


def folders(root: Path) -> dict[str, Path]:
    """GLPI_CONFIG_DIR and GLPI_VAR_DIR as based_config.php resolves them (downstream.php, then local_define.php)."""
    found: dict[str, Path] = {}
    downstream = _defines(root / "inc" / "downstream.php")
    for name in ("GLPI_CONFIG_DIR", "GLPI_VAR_DIR"):
        if downstream is not None and (value := downstream.constant(name)):
            found[name] = Path(str(value))
    config_dir = found.setdefault("GLPI_CONFIG_DIR", root / "config")
    local = _defines(config_dir / "local_define.php")
    if local is not None and (value := local.constant("GLPI_VAR_DIR")):
        found["GLPI_VAR_DIR"] = Path(str(value))
    found.setdefault("GLPI_VAR_DIR", root / "files")
    return found


def _database(config_path: Path) -> Database:
    php = parse_file(config_path, "GLPI database config")
    host = php.property("DB", "dbhost")
    if isinstance(host, dict):  # round robin: GLPI picks one at random; they hold the same database
        host = next(iter(host.values()), "")
    if not isinstance(host, str):
        raise ConfigError(f"{config_path}: DB::$dbhost is not a host name", "fix GLPI's config_db.php")
    password = unquote(str(php.property("DB", "dbpassword", default="") or ""))  # stored rawurlencode()d
    # `host`, `host:port` and `host:/socket` are PHP's (mysqli) host rules, as dbhost's.
    conn = mariadb_connection(host, None, str(php.property("DB", "dbuser")), password)
    return Database(conn, str(php.property("DB", "dbdefault")))


def _config_path(config: InstanceConfig) -> tuple[Path, Path]:
    return common.app_config_file(config, "GLPI", lambda root: folders(root)["GLPI_CONFIG_DIR"] / CONFIG_DB)


def app_version(root: Path) -> str | None:
    """GLPI_VERSION of the code (10.x inc/define.php, 11.x src/autoload/constants.php)."""
    return next((v for rel in VERSION_FILES if (v := find_define(root / rel, "GLPI_VERSION"))), None)


def _core_config(db: Database, name: str, database_name: str | None = None) -> str | None:
    rows = query_or_none(db.connection, database_name or db.name,
                         "SELECT value FROM glpi_configs WHERE context = 'core' AND name = %s", (name,))
    return str(rows[0][0]) if rows and rows[0][0] is not None else None


def _schema_version(db: Database, database_name: str | None = None) -> str | None:
    return _core_config(db, "dbversion", database_name) or _core_config(db, "version", database_name)


def read_schema_version(instance: Instance, database_name: str) -> str | None:
    """The GLPI schema version recorded in a (restored) copy of the database."""
    return _schema_version(common.database_named(instance, database_name))


def describe(name: str, config: InstanceConfig) -> Instance:
    """Database from config_db.php, the whole root minus GLPI's runtime folders, key, versions."""
    root, config_path = _config_path(config)
    require_install(root, detect, "a GLPI", "no inc/based_config.php",
                    "set root to GLPI's folder (the one holding inc/ and config/)")
    paths = folders(root)
    db = _database(config_path)
    config_dir, var_dir = paths["GLPI_CONFIG_DIR"], paths["GLPI_VAR_DIR"]
    outside = [p for p in (config_dir, var_dir) if not p.is_relative_to(root) and p.exists()]
    instance = common.base_instance(name, config, "glpi", [db], [root, *outside], [config_path])
    for folder in RUNTIME:
        instance.exclude += common.guarded_contents(var_dir / folder)
    instance.app_version = app_version(root)
    instance.schema_version = _schema_version(db)
    instance.details = {"glpi_folders": {k: str(v) for k, v in paths.items()}}
    if not (config_dir / KEY_FILE).is_file():
        instance.warnings.append(
            f"GLPI's security key {config_dir / KEY_FILE} is MISSING: this point holds no key, and GLPI silently "
            "creates a NEW one at its next update, after which every stored LDAP/SMTP/mail-collector password and "
            "API token decrypts to nothing; put the old glpicrypt.key back (from an older point: `safehold restore "
            f"{name} RUN --path {config_dir / KEY_FILE} --files-to DIR`) before anyone runs `bin/console db:update`")
    return instance


def _set_maintenance(db: Database, value: str) -> None:
    with client.cursor(db.connection, db.name) as cur:
        cur.execute("UPDATE glpi_configs SET value = %s WHERE context = 'core' AND name = 'maintenance_mode'",
                    (value,))


@resumer("glpi_maintenance", describe=lambda step: f"GLPI maintenance mode on (glpi_configs maintenance_mode = 1, "
                                                  f"was {step['value']}; {step['config']})")
def _leave_maintenance(step: dict[str, Any], reporter: Reporter) -> None:
    _set_maintenance(_database(Path(step["config"])), str(step["value"]))  # credentials re-read: never in markers
    reporter.step(f"GLPI maintenance mode back to {step['value']}")


@contextlib.contextmanager
def quiesce(instance: Instance, config: InstanceConfig, reporter: Reporter,
            state_dir: Path) -> Iterator[dict[str, object]]:
    """GLPI's maintenance mode (the flag `glpi:maintenance:enable` sets), then the configured stop commands."""
    db = instance.databases[0]
    _, config_path = _config_path(config)
    with paused(state_dir, instance.name, instance.app, reporter) as pause:
        before = _core_config(db, "maintenance_mode")
        if before is None:
            reporter.warn("GLPI's maintenance flag (glpi_configs core maintenance_mode) cannot be read: GLPI is not "
                          "switched to maintenance mode")
        elif before == "1":
            reporter.step("GLPI is in maintenance mode already: it stays that way")
        else:
            pause.record("glpi_maintenance", config=str(config_path), value=before)
            _set_maintenance(db, "1")
            pause.methods("glpi-maintenance")
            pause.window["glpi_maintenance"] = before
            reporter.step("GLPI switched to maintenance mode (glpi_configs maintenance_mode = 1)")
        common.stop_commands(pause, config, reporter)
        yield pause.window


# Only the configured stop commands around a restore: switching the live database to maintenance first would
# put that flag into the safety point, and the database is about to be replaced anyway.
restore_quiesce = defaults.restore_quiesce


def quiesce_plan(instance: Instance, config: InstanceConfig, state_dir: Path) -> list[str]:
    """The maintenance switch quiesce would make (read, not changed) and the configured commands."""
    before = _core_config(instance.databases[0], "maintenance_mode")
    if before is None:
        line = "GLPI maintenance flag: glpi_configs core maintenance_mode cannot be read"
    elif before == "1":
        line = "GLPI is in maintenance mode already: left as it is"
    else:
        line = "switch GLPI to maintenance mode (glpi_configs maintenance_mode = 1), afterwards back to " + before
    return [line, *common.command_plan(config)]


def _key_files(instance: Instance) -> dict[str, Path]:
    folders = instance.details.get("glpi_folders")
    configured = folders.get("GLPI_CONFIG_DIR") if isinstance(folders, dict) else None
    config_dir = Path(str(configured)) if configured else (instance.root or Path()) / "config"
    return {CRYPT_KEY: config_dir / KEY_FILE, LEGACY_KEY: config_dir / LEGACY_KEY_FILE}


def keys(instance: Instance, state_dir: Path) -> dict[str, Secret]:
    """glpicrypt.key (and a legacy glpi.key), base64: the raw bytes are not text."""
    result: dict[str, Secret] = {}
    for key, path in _key_files(instance).items():
        with contextlib.suppress(OSError):
            result[key] = Secret(base64.b64encode(path.read_bytes()).decode(), key)
    return result


def _stored_secret(db: Database, database_name: str) -> tuple[str, str] | None:
    """(where, value) of one value GLPI encrypted with its key, if the database holds any."""
    names = ", ".join(f"'{n}'" for n in SECURED_CONFIGS)
    rows = query_or_none(db.connection, database_name, "SELECT name, value FROM glpi_configs WHERE context = 'core' "
                         f"AND name IN ({names}) AND value IS NOT NULL AND value <> '' ORDER BY id LIMIT 1")
    if rows:
        return f"glpi_configs {rows[0][0]}", str(rows[0][1])
    for table, column in SECURED_FIELDS:
        if found := first_filled(db.connection, database_name, table, column):
            return f"{table}.{column} id {found[0]}", found[1]
    return None


def verify_keys(instance: Instance, keys: dict[str, Secret], database_name: str | None = None) -> list[str]:
    """The point's glpicrypt.key must be the live one and decrypt a secret stored in the (restored) database."""
    if CRYPT_KEY not in keys:
        return [f"the point holds no {KEY_FILE}: GLPI's stored secrets cannot be decrypted with what it holds"]
    key = base64.b64decode(keys[CRYPT_KEY].reveal())
    live = _key_files(instance)[CRYPT_KEY]
    problems = []
    try:
        if live.read_bytes() != key:
            problems.append(f"{live} differs from the point's {KEY_FILE}: the restored database's secrets do not "
                            "decrypt with it; restore the config folder with the database")
    except OSError:
        problems.append(f"{live} is missing here: put the point's {KEY_FILE} back before GLPI makes a new one")
    if instance.databases:
        db = instance.databases[0]
        found = _stored_secret(db, database_name or db.name)
        if found is not None and glpi_crypto.decrypt(found[1], key) is None:
            problems.append(f"the point's {KEY_FILE} does not decrypt {found[0]}: it is not the key that database "
                            "was encrypted with")
    return problems


def check_restore(instance: Instance, manifest: Manifest, in_place: set[str], reporter: Reporter) -> list[str]:
    """GLPI has no downgrade path: refuse a database into older code; newer code needs `db:update`."""
    point = manifest.schema_version or manifest.app_version
    return no_downgrade("GLPI", instance, manifest, in_place, reporter, point=point,
                        database=f"is {point}; GLPI refuses downgrades (\"Downgrading to version … is not supported\")",
                        upgrade=f"the point's database is GLPI {point} and the code here is {instance.app_version}: "
                                f"run `php bin/console db:update` afterwards, with {KEY_FILE} in place (without it "
                                "GLPI makes a new key and the stored secrets are lost)")


def post_restore(instance: Instance, reporter: Reporter, manifest: Manifest, restored: set[str]) -> None:
    """Maintenance mode as it was before the backup switched it on; loud when the key file is not back."""
    before = manifest.quiesce.get("glpi_maintenance")
    if "db" in restored and before is not None and instance.databases:
        _set_maintenance(instance.databases[0], str(before))
        reporter.step(f"GLPI maintenance mode back to {before}, as before the backup")
    key_file = _key_files(instance)[CRYPT_KEY]
    if not key_file.is_file():
        reporter.warn(f"{key_file} is not there after the restore: GLPI will create a NEW key and stored secrets "
                      "become unreadable; put the old key back before GLPI runs")
