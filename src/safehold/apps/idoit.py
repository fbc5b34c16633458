"""i-doit profile: the system database, every tenant database listed in it, the whole i-doit
folder and the system configuration (Apache, PHP, MariaDB) the i-doit backup guide names.

Facts (i-doit open, `setup/config_template.inc.php`, `setup/sql/idoit_system.sql`):
`src/config.inc.php` holds `$g_db_system = [host, port, user, pass, name]` and `$g_crypto_hash`
(key of the encrypted password fields). Tenants are rows of `isys_mandator` with their own
`__db_host/__db_port/__db_name/__db_user/__db_pass` (inactive ones too: they are backed up).
A tenant database that cannot be opened fails the backup before anything is paused, naming the
tenant (its name comes from isys_mandator, not from safehold.toml); only an inactive
(`__active = 0`) tenant whose database no longer exists is left out, with a warning kept in the
point. Versions:
`$g_product_info['version']` in `src/version.inc.php`, `isys_db_init.version` in every database.
i-doit has no maintenance mode: the guide says stop the web server and the cron jobs, which this
profile does with the configured quiesce commands.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safehold.appconfig.php import PhpFile, parse_file
from safehold.apps.common import (
    app_config_file,
    base_instance,
    chown_tree,
    command_plan,
    command_quiesce,
    database_named,
    empty_but_guards,
    guarded_contents,
)
from safehold.apps.dbhost import mariadb_connection
from safehold.apps.guards import require_install, same_version
from safehold.config import InstanceConfig
from safehold.engines.mariadb import client
from safehold.engines.mariadb.lookup import query_or_none
from safehold.errors import DatabaseError
from safehold.models import Database, Instance
from safehold.output import Reporter
from safehold.repository.manifest import Manifest
from safehold.secrets import Secret

CONFIG = "src/config.inc.php"
VERSION_FILE = "src/version.inc.php"
SYSTEM_CONFIG = ("/etc/apache2", "/etc/httpd", "/etc/php", "/etc/mysql", "/etc/my.cnf", "/etc/my.cnf.d")
UPLOAD_SETTINGS = ("system.dir.file-upload", "system.dir.image-upload")
KEY = "idoit_crypto_hash"
APP_KEYS = "i-doit's $g_crypto_hash"
RUNS_ON_PHP = True  # its points record PHP's version and extensions
TENANTS = ("SELECT isys_mandator__id, isys_mandator__title, isys_mandator__db_host, isys_mandator__db_port,"
           " isys_mandator__db_name, isys_mandator__db_user, isys_mandator__db_pass, isys_mandator__active"
           " FROM isys_mandator ORDER BY isys_mandator__id")
DB_VERSION = "SELECT isys_db_init__value FROM isys_db_init WHERE isys_db_init__key = 'version'"
NO_SUCH_DATABASE = 1049
# The one regenerable folder: isys_application.class.php defaults $g_dirs['temp'] to ROOT/temp/ (smarty's
# compiled templates, each tenant's cache_* folder of constants, settings and rights), and index.php's
# ?IDOIT_DELETE_TEMP (the admin's "clear cache") deletes all of it with isys_glob_delete_recursive; the
# next request rebuilds it. Everything else is kept: code, vendor/, upload/, imports/, log/ (history).
TEMP = "temp"
# Files that guard a folder stay even inside an excluded one (none ships in temp/, an admin may add one):
# common.GUARD_FILES.
# What i-doit's backup guide pauses ("The Webserver can be deactivated for the time of the backup/recovery
# ... you should also deactivate Cronjobs, which are set up in i-doit"), looked for on the host by `init`.
WEB_SERVERS = ("apache2", "httpd", "nginx", "lighttpd")
PHP_FPM = ("php*-fpm", "php-fpm")
CRON_SERVICES = ("cron", "crond")
UNIT_DIRS = ("etc/systemd/system", "lib/systemd/system", "usr/lib/systemd/system")
BINARY_DIRS = ("usr/sbin", "usr/bin", "sbin")
CRON_TABLES = ("etc/crontab", "etc/cron.d/*", "var/spool/cron/crontabs/*", "var/spool/cron/*")
# i-doit 1.12's CLI entry points (console.php, and the older `controller` wrapper) run its cron jobs.
CRON_ENTRY_POINTS = ("console.php", "controller")
NO_COMMANDS = ("no quiesce commands configured, so i-doit and its cron jobs keep writing during the snapshot "
               "(and the restore); "
               'set quiesce = { stop = [["systemctl", "stop", "apache2"]], '
               'start = [["systemctl", "start", "apache2"]] } (`safehold init --app idoit --root ROOT --output FILE` '
               "proposes the steps found on this host)")


@dataclass
class Step:
    """A quiesce step `init` proposes: the stop and start commands and where on the host it was found."""

    stop: list[str]
    start: list[str]
    why: str


def _unit(host: Path, pattern: str) -> Path | None:
    """The systemd unit file of a service, where any of the standard unit folders holds one."""
    for folder in UNIT_DIRS:
        found = sorted((host / folder).glob(f"{pattern}.service"))
        if found:
            return found[0]
    return None


def _service_step(host: Path, pattern: str, what: str) -> Step | None:
    unit = _unit(host, pattern)
    if unit is not None:
        name = unit.name.removesuffix(".service")
        return Step(["systemctl", "stop", name], ["systemctl", "start", name], f"{what}: {unit}")
    binary = next((host / d / pattern for d in BINARY_DIRS if "*" not in pattern and (host / d / pattern).is_file()),
                  None)
    if binary is not None:  # installed without a systemd unit: the SysV script's name is the binary's
        return Step(["service", pattern, "stop"], ["service", pattern, "start"], f"{what}: {binary}, no systemd unit")
    return None


def cron_jobs(root: Path, host: Path = Path("/")) -> list[str]:
    """`file:line` of every cron line that runs i-doit: it names the install folder, or i-doit's CLI."""
    found: list[str] = []
    for pattern in CRON_TABLES:
        for table in sorted(host.glob(pattern)):
            try:
                lines = table.read_text(errors="replace").splitlines()
            except (OSError, IsADirectoryError):
                continue
            for number, line in enumerate(lines, start=1):
                job = line.strip()
                if not job or job.startswith("#"):
                    continue
                if str(root) in job or ("idoit" in job.replace("-", "").lower()
                                        and any(entry in job for entry in CRON_ENTRY_POINTS)):
                    found.append(f"{table}:{number}")
    return found


