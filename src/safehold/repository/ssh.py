"""SFTP repositories: the ssh command restic runs, with host-key checking that never gives way.

restic's own sftp backend calls `ssh` with whatever the user's ssh config says. safehold instead
hands restic a complete `sftp.command`: strict host-key checking against a known_hosts file that
safehold owns (from the config's `known_hosts` lines, or pinned once by `safehold repo trust`),
an explicit identity file, and batch mode so a prompt can never hang a night run. The command
holds paths and the host name only, never a secret.
"""

from __future__ import annotations

import base64
import contextlib
import os
import re
import shlex
import stat
from pathlib import Path

from safehold import runner
from safehold.config import Config, RepositoryConfig
from safehold.errors import ConfigError, RepositoryError
from safehold.secrets import check_private_file, write_private
from safehold.sftp_url import SftpTarget, parse_sftp

CONNECT_TIMEOUT_SECONDS = 15


def known_hosts_file(config: Config, name: str) -> Path:
    """The known_hosts file safehold keeps for one repository."""
    return config.state_dir / "ssh" / f"{name}.known_hosts"


def ssh_log_file(config: Config, name: str) -> Path | None:
    """The name of ssh's error log for an sftp repository (restic may exit before relaying the errors).

    Each restic call writes to its own file derived from this name (see Repository._call).
    """
    return config.state_dir / "ssh" / f"{name}.log" if parse_sftp(config.repositories[name].url) else None


def _key_path(name: str, repo: RepositoryConfig) -> Path | None:
    if repo.ssh_key is None:
        return None
    if repo.ssh_key.startswith("env:"):
        raise ConfigError(f"repositories.{name}.ssh_key must be a key file", 'use ssh_key = "/path/to/key" (0600)')
    path = Path(repo.ssh_key.removeprefix("file:")).expanduser()
    check_private_file(path, f"repositories.{name}.ssh_key")
    _refuse_passphrase(name, path)
    return path


OPENSSH_KEY = re.compile(r"-----BEGIN OPENSSH PRIVATE KEY-----(.*?)-----END OPENSSH PRIVATE KEY-----", re.S)
OPENSSH_MAGIC = b"openssh-key-v1\0"


def _ssh_strings(blob: bytes, count: int, offset: int) -> tuple[list[bytes], int]:
    """`count` length-prefixed strings of an SSH wire-format blob from `offset`, and the offset after them."""
    found = []
    for _ in range(count):
        size = int.from_bytes(blob[offset:offset + 4], "big")
        if offset + 4 + size > len(blob):
            raise ValueError("truncated key")
        found.append(blob[offset + 4:offset + 4 + size])
        offset += 4 + size
    return found, offset


def encrypted_key(text: str) -> tuple[bool, bytes | None]:
    """Whether a private key file's text is encrypted, and its public key blob when the file shows it.

    An OpenSSH key names its cipher (`none` when it has no passphrase) and carries the public key
    in the clear; a PEM key says ENCRYPTED in its header (PKCS#1) or its label (PKCS#8).
    """
    if match := OPENSSH_KEY.search(text):
        try:
            blob = base64.b64decode("".join(match[1].split()), validate=True)
            if not blob.startswith(OPENSSH_MAGIC):
                raise ValueError("not an openssh-key-v1 key")
            (cipher, _kdf, _kdf_options), offset = _ssh_strings(blob, 3, len(OPENSSH_MAGIC))
            (public,), _ = _ssh_strings(blob, 1, offset + 4)  # after the key count
        except ValueError:
            return False, None  # damaged: ssh says what is wrong with it
        return cipher != b"none", public
    return "ENCRYPTED" in text.split("\n\n", 1)[0], None


