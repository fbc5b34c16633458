"""What Laravel apps (Snipe-IT, BookStack) share: the `.env` file, `APP_KEY` and its encryption,
maintenance mode, the migrations table.

- `.env` is read by `appconfig.envfile` (never run; a `${VAR}` value is refused, a `KEY_FILE`
  entry read from the file it names).
- `APP_KEY` (`base64:` + 32 bytes for AES-256-CBC) encrypts with Laravel's `Encrypter`: the value
  stored is base64 of JSON `{"iv", "value", "mac", "tag"}`, `mac` = HMAC-SHA256(key, iv . value) in
  hex, `value` = base64 of AES-256-CBC(PKCS#7) of the (usually PHP-serialized) plaintext.
- Maintenance mode with Laravel's default `file` driver is the file `storage/framework/down`
  (JSON of the `artisan down` options): `artisan down` writes it, `artisan up` removes it, and the
  `PreventRequestsDuringMaintenance` middleware and queue workers look only at it. safehold
  writes and removes that file itself rather than run the app's code as root.
- Regenerable (Laravel's own layout): `storage/framework/{cache,sessions,views}`, `storage/logs`,
  `bootstrap/cache` (`artisan optimize:clear` rebuilds it); the guard files (`.gitignore`) stay.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import json
from collections.abc import Callable, Iterator
from pathlib import Path

from safehold.appconfig.envfile import Env
from safehold.apps.common import app_config_file, base_instance, command_plan, database_named, stop_commands
from safehold.apps.dbhost import mariadb_connection
from safehold.apps.guards import no_downgrade
from safehold.apps.quiesce import paused, raise_flag
from safehold.config import InstanceConfig
from safehold.engines.mariadb.lookup import query_or_none
from safehold.errors import ConfigError
from safehold.models import Connection, Database, Instance
from safehold.output import Reporter
from safehold.repository.manifest import Manifest
from safehold.secrets import Secret

ENV = ".env"
DOWN_FILE = "storage/framework/down"
DOWN_PAYLOAD: dict[str, object] = {"except": [], "redirect": None, "retry": None, "refresh": None, "secret": None,
                                   "status": 503, "template": None}
REGENERABLE = ("storage/framework/cache", "storage/framework/sessions", "storage/framework/views", "storage/logs",
               "bootstrap/cache")
GUARDS = (".gitignore", ".htaccess", "index.html", "index.php", "web.config")
APP_KEY = "laravel_app_key"


def read_env(root: Path) -> Env:
    """The app's `.env`."""
    return Env(root / ENV)


def database(env: Env, host_with_port: bool = False) -> Database:
    """The MySQL/MariaDB database of a Laravel app; `host_with_port`: DB_HOST may be `host:port` (BookStack)."""
    connection = env.get("DB_CONNECTION", "mysql") or "mysql"
    if connection not in ("mysql", "mariadb"):
        raise ConfigError(f"{env.path}: DB_CONNECTION={connection} is not MySQL/MariaDB",
                          "this profile protects MySQL/MariaDB installs only")
    host = env.get("DB_HOST", "127.0.0.1") or "127.0.0.1"
    port_text = env.get("DB_PORT") or ""
    if host_with_port and host.count(":") == 1 and host.partition(":")[2].isdigit():
        host, _, port_text = host.partition(":")  # bs:app/Config/database.php splits DB_HOST on ':'
    port = int(port_text) if port_text.isdigit() else None
    name = env.get("DB_DATABASE")
    if not name:
        raise ConfigError(f"{env.path} sets no DB_DATABASE", "is this the application's .env?")
    conn = mariadb_connection(host, port, env.get("DB_USERNAME", "") or "", env.get("DB_PASSWORD", "") or "",
                              socket=env.get("DB_SOCKET") or None)
    return Database(conn, name)


def app_key(env: Env) -> bytes | None:
    """The raw AES key of APP_KEY (`base64:…` or the legacy 32-character text form)."""
    value = env.get("APP_KEY") or ""
    if value.startswith("base64:"):
        try:
            return base64.b64decode(value[7:], validate=True)
        except (binascii.Error, ValueError):
            raise ConfigError(f"{env.path}: APP_KEY is not valid base64", "fix APP_KEY") from None
    return value.encode() if value else None


def key_bytes(secret: Secret) -> bytes:
    """The raw key of an escrowed APP_KEY text."""
    value = secret.reveal()
    return base64.b64decode(value[7:]) if value.startswith("base64:") else value.encode()


def decrypt(payload: str, key: bytes) -> bytes | None:
    """Laravel's Encrypter::decrypt for AES-256-CBC: the plaintext, or None when the MAC or padding fails."""
    # Imported here, not at the top: every command would pay for it at start (see safehold.cli).
    from Crypto.Cipher import AES
    from Crypto.Util.Padding import unpad

    try:
        data = json.loads(base64.b64decode(payload))
        iv, value = base64.b64decode(data["iv"]), base64.b64decode(data["value"])
        expected = hmac.new(key, (data["iv"] + data["value"]).encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, str(data["mac"])):
            return None
        return unpad(AES.new(key, AES.MODE_CBC, iv).decrypt(value), 16)
    except (ValueError, KeyError, TypeError, binascii.Error):
        return None


def exclude_regenerable(instance: Instance, root: Path, skipped: tuple[str, ...]) -> None:
    """Leave out Laravel's regenerable folders and the app's own `skipped` ones (guards kept) and the maintenance
    flag."""
    for folder in (*REGENERABLE, *skipped):
        instance.exclude += [str(root / folder / "*"), *(f"!{root / folder / g}" for g in GUARDS)]
    instance.exclude.append(str(root / DOWN_FILE))  # a restored app must not come back in maintenance


