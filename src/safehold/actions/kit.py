"""`safehold key kit`: a printable page with everything needed to recover on a bare machine.

The page holds the repository locations and passwords (and their access credentials), the
escrowed application keys, how to install what a recovery needs, and the restore steps as shell
commands that rebuild a minimal safehold.toml from nothing, plus the same recovery with restic
and the database clients alone. It is written once (never overwritten, so an old printed copy and
the file cannot silently differ) with mode 0600, and says on top that it is a secret.
"""

from __future__ import annotations

import contextlib
import html
import json
import os
import shlex
import socket
from pathlib import Path
from typing import Any

from safehold import __version__, hostinfo, signing
from safehold.config import Config
from safehold.errors import SafeholdError
from safehold.output import Reporter
from safehold.repository.manifest import now
from safehold.repository.ssh import known_hosts_file
from safehold.secrets import resolve
from safehold.sftp_url import parse_sftp

PLACEHOLDER = "@KIT@"
# safehold is installed from its source tree (README, scripts/setup.sh), not by name from a package
# index: the kit names the wheel the admin keeps with it, so the person recovering can install it.
WHEEL = f"safehold-{__version__}-py3-none-any.whl"
# The Debian packages of each engine's client tools, which a restore by hand calls (and safehold's
# restore for the mariadb-dump method and PostgreSQL).
ENGINE_PACKAGES = {"mariadb": ["mariadb-client"], "postgres": ["postgresql-client"], "sqlite": []}
STYLE = """body{font-family:sans-serif;max-width:60em;margin:2em auto}pre{background:#f4f4f4;padding:.6em;
white-space:pre-wrap;word-break:break-all;border:1px solid #ccc}.secret{border:3px solid #b00;padding:1em;
color:#b00;font-weight:bold}td,th{border:1px solid #999;padding:.3em;vertical-align:top}table{border-collapse:collapse}
@media print{pre{page-break-inside:avoid}}"""


def toml_value(value: Any) -> str:
    """A TOML literal for config values (strings, numbers, booleans, lists, tables)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items() if v is not None) + " }"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


def _heredoc(path: str, content: str) -> str:
    return f"cat > {path} <<'SAFEHOLD_EOF'\n{content.rstrip(chr(10))}\nSAFEHOLD_EOF"


def _repository_steps(config: Config, name: str) -> tuple[list[str], list[str], list[tuple[str, str]]]:
    """Shell lines writing this repository's secrets, its TOML section, and (label, value) rows."""
    repo = config.repositories[name]
    steps = [_heredoc(f"repo-{name}.pass", resolve(repo.password, f"repositories.{name}.password").reveal())]
    rows = [("password", resolve(repo.password, f"repositories.{name}.password").reveal())]
    toml = [f"[repositories.{name}]", f"url = {toml_value(repo.url)}",
            f"password = {toml_value(f'file:{PLACEHOLDER}/repo-{name}.pass')}"]
    env: dict[str, str] = {}
    for key, ref in repo.env.items():
        value = resolve(ref, f"repositories.{name}.env.{key}").reveal()
        steps.append(_heredoc(f"repo-{name}.{key}", value))
        rows.append((key, value))
        env[key] = f"file:{PLACEHOLDER}/repo-{name}.{key}"
    if env:
        toml.append(f"env = {toml_value(env)}")
    if parse_sftp(repo.url) is not None:
        pinned = _pinned(config, name)
        if pinned:
            toml.append(f"known_hosts = {toml_value(pinned)}")
            rows.append(("SSH host key (known_hosts)", pinned))
        if repo.ssh_key:
            key_text = Path(repo.ssh_key.removeprefix("file:")).expanduser().read_text()
            steps.append(_heredoc(f"repo-{name}.sshkey", key_text))
            rows.append(("SSH private key", key_text))
            toml.append(f"ssh_key = {toml_value(f'{PLACEHOLDER}/repo-{name}.sshkey')}")
    return steps, toml, rows


def _pinned(config: Config, name: str) -> str:
    """The SSH host key lines pinned for repository `name` (config or `safehold repo trust`), or ""."""
    path = known_hosts_file(config, name)
    return (config.repositories[name].known_hosts or (path.read_text() if path.is_file() else "")).strip()


