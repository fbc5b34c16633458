"""ITFlow profile: one MariaDB database, the whole app folder (code, config.php, uploads/) and the
credential-vault master key.

Facts (itflow-org/itflow 26.08, checked on the release): `config.php` holds `$dbhost $dbusername
$dbpassword $database` written with var_export by setup/index.php (setup appends
`$config_enable_setup = 0` last, functions/backup.php may append `$config_backup_key`; a variable
may repeat: the last one wins); no port variable. Versions: `includes/app_version.php` APP_VERSION
and `settings.config_current_database_version` (company_id = 1). There is no maintenance mode:
every cron job (cron/*.php) stops itself while `settings.config_enable_cron` = 0
(includes/cron_jobs.php), which is how this profile pauses the app; the dispatcher cron/cron.php
still stamps `config_cron_last_dispatch_at`. Each job holds a flock on
`sys_get_temp_dir()/itflow_cron_<md5 of the script path>.lock` (cron/includes/cron_lock.php).
Uploads go to `uploads/` under the app folder (clients/<id>/, tickets/, users/<id>/, settings/, …).
The master key never exists in clear on the server: it is wrapped per user in
`users.user_specific_encryption_ciphertext`; `safehold key escrow` unwraps it once with an
admin's password (see `itflow_crypto`).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from safehold.appconfig.php import find_define, parse_file
from safehold.apps import itflow_crypto
from safehold.apps.common import (
    app_config_file,
    base_instance,
    command_plan,
    database_named,
    guarded_contents,
    stop_commands,
)
from safehold.apps.dbhost import mariadb_connection
from safehold.apps.guards import require_install, same_version, versions
from safehold.apps.quiesce import paused, resumer
from safehold.config import InstanceConfig
from safehold.engines.mariadb import client
from safehold.engines.mariadb.lookup import query_or_none
from safehold.errors import SafeholdError
from safehold.models import Database, Instance
from safehold.output import Reporter
from safehold.repository.manifest import Manifest
from safehold.secrets import Secret, write_private

CONFIG = "config.php"
CRON_LOCKS = "itflow_cron_*.lock"  # in PHP's sys_get_temp_dir(), /tmp for the CLI cron
CRON_WAIT_SECONDS = 120
VERSION_FILE = "includes/app_version.php"
MASTER_KEY = "itflow_master_key"
BACKUP_KEY = "itflow_config_backup_key"
APP_KEYS = "ITFlow's credential-vault master key and config.php's backup key"
RUNS_ON_PHP = True  # its points record PHP's version and extensions
# Folders whose contents ITFlow regenerates, each with the source that proves it; their guard files
# (.htaccess, index.php, …) are kept all the same (common.guarded_contents).
REGENERABLE = (
    # The email parser's scratch space: cron/ticket_email_parser.php writes each raw message here and,
    # in the same run, moves it into the ticket's folder or deletes it (a snapshot waits for the
    # running job's flock).
    "uploads/tmp",
    # ITFlow's built-in backup archives: functions/backup.php (backupStorageDir) writes encrypted
    # copies of this database and uploads/ here, which the point holds anyway; its
    # backupRunRetention() drops the `backups` rows whose archive is gone.
    "uploads/backups",
)
# Not left out: HTMLPurifier's definition cache (libs/htmlpurifier/standalone/HTMLPurifier/
# DefinitionCache/Serializer) ships with the release and is kept with the rest of the code.
# The guards ITFlow writes: uploads/ (functions/backup.php backupAssertUploadsGuards), its archive
# folder (backupHardenStorageDir) and, as shipped, uploads/tmp/. Written on restore when missing
# (a point taken before this profile kept them lacks those of uploads/tmp and uploads/backups).
DENY_ALL = "Require all denied\nOptions -ExecCGI -Indexes\nphp_flag engine off\n"
GUARDS = {
    "uploads/.htaccess": ("Options -ExecCGI -Indexes\nphp_flag engine off\nRemoveHandler .php .phtml .phar .phps\n"
                          "RemoveType .php .phtml .phar .phps\n<FilesMatch \"\\.(php|phtml|phar|phps|cgi|pl|sh)$\">\n"
                          "  Require all denied\n</FilesMatch>\n"),
    "uploads/index.php": "",
    "uploads/tmp/.htaccess": DENY_ALL,
    "uploads/tmp/index.php": "",
    "uploads/backups/.htaccess": DENY_ALL,
    "uploads/backups/index.php": "<?php // Silence is golden\n",
}


def detect(root: Path) -> bool:
    """An ITFlow root holds config.php with `$dbhost` and `$database` (the rest may still be restored)."""
    return _mentions(root / CONFIG, "$dbhost", "$database")


def _mentions(path: Path, *words: str) -> bool:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return False
    return all(word in text for word in words)


def _database(config_path: Path) -> Database:
    php = parse_file(config_path, "ITFlow config file")
    conn = mariadb_connection(php.text("dbhost"), None, php.text("dbusername"), php.text("dbpassword"))
    return Database(conn, php.text("database"))


def app_database(instance: Instance) -> Database:
    """ITFlow's database as config.php names it (the instance's list may be narrowed, e.g. by a safety point)."""
    assert instance.root is not None
    return _database(instance.root / CONFIG)


def describe(name: str, config: InstanceConfig) -> Instance:
    """Database from config.php, the whole app folder, versions from code and database."""
    root, config_path = app_config_file(config, "ITFlow", CONFIG)
    require_install(root, detect, "an ITFlow", f"{CONFIG} sets no $dbhost/$database",
                    "set root to the folder that holds ITFlow's config.php")
    db = _database(config_path)
    instance = base_instance(name, config, "itflow", [db], [root], [config_path])
    for folder in REGENERABLE:
        instance.exclude += guarded_contents(root / folder)
    archives = parse_file(config_path).text("config_backup_path", default="")
    if archives:  # built-in backup archives moved elsewhere: encrypted copies of what safehold takes anyway
        instance.exclude += guarded_contents(archives)
    instance.app_version = find_define(root / VERSION_FILE, "APP_VERSION")
    instance.schema_version = _schema_version(db)
    return instance


def _schema_version(db: Database) -> str | None:
    rows = query_or_none(db.connection, db.name,
                         "SELECT config_current_database_version FROM settings WHERE company_id = 1")
    return str(rows[0][0]) if rows else None


def read_schema_version(instance: Instance, database_name: str) -> str | None:
    """Schema version recorded in a (restored) copy of the database, e.g. a drill's scratch database."""
    return _schema_version(database_named(instance, database_name))


