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
from safehold.apps.guards import version_tuple
from safehold.config import InstanceConfig
from safehold.engines.mariadb.lookup import first_filled
from safehold.models import Connection, Instance
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
    return text if text.lower().startswith("v") and version_tuple(text) else None


def describe(name: str, config: InstanceConfig) -> Instance:
    """Database from .env, the whole folder minus Laravel's caches, versions."""
    instance, env = laravel.describe_app(name, config, "bookstack", "BookStack", "DB_TABLE_PREFIX", (), _version,
                                         "MFA secrets of a restore cannot be read", host_with_port=True)
    instance.details["storage_type"] = env.get("STORAGE_TYPE", "local")
    if (env.get("STORAGE_TYPE") or "").lower() == "s3":
        instance.warnings.append("STORAGE_TYPE=s3: BookStack's images and attachments are in S3, not on this host, "
                                 "and not in the point; back that bucket up on its own")
    return instance


read_schema_version, quiesce_plan, keys = laravel.read_schema_version, laravel.quiesce_plan, laravel.keys
quiesce = laravel.maintenance
restore_quiesce = laravel.maintenance


def _proof(conn: Connection, database_name: str, prefix: str) -> tuple[str, str] | None:
    """One value encrypted with APP_KEY: an MFA secret."""
    found = first_filled(conn, database_name, f"{prefix}mfa_values", "value")
    return (f"mfa_values id {found[0]}", found[1]) if found else None


def verify_keys(instance: Instance, keys: dict[str, Secret], database_name: str | None = None) -> list[str]:
    """APP_KEY equal to the live one, and decrypting an MFA secret of the (restored) database."""
    return laravel.verify_app_key(instance, keys, database_name, _proof)


def check_restore(instance: Instance, manifest: Manifest, in_place: set[str], reporter: Reporter) -> list[str]:
    """BookStack restores only into the same or a newer version: older code is refused before anything changes."""
    return laravel.refuse_older_code("BookStack", "BookStack restores only into the same or a newer version",
                                     instance, manifest, in_place, reporter)


def post_restore(instance: Instance, reporter: Reporter, manifest: Manifest, restored: set[str]) -> None:
    """Laravel's caches are not in the point: say how to rebuild them."""
    laravel.caches_after_restore("BookStack", reporter, restored)