def migrations(db: Database, prefix: str = "", database_name: str | None = None) -> str | None:
    """The last migration Laravel ran (`migrations` table), as `N migrations, last NAME`."""
    rows = query_or_none(db.connection, database_name or db.name,
                         f"SELECT COUNT(*), MAX(migration) FROM `{prefix}migrations`")
    if not rows or not rows[0][0]:
        return None
    return f"{rows[0][0]} migrations, last {rows[0][1]}"


@contextlib.contextmanager
def maintenance(instance: Instance, config: InstanceConfig, reporter: Reporter,
                state_dir: Path) -> Iterator[dict[str, object]]:
    """`artisan down` with the file driver (storage/framework/down; removed afterwards only if safehold made it),
    then the configured stop commands."""
    assert instance.root is not None
    flag = instance.root / DOWN_FILE
    with paused(state_dir, instance.name, instance.app, reporter) as pause:
        raise_flag(pause, flag, json.dumps(DOWN_PAYLOAD, indent=4), what=f"Laravel maintenance mode ({flag})",
                   method="artisan-down", reporter=reporter,
                   already=f"the app is in maintenance mode already ({flag}): it stays that way",
                   done=f"maintenance mode on ({flag}, as `php artisan down`)")
        stop_commands(pause, config, reporter)
        yield pause.window


def quiesce_plan(instance: Instance, config: InstanceConfig, state_dir: Path) -> list[str]:
    """The maintenance switch `maintenance` would make (looked at, not made) and the configured commands."""
    assert instance.root is not None
    flag = instance.root / DOWN_FILE
    return [f"in maintenance mode already ({flag} exists): left as it is" if flag.exists() else
            f"maintenance mode on (write {flag}, as `php artisan down`), afterwards off (`php artisan up`)",
            *command_plan(config)]


def keys(instance: Instance, state_dir: Path) -> dict[str, Secret]:
    """APP_KEY as the .env holds it."""
    if instance.root is None:
        return {}
    value = read_env(instance.root).get("APP_KEY")
    return {APP_KEY: Secret(value, APP_KEY)} if value else {}


def verify_app_key(instance: Instance, keys: dict[str, Secret], database_name: str | None,
                   proof: Callable[[Connection, str, str], tuple[str, str] | None]) -> list[str]:
    """The point's APP_KEY must equal the live .env's and decrypt the value `proof` finds, as (where, payload),
    in the (restored) database `database_name` (the instance's own by default), given its table prefix."""
    if APP_KEY not in keys:
        return ["the point holds no APP_KEY: encrypted fields of the restored database cannot be read"]
    found = None
    if instance.databases:
        db = instance.databases[0]
        found = proof(db.connection, database_name or db.name, str(instance.details.get("table_prefix", "")))
    problems = []
    assert instance.root is not None
    try:
        live = read_env(instance.root).get("APP_KEY")
    except ConfigError as exc:
        live, problems = None, [exc.line()]
    if live is not None and live != keys[APP_KEY].reveal():
        problems.append(f"{instance.root / ENV} has another APP_KEY than the point: encrypted fields of the restored "
                        "database do not decrypt with it; put the point's APP_KEY back (restore .env with the DB)")
    if found is not None and decrypt(found[1], key_bytes(keys[APP_KEY])) is None:
        problems.append(f"the point's APP_KEY does not decrypt {found[0]}: it is not the key that database was "
                        "encrypted with")
    return problems


def refuse_older_code(label: str, why: str, instance: Instance, manifest: Manifest, in_place: set[str],
                      reporter: Reporter) -> list[str]:
    """A Laravel app's database never goes into older code (`why`: the app's reason); newer code migrates it."""
    return no_downgrade(label, instance, manifest, in_place, reporter,
                        database=f"is of {manifest.app_version}; {why}",
                        upgrade=f"the point is of {label} {manifest.app_version} and the code here is "
                                f"{instance.app_version}: run `php artisan migrate --force` after the restore")


def caches_after_restore(label: str, reporter: Reporter, restored: set[str]) -> None:
    """Laravel's caches are not in the point: say how to rebuild them once the files came back."""
    if "files" in restored:
        reporter.step(f"run `php artisan optimize:clear` (as the web user) before {label} serves again")


def describe_app(name: str, config: InstanceConfig, app: str, label: str, prefix_key: str, skipped: tuple[str, ...],
                 version: Callable[[Path], str | None], keyless: str,
                 host_with_port: bool = False) -> tuple[Instance, Env]:
    """What a Laravel app's instance is: its database from .env, the whole folder minus `skipped` and
    Laravel's caches, the code's `version` and the migrations run, warned about when .env sets no APP_KEY
    (`keyless`: what is lost then); returns it with the .env it read.

    Only .env is required: a restore from nothing brings it back first and the code afterwards.
    """
    root, _ = app_config_file(config, label, ENV, folder="folder")
    env = read_env(root)
    db = database(env, host_with_port=host_with_port)
    prefix = env.get(prefix_key, "") or ""
    instance = base_instance(name, config, app, [db], [root], [root / ENV])
    exclude_regenerable(instance, root, skipped)
    instance.app_version = version(root)
    instance.schema_version = migrations(db, prefix)
    instance.details = {"table_prefix": prefix}
    if not env.get("APP_KEY"):
        instance.warnings.append(f"{root / ENV} sets no APP_KEY: {keyless}")
    return instance, env


def read_schema_version(instance: Instance, database_name: str) -> str | None:
    """The migrations recorded in a (restored) copy of the database."""
    return migrations(database_named(instance, database_name), str(instance.details.get("table_prefix", "")))