def _set_cron(db: Database, value: int) -> None:
    with client.cursor(db.connection, db.name) as cur:
        cur.execute("UPDATE settings SET config_enable_cron = %s WHERE company_id = 1", (value,))


@resumer("itflow_cron", describe=lambda step: f"ITFlow cron off (settings.config_enable_cron = 0, was "
                                             f"{step['value']}; {step['root']})")
def _restore_cron(step: dict[str, Any], reporter: Reporter) -> None:
    root = Path(step["root"])
    db = _database(root / CONFIG)  # credentials re-read: markers never hold secrets
    _set_cron(db, int(step["value"]))
    reporter.step(f"ITFlow cron re-enabled (settings.config_enable_cron = {step['value']})")


@contextlib.contextmanager
def quiesce(instance: Instance, config: InstanceConfig, reporter: Reporter,
            state_dir: Path) -> Iterator[dict[str, object]]:
    """Pause ITFlow's cron dispatcher (config_enable_cron = 0) and any configured stop commands."""
    db = app_database(instance)
    with paused(state_dir, instance.name, instance.app, reporter) as pause:
        rows = _cron_switch(db)
        if rows and int(rows[0][0]):
            pause.record("itflow_cron", root=str(instance.root), value=int(rows[0][0]))
            reporter.step("pausing ITFlow cron (settings.config_enable_cron = 0)")
            _set_cron(db, 0)
            pause.methods("itflow-cron")
            pause.window["itflow_cron"] = int(rows[0][0])
        _wait_for_cron_jobs(reporter)
        if not key_file(state_dir, instance.name).is_file():
            reporter.warn(f"ITFlow's master key is not escrowed: run `safehold key escrow {instance.name}` once, "
                          "or stored credentials are lost with the last admin password")
        stop_commands(pause, config, reporter)
        yield pause.window


@contextlib.contextmanager
def restore_quiesce(instance: Instance, config: InstanceConfig, reporter: Reporter,
                    state_dir: Path) -> Iterator[dict[str, object]]:
    """Let a running cron job finish, then the configured stop commands, around a restore.

    The cron switch is left alone: a restored dump holds `config_enable_cron = 0` already (it was
    taken paused), and switching the live database off first would put that 0 into the safety point,
    which `post_restore` could then not tell from an administrator's choice.
    """
    with paused(state_dir, instance.name, instance.app, reporter) as pause:
        _wait_for_cron_jobs(reporter)
        stop_commands(pause, config, reporter)
        yield pause.window


def _cron_switch(db: Database) -> list[tuple] | None:
    return query_or_none(db.connection, db.name, "SELECT config_enable_cron FROM settings WHERE company_id = 1")


def quiesce_plan(instance: Instance, config: InstanceConfig, state_dir: Path) -> list[str]:
    """The cron switch quiesce would turn off (read, not changed) and the configured commands."""
    rows = _cron_switch(app_database(instance))
    if rows is None:
        cron = "ITFlow cron switch: settings.config_enable_cron cannot be read (see the database problem)"
    elif int(rows[0][0]):
        cron = (f"pause ITFlow cron (settings.config_enable_cron = 0), afterwards back to {int(rows[0][0])}; "
                "wait for a running cron job")
    else:
        cron = "ITFlow cron is off already (settings.config_enable_cron = 0): left as it is"
    return [cron, *command_plan(config)]