def quiesce_proposal(root: Path, host: Path = Path("/")) -> list[Step]:
    """The stop/start steps i-doit's backup guide asks for, as found on this host: the web server and
    PHP-FPM units (or binaries), and cron while a cron table runs i-doit. Stopped in this order,
    started in reverse."""
    steps = [step for name in WEB_SERVERS if (step := _service_step(host, name, "web server"))]
    steps += [step for name in PHP_FPM if (step := _service_step(host, name, "PHP-FPM"))][:1]
    if jobs := cron_jobs(root, host):
        cron = next((s for n in CRON_SERVICES if (s := _service_step(host, n, "cron"))),
                    Step(["systemctl", "stop", "cron"], ["systemctl", "start", "cron"], ""))
        steps.append(Step(cron.stop, cron.start, f"i-doit's cron jobs ({', '.join(jobs)}); pauses every cron "
                                                 "job on this host, one already running finishes"))
    return steps


def detect(root: Path) -> bool:
    """An i-doit root holds src/config.inc.php defining `$g_db_system`."""
    try:
        return "$g_db_system" in (root / CONFIG).read_text(errors="replace")
    except OSError:
        return False


def _config(path: Path) -> PhpFile:
    return parse_file(path, "i-doit config file")


def _system_database(php: PhpFile) -> Database:
    port_text = php.text("g_db_system", "port", default="")
    conn = mariadb_connection(php.text("g_db_system", "host"), int(port_text) if port_text.isdigit() else None,
                              php.text("g_db_system", "user"), php.text("g_db_system", "pass"))
    return Database(conn, php.text("g_db_system", "name"))


