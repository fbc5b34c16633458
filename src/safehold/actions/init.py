"""`safehold init`: write a commented example configuration."""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

from safehold.config import REMOTE_SCHEMES
from safehold.errors import ConfigError
from safehold.secrets import write_private

PASSWORD_FILE = "repo.pass"  # beside the config: /etc/safehold/repo.pass for /etc/safehold/safehold.toml

TEMPLATE = '''# safehold configuration. Secrets are never written here: use "env:NAME" or "file:/path" (mode 0600).

[settings]
# state_dir = "/var/lib/safehold"      # run history, locks, escrowed keys (default shown for root)
# lock_wait_seconds = 0                # 0: a second run of the same instance exits; N: waits N seconds
# metrics_textfile = "/var/lib/prometheus/node-exporter/safehold.prom"   # rewritten after every run
# drill_prefix = "safehold_drill_"     # how drill scratch databases and folders are named

[repositories.main]
url = {repo}                         # local path, sftp:user@host:/path, s3:https://host/bucket/path
password = {password}   # made by `safehold init` (0600, random); keep a copy off this host (`safehold kit`)
# limit_upload = 2048                  # KiB/s, so the nightly upload leaves room on the uplink (limit_download too)
# env = {{ AWS_ACCESS_KEY_ID = "env:AWS_ACCESS_KEY_ID", AWS_SECRET_ACCESS_KEY = "file:/etc/safehold/s3.secret" }}

[instances.{name}]
app = "{app}"                          # itflow | idoit | itop | glpi | snipeit | bookstack | netbox | generic
{root_line}
repositories = ["main"]                # the first gets every run; others receive copies
# files = ["/srv/app/uploads"]         # extra file trees to keep
# config_files = ["/etc/apache2", "/etc/php"]
# exclude = ["*/cache/*"]
retention = {{ last = 14 }}            # or {{ daily = 7, weekly = 4, monthly = 12, yearly = 2 }}
#                                      # applied after each backup that stored its point, never a failed one
#                                      # (after_backup = false: by hand with `safehold prune`)
# schedule = {{ week_days = ["monday","tuesday","wednesday","thursday","friday"], time = "23:30", timezone = "UTC" }}
#   or {{ cron = "30 23 * * 1-5", timezone = "Europe/Berlin", drill = "0 4 * * sun", max_age_hours = 26 }}
#   enabled = false pauses it (`safehold check` then reports it, CRITICAL once no point is fresh)
#   verify = "0 5 * * sun" checks the repositories weekly, reading verify_read_data of the stored data
#   ("5%" by default, a random share each time; "all", "none" or an amount such as "2G")
# quiesce = {{ stop = [["systemctl","stop","apache2"]], start = [["systemctl","start","apache2"]] }}
# drill_server = {{ host = "127.0.0.1", user = "safehold_drill", password = "env:DRILL_DB_PASSWORD" }}
#                                      # where `safehold drill` may create scratch databases (default: a private
#                                      # server from this host's mariadbd/initdb, else the app's own server)
# db_admin = {{ user = "root", password = "env:DB_ADMIN_PASSWORD", host = "localhost" }}
#                                      # re-creates a missing app DB account/database on restore (default: root
#                                      # over the local socket, no password); without it restore prints the SQL
{databases}
# [notify]                             # failure, recovery (and with on_success = true every run)
# urls = ["mailtos://user:pass@mail.example?to=ops@example.com", "env:SAFEHOLD_SLACK_URL"]   # apprise URLs
# [notify.itop]                        # one iTop ticket per outage (REST/JSON core/create)
# url = "https://itop.example/"
# user = "safehold-rest"
# password = "file:/etc/safehold/itop.pass"
# org_id = "SELECT Organization WHERE name = 'IT'"
# ticket_class = "UserRequest"         # or Incident
# [notify.itflow]                      # one ITFlow ticket per outage (API v1 tickets/create)
# url = "https://itflow.example/"
# api_key = "file:/etc/safehold/itflow.key"
# client_id = 1

# [web]                                # `safehold serve`: the admin console (see docs/web.md)
# listen = "127.0.0.1:8750"
# trusted_proxies = ["127.0.0.1", "::1"]   # only behind a reverse proxy: whose X-Forwarded-For/-Proto count
# allowed_hosts = ["backup.example.org"]   # names in the URL besides localhost and the listen address
'''

