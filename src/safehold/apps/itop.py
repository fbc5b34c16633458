"""iTop profile: the iTop tables of one MariaDB database (only those starting with `db_subname`
when the database is shared) and the whole install root (code, `lib/`, datamodels, extensions,
config, designer delta, hub modules, the compiled `env-production` build, data) minus only what
iTop regenerates.

Facts (Combodo/iTop 3.x): `conf/production/config-itop.php` defines `$MySettings` with `db_host`
(`host`, `host:port`, `p:host`), `db_user`, `db_pwd`, `db_name`, `db_subname` (table prefix),
`encryption_library`, `encryption_key`. Code version: `define('ITOP_VERSION', …)` in
`core/config.class.inc.php` (`3.2.0-dev` in the 3.2.0 release's git tree); installed version:
root rows (`parent_id = 0`: `datamodel`, then `iTop` as `3.2.0-dev-svn`) of
`<prefix>priv_module_install`, the last one wins (checked on a real 3.2.0 install). Read-only mode is the flag file
`data/.readonly`, exactly what iTop's own `SetupUtils::EnterReadOnlyMode` touches; cron.php
exits while it exists and holds the MySQL lock `itop.md5('cron'.db_name.db_subname)` while it runs.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import Iterator
from pathlib import Path

from safehold import hostinfo
from safehold.appconfig.php import find_define, parse_file
from safehold.apps.common import (
    app_config_file,
    base_instance,
    chown_tree,
    command_plan,
    database_named,
    empty_but_guards,
    guarded_contents,
    stop_commands,
)
from safehold.apps.dbhost import mariadb_connection
from safehold.apps.guards import require_install, same_version, versions
from safehold.apps.quiesce import folder_times_kept, paused, raise_flag
from safehold.config import InstanceConfig
from safehold.engines.mariadb.lookup import query_or_none
from safehold.models import Database, Instance
from safehold.output import Reporter
from safehold.repository.manifest import Manifest
from safehold.secrets import Secret

ENV = "production"
CONFIG = f"conf/{ENV}/config-itop.php"
VERSION_FILE = "core/config.class.inc.php"
READONLY_FLAG = "data/.readonly"
CACHE = f"data/cache-{ENV}"
# The files iTop's restore leaves with the wrong owner (iTop 3.0 "Data backup" page).
OWNED_BY_WEB_USER = (CONFIG, f"data/{ENV}.delta.xml", CACHE, f"data/{ENV}-modules")
# What iTop regenerates or never needs back, inside the install root (Combodo/iTop 3.2 sources).
# Sessions and temp files live outside the root: PHP's session.save_path (setup/setuputils.class.inc.php
# only checks that it is writable) and sys_get_temp_dir() (SetupUtils::GetTmpDir).
DISPOSABLE_FOLDERS = (
    # utils::GetCachePath (application/utils.inc.php): "created or cleaned upon code compilation";
    # RunTimeEnvironment (setup/runtimeenv.class.inc.php) empties it with tidydir on every setup.
    CACHE,
    # utils::GetLogPath (application/utils.inc.php): log files; CoreUpdater::ZipFolder
    # (datamodels/2.x/itop-core-update/src/Service/CoreUpdater.php) leaves `log` out of its own archive.
    "log",
    # iTop's own backup archives (BackupExec in datamodels/2.x/itop-backup/main.itop-backup.php writes
    # data/backups/auto/, ajax.backup.php data/backups/manual/); CoreUpdater::ZipFolder skips them too.
    "data/backups",
)
DISPOSABLE_FILES = (
    # DBRestoreTool (datamodels/2.x/itop-backup/dbrestore.class.inc.php) unpacks archives there and removes them.
    "data/tmp-backup-*",
)
# The read-only flag quiesce sets is in the point on purpose: a restore swaps the whole root in, and the
# flag it carries keeps iTop read-only until the restore's own pause removes it (a copy restored
# elsewhere with --files-to starts read-only: delete data/.readonly there to write to it).
PHP_EXTENSION = {"Sodium": "sodium", "OpenSSL": "openssl", "OpenSSLMcryptCompatibility": "openssl",
                 "Mcrypt": "mcrypt"}
KEY = "itop_encryption_key"
APP_KEYS = "iTop's encryption_key"
RUNS_ON_PHP = True  # its points record PHP's version and extensions
CRON_WAIT_SECONDS = 120


def detect(root: Path) -> bool:
    """An iTop root holds approot.inc.php and conf/production/config-itop.php."""
    return (root / "approot.inc.php").is_file() and (root / CONFIG).is_file()


def _settings(config_path: Path) -> dict[str, str]:
    """The settings this profile uses, as text; a non-literal one fails naming the key (never its text)."""
    php = parse_file(config_path, "iTop config file")
    settings = {key: php.text("MySettings", key) for key in ("db_host", "db_user", "db_pwd", "db_name")}
    for key in ("db_subname", "encryption_library", "encryption_key"):
        settings[key] = php.text("MySettings", key, default="")
    return settings


def excludes(root: Path) -> list[str]:
    """restic exclude patterns for what iTop regenerates; each disposable folder keeps its guards (iTop ships
    `.htaccess`, `web.config` and `index.php` in log/)."""
    return [str(root / rel) for rel in DISPOSABLE_FILES] + [
        pattern for folder in DISPOSABLE_FOLDERS for pattern in guarded_contents(root / folder)]


def _installed_version(db: Database) -> tuple[str | None, str | None]:
    """(product version, datamodel version) from the last setup run recorded in priv_module_install."""
    table = f"{db.table_prefix or ''}priv_module_install"
    rows = query_or_none(db.connection, db.name,
                         f"SELECT name, version FROM `{table}` WHERE parent_id = 0 ORDER BY installed, id")
    product = datamodel = None
    for name, version in rows or []:
        if name == "datamodel":
            datamodel = version
        else:
            product = version
    return product, datamodel


def _database(config_path: Path) -> Database:
    settings = _settings(config_path)
    conn = mariadb_connection(settings["db_host"], None, settings["db_user"], settings["db_pwd"])
    return Database(conn, settings["db_name"], table_prefix=settings["db_subname"] or None)


def read_schema_version(instance: Instance, database_name: str) -> str | None:
    """Installed iTop version recorded in a (restored) copy of the database."""
    return _installed_version(database_named(instance, database_name))[0]


def describe(name: str, config: InstanceConfig) -> Instance:
    """Database (prefix-aware) from config-itop.php, the files iTop's own backup keeps, versions."""
    root, config_path = app_config_file(config, "iTop", CONFIG)
    settings = _settings(config_path)
    db = _database(config_path)
    prefix = db.table_prefix
    # The whole root: its code is what ran against this database (the itop-backup module's extra_files
    # are paths inside it too); a restore from nothing brings the config first, the code with the rest.
    instance = base_instance(name, config, "itop", [db], [root], [config_path])
    instance.exclude += excludes(root)
    instance.app_version = find_define(root / VERSION_FILE, "ITOP_VERSION")
    instance.schema_version, datamodel = _installed_version(db)
    instance.details = {
        "table_prefix": prefix or "",
        "datamodel_version": datamodel,
        "encryption_library": settings.get("encryption_library") or None,
        "encryption_key_set": bool(settings.get("encryption_key")),
        "php_mcrypt": _has_mcrypt(hostinfo.php_modules()),
        "cron_lock": "itop." + hashlib.md5(f"cron{db.name}{prefix or ''}".encode()).hexdigest(),  # noqa: S324
    }
    return instance


