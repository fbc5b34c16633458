"""NetBox profile: one PostgreSQL database, the whole install root (code, configuration, media,
scripts, reports) minus what NetBox rebuilds, `SECRET_KEY` and `API_TOKEN_PEPPERS`.

Facts (netbox-community/netbox 4.6.8, see ../shared/APPS-NEXT.md §4):
- `configuration.py` is found as NetBox's `settings_utils.load_configuration` finds it: the module
  named by `NETBOX_CONFIGURATION` (safehold.toml `config_module`, as the services set it) under
  the project folder, else `<root>/conf/configuration.py` (wheel installs, 4.6+), else the classic
  `<root>/netbox/netbox/configuration.py`. It is read as literals only (`appconfig.pyliteral`),
  never imported. `DATABASES['default']` or the legacy `DATABASE` (not both: `settings.py`).
- Folders (`settings.py` l.162-199): `MEDIA_ROOT`, `REPORTS_ROOT`, `SCRIPTS_ROOT`, default
  `NETBOX_ROOT/{media,reports,scripts}` (NETBOX_ROOT = `<root>/netbox` for a checkout).
- Regenerable (`docs/installation/upgrading.md`, `upgrade.sh`): `venv/` (re-created and filled
  from requirements.txt + local_requirements.txt) and `NETBOX_ROOT/static` (`collectstatic`);
  `__pycache__` folders are Python's byte-code cache.
- Keys: `API_TOKEN_PEPPERS` hash every v2 API token (lost peppers = every integration's token
  invalid); `SECRET_KEY` signs sessions (`docs/configuration/required-parameters.md`).
- `MAINTENANCE_MODE` only shows a banner; writes go on (`netbox/middleware.py`). The pause is
  stopping the services (`contrib/netbox.service`, `contrib/netbox-rq.service`).
- Versions: `release.yaml` `version:`; the database's `django_migrations`. No down-migrations:
  older code never runs on a newer database.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from safehold.appconfig.pyliteral import PyConfig, parse_file
from safehold.apps.common import app_config_file, base_instance, command_plan, stop_commands
from safehold.apps.dbhost import postgres_endpoint
from safehold.apps.guards import no_downgrade, require_install
from safehold.apps.quiesce import paused, resumer
from safehold.config import InstanceConfig
from safehold.engines import postgres, postgres_roles
from safehold.errors import ConfigError, SafeholdError
from safehold.models import Connection, Database, Instance
from safehold.output import Reporter
from safehold.repository.manifest import Manifest
from safehold.secrets import Secret

CHECKOUT_CONFIG = "netbox/netbox/configuration.py"
WHEEL_CONFIG = "conf/configuration.py"
SECRET_KEY = "netbox_secret_key"
PEPPERS = "netbox_api_token_peppers"
DB_ROLE = "netbox_db_role"
APP_KEYS = "NetBox's SECRET_KEY and API_TOKEN_PEPPERS"
RUNS_ON_PHP = False  # a Python (Django) app: its venv is rebuilt from requirements.txt
DEFAULT_UNITS = ("netbox", "netbox-rq")  # contrib/netbox.service (gunicorn), contrib/netbox-rq.service (worker)
VERSION_LINE = re.compile(r"""^version:\s*["']?([^"'\s#]+)""", re.M)


def detect(root: Path) -> bool:
    """A NetBox root holds a checkout project (netbox/netbox/settings.py) or a configuration.py where NetBox
    looks for one (all a restore from nothing has before the rest of the tree is back)."""
    return any((root / rel).is_file() for rel in ("netbox/netbox/settings.py", WHEEL_CONFIG, CHECKOUT_CONFIG))


def _netbox_root(root: Path) -> Path:
    """settings.NETBOX_ROOT: the project folder of a checkout, the install root of a wheel install."""
    return root / "netbox" if (root / "netbox" / "netbox" / "settings.py").is_file() else root


def config_path(root: Path, module: str | None = None) -> Path:
    """configuration.py as NetBox loads it (explicit module, wheel conf/, classic checkout path)."""
    if module:
        return root / "netbox" / (module.replace(".", "/") + ".py")
    if (root / WHEEL_CONFIG).is_file():
        return root / WHEEL_CONFIG
    return root / CHECKOUT_CONFIG


def _read_config(config: InstanceConfig) -> tuple[Path, Path, PyConfig]:
    root, path = app_config_file(config, "NetBox", lambda root: config_path(root, config.config_module),
                                 what="configuration", folder="install folder (e.g. /opt/netbox)")
    return root, path, parse_file(path, "NetBox configuration")


def _database_settings(cfg: PyConfig) -> dict[str, Any]:
    if cfg.has("DATABASES") and cfg.has("DATABASE"):
        raise ConfigError(f"{cfg.path} sets both DATABASES and DATABASE", "NetBox refuses that too: keep DATABASES")
    settings = cfg.get("DATABASES", "default") if cfg.has("DATABASES") else cfg.get("DATABASE")
    if not isinstance(settings, dict):
        raise ConfigError(f"{cfg.path}: the database settings are not a dict", "see configuration_example.py")
    engine = str(settings.get("ENGINE", "django.db.backends.postgresql"))
    if "postgresql" not in engine and "postgis" not in engine:
        raise ConfigError(f"{cfg.path}: database ENGINE {engine} is not PostgreSQL", "NetBox supports PostgreSQL only")
    key = "DATABASES" if cfg.has("DATABASES") else "DATABASE"
    keys = ("default",) if key == "DATABASES" else ()
    return {name: cfg.text(key, *keys, name, default="") for name in ("NAME", "USER", "PASSWORD", "HOST", "PORT")}


def postgres_connection(host: str, port: str, user: str, password: str) -> Connection:
    """The connection Django's backend makes from the settings (libpq's rules: an empty host or one starting
    with `/` is a socket directory, anything else TCP; an empty port is 5432)."""
    where = postgres_endpoint(host, int(port) if str(port).strip() else 5432)
    return Connection(engine="postgres", host=where.host, port=where.port, socket=where.socket, user=user or None,
                      password=Secret(password, "NetBox configuration") if password else None)


def _database(cfg: PyConfig) -> Database:
    settings = _database_settings(cfg)
    if not settings["NAME"]:
        raise ConfigError(f"{cfg.path}: the database NAME is empty", "set it as NetBox uses it")
    conn = postgres_connection(settings["HOST"], settings["PORT"], settings["USER"], settings["PASSWORD"])
    return Database(conn, settings["NAME"])


def data_folders(root: Path, cfg: PyConfig) -> dict[str, Path]:
    """MEDIA_ROOT, REPORTS_ROOT and SCRIPTS_ROOT as settings.py resolves them."""
    base = _netbox_root(root)
    return {name: Path(cfg.text(name, default="") or base / default).absolute()
            for name, default in (("MEDIA_ROOT", "media"), ("REPORTS_ROOT", "reports"), ("SCRIPTS_ROOT", "scripts"))}


def release_version(root: Path) -> str | None:
    """`version:` of release.yaml (the checkout's, else the wheel's in the venv)."""
    candidates = [_netbox_root(root) / "release.yaml",
                  *sorted(root.glob("venv/lib/python3*/site-packages/netbox/_data/release.yaml"))]
    for path in candidates:
        with contextlib.suppress(OSError):
            if match := VERSION_LINE.search(path.read_text(errors="replace")):
                return match.group(1)
    return None


def _schema_version(db: Database, name: str | None = None) -> str | None:
    """The applied Django migrations: their count and a digest of their names (None when unreadable)."""
    try:
        rows = postgres.rows(db, name or db.name, "SELECT app, name FROM django_migrations ORDER BY app, name")
    except SafeholdError:
        return None
    digest = hashlib.sha256("\n".join(f"{app}.{mig}" for app, mig in rows).encode()).hexdigest()[:12]
    return f"{len(rows)} migrations ({digest})"


def read_schema_version(instance: Instance, database_name: str) -> str | None:
    """The migrations applied in a (restored) copy of the database, for drills."""
    return _schema_version(instance.databases[0], database_name)


def describe(name: str, config: InstanceConfig) -> Instance:
    """Database from configuration.py, the whole install root minus what NetBox rebuilds, versions."""
    root, path, cfg = _read_config(config)
    require_install(root, detect, "a NetBox", f"no netbox/netbox/settings.py, {WHEEL_CONFIG} or {CHECKOUT_CONFIG}",
                    "set root to NetBox's folder, e.g. /opt/netbox")
    db = _database(cfg)
    folders = data_folders(root, cfg)
    outside = [p for p in folders.values() if not p.is_relative_to(root.absolute()) and p.exists()]
    instance = base_instance(name, config, "netbox", [db], [root, *outside], [path])
    ldap = path.parent / "ldap_config.py"
    if ldap.is_file() and not ldap.is_relative_to(root):
        instance.config_files.append(ldap)
    base = _netbox_root(root)
    instance.exclude += [str(root / "venv"), str(base / "static"), str(root / "**" / "__pycache__")]
    instance.app_version = release_version(root)
    instance.schema_version = _schema_version(db)
    instance.details = {"netbox_folders": {k: str(v) for k, v in folders.items()},
                        "venv": (root / "venv").is_dir(), "configuration": str(path)}
    if cfg.get("STORAGES", default=None):
        instance.warnings.append("configuration.py sets STORAGES: media kept by a remote storage backend is not "
                                 "in the point; back that storage up on its own")
    return instance


def _units(config: InstanceConfig) -> list[str]:
    return list(config.quiesce.units if config.quiesce.units is not None else DEFAULT_UNITS)


def _systemctl(*args: str) -> tuple[bool, str]:
    """(success, stdout or else stderr) of a systemctl call; systemctl missing or not running is a failure.

    Run directly: `is-active` answers on stdout with a non-zero exit for a stopped unit."""
    if shutil.which("systemctl") is None:
        return False, "systemctl is not installed"
    done = subprocess.run(["systemctl", *args], capture_output=True, text=True, check=False, timeout=120)
    return done.returncode == 0, (done.stdout.strip() or done.stderr.strip())


def _active(unit: str) -> tuple[bool, str]:
    ok, out = _systemctl("is-active", unit)
    return ok and out == "active", out.splitlines()[-1] if out else "unknown"


@resumer("systemd_units", describe=lambda step: f"stopped systemd units {', '.join(step['units'])} (started on resume)")
def _start_units(step: dict[str, Any], reporter: Reporter) -> None:
    for unit in step["units"]:
        ok, out = _systemctl("start", unit)
        if not ok:
            raise SafeholdError(f"systemctl start {unit} failed: {out[-200:]}", f"start {unit} by hand")
        reporter.step(f"started {unit}")


@contextlib.contextmanager
def quiesce(instance: Instance, config: InstanceConfig, reporter: Reporter,
            state_dir: Path) -> Iterator[dict[str, object]]:
    """Stop NetBox's web and worker services (MAINTENANCE_MODE does not stop writes), then the configured
    commands; every stopped unit is started again afterwards, also after a killed run."""
    with paused(state_dir, instance.name, instance.app, reporter) as pause:
        stopped: list[str] = []
        for unit in _units(config):
            running, state = _active(unit)
            if not running:
                reporter.step(f"{unit} is not running ({state}): nothing to stop")
                continue
            pause.record("systemd_units", units=[unit])
            ok, out = _systemctl("stop", unit)
            if not ok:
                raise SafeholdError(f"systemctl stop {unit} failed: {out[-200:]}",
                                    "check the unit name in [instances.*.quiesce] units")
            stopped.append(unit)
            reporter.step(f"stopped {unit}")
        if stopped:
            pause.methods("systemd")
            pause.window["stopped_units"] = stopped
        stop_commands(pause, config, reporter)
        if pause.window.get("method", "none") == "none":
            reporter.warn(f"none of NetBox's services ({', '.join(_units(config))}) was running under systemd and no "
                          "stop commands are set: NetBox was not paused (the database dump is consistent on its own; "
                          "media written meanwhile may not match it)")
        yield pause.window


restore_quiesce = quiesce  # the services stay away from a database being replaced as well


def quiesce_plan(instance: Instance, config: InstanceConfig, state_dir: Path) -> list[str]:
    """Which services quiesce would stop (looked at, not stopped) and the configured commands."""
    lines = []
    for unit in _units(config):
        running, state = _active(unit)
        lines.append(f"stop {unit}, afterwards start it again" if running else
                     f"{unit} is not running ({state}): nothing to stop")
    return [*lines, *command_plan(config)]


def keys(instance: Instance, state_dir: Path) -> dict[str, Secret]:
    """SECRET_KEY and API_TOKEN_PEPPERS (as JSON)."""
    if instance.root is None:
        return {}
    cfg = parse_file(Path(str(instance.details.get("configuration") or config_path(instance.root))),
                     "NetBox configuration")
    result: dict[str, Secret] = {}
    if secret := cfg.text("SECRET_KEY", default=""):
        result[SECRET_KEY] = Secret(secret, SECRET_KEY)
    if peppers := cfg.get("API_TOKEN_PEPPERS", default=None):
        result[PEPPERS] = Secret(_peppers_text(peppers), PEPPERS)
    return result


def account_records(instance: Instance) -> dict[str, Secret]:
    """The database role's record (with its password hash), stored beside the keys for `prepare_restore`."""
    if instance.databases and (found := postgres_roles.record(instance.databases[0])):
        return {DB_ROLE: Secret(postgres_roles.to_secret_text(found), DB_ROLE)}
    return {}


def _peppers_text(peppers: object) -> str:
    return json.dumps({str(k): v for k, v in peppers.items()} if isinstance(peppers, dict) else peppers,
                      sort_keys=True)


def verify_keys(instance: Instance, keys: dict[str, Secret], database_name: str | None = None) -> list[str]:
    """Both keys must be in the point and equal to the live configuration.py's (named when they differ)."""
    if instance.root is None:
        return []
    live = keys_from_config(instance)
    problems = []
    for key, setting, loss in ((SECRET_KEY, "SECRET_KEY", "every session ends"),
                               (PEPPERS, "API_TOKEN_PEPPERS", "every v2 API token stops working")):
        if key not in keys:
            problems.append(f"the point holds no {setting}: without it {loss}")
        elif key not in live:
            problems.append(f"configuration.py sets no {setting} but the point has one: put it back, else {loss}")
        elif live[key].reveal() != keys[key].reveal():
            problems.append(f"configuration.py's {setting} differs from the point's: with the restored database "
                            f"{loss}; put the point's {setting} back (restore the config with the database)")
    return problems


def keys_from_config(instance: Instance) -> dict[str, Secret]:
    """SECRET_KEY and API_TOKEN_PEPPERS as the live configuration.py holds them."""
    return keys(Instance(instance.name, instance.app, instance.root, details=instance.details), Path())


def prepare_restore(instance: Instance, point_keys: dict[str, Secret], reporter: Reporter,
                    dry_run: bool) -> list[str]:
    """Re-create NetBox's database role and database where the server lacks them (pg_dump holds no roles)."""
    if DB_ROLE not in point_keys or not instance.databases:
        return []
    found = json.loads(point_keys[DB_ROLE].reveal())
    db = instance.databases[0]
    password = db.connection.password.reveal() if db.connection.password else None
    return postgres_roles.ensure(db, found, reporter, dry_run, password)


def _version_tuple(version: str | None) -> tuple[int, ...] | None:
    if not version:
        return None
    parts = re.findall(r"\d+", version)
    return tuple(int(p) for p in parts[:3]) if parts else None


def check_restore(instance: Instance, manifest: Manifest, in_place: set[str], reporter: Reporter) -> list[str]:
    """Refuse a database into older NetBox code (no down-migrations); newer code needs `manage.py migrate`."""
    live, point = _version_tuple(instance.app_version), _version_tuple(manifest.app_version)
    major = live is not None and point is not None and live[0] != point[0]
    return no_downgrade("NetBox", instance, manifest, in_place, reporter, parse=_version_tuple,
                        database=f"was migrated by {manifest.app_version}; NetBox has no down-migrations",
                        upgrade=f"the point is of NetBox {manifest.app_version} and the code here is "
                                f"{instance.app_version}: run `manage.py migrate` (upgrade.sh) after the restore"
                                + ("; a major upgrade must start from the last minor release of the previous major"
                                   if major else ""))


def post_restore(instance: Instance, reporter: Reporter, manifest: Manifest, restored: set[str]) -> None:
    """Say what the point does not hold on purpose (venv, collected static files)."""
    if "files" not in restored or instance.root is None:
        return
    if manifest.details.get("venv") and not (instance.root / "venv").is_dir():
        reporter.warn(f"{instance.root / 'venv'} is not in the point (NetBox rebuilds it): run "
                      f"{instance.root / 'upgrade.sh'} (or pip install -r requirements.txt) before starting NetBox")
    if not (_netbox_root(instance.root) / "static").is_dir():
        reporter.step("static files are not in the point: `manage.py collectstatic --no-input` (upgrade.sh) "
                      "collects them")
