"""`safehold key kit`: a printable page with everything needed to recover on a bare machine.

The page holds the repository locations and passwords (and their access credentials), the
escrowed application keys, and the restore steps as shell commands that rebuild a minimal
safehold.toml from nothing. It is written once (never overwritten, so an old printed copy and
the file cannot silently differ) with mode 0600, and says on top that it is a secret.
"""

from __future__ import annotations

import contextlib
import html
import json
import os
import socket
from pathlib import Path
from typing import Any

from safehold.config import Config
from safehold.errors import SafeholdError
from safehold.output import Reporter
from safehold.repository.manifest import now
from safehold.repository.sftp_url import parse_sftp
from safehold.repository.ssh import known_hosts_file
from safehold.secrets import resolve

PLACEHOLDER = "@KIT@"
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
        pinned = repo.known_hosts or (known_hosts_file(config, name).read_text()
                                      if known_hosts_file(config, name).is_file() else "")
        if pinned:
            toml.append(f"known_hosts = {toml_value(pinned.strip())}")
            rows.append(("SSH host key (known_hosts)", pinned.strip()))
        if repo.ssh_key:
            key_text = Path(repo.ssh_key.removeprefix("file:")).expanduser().read_text()
            steps.append(_heredoc(f"repo-{name}.sshkey", key_text))
            rows.append(("SSH private key", key_text))
            toml.append(f"ssh_key = {toml_value(f'{PLACEHOLDER}/repo-{name}.sshkey')}")
    return steps, toml, rows


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
    restore = [f"safehold list {name} && safehold restore {name} latest" for name in instances]
    escrow = _escrowed(config)
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>safehold recovery kit</title>",
        f"<style>{STYLE}</style></head><body>",
        "<p class='secret'>SECRET — this page opens every backup listed below. Print it, keep the paper in a safe, "
        "and delete this file. Anyone holding it can read all backed-up data.</p>",
        f"<h1>safehold recovery kit</h1><p>Host {html.escape(socket.gethostname())}, written "
        f"{now().strftime('%Y-%m-%d %H:%M UTC')}, instances: {html.escape(', '.join(instances))}.</p>",
        "<h2>1. Repositories (where the recovery points are) and their passwords</h2>", *sections,
        "<h2>2. Escrowed application keys</h2>",
        _table(escrow) if escrow else "<p>No application keys were escrowed on this host (none needed).</p>",
    ]
    if db_rows:
        parts += ["<h2>Database passwords</h2>",
                  "<p>The steps below write them next to the config; change them there if the new database "
                  "server uses other accounts.</p>", _table(db_rows)]
    parts += [
        "<h2>3. Restore on a new machine</h2>",
        "<p>Install the tools (Debian 12): </p><pre class='install'>apt-get install restic mariadb-client "
        "openssh-client python3-pip\npip install safehold</pre>",
        "<p>Then run these commands in a shell, in order, in an empty working folder. They write the repository "
        "secrets (mode 0600) and a minimal safehold.toml; no other file is needed.</p>",
        *[f"<pre class='step'>{html.escape(step)}</pre>" for step in setup],
        "<p>Create the databases' server (empty) and the application's folders' parents, then restore the newest "
        "point (a run id from <code>safehold list</code> restores an older one):</p>",
        *[f"<pre class='step'>{html.escape(step)}</pre>" for step in restore],
        "<p>Last, restore the application's escrowed keys listed above if its profile does not do it, and check "
        "the application. By hand, without safehold: <code>restic -r URL snapshots --tag safehold</code> lists "
        "the parts of every point (tags <code>run=</code>, <code>part=</code>); <code>restic -r URL restore ID "
        "--target /</code> restores a files part and <code>restic -r URL dump ID /safehold/db/FILE</code> prints "
        "a database dump; a MariaDB dump ending in <code>.tar</code> loads with the script inside it: "
        "<code>tar -xOf FILE restore.sh &gt; restore.sh; bash restore.sh FILE DATABASE</code> (mariadb client "
        "options after it, e.g. <code>--defaults-extra-file=FILE -h HOST</code>).</p>",
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