def _restic_by_hand(config: Config, name: str) -> str:
    """Shell lines that let plain restic open repository `name` with the files the kit's steps write."""
    repo = config.repositories[name]
    env = [f"RESTIC_REPOSITORY={shlex.quote(repo.url)}", f'RESTIC_PASSWORD_FILE="$KIT/repo-{name}.pass"',
           *(f'{key}="$(cat "$KIT/repo-{name}.{key}")"' for key in repo.env)]
    lines = [f"export {' '.join(env)}"]
    if (target := parse_sftp(repo.url)) is not None:
        # The ssh that restic starts gets the kit's key and pinned host key on its command line, as
        # safehold's own does: a ~/.ssh of the reader's would need ssh's idea of home, not $HOME.
        ssh = ["ssh", "-i", f"$KIT/repo-{name}.sshkey", "-o", "IdentitiesOnly=yes"] if repo.ssh_key else ["ssh"]
        if pinned := _pinned(config, name):
            lines.append(_heredoc(f"repo-{name}.known_hosts", pinned))
            ssh += ["-o", f"UserKnownHostsFile=$KIT/repo-{name}.known_hosts", "-o", "StrictHostKeyChecking=yes"]
        ssh += ["-p", str(target.port), *(["-l", target.user] if target.user else []), target.host, "-s", "sftp"]
        command = " ".join(ssh)
        lines.append(f'restic() {{ command restic -o sftp.command="{command}" "$@"; }}')
    return "\n".join(lines)


def _instance_toml(config: Config, name: str) -> tuple[list[str], list[str], list[tuple[str, str]]]:
    """The instance's TOML section, with database passwords moved into kit files; steps and rows for them."""
    data = config.instances[name].model_dump(mode="json", exclude_defaults=True)
    data["repositories"] = config.instances[name].repositories
    steps: list[str] = []
    rows: list[tuple[str, str]] = []
    for index, db in enumerate(config.instances[name].databases):
        if not db.password:
            continue
        try:
            value = resolve(db.password, f"instances.{name}.databases.{index}.password").reveal()
        except SafeholdError:
            rows.append((f"{name}: {db.password}", "(not available on this host: provide it on the new machine)"))
            continue
        steps.append(_heredoc(f"db-{name}-{index}.pass", value))
        rows.append((f"{name}: database password ({', '.join(db.names) or db.path})", value))
        data["databases"][index]["password"] = f"file:{PLACEHOLDER}/db-{name}-{index}.pass"
    toml = [f"[instances.{name}]"] + [f"{key} = {toml_value(value)}" for key, value in data.items()]
    return toml, steps, rows