def _wait_for_cron_jobs(reporter: Reporter) -> None:
    """A cron job already running holds its flock (cron/includes/cron_lock.php); let it finish."""
    deadline = time.monotonic() + CRON_WAIT_SECONDS
    for lock in sorted(Path(tempfile.gettempdir()).glob(CRON_LOCKS)):
        try:
            fd = os.open(lock, os.O_RDONLY)
        except OSError:
            continue
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                    fcntl.flock(fd, fcntl.LOCK_UN)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        reporter.warn(f"an ITFlow cron job still holds {lock}; taking the snapshot anyway")
                        return
                    reporter.step(f"waiting for the ITFlow cron job holding {lock.name}")
                    time.sleep(0.5)
        finally:
            os.close(fd)


def key_file(state_dir: Path, instance: str) -> Path:
    """Where an instance's escrowed keys are kept (0600, inside the 0700 state dir)."""
    return state_dir / "keys" / f"{instance}.json"


def escrow(instance: Instance, state_dir: Path, password: Secret, user: str | None,
           reporter: Reporter) -> dict[str, object]:
    """Unwrap the master key with an account's password, prove it on a credential, keep it 0600."""
    db = app_database(instance)
    master, email = itflow_crypto.unwrap_from_users(db, password, user)
    proof = itflow_crypto.prove(db, db.name, master)
    if proof is None:
        reporter.warn("no stored credential to test the key on yet; it will be checked once one exists")
    path = key_file(state_dir, instance.name)
    write_private(path, json.dumps({MASTER_KEY: master.reveal(), "user": email, "proof_credential_id": proof}))
    reporter.step(f"master key escrowed for {instance.name} (unwrapped with {email}'s password)")
    return {"instance": instance.name, "user": email, "stored": str(path), "proved_on_credential": proof}


def keys(instance: Instance, state_dir: Path) -> dict[str, Secret]:
    """The escrowed master key (if `safehold key escrow` was run) and config.php's backup zip key."""
    result: dict[str, Secret] = {}
    path = key_file(state_dir, instance.name)
    if path.is_file():
        result[MASTER_KEY] = Secret(json.loads(path.read_text())[MASTER_KEY], MASTER_KEY)
    if instance.root is not None:
        backup_key = parse_file(instance.root / CONFIG).text("config_backup_key", default="")
        if backup_key:
            result[BACKUP_KEY] = Secret(backup_key, BACKUP_KEY)
    return result


def check_restore(instance: Instance, manifest: Manifest, in_place: set[str], reporter: Reporter) -> list[str]:
    """Refuse a database restore under different code; restoring the files brings the point's code back."""
    return same_version(
        "ITFlow", versions(instance), versions(manifest), in_place,
        f"restore the files too (the point holds its ITFlow code), or install ITFlow {manifest.app_version} first; "
        "after a restore with --allow-version-change run `php scripts/update_cli.php --update_db`")


def post_restore(instance: Instance, reporter: Reporter, manifest: Manifest, restored: set[str]) -> None:
    """Cron switch as it was before the snapshot paused it; uploads/ guards where the point lacked them.

    The dump is taken with cron paused, so a restored database has `config_enable_cron = 0`:
    an in-place restore switches it back; a copy under another name keeps cron off, so a clone
    never sends the invoices and card charges of the original a second time.
    """
    cron_before = manifest.quiesce.get("itflow_cron")
    if "db" in restored and cron_before:
        _set_cron(app_database(instance), int(cron_before))
        reporter.step(f"ITFlow cron switched back on as before the backup (config_enable_cron = {cron_before})")
    if "files" in restored and instance.root is not None:
        _uploads_guards(instance.root, reporter)


def _uploads_guards(root: Path, reporter: Reporter) -> None:
    """Every guard ITFlow keeps in uploads/, written with ITFlow's content where it is missing."""
    uploads = root / "uploads"
    uploads.mkdir(mode=0o750, exist_ok=True)
    for relative, content in GUARDS.items():
        guard = root / relative
        if guard.exists() or not guard.parent.is_dir():
            continue
        guard.write_text(content)
        owner = guard.parent.stat()
        if guard.stat().st_uid != owner.st_uid:
            os.lchown(guard, owner.st_uid, owner.st_gid)
        if guard.name == ".htaccess":
            reporter.warn(f"{guard} was missing; wrote ITFlow's guard that keeps the web server from running "
                          "or serving what lands there")


def verify_keys(instance: Instance, keys: dict[str, Secret], database_name: str | None = None) -> list[str]:
    """The escrowed master key must decrypt a stored credential (live DB or `database_name`)."""
    if MASTER_KEY not in keys:
        return [f"no ITFlow master key is escrowed for {instance.name}: run `safehold key escrow {instance.name}`"]
    db = instance.databases[0] if instance.databases else app_database(instance)  # a drill's scratch server
    try:
        itflow_crypto.prove(db, database_name or db.name, keys[MASTER_KEY])
    except SafeholdError as exc:
        return [exc.line()]
    return []