def _wait_for_cron(db: Database, lock: str, reporter: Reporter) -> None:
    """cron.php stops when it sees the flag; wait until it released its MySQL lock."""
    deadline = time.monotonic() + CRON_WAIT_SECONDS
    announced = False
    while True:
        rows = query_or_none(db.connection, db.name, "SELECT IS_USED_LOCK(%s)", (lock,))
        if not rows or rows[0][0] is None:
            return
        if time.monotonic() > deadline:
            reporter.warn(f"iTop cron still holds its lock after {CRON_WAIT_SECONDS} s; taking the snapshot anyway "
                          "(the database dump is transactional)")
            return
        if not announced:
            reporter.step("waiting for iTop's cron.php to finish its current task")
            announced = True
        time.sleep(1)


def _require_code(root: Path) -> None:
    """A backup of a root without iTop's code would hold no iTop (a restore brings the code back itself)."""
    require_install(root, detect, "an iTop", "no approot.inc.php",
                    "set root to iTop's folder (the one holding approot.inc.php and conf/)")


@contextlib.contextmanager
def restore_quiesce(instance: Instance, config: InstanceConfig, reporter: Reporter,
                    state_dir: Path) -> Iterator[dict[str, object]]:
    """iTop read-only mode (data/.readonly, removed afterwards only if safehold created it); iTop 3.0
    switches to read-only for its own restores as well. The flag leaves data/'s timestamps as they were."""
    assert instance.root is not None
    flag = instance.root / READONLY_FLAG
    with paused(state_dir, instance.name, instance.app, reporter) as pause:
        raise_flag(pause, flag, "", what=f"iTop read-only mode ({flag})", method="itop-readonly", reporter=reporter,
                   already=f"iTop is already read-only ({flag} exists); it stays that way",
                   done=f"iTop switched to read-only mode ({flag})")
        _wait_for_cron(_database(instance.root / CONFIG), str(instance.details["cron_lock"]), reporter)
        stop_commands(pause, config, reporter)
        yield pause.window