def _version(db: Database) -> str | None:
    rows = query_or_none(db.connection, db.name, DB_VERSION)
    return str(rows[0][0]) if rows else None


def read_schema_version(instance: Instance, database_name: str) -> str | None:
    """i-doit version recorded in a (restored) copy of the system database."""
    return _version(database_named(instance, database_name))


def _tenants(system: Database) -> list[tuple[Database, dict[str, object]]]:
    """Every tenant database with its own credentials (system DB missing: none, e.g. before a restore)."""
    result: list[tuple[Database, dict[str, object]]] = []
    for ident, title, host, port, name, user, password, active in query_or_none(
            system.connection, system.name, TENANTS) or []:
        conn = mariadb_connection(str(host or system.connection.host), int(port or 3306) or None,
                                  str(user or ""), str(password or ""))
        db = Database(conn, str(name))
        result.append((db, {"id": int(ident), "title": title, "database": str(name), "active": bool(int(active)),
                            "version": _version(db)}))
    return result


def _tenant_label(info: dict[str, object], system: str) -> str:
    """How messages name a tenant: its title and row in the system database."""
    return (f"i-doit tenant {info['title']!r} (isys_mandator__id {info['id']}, "
            f"{'active' if info['active'] else 'inactive'}, in system database {system})")


def _checked_tenants(system: Database, tenants: list[tuple[Database, dict[str, object]]],
                     warnings: list[str]) -> list[Database]:
    """The tenant databases to back up. One that cannot be opened stays (the backup then refuses, see
    `_refuse_broken_tenants`), except an inactive tenant whose database is gone: left out, with a warning."""
    kept: list[Database] = []
    for db, info in tenants:
        problem = client.problem(db.connection, db.name) if info["version"] is None else None
        if problem is not None and problem.code == NO_SUCH_DATABASE and not info["active"]:
            info["skipped"] = "database does not exist"
            warnings.append(f"{_tenant_label(info, system.name)} is not in this point: its database {db.name} does not "
                            f"exist on {db.connection.describe()} (delete the tenant in i-doit if it is gone for good)")
            continue
        if problem is not None:
            info["problem"] = problem.message  # no credentials: user@host and the server's reason
            info["missing"] = problem.code == NO_SUCH_DATABASE
        kept.append(db)
    return kept


def _refuse_broken_tenants(instance: Instance) -> None:
    """Before anything is paused: a tenant database this backup should hold but cannot open is named,
    with where its name and account come from (isys_mandator, not safehold.toml)."""
    dumped = {db.name for db in instance.databases}
    system = str(instance.details.get("system_database"))
    for info in _recorded_tenants(instance.details):
        if not info.get("problem") or info["database"] not in dumped:
            continue
        label = _tenant_label(info, system)
        if info.get("missing"):
            raise DatabaseError(
                f"{label} uses database {info['database']}, which does not exist, so no point was made",
                "the name comes from that row's isys_mandator__db_name, not from "
                "safehold.toml: restore or re-create that database, or deactivate the tenant in i-doit (an inactive "
                "tenant whose database is gone is left out with a warning)")
        raise DatabaseError(
            f"{label}: {info['problem']}, so no point was made",
            "i-doit opens this tenant with that row's isys_mandator__db_host/__db_user/__db_pass: "
            "fix that account or server, or the tenant's row in i-doit")


def _upload_dirs(system: Database, root: Path) -> list[Path]:
    """Upload folders moved out of the install by the system settings (inside it they are kept anyway)."""
    rows = query_or_none(system.connection, system.name,
                         "SELECT isys_settings__value FROM isys_settings WHERE isys_settings__key IN (%s, %s)",
                         UPLOAD_SETTINGS) or []
    dirs = [Path(str(value)) for (value,) in rows if value]
    return [d for d in dirs if d.is_absolute() and not d.resolve().is_relative_to(root.resolve())]