def _public_file(path: Path) -> bytes | None:
    """The public key blob of `path`.pub, where ssh looks for it beside a key whose own text hides it."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        return base64.b64decode(path.with_name(path.name + ".pub").read_text().split()[1], validate=True)
    return None


def _agent_holds(public: bytes | None) -> bool:
    """Whether the ssh-agent safehold runs with (SSH_AUTH_SOCK, passed on to ssh) holds this public key."""
    if public is None or not os.environ.get("SSH_AUTH_SOCK"):
        return False
    try:
        listed = runner.run(["ssh-add", "-L"], what="ssh-add").decode()
    except runner.ProcessFailed:  # no agent at that socket, or one with no key
        return False
    return any(line.split()[1:2] == [base64.b64encode(public).decode()] for line in listed.splitlines())


def _refuse_passphrase(name: str, path: Path) -> None:
    """Refuse a key with a passphrase that no agent holds.

    ssh runs in batch mode, so it cannot ask for the passphrase: it skips the key and the server's
    refusal would read like a wrong user or key.
    """
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return  # ssh reports an unreadable key file
    encrypted, public = encrypted_key(text)
    if encrypted and not _agent_holds(public or _public_file(path)):
        raise ConfigError(f"repositories.{name}.ssh_key {path} has a passphrase, and safehold runs unattended: "
                          "ssh cannot ask for it",
                          f"use a key without one (`ssh-keygen -p -N '' -f {path}` removes it), or run safehold "
                          "with an ssh-agent (SSH_AUTH_SOCK) that holds this key")


def _pin_configured(path: Path, lines: str) -> None:
    """Make `path` hold the config's known_hosts `lines` (mode 0600), writing only when it does not yet.

    Every repository opening (each command, each copy) comes here: rewriting an unchanged file each
    time would churn the state dir and fail where it is read-only to the user running safehold (a
    `safehold list` from a monitoring account). The config is the pin: lines edited there replace
    the file, which ssh then checks strictly, so a changed key is only ever taken from the config.
    """
    content = lines.strip() + "\n"
    with contextlib.suppress(OSError):  # missing or unreadable: written below
        if stat.S_IMODE(path.stat().st_mode) == 0o600 and path.read_text() == content:
            return
    write_private(path, content)


def sftp_command(config: Config, name: str) -> str | None:
    """The `sftp.command` for repository `name` (None when it is not sftp:); writes known_hosts."""
    target = parse_sftp(config.repositories[name].url)
    if target is None:
        return None
    argv = ["ssh", *_options(config, name, target), "-p", str(target.port), "-E", str(ssh_log_file(config, name)),
            "-l", target.user, target.host, "-s", "sftp"]
    return shlex.join(argv)


def remote_entries(config: Config, name: str) -> list[str] | None:
    """What the folder of sftp: repository `name` holds on the server ([] when it does not exist yet), listed
    by OpenSSH's sftp client with the options restic's ssh gets; None when it cannot be listed (a refused
    login, a host key that changed: restic's own init then says why)."""
    target = parse_sftp(config.repositories[name].url)
    assert target is not None
    host = f"[{target.host}]" if ":" in target.host else target.host
    # sftp's own flags differ from ssh's (-P is the port, -l a bandwidth limit): the user goes as an option.
    argv = ["sftp", *_options(config, name, target), "-P", str(target.port), "-o", f"User={target.user}",
            "-b", "-", host]
    quoted = target.path.replace("\\", "\\\\").replace('"', '\\"')
    try:
        out = runner.run(argv, what="sftp", input=f'cd "{quoted}"\nls -1a\n'.encode())
    except runner.ProcessFailed as exc:
        return [] if "no such file" in exc.stderr.lower() else None
    return [line for line in out.decode(errors="replace").splitlines()
            if not line.startswith("sftp> ") and line not in (".", "..")]


def _options(config: Config, name: str, target: SftpTarget) -> list[str]:
    """The options ssh and sftp share for repository `name`: strict checking against the pinned host key,
    batch mode, the configured identity; no user config. Writes known_hosts from the config's lines."""
    repo = config.repositories[name]
    known_hosts = known_hosts_file(config, name)
    if repo.known_hosts:
        _pin_configured(known_hosts, repo.known_hosts)
    elif not known_hosts.is_file():
        raise ConfigError(f"the SSH host key of repository {name} ({target.known_hosts_name}) is not pinned yet",
                          f"run `safehold repo trust {name}` and compare the fingerprint, or set known_hosts")
    # UpdateHostKeys=no: ssh never edits the pinned file itself (it would add keys the server offers),
    # so only the config or `safehold repo trust` change what is trusted.
    options = ["-F", "none", "-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={known_hosts}",
               "-o", "UpdateHostKeys=no", "-o", "GlobalKnownHostsFile=none", "-o", "BatchMode=yes",
               "-o", "LogLevel=ERROR", "-o", f"ConnectTimeout={CONNECT_TIMEOUT_SECONDS}",
               "-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=3"]
    key = _key_path(name, repo)
    if key is not None:
        options += ["-i", str(key), "-o", "IdentitiesOnly=yes"]
    return options


def restic_options(config: Config, name: str) -> list[str]:
    """Extra restic arguments a repository needs (the ssh command for sftp:)."""
    command = sftp_command(config, name)
    return ["-o", f"sftp.command={command}"] if command else []


def scan(target: SftpTarget) -> list[str]:
    """The server's host keys as known_hosts lines, as it presents them now."""
    try:
        out = runner.run(["ssh-keyscan", "-T", str(CONNECT_TIMEOUT_SECONDS), "-p", str(target.port), target.host],
                         what="ssh-keyscan").decode()
    except runner.ProcessFailed as exc:
        raise RepositoryError(f"cannot read the SSH host key of {target.known_hosts_name}: {exc.stderr.strip()[-200:]}",
                              "is the server up and the port right?") from None
    lines = sorted(line for line in out.splitlines() if line.strip() and not line.startswith("#"))
    if not lines:
        raise RepositoryError(f"{target.known_hosts_name} presented no SSH host key",
                              "is the server up and the port right?")
    return lines


def fingerprints(lines: list[str]) -> list[str]:
    """`SHA256:... (ED25519)` for each known_hosts line, as `ssh-keygen -l` prints them."""
    out = runner.run(["ssh-keygen", "-l", "-f", "-"], what="ssh-keygen", input="\n".join(lines).encode() + b"\n")
    result = []
    for line in out.decode().splitlines():
        fields = line.split()
        if len(fields) >= 2:
            result.append(f"{fields[1]} {fields[-1]}")
    return result


def _pins(lines: list[str]) -> set[tuple[str, str, str]]:
    """(host name, key type, key) for each name of each known_hosts line (`a,b ssh-ed25519 AAAA...`)."""
    pins: set[tuple[str, str, str]] = set()
    for line in lines:
        fields = line.split()
        if len(fields) >= 3:
            pins.update((host, fields[1], fields[2]) for host in fields[0].split(","))
    return pins


def trust(config: Config, name: str, accept: bool, replace: bool, confirm: object = None) -> dict[str, object]:
    """Pin an sftp repository's host key on first use (trust on first use, shown, confirmed).

    A key that differs from the pinned one is refused unless `replace`: a changed host key is
    either a reinstalled server or an attack, and only a human can tell which.
    """
    if name not in config.repositories:
        raise ConfigError(f"no repository {name!r} in {config.source}",
                          f"known repositories: {', '.join(sorted(config.repositories)) or 'none'}")
    target = parse_sftp(config.repositories[name].url)
    if target is None:
        raise ConfigError(f"repository {name} is not an sftp: repository", "only sftp: repositories have host keys")
    if config.repositories[name].known_hosts:
        raise ConfigError(f"repository {name} pins its host key in the config (known_hosts)",
                          "edit known_hosts there, or remove it to pin with `safehold repo trust`")
    lines = scan(target)
    prints = fingerprints(lines)
    path = known_hosts_file(config, name)
    result: dict[str, object] = {"repository": name, "host": target.known_hosts_name, "fingerprints": prints,
                                 "known_hosts": str(path)}
    if path.is_file():
        # ssh finds a key by the URL's host name: keys pinned under another name (the URL changed from
        # an address to a name) do not let it in, so they are neither "already pinned" nor a change.
        pinned = _pins(path.read_text().splitlines())
        if _pins(lines) <= pinned:
            return {**result, "pinned": True, "changed": False}
        if any(host == target.known_hosts_name for host, _, _ in pinned) and not replace:
            raise RepositoryError(f"the SSH host key of {target.known_hosts_name} differs from the pinned one "
                                  f"(now {', '.join(prints)})",
                                  f"if the server was reinstalled, check the fingerprint with its admin, then run "
                                  f"`safehold repo trust {name} --replace`")
    if not accept and not (callable(confirm) and confirm(target.known_hosts_name, prints)):
        # Without a terminal nothing was shown yet: the line itself carries what to compare.
        raise RepositoryError(f"host key of {target.known_hosts_name} ({', '.join(prints)}) not accepted",
                              "compare the fingerprint with the server's, then rerun with --yes")
    write_private(path, "\n".join(lines) + "\n")
    return {**result, "pinned": True, "changed": True}
