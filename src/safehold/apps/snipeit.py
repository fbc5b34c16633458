"""Snipe-IT profile: one MySQL/MariaDB database, the whole app folder minus what Snipe-IT or Laravel
regenerate, and `APP_KEY` (see `laravel` for the shared parts).

Facts (snipe/snipe-it @5aa5c480 = v8.1.4-12, ../shared/APPS-NEXT.md §2): `.env` `DB_*` (Docker:
`*_FILE` secrets, `docker/startup.sh`); `APP_KEY` encrypts encrypted custom fields (asset columns
of `custom_fields.field_encrypted = 1`) and `settings.ldap_pword`; code version `app_version` in
`config/version.php`; DB `migrations`. Skippable: `public/uploads/barcodes` ("let the barcodes be
regenerated", `app/Console/Commands/RestoreFromBackup.php`), `storage/app/backups` and
`storage/app/backup-temp` (Snipe's own backup zips and their scratch space, `upgrade.php`,
`config/backup.php`). A database never goes into older code: migrations have no down-path.
"""

from __future__ import annotations

import contextlib
import re
from pathlib import Path

from safehold.apps import laravel
from safehold.config import InstanceConfig
from safehold.engines.mariadb.lookup import first_filled, query_or_none
from safehold.models import Connection, Instance
from safehold.output import Reporter
from safehold.repository.manifest import Manifest
from safehold.secrets import Secret

APP_KEYS = "Snipe-IT's APP_KEY"
RUNS_ON_PHP = True  # its points record PHP's version and extensions
VERSION_FILE = "config/version.php"
SKIPPED = ("public/uploads/barcodes", "storage/app/backups", "storage/app/backup-temp")
APP_VERSION = re.compile(r"""['"]app_version['"]\s*=>\s*['"]([^'"]+)['"]""")


def detect(root: Path) -> bool:
    """A Snipe-IT root holds .env and config/version.php naming app_version."""
    return (root / laravel.ENV).is_file() and _version(root) is not None


def _version(root: Path) -> str | None:
    with contextlib.suppress(OSError):
        if match := APP_VERSION.search((root / VERSION_FILE).read_text(errors="replace")):
            return match.group(1)
    return None


def describe(name: str, config: InstanceConfig) -> Instance:
    """Database from .env, the whole folder minus barcodes, own backup zips and Laravel's caches, versions."""
    instance, _ = laravel.describe_app(name, config, "snipeit", "Snipe-IT", "DB_PREFIX", SKIPPED, _version,
                                       "encrypted custom fields and the LDAP password cannot be decrypted by any "
                                       "restore of this point")
    return instance


read_schema_version, quiesce_plan, keys = laravel.read_schema_version, laravel.quiesce_plan, laravel.keys
quiesce = laravel.maintenance
restore_quiesce = laravel.maintenance  # Snipe's own restore runs with the app down as well (upgrade.php)


def _proof(conn: Connection, database_name: str, prefix: str) -> tuple[str, str] | None:
    """One value encrypted with APP_KEY: settings.ldap_pword, else an encrypted custom field of an asset."""
    if found := first_filled(conn, database_name, f"{prefix}settings", "ldap_pword"):
        return "settings.ldap_pword", found[1]
    for (column,) in query_or_none(conn, database_name, f"SELECT db_column FROM `{prefix}custom_fields` "
                                   "WHERE field_encrypted = 1 AND db_column IS NOT NULL") or []:
        if found := first_filled(conn, database_name, f"{prefix}assets", column):
            return f"assets.{column} id {found[0]}", found[1]
    return None


def verify_keys(instance: Instance, keys: dict[str, Secret], database_name: str | None = None) -> list[str]:
    """APP_KEY equal to the live one, and decrypting an encrypted value of the (restored) database."""
    return laravel.verify_app_key(instance, keys, database_name, _proof)


def check_restore(instance: Instance, manifest: Manifest, in_place: set[str], reporter: Reporter) -> list[str]:
    """A database never goes into older code (no down-migrations); newer code migrates it (`artisan migrate`)."""
    return laravel.refuse_older_code("Snipe-IT", "its migrations have no down-path", instance, manifest, in_place,
                                     reporter)


def post_restore(instance: Instance, reporter: Reporter, manifest: Manifest, restored: set[str]) -> None:
    """Laravel's caches are not in the point: say how to rebuild them."""
    laravel.caches_after_restore("Snipe-IT", reporter, restored)