GENERIC_DB = '''
# [[instances.{name}.databases]]
# engine = "mariadb"                   # mariadb | postgres | sqlite (sqlite: path = "/srv/app/app.db")
# host = "127.0.0.1"
# port = 3306
# user = "backup"
# password = "env:APP_DB_PASSWORD"
# names = ["app"]
'''


LABELS = {"itflow": "ITFlow", "idoit": "i-doit", "itop": "iTop", "glpi": "GLPI", "snipeit": "Snipe-IT",
          "bookstack": "BookStack", "netbox": "NetBox", "generic": "the application"}


def toml_string(value: str, what: str) -> str:
    """`value` as a TOML basic string (JSON's escapes are TOML's; DEL must be escaped too)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ConfigError(f"{what} is not UTF-8 text, which a TOML file cannot hold",
                          "rename the folder, or write the config by hand") from None
    return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")


def _absolute(path: str) -> str:
    """The config is read from cron, systemd and the web console, each in another folder: paths are absolute."""
    return os.path.abspath(os.path.expanduser(path))


def _idoit_quiesce(name: str, root: Path, host: Path) -> str:
    """The stop/start steps i-doit's backup guide asks for, as found on this host, each commented."""
    from safehold.apps.idoit import quiesce_proposal

    steps = quiesce_proposal(root, host)
    intro = ("\n# i-doit's backup guide: do not use i-doit during a backup or recovery; stop the web server and\n"
             "# i-doit's cron jobs. safehold runs `stop` before the snapshot (and a restore) and `start` after.\n")
    if not steps:
        return (intro + f"# Nothing was found on this host (no apache2/httpd/nginx/php-fpm unit or binary, no cron job "
                        f"running {root}); add yours:\n# [instances.{name}.quiesce]\n"
                        '# stop = [["systemctl", "stop", "apache2"]]\n# start = [["systemctl", "start", "apache2"]]\n')

    def argv(words: list[str]) -> str:
        return "[" + ", ".join(toml_string(w, "a quiesce command") for w in words) + "]"

    stop = "".join(f"  {argv(s.stop)},   # {s.why}\n" for s in steps)
    start = "".join(f"  {argv(s.start)},\n" for s in reversed(steps))
    return f"{intro}[instances.{name}.quiesce]\nstop = [\n{stop}]\nstart = [   # in reverse order\n{start}]\n"


def detect_app(root: Path) -> str:
    """The application installed in `root` (the first profile that recognises it), else generic."""
    from safehold.apps import APPS

    return next((app for app, profile in APPS.items() if app != "generic" and profile.detect(root)), "generic")


def write_example(path: Path, app: str | None, root: Path | None, repo: str | None, force: bool,
                  host: Path = Path("/")) -> dict[str, object]:
    """Write the template for `app` (found from `root` when not given); refuse to overwrite without `force`.
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
    name = app if app != "generic" else "myapp"
    password_file = Path(_absolute(str(path))).parent / PASSWORD_FILE
    text = TEMPLATE.format(
        repo=toml_string(repo or "/var/backups/safehold", "--repo"),
        password=toml_string(f"file:{password_file}", "the config's folder"),
        name=name,
        app=app,
        root_line=f"root = {toml_string(str(root), '--root')}" if root else '# root = "/srv/app"',
        databases=GENERIC_DB.format(name=name) if app == "generic" else
        "# database credentials are read from the application's own config file\n"
        + (_idoit_quiesce(name, root, host) if app == "idoit" and root is not None else ""),
    )
    path.write_text(text, encoding="utf-8")
    made = not password_file.exists()
    if made:  # a config naming a password file that is not there fails its first run; an existing one is kept
        write_private(password_file, secrets.token_urlsafe(32) + "\n")
    return {"path": str(path), "app": app, "password_file": str(password_file), "password_file_created": made}
