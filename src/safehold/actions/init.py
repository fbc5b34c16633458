"""`safehold init`: write the commented sample configuration (`config/sample.py`, from the models'
descriptions) with what was found filled in: the app and its root, the repository, the password file
made beside the config, and for i-doit the quiesce steps its backup guide asks for."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

from safehold.config import REMOTE_SCHEMES
from safehold.config.sample import sample
from safehold.errors import ConfigError
from safehold.secrets import write_private

PASSWORD_FILE = "repo.pass"  # beside the config: /etc/safehold/repo.pass for /etc/safehold/safehold.toml
REPOSITORY = "main"
KEEP = {"last": 14}  # written out, so the retention a new config starts with is in sight
PASSWORD_NOTE = "made by `safehold init` (0600, random) when it was missing"
APP_DATABASES = ("the database credentials are read from the application's own config file: list a database "
                 "here only to override one")
GENERIC = ("a generic instance needs at least one of databases, files, config_files: set files or config_files "
           "below, or uncomment the database table further down")
IDOIT_GUIDE = ("i-doit's backup guide: do not use i-doit during a backup or recovery; stop the web server and "
               "i-doit's cron jobs. safehold runs `stop` before the snapshot (and a restore) and `start` after.")
IDOIT_NOTHING = ("Nothing was found on this host (no apache2/httpd/nginx/php-fpm unit or binary, no cron job "
                 "running {root}); add yours.")

LABELS = {"itflow": "ITFlow", "idoit": "i-doit", "itop": "iTop", "glpi": "GLPI", "snipeit": "Snipe-IT",
          "bookstack": "BookStack", "netbox": "NetBox", "generic": "the application"}


def _absolute(path: str) -> str:
    """The config is read from cron, systemd and the web console, each in another folder: paths are absolute."""
    return os.path.abspath(os.path.expanduser(path))


def sample_inputs(app: str, root: Path | None, repo: str, password_file: Path,
                  host: Path = Path("/")) -> tuple[dict[str, Any], dict[str, str]]:
    """What init fills into the sample (the values, nested as in the file) and the notes beside them."""
    name = app if app != "generic" else "myapp"
    instance: dict[str, Any] = {"app": app, **({"root": str(root)} if root is not None else {}),
                                "repositories": [REPOSITORY], "retention": dict(KEEP)}
    notes = {f"repositories.{REPOSITORY}.password": PASSWORD_NOTE,
             f"instances.{name}" if app == "generic" else f"instances.{name}.databases":
                 GENERIC if app == "generic" else APP_DATABASES}
    if app == "idoit" and root is not None:
        notes.update(_idoit_quiesce(instance, f"instances.{name}.quiesce", root, host))
    values = {"settings": {}, "repositories": {REPOSITORY: {"url": repo, "password": f"file:{password_file}"}},
              "instances": {name: instance}}
    return values, notes


def _idoit_quiesce(instance: dict[str, Any], path: str, root: Path, host: Path) -> dict[str, str]:
    """The stop/start steps i-doit's backup guide asks for, as found on this host, set in `instance`; the
    notes that say where each was found (or that none was)."""
    from safehold.apps.idoit import quiesce_proposal

    steps = quiesce_proposal(root, host)
    if not steps:
        return {path: f"{IDOIT_GUIDE}\n{IDOIT_NOTHING.format(root=root)}"}
    instance["quiesce"] = {"stop": [s.stop for s in steps], "start": [s.start for s in reversed(steps)]}
    return {path: IDOIT_GUIDE, **{f"{path}.stop.{n}": step.why for n, step in enumerate(steps)}}


def detect_app(root: Path) -> str:
    """The application installed in `root` (the first profile that recognises it), else generic."""
    from safehold.apps import APPS

    return next((app for app, profile in APPS.items() if app != "generic" and profile.detect(root)), "generic")


def write_example(path: Path, app: str | None, root: Path | None, repo: str | None, force: bool,
                  host: Path = Path("/")) -> dict[str, object]:
    """Write the sample config for `app` (found from `root` when not given); refuse to overwrite without `force`.
    `host` is where the i-doit profile looks for the web server and cron jobs to propose as quiesce steps."""
    if app is None:
        app = detect_app(Path(_absolute(str(root)))) if root is not None and Path(root).is_dir() else "generic"
    if app not in LABELS:
        raise ConfigError(f"--app {app!r} is not known", f"use {', '.join(LABELS)}")
    if app != "generic" and root is None:
        raise ConfigError(f"--app {app} needs --root", f"e.g. safehold init --app {app} --root /var/www/{app}")
    label = LABELS[app]
    if root is not None:
        root = Path(_absolute(str(root)))
        if not root.exists():
            raise ConfigError(f"--root {root} does not exist", f"give --root the folder {label} is installed in")
        if not root.is_dir():
            raise ConfigError(f"--root {root} is not a folder", f"give --root the folder {label} is installed in")
    if root is not None and app != "generic":
        from safehold.apps import profile_for

        if not profile_for(app).detect(root):
            article = "an" if label[0].lower() in "aeiou" else "a"
            raise ConfigError(f"{root} does not look like {article} {label} install",
                              f"give --root the folder {label} is installed in")
    if repo is not None and not repo.startswith(REMOTE_SCHEMES):
        local = repo.startswith("local:")
        repo = ("local:" if local else "") + _absolute(repo.removeprefix("local:"))
    if path.exists() and not force:
        raise ConfigError(f"{path} already exists", "use --force to overwrite it, or --output another file")
    password_file = Path(_absolute(str(path))).parent / PASSWORD_FILE
    text = sample(*sample_inputs(app, root, repo or "/var/backups/safehold", password_file, host))
    path.write_text(text, encoding="utf-8")
    made = not password_file.exists()
    if made:  # a config naming a password file that is not there fails its first run; an existing one is kept
        write_private(password_file, secrets.token_urlsafe(32) + "\n")
    return {"path": str(path), "app": app, "password_file": str(password_file), "password_file_created": made}