def _escrowed(config: Config) -> list[tuple[str, str]]:
    """Application keys as (label, value): what each profile keeps in its points (iTop's
    encryption_key, i-doit's crypto hash, ITFlow's keys), then escrow files in state_dir/keys not
    already listed (kept even when an instance's install cannot be read right now)."""
    from safehold.actions.common import describe

    rows: list[tuple[str, str]] = []
    for name in sorted(config.instances):
        try:
            instance, profile, _ = describe(config, name)
            rows += [(f"{name}: {key}", secret.reveal())
                     for key, secret in profile.keys(instance, config.state_dir).items()]
        except SafeholdError as exc:
            rows.append((f"{name}: keys", f"(not read from the install: {exc.message})"))
    listed = {value for _, value in rows}
    for path in sorted((config.state_dir / "keys").glob("*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            rows.append((path.stem, "(unreadable: see " + str(path) + ")"))
            continue
        items = data.items() if isinstance(data, dict) else [("", data)]
        rows += [(f"{path.stem} {key}".strip(), text) for key, v in items
                 if (text := v if isinstance(v, str) else json.dumps(v)) not in listed]
    return rows


def _table(rows: list[tuple[str, str]]) -> str:
    body = "".join(f"<tr><th>{html.escape(k)}</th><td><pre>{html.escape(v)}</pre></td></tr>" for k, v in rows)
    return f"<table>{body}</table>"


def _install(config: Config, instances: list[str]) -> list[str]:
    """The install section: the Debian packages a recovery needs (with safehold or by hand), then
    safehold itself from the wheel kept with the kit."""
    engines = sorted({db.engine for name in instances for db in config.instances[name].databases})
    packages = ["restic", "openssh-client", "tar", "zstd", *(p for e in engines for p in ENGINE_PACKAGES[e])]
    safehold = ("apt-get install -y python3-venv python3-dev build-essential pkg-config libmariadb-dev\n"
                "python3 -m venv /opt/safehold\n"
                f"/opt/safehold/bin/pip install /PATH/TO/{WHEEL}    # or: /PATH/TO/safehold-source-tree\n"
                "ln -s /opt/safehold/bin/safehold /usr/local/bin/safehold")
    return [
        "<h2>3. Install the tools on the new machine</h2>",
        "<p>Debian 12, as root. These packages are all a recovery by hand (section 5) needs:</p>",
        f"<pre class='install'>apt-get update && apt-get install -y {' '.join(packages)}</pre>",
        *_host_needs(config, instances),
        "<p>safehold is installed from its own files, not by name from PyPI: from the wheel kept with this page, "
        f"<code>{WHEEL}</code>, or from a copy of its source tree. pip fetches safehold's dependencies from PyPI "
        "and compiles one of them (mysqlclient), hence the compiler and headers:</p>",
        f"<pre class='install'>{html.escape(safehold)}</pre>",
    ]


def _host_needs(config: Config, instances: list[str]) -> list[str]:
    """Per instance, what this host gives it (PHP version and extensions for a PHP app, the web server) as
    the Debian packages to install before restoring it; nothing for an instance that needs none."""
    from safehold.apps import profile_for

    found = hostinfo.requirements(php=any(profile_for(config.instances[n].app).RUNS_ON_PHP for n in instances))
    lines: list[str] = []
    for name in instances:
        app = config.instances[name].app
        needs = found if profile_for(app).RUNS_ON_PHP else found.model_copy(update={"php_version": None,
                                                                                    "php_extensions": []})
        if not needs.packages():
            continue
        ran = f"PHP {needs.php_version} with {len(needs.php_extensions)} extensions" if needs.php_version else ""
        web = f"web server: {', '.join(needs.web_servers)}" if needs.web_servers else "no web server found"
        pecl = (f" Not packaged by Debian (PECL): {', '.join(needs.without_package())}."
                if needs.without_package() else "")
        lines += [f"<p>Instance <b>{html.escape(name)}</b> ({html.escape(app)}) runs here on "
                  f"{html.escape(', '.join(filter(None, (ran, web))))}. Install these packages before restoring it "
                  f"(a restore warns about a PHP extension the point had and the new host lacks):{html.escape(pecl)}"
                  "</p>",
                  f"<pre class='install' data-instance='{html.escape(name)}'>apt-get install -y "
                  f"{html.escape(' '.join(needs.packages()))}</pre>"]
    return lines


def _by_hand(config: Config, repo_names: list[str], instances: list[str]) -> list[str]:
    """The by-hand section: the same recovery with restic and the database clients, no safehold
    (the steps of docs/export.md "Restoring by hand", on a point in the repository)."""
    first = instances[0] if instances else "NAME"
    commands = "\n".join(f"{command:<42}# {why}" for command, why in (
        (f"restic snapshots --tag instance={first}", "every part of every point: tags run=RUN, part=..."),
        ("restic dump ID /safehold/manifest.json", "ID: the run's part=manifest snapshot; what the point holds"),
        ("restic restore ID --target /", "the run's part=files snapshot: files and config files"),
        ("restic dump ID /safehold/db/FILE > FILE", "a part=db:... snapshot: the dump the manifest names")))
    return [
        "<h2>5. Or by hand, without safehold</h2>",
        "<p>Run the commands of section 4 that write files (all but the <code>safehold</code> lines): they need no "
        "safehold. Then open one repository with plain restic:</p>",
        *[f"<h3>{html.escape(name)}</h3><pre class='manual'>{html.escape(_restic_by_hand(config, name))}</pre>"
          for name in repo_names],
        f"<p>and take the newest point apart (instance {html.escape(first)} here; the others alike):</p>",
        f"<pre class='manual'>{html.escape(commands)}</pre>",
        "<p>Load each dump with its database's tools: a MariaDB dump ending in <code>.tar</code> (safehold's "
        "default format) with the script inside it, <code>tar -xOf FILE restore.sh &gt; restore.sh; bash restore.sh "
        "FILE DATABASE</code> (mariadb client options after it, e.g. <code>--defaults-extra-file=FILE -h "
        "HOST</code>; it creates the database and checks every table's row count); a <code>.sql</code> dump with "
        "<code>mariadb DATABASE &lt; FILE</code> into a new empty database; a PostgreSQL dump with <code>pg_restore "
        "-d DATABASE FILE</code>; an SQLite dump is the database file itself. Compare the row counts with the "
        "manifest, put back the application keys of section 2 if its restored config does not hold them, and "
        "check the application. safehold's docs/export.md (\"Restoring by hand\") explains each step.</p>",
    ]


def render(config: Config) -> str:
    """The kit page (HTML)."""
    instances = sorted(config.instances)
    repo_names = list(dict.fromkeys(r for i in instances for r in config.instances[i].repositories))
    setup = ["mkdir -p safehold-recovery && cd safehold-recovery && umask 077 && KIT=\"$PWD\""]
    toml = ["[settings]", f"state_dir = {toml_value(f'{PLACEHOLDER}/state')}", ""]
    sections = []
    for name in repo_names:
        steps, repo_toml, rows = _repository_steps(config, name)
        setup += steps
        toml += [*repo_toml, ""]
        sections.append(f"<h3>{html.escape(name)}: <code>{html.escape(config.repositories[name].url)}</code></h3>"
                        + _table(rows))
    db_rows: list[tuple[str, str]] = []
    for name in instances:
        instance_toml, steps, rows = _instance_toml(config, name)
        toml += [*instance_toml, ""]
        setup += steps
        db_rows += rows
    # Escrowed keys go back where the profiles look for them, so `safehold key verify` works there too.
    for path in sorted((config.state_dir / "keys").glob("*.json")):
        with contextlib.suppress(OSError):
            setup.append(f"mkdir -p state/keys && {_heredoc(f'state/keys/{path.name}', path.read_text())}")
    setup.append(_heredoc("safehold.toml", "\n".join(toml)))
    setup.append(f'sed -i "s#{PLACEHOLDER}#$KIT#g" safehold.toml && export SAFEHOLD_CONFIG="$KIT/safehold.toml"')
    # The new state folder makes a key of its own: exports this host signed stay restorable there.
    signer = signing.own_public(config.state_dir)
    setup.append(f"safehold trust add '{signer.line}'")
    restore = [f"safehold list {name} && safehold restore {name} latest" for name in instances]
    escrow = _escrowed(config)
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>safehold recovery kit</title>",
        f"<style>{STYLE}</style></head><body>",
        "<p class='secret'>SECRET — this page opens every backup listed below. Print it, keep the paper in a safe, "
        "and delete this file. Anyone holding it can read all backed-up data.</p>",
        f"<h1>safehold recovery kit</h1><p>Host {html.escape(socket.gethostname())}, written "
        f"{now().strftime('%Y-%m-%d %H:%M UTC')}, instances: {html.escape(', '.join(instances))}.</p>",
        # The new machine has no safehold, and the recovery steps need one (section 3).
        f"<p>Keep with the paper a copy of safehold to install on a new machine: the wheel <code>{WHEEL}</code> "
        "(it holds no secret), made from safehold's source tree with <code>python3 -m pip wheel --no-deps -w DIR "
        "SOURCE_TREE</code>. Without it, section 5 recovers with restic and the database clients alone.</p>",
        "<h2>1. Repositories (where the recovery points are) and their passwords</h2>", *sections,
        "<h2>2. Escrowed application keys</h2>",
        _table(escrow) if escrow else "<p>No application keys were escrowed on this host (none needed).</p>",
        "<h3>Export signing key (public: not a secret)</h3>",
        "<p>Every export this host writes is signed with this key. Another installation restores them once it "
        "trusts it (<code>safehold trust add 'KEY'</code>, done by the steps below), or with "
        "<code>--trust-signer FINGERPRINT</code> after comparing the fingerprint it names with this one.</p>",
        _table([("fingerprint", signer.fingerprint), ("key", signer.line)]),
    ]
    if db_rows:
        parts += ["<h2>Database passwords</h2>",
                  "<p>The steps below write them next to the config; change them there if the new database "
                  "server uses other accounts.</p>", _table(db_rows)]
    parts += [
        *_install(config, instances),
        "<h2>4. Restore with safehold</h2>",
        "<p>Run these commands in a shell, in order, in an empty working folder. They write the repository "
        "secrets (mode 0600) and a minimal safehold.toml; no other file is needed.</p>",
        *[f"<pre class='step'>{html.escape(step)}</pre>" for step in setup],
        "<p>Create the databases' server (empty) and the application's folders' parents, then restore the newest "
        "point (a run id from <code>safehold list</code> restores an older one):</p>",
        *[f"<pre class='step'>{html.escape(step)}</pre>" for step in restore],
        "<p>Last, restore the application's escrowed keys listed above if its profile does not do it, and check "
        "the application.</p>",
        *_by_hand(config, repo_names, instances),
        "</body></html>",
    ]
    return "\n".join(parts)


def _default_kit(config: Config) -> Path:
    return config.state_dir / "recovery-kit.html"


def _kit_record(config: Config) -> Path:
    # Where kits were written, one path a line: a password change names the files it made stale.
    return config.state_dir / "recovery-kits.txt"


def written_kits(config: Config) -> list[Path]:
    """Kit files written on this host that still exist (they hold the passwords of the day they were written)."""
    try:
        recorded = [Path(line) for line in _kit_record(config).read_text().splitlines() if line.strip()]
    except OSError:
        recorded = []
    return [path for path in dict.fromkeys([_default_kit(config), *recorded]) if path.is_file()]


def write_kit(config: Config, output: Path | None, reporter: Reporter) -> dict[str, object]:
    """Write the kit once (never overwriting), mode 0600; returns where."""
    path = output or _default_kit(config)
    page = render(config)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise SafeholdError(f"{path} already exists; a recovery kit is written once",
                            "move the old one away (and shred printed copies you replace), or use --output") from None
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(page)
    with contextlib.suppress(OSError), _kit_record(config).open("a", encoding="utf-8") as record:
        record.write(f"{path.absolute()}\n")
    reporter.warn(f"{path} holds every repository password: print it, store it safely, then delete the file")
    return {"path": str(path), "repositories": sorted({r for i in config.instances.values() for r in i.repositories}),
            "escrowed_keys": len(_escrowed(config))}