def describe(name: str, config: InstanceConfig) -> Instance:
    """System DB + every tenant DB, the i-doit folder minus temp/'s contents (its guards kept),
    upload folders the system settings moved out of it, system config, versions."""
    root, config_path = app_config_file(config, "i-doit", CONFIG)
    require_install(root, detect, "an i-doit", f"{CONFIG} defines no $g_db_system",
                    "set root to the i-doit folder (the one holding src/ and index.php)")
    php = _config(config_path)
    system = _system_database(php)
    tenants = _tenants(system)
    warnings: list[str] = []
    kept = _checked_tenants(system, tenants, warnings)
    instance = base_instance(name, config, "idoit", [system, *kept], [root, *_upload_dirs(system, root)], [config_path])
    instance.warnings += warnings
    if not config.config_files:  # the guide's Apache/PHP/MariaDB config, where this host has it
        instance.config_files += [Path(p) for p in SYSTEM_CONFIG if Path(p).exists()]
    temp = php.get("g_dirs", "temp", default=None) if isinstance(php.get("g_dirs", default=None), dict) else None
    for folder in [root / TEMP, *([Path(str(temp))] if temp else [])]:
        instance.exclude += guarded_contents(folder)
    versions = root / VERSION_FILE
    instance.app_version = parse_file(versions).text("g_product_info", "version") if versions.is_file() else None
    instance.schema_version = _version(system)
    instance.details = {"system_database": system.name, "tenants": [info for _, info in tenants],
                        "crypto_hash_set": bool(php.text("g_crypto_hash", default=""))}
    if instance.schema_version is None:  # system DB gone (restore from nothing): it names the tenants once back
        instance.details["declared_later_by"] = system.name
    return instance


@contextlib.contextmanager
def restore_quiesce(instance: Instance, config: InstanceConfig, reporter: Reporter,
                    state_dir: Path) -> Iterator[dict[str, object]]:
    """The configured stop commands (web server unit, cron jobs), always followed by the start ones; the
    guide stops the web server for the recovery too."""
    if not (config.quiesce.enabled and config.quiesce.stop):
        reporter.warn(f"{instance.name}: {NO_COMMANDS}")
    with command_quiesce(instance, config, reporter, state_dir) as window:
        yield window


@contextlib.contextmanager
def quiesce(instance: Instance, config: InstanceConfig, reporter: Reporter,
            state_dir: Path) -> Iterator[dict[str, object]]:
    """Refuse a tenant database that cannot be opened (a restore has no such check: it may be what brings
    a lost tenant database back), then the commands of restore_quiesce."""
    _refuse_broken_tenants(instance)
    with restore_quiesce(instance, config, reporter, state_dir) as window:
        yield window


def quiesce_plan(instance: Instance, config: InstanceConfig, state_dir: Path) -> list[str]:
    """The configured commands quiesce would run, or the warning it would give when there are none."""
    return command_plan(config) or [f"none: {NO_COMMANDS}"]


def keys(instance: Instance, state_dir: Path) -> dict[str, Secret]:
    """`$g_crypto_hash`: without it the encrypted password fields of every tenant are lost."""
    if instance.root is None:
        return {}
    value = _config(instance.root / CONFIG).text("g_crypto_hash", default="")
    return {KEY: Secret(value, KEY)} if value else {}


def _recorded_tenants(details: dict[str, Any]) -> list[dict[str, Any]]:
    """The tenants an instance's or a point's details list (none when they list none)."""
    tenants = details.get("tenants")
    return [t for t in tenants if isinstance(t, dict)] if isinstance(tenants, list) else []


def _tenant_versions(details: dict[str, Any]) -> dict[str, str | None]:
    return {f"tenant {t['database']} schema": t.get("version") for t in _recorded_tenants(details)}


def check_restore(instance: Instance, manifest: Manifest, in_place: set[str], reporter: Reporter) -> list[str]:
    """Refuse databases of another i-doit version under this code (the files carry the point's code)."""
    live = {"app version": instance.app_version, "system schema": instance.schema_version,
            **_tenant_versions(instance.details)}
    point = {"app version": manifest.app_version, "system schema": manifest.schema_version,
             **_tenant_versions(manifest.details)}
    return same_version("i-doit", live, point, in_place,
                        f"restore the files too (the point holds its i-doit folder), or install i-doit "
                        f"{manifest.app_version} first; after a restore with --allow-version-change run "
                        "i-doit's updater")