@contextlib.contextmanager
def quiesce(instance: Instance, config: InstanceConfig, reporter: Reporter,
            state_dir: Path) -> Iterator[dict[str, object]]:
    """Refuse a root without iTop's code, then the read-only mode of restore_quiesce."""
    assert instance.root is not None
    _require_code(instance.root)
    with restore_quiesce(instance, config, reporter, state_dir) as window:
        yield window


def quiesce_plan(instance: Instance, config: InstanceConfig, state_dir: Path) -> list[str]:
    """The read-only switch quiesce would make (the flag is looked at, not created) and the configured commands."""
    assert instance.root is not None
    _require_code(instance.root)
    flag = instance.root / READONLY_FLAG
    mode = (f"iTop is read-only already ({flag} exists): it stays that way" if flag.exists() else
            f"switch iTop to read-only mode (create {flag}), afterwards remove it; wait for cron.php's current task")
    return [mode, *command_plan(config)]


def keys(instance: Instance, state_dir: Path) -> dict[str, Secret]:
    """iTop's `encryption_key` (it is in config-itop.php too; the copy lands in the recovery kit)."""
    if instance.root is None:
        return {}
    key = _settings(instance.root / CONFIG).get("encryption_key")
    return {KEY: Secret(str(key), KEY)} if key else {}


def _has_mcrypt(modules: set[str] | None) -> bool | None:
    """Whether PHP loads mcrypt (None: PHP could not be asked)."""
    return None if modules is None else "mcrypt" in modules


def check_restore(instance: Instance, manifest: Manifest, in_place: set[str], reporter: Reporter) -> list[str]:
    """Refuse a database alone under another iTop version (the files bring the point's code); warn when
    the encryption library is missing here, or mcrypt is loaded on one side only (iTop 3.0 "Data backup":
    it must be present on both systems or on neither, or reversibly encrypted fields do not decrypt)."""
    library = manifest.details.get("encryption_library")
    modules = hostinfo.php_modules()
    had_mcrypt, has_mcrypt = manifest.details.get("php_mcrypt"), _has_mcrypt(modules)
    if had_mcrypt is not None and has_mcrypt is not None and had_mcrypt != has_mcrypt:
        reporter.warn(f"the point's iTop ran {'with' if had_mcrypt else 'without'} the mcrypt PHP extension but PHP "
                      f"here {'lacks' if had_mcrypt else 'loads'} it: iTop's guide requires the same on both systems, "
                      f"else encrypted fields do not decrypt; {'install' if had_mcrypt else 'disable'} mcrypt")
    if library:
        wanted = PHP_EXTENSION.get(str(library), str(library).lower())
        if modules is None:
            reporter.warn(f"the point's iTop encrypts with {library}; could not run `php -m` to check that the "
                          f"PHP extension {wanted} is installed here")
        elif wanted not in modules:
            reporter.warn(f"the point's iTop encrypts with {library} but PHP here lacks the {wanted} extension: "
                          "encrypted fields will be unreadable until it is installed")
    return same_version(
        "iTop", versions(instance), versions(manifest), in_place,
        f"restore the files too (the point holds its iTop code), or install iTop {manifest.app_version} first, "
        "or restore with --allow-version-change and then run "
        "iTop's setup to align the database with this code")


def post_restore(instance: Instance, reporter: Reporter, manifest: Manifest, restored: set[str]) -> None:
    """Clear the compiled cache and give the files iTop's restore leaves wrong back to the web user."""
    if instance.root is None:
        return
    data = instance.root / "data"
    cache = instance.root / CACHE
    empty_but_guards(cache)  # emptied, not removed: the folder comes back from the point
    if data.is_dir() and not cache.is_dir():
        with folder_times_kept(cache):
            cache.mkdir(mode=data.stat().st_mode & 0o7777)
        chown_tree(cache, f"{data.stat().st_uid}:{data.stat().st_gid}")
    if cache.is_dir():
        reporter.step(f"cleared {cache}")
    if instance.owner and "files" in restored:
        for relative in OWNED_BY_WEB_USER:
            if (instance.root / relative).exists():
                chown_tree(instance.root / relative, instance.owner)
        reporter.step(f"owner {instance.owner} set on {', '.join(OWNED_BY_WEB_USER)}")


def verify_keys(instance: Instance, keys: dict[str, Secret], database_name: str | None = None) -> list[str]:
    """The point's encryption_key must be the one the live config uses."""
    if KEY not in keys or instance.root is None:
        return []
    live = _settings(instance.root / CONFIG).get("encryption_key")
    if live != keys[KEY].reveal():
        return [f"{CONFIG} has another encryption_key than the point: restore config and database together"]
    return []
