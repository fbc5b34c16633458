"""BookStack profile: one MySQL/MariaDB database, the whole app folder (code, `.env`, `themes/`,
`public/uploads`, `storage/uploads`) minus what Laravel regenerates, and `APP_KEY` (see `laravel`).

Facts (BookStackApp/BookStack @6f1c54d0, ../shared/APPS-NEXT.md §3): `.env` `DB_HOST` may be
`host:port` (`app/Config/database.php` splits it on ':'), `DB_PORT`, `DB_SOCKET`, `DB_DATABASE`,
`DB_USERNAME`, `DB_PASSWORD`, `DB_TABLE_PREFIX`; `APP_KEY` encrypts the MFA secrets in
`mfa_values.value` (`app/Access/Mfa/MfaValue.php`): a new key locks MFA users out. Code version: the
`version` file; DB: `migrations`. "You should only restore into an instance of the same or newer
BookStack version" (system CLI `RestoreCommand.php`): older code is refused.
"""

from __future__ import annotations

from pathlib import Path

from safehold.apps import laravel
from safehold.apps.common import command_plan, query_or_none
from safehold.config import InstanceConfig
from safehold.models import Instance
from safehold.output import Reporter
from safehold.repository.manifest import Manifest
from safehold.secrets import Secret

APP_KEYS = "BookStack's APP_KEY"
RUNS_ON_PHP = True  # its points record PHP's version and extensions
VERSION_FILE = "version"


def detect(root: Path) -> bool:
    """A BookStack root holds .env and the `version` file (`vYY.MM[.N]`)."""
    return (root / laravel.ENV).is_file() and _version(root) is not None


def _version(root: Path) -> str | None:
    try:
        text = (root / VERSION_FILE).read_text(errors="replace").strip()
    except OSError:
        return None
    return text if text.lower().startswith("v") and laravel.version_tuple(text) else None


def describe(name: str, config: InstanceConfig) -> Instance:
    """Database from .env, the whole folder minus Laravel's caches, versions."""
    instance, env = laravel.describe_app(name, config, "bookstack", "BookStack", "DB_TABLE_PREFIX", (), _version,
                                         host_with_port=True)
    instance.details["storage_type"] = env.get("STORAGE_TYPE", "local")
    if (env.get("STORAGE_TYPE") or "").lower() == "s3":
        instance.warnings.append("STORAGE_TYPE=s3: BookStack's images and attachments are in S3, not on this host, "
                                 "and not in the point; back that bucket up on its own")
    if not env.get("APP_KEY"):
        instance.warnings.append(f"{instance.root / laravel.ENV if instance.root else laravel.ENV} sets no APP_KEY: "
                                 "MFA secrets of a restore cannot be read")
    return instance


read_schema_version = laravel.read_schema_version
quiesce = laravel.maintenance
restore_quiesce = laravel.maintenance


def quiesce_plan(instance: Instance, config: InstanceConfig, state_dir: Path) -> list[str]:
    """The maintenance switch and the configured commands."""
    return [laravel.maintenance_plan(instance), *command_plan(config)]


def keys(instance: Instance, state_dir: Path) -> dict[str, Secret]:
    """APP_KEY as the .env holds it."""
    if instance.root is None:
        return {}
    value = laravel.read_env(instance.root).get("APP_KEY")
    return {laravel.APP_KEY: Secret(value, laravel.APP_KEY)} if value else {}


def verify_keys(instance: Instance, keys: dict[str, Secret], database_name: str | None = None) -> list[str]:
    """APP_KEY equal to the live one, and decrypting an MFA secret of the (restored) database."""
    proof = None
    if instance.databases:
        db = instance.databases[0]
        prefix = str(instance.details.get("table_prefix", ""))
        rows = query_or_none(db.connection, database_name or db.name,
                             f"SELECT id, value FROM `{prefix}mfa_values` WHERE value <> '' ORDER BY id LIMIT 1")
        proof = (f"mfa_values id {rows[0][0]}", str(rows[0][1])) if rows else None
    return laravel.verify_app_key(instance, keys, proof)


def check_restore(instance: Instance, manifest: Manifest, in_place: set[str], reporter: Reporter) -> list[str]:
    """BookStack restores only into the same or a newer version: older code is refused before anything changes."""
    return laravel.refuse_older_code("BookStack", "BookStack restores only into the same or a newer version",
                                     instance, manifest, in_place, reporter)


def post_restore(instance: Instance, reporter: Reporter, manifest: Manifest, restored: set[str]) -> None:
    """Laravel's caches are not in the point: say how to rebuild them."""
    laravel.caches_after_restore("BookStack", reporter, restored)