def post_restore(instance: Instance, reporter: Reporter, manifest: Manifest, restored: set[str]) -> None:
    """Check that every tenant's own account reaches its database, empty temp/ (caches are rebuilt)
    and, when an owner is configured, give the folder to it."""
    if "db" in restored and instance.databases:
        _check_tenant_accounts(instance.databases[0], reporter)
    if instance.root is None:
        return
    temp = instance.root / TEMP
    if temp.is_dir():
        empty_but_guards(temp)
        reporter.step(f"cleared {temp}")
    if instance.owner and "files" in restored:
        chown_tree(instance.root, instance.owner)
        reporter.step(f"owner {instance.owner} set on {instance.root}")


def post_copy(instance: Instance, manifest: Manifest, copies: dict[str, Database], left_alone: list[str],
              reporter: Reporter) -> None:
    """After `--to-db`: a copy of the system database is pointed at the tenant copies made with it (its
    isys_mandator rows, so i-doit opened on it never writes into a live tenant); without one, the live
    system database is left alone and the tenant copies are no tenant of i-doit until a row names them."""
    system = str(manifest.details.get("system_database", ""))
    tenants = [t for t in _recorded_tenants(manifest.details) if not t.get("skipped")]
    if system not in copies:
        for tenant in tenants:
            if tenant["database"] in copies:
                reporter.step(f"i-doit tenant {tenant['title']!r} copied to {copies[tenant['database']].name}; system "
                              f"database {system} left alone, so i-doit does not list the copy (add a tenant in the "
                              f"admin center naming it, or copy {system} too with --to-db {system}=NEW)")
        return
    copy = copies[system]
    with client.cursor(copy.connection, copy.name) as cur:
        for tenant in tenants:
            old = str(tenant["database"])
            label = f"tenant {tenant['title']!r} (isys_mandator__id {tenant['id']})"
            if old in copies:
                cur.execute("UPDATE isys_mandator SET isys_mandator__db_name = %s WHERE isys_mandator__id = %s "
                            "AND isys_mandator__db_name = %s", (copies[old].name, tenant["id"], old))
                reporter.step(f"in the copy {copy.name}, isys_mandator points {label} at its copy {copies[old].name}")
            else:
                reporter.warn(f"in the copy {copy.name}, {label} still points at the live database {old}: i-doit "
                              f"opened on the copy would write into it (copy it too with --to-db {old}=NEW)")


def _check_tenant_accounts(system: Database, reporter: Reporter) -> None:
    """i-doit opens each tenant with the account in isys_mandator, which a restore onto a new server
    does not bring (accounts live in the server's own `mysql` database): say which one is missing."""
    for tenant, info in _tenants(system):
        problem = client.problem(tenant.connection, tenant.name)
        if problem is not None and problem.code == NO_SUCH_DATABASE:
            reporter.warn(f"{_tenant_label(info, system.name)} uses database {tenant.name}, which does not exist on "
                          f"{tenant.connection.describe()}: the point did not hold it (restore another point that "
                          "does, or delete the tenant in i-doit)")
        elif problem is not None:
            reporter.warn(f"i-doit tenant {info['title']!r} opens database {tenant.name} as "
                          f"{tenant.connection.user}@{tenant.connection.host}, which this server refuses: create "
                          f"that account (password in isys_mandator__db_pass of {system.name}) and GRANT ALL ON "
                          f"`{tenant.name}`.* TO it")


def verify_keys(instance: Instance, keys: dict[str, Secret], database_name: str | None = None) -> list[str]:
    """The point's `$g_crypto_hash` must be the one the live config uses."""
    if KEY not in keys or instance.root is None:
        return []
    if _config(instance.root / CONFIG).text("g_crypto_hash", default="") != keys[KEY].reveal():
        return [f"{CONFIG} has another $g_crypto_hash than the point: encrypted passwords will not decrypt"]
    return []
