"""restic, the storage engine. Every restic call goes through this module.

The password reaches restic only as RESTIC_PASSWORD_FILE (a 0600 file in a private folder that
lives as long as the call); backend credentials go in the environment, never argv. Output is read
with --json where restic offers it; errors are translated from restic's stderr into one line.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import json
import logging
import os
import re
import shlex
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any, TypeVar

from safehold import runner
from safehold.config import local_path
from safehold.errors import RepositoryError, SafeholdError
from safehold.lock import repository_lock
from safehold.output import Reporter
from safehold.repository import s3
from safehold.secrets import Secret, mask_url, secret_files

T = TypeVar("T")
TAG = "safehold"
COPY_BUFFER = 1 << 20
UNREADABLE_SOURCE = 3  # restic backup: snapshot stored, some source files could not be read
# What a fresh file system holds before anything was put on it: a repository may still be created there.
FRESH_FOLDER_ENTRIES = {"lost+found"}


@functools.cache
def restic_version() -> tuple[int, int, int]:
    """The installed restic version; newer flags are used only when present."""
    try:
        out = runner.run(["restic", "version"], what="restic version").decode()
    except runner.ProcessFailed:
        raise RepositoryError(
            "restic is not installed", "install it: apt-get install restic (0.14 or newer)"
        ) from None
    match = re.search(r"restic (\d+)\.(\d+)\.(\d+)", out)
    if not match:
        raise RepositoryError(f"cannot read restic's version from {out.strip()!r}", "reinstall restic")
    return int(match[1]), int(match[2]), int(match[3])


class RepositoryMissing(RepositoryError):
    """No repository at the URL (restic finds no config file there): a new one may be created."""


class RepositoryLocked(RepositoryError):
    """restic found another process's lock in the way (another host's run: this host's take turns)."""


LOCKED = "repository is already locked"


class RepositoryDamaged(RepositoryError):
    """Data the snapshots need is lost or does not match its checksum.

    `unsafe`: the index still lists that data, so a backup would deduplicate against it and make a
    point that cannot be restored. Once the index is rebuilt the lost data is no longer known (the
    next backup stores it anew) and only the old snapshots that reference it stay damaged.
    """

    def __init__(self, message: str, hint: str, unsafe: bool) -> None:
        super().__init__(message, hint)
        self.unsafe = unsafe


def index_repair_command(version: tuple[int, int, int]) -> list[str]:
    """restic's subcommand that rebuilds the index from the pack files present (renamed in 0.16)."""
    return ["repair", "index"] if version >= (0, 16, 0) else ["rebuild-index"]


# What safehold's messages tell a person to run on a repository that lost data.
REPAIR = "safehold verify --repair"
# What `check` says of pack files the index lists but the storage lacks: "pack <id>: does not exist",
# or with --read-data "pack <id> failed to download". Only these (and corrupt data) make a backup
# unsafe; after a rebuilt index, check names blobs "not found in index" or "not found in repository".
LOST_PACKS = r"pack [0-9a-f]{8,}:? (does not exist|failed to download)"
# restic's words for stored data that is gone: the lost packs above, reads saying "Load(<data/…>) …
# no such file or directory" or "… file does not exist" (sftp), and a snapshot whose blobs the index
# lacks "id <id> not found in repository". None of them means the repository is missing, so they
# come before that rule.
MISSING_DATA = (LOST_PACKS + r"|<data/[0-9a-f]+>.*(no such file|does not exist|not found)|id [0-9a-f]{64} not "
                r"found in repository")
# Stored data that is there but does not match its hash (bit rot, a truncated upload).
CORRUPT_DATA = r"pack id does not match|ciphertext verification failed|wrong data returned, hash is"
DAMAGED = (MISSING_DATA, CORRUPT_DATA, "repository contains errors")
NOT_A_REPOSITORY = r"unable to open config file|is there a repository at the following location"
# restic's warning that it works without its local cache (a read-only or full home, a hardened service):
# its "read-only file system" or "permission denied" is not the repository's.
CACHE_WARNING = re.compile(r"^unable to open cache: .*$", re.M)


def explain(stderr: str, repo: str) -> RepositoryError:
    """Turn restic's stderr into one line that says what happened and what to do.

    The first rule whose pattern (a regular expression on the lowered text) matches wins, so the
    specific ones come first: a read-only disk makes restic fail to write its lock ("unable to
    create lock"), and a lost pack file reads "does not exist"; neither is a lock held by another
    run or a repository that is not there.
    """
    text = CACHE_WARNING.sub("", stderr.lower())
    damaged_hint = (f"restore the points you need from another repository; then run `{REPAIR}`: it rebuilds the "
                    "index so the next backup stores anew what the sources still hold, and names the points that "
                    "stay damaged")
    rules: list[tuple[str, str, str]] = [
        ("wrong password|no key found", f"wrong password for repository {repo}", "check its password reference"),
        ("host key is known for", f"repository {repo}: the server's SSH host key is not pinned",
         f"run `safehold repo trust {repo}` and compare the fingerprint, or set known_hosts"),
        ("has changed and you have requested strict checking|remote host identification has changed",
         f"repository {repo}: SSH host key CHANGED",
         f"refused; if the server was reinstalled, check its fingerprint, then `safehold repo trust {repo} --replace`"),
        ("host key verification failed", f"repository {repo}: SSH host key does not match",
         "verify the server's key, then update known_hosts for this repository"),
        ("identity file", f"repository {repo}: SSH key file not usable", "check ssh_key of this repository"),
        (r"permission denied \(publickey", f"repository {repo}: SSH login refused",
         "check the user and ssh_key of this repository"),
        ("connection refused", f"repository {repo}: connection refused", "is the server up and the port right?"),
        ("no route to host", f"repository {repo}: host unreachable", "check the network and the host name"),
        ("could not resolve|no such host", f"repository {repo}: host name not found", "check the repository URL"),
        # restic's Go errors say "timeout", ssh says "Connection timed out" (its log; restic then only says EOF).
        ("timeout|timed out", f"repository {repo}: connection timed out", "check the network"),
        ("invalidaccesskeyid", f"repository {repo}: S3 access key rejected", "check the access key reference"),
        ("access key id you provided does not exist", f"repository {repo}: S3 access key rejected",
         "check AWS_ACCESS_KEY_ID of this repository"),
        ("signature we calculated does not match", f"repository {repo}: S3 secret key rejected",
         "check AWS_SECRET_ACCESS_KEY of this repository"),
        ("signaturedoesnotmatch", f"repository {repo}: S3 secret key rejected", "check the secret key reference"),
        ("access denied", f"repository {repo}: access denied", "check the credentials and bucket policy"),
        ("nosuchbucket|bucket does not exist", f"repository {repo}: bucket does not exist",
         "create the bucket or fix the URL"),
        # restic writes a lock file even to read: on a read-only disk every command fails with this.
        ("read-only file system", f"repository {repo} is on a read-only file system",
         "restic must write its lock files there, even to read: remount it read-write, or use a writable location"),
        ("no space left on device", f"repository {repo}: disk full", "free space or move the repository"),
        ("permission denied", f"repository {repo}: permission denied", "check who owns the repository path"),
        (MISSING_DATA, f"repository {repo} is damaged: data its snapshots need is missing (lost pack or index files)",
         damaged_hint),
        (CORRUPT_DATA, f"repository {repo} is damaged: stored data does not match its checksum",
         f"restore from another repository; `restic check --read-data` names the damaged pack files: remove them, "
         f"then run `{REPAIR} --read-data`"),
        ("repository contains errors", f"repository {repo} is damaged: restic check found errors",
         damaged_hint),
        (LOCKED, f"repository {repo} is locked by another run",
         "wait for it, or run `safehold verify` to clear stale locks"),
        # Not "already locked": restic could not write its lock file, for a reason the lines above did not name.
        ("unable to create lock", f"repository {repo}: restic cannot write its lock file",
         "check that the repository location is writable (mounted read-write, permissions, free space)"),
        # A point whose part snapshot was forgotten behind safehold's back (restic forget by hand).
        ("no matching id found", f"repository {repo}: a snapshot this point needs is not in the repository",
         "the point is incomplete: use another one (`safehold list`) or copy it from another repository"),
        (NOT_A_REPOSITORY, f"repository {repo} does not exist or is not reachable", "check the repository URL"),
    ]
    for pattern, message, hint in rules:
        if re.search(pattern, text):
            if pattern in DAMAGED:
                return RepositoryDamaged(message, hint, bool(re.search(f"{LOST_PACKS}|{CORRUPT_DATA}", text)))
            kind = RepositoryMissing if pattern == NOT_A_REPOSITORY else \
                RepositoryLocked if pattern == LOCKED else RepositoryError
            return kind(message, hint)
    last = next((line for line in reversed(stderr.strip().splitlines()) if line.strip()), "no message")
    # restic may quote the repository URL, with a rest: server's password in it.
    return RepositoryError(f"repository {repo}: restic failed: {mask_url(last)[:300]}", "see the log above for details")


def snapshot_time(snapshot: dict[str, Any]) -> datetime:
    """A snapshot's time; restic writes nanoseconds, which datetime cannot parse."""
    text = re.sub(r"(\.\d{6})\d+", r"\1", snapshot["time"]).replace("Z", "+00:00")
    return datetime.fromisoformat(text)


@dataclass
class Summary:
    """restic's closing summary of a backup."""

    snapshot_id: str
    data_added: int = 0
    total_bytes: int = 0
    files_new: int = 0
    files_changed: int = 0
    raw: dict[str, Any] = field(default_factory=dict)


class _CountingWriter:
    """Wraps restic's stdin so the producer's bytes are counted for progress."""

    def __init__(self, sink: IO[bytes], on_bytes: Callable[[int], None]) -> None:
        self.sink = sink
        self.count = 0
        self.on_bytes = on_bytes

    def write(self, data: bytes | memoryview) -> int:
        self.sink.write(data)
        self.count += len(data)
        self.on_bytes(self.count)
        return len(data)

    def flush(self) -> None:
        self.sink.flush()


# restic restore: "ignoring error for /a/b: write /target/a/b: no space left on device"
TARGET_ERROR = re.compile(r"^ignoring error for .*?: \w+ (/.*): ([^:]+)$", re.M)
TARGET_HINTS = {
    "no space left on device": "free space there, or restore somewhere else with --files-to",
    "read-only file system": "restore somewhere writable with --files-to",
    "permission denied": "restore somewhere writable with --files-to",
}


def target_error(stderr: str, target: Path) -> SafeholdError | None:
    """The error of a restore that could not write under `target` (not the repository's fault), if it is one."""
    for match in TARGET_ERROR.finditer(stderr):
        path, reason = match.group(1), match.group(2).strip()
        if Path(path).is_relative_to(target) and reason.lower() in TARGET_HINTS:
            return SafeholdError(f"cannot write the restored files into {target}: {reason.lower()} ({path})",
                                 TARGET_HINTS[reason.lower()] + "; the recovery point itself is unharmed")
    return None


def literal_pattern(path: str) -> str:
    """`path` as a restic include pattern that selects that path (and what lies in it) and nothing else.

    restic reads `*`, `?`, `[...]` and `\\` in a pattern as wildcards and escapes; in a file name
    they are plain characters (`Invoice [1].pdf`), so they are escaped.
    """
    return re.sub(r"([*?\[\]\\])", r"\\\1", path)


@dataclass
class SourceError:
    """A file restic could not read while backing up, as its --json output reports it."""

    path: str
    errno: int | None
    reason: str

    @property
    def vanished(self) -> bool:
        """Deleted between restic's scan and its read (a temporary file of the running application)."""
        return self.errno == errno.ENOENT or "no such file" in self.reason.lower()

    def __str__(self) -> str:
        return f"{self.path} ({self.reason})" if self.reason else self.path


def source_errors(stdout: list[dict[str, Any]], stderr: str) -> list[SourceError]:
    """The unreadable files of a `restic backup --json` run (restic 0.14 prints them on stderr)."""
    items = [item for item in stdout if item.get("message_type") == "error"]
    for line in stderr.splitlines():
        with contextlib.suppress(ValueError):
            item = json.loads(line) if line.startswith("{") else None
            if isinstance(item, dict) and item.get("message_type") == "error":
                items.append(item)
    result = []
    for item in items:
        error = item.get("error") or {}
        number = error.get("Err") if isinstance(error.get("Err"), int) else None
        reason = str(error.get("message") or (os.strerror(number) if number is not None else ""))
        result.append(SourceError(str(item.get("item") or error.get("Path") or "?"), number, reason))
    return result


def unreadable_files(label: str, errors: list[SourceError]) -> SafeholdError:
    """The error for files restic could not read: the point would lack them, so it is not made.

    restic stores the snapshot anyway (exit code 3); without a manifest it never becomes a
    recovery point, and the message names the files instead of blaming the repository for a
    source file's "permission denied".
    """
    shown = ", ".join(map(str, errors[:3])) + (f" and {len(errors) - 3} more" if len(errors) > 3 else "")
    return SafeholdError(f"{label}: {len(errors) or 'some'} file(s) could not be read{': ' + shown if shown else ''}",
                         "make them readable for the user safehold runs as, or exclude them in the instance's "
                         "`exclude`; the last complete point is unchanged")


LOCK_RETRY_SECONDS = 20  # between tries of a command another host's restic lock is in the way of
# Commands restic runs under its exclusive repository lock (all others take the non-exclusive one).
EXCLUSIVE_COMMANDS = frozenset({"check", "prune", "forget", "rebuild-index", "repair", "migrate"})
# restic commands that only read. On a read-only disk (a write-protected copy, a backup disk mounted
# read-only for a recovery) they run with --no-lock: restic cannot write its lock files there, and
# nothing else could be writing either.
READING_COMMANDS = frozenset({"snapshots", "ls", "dump", "restore", "cat", "check", "stats", "find", "diff"})


def on_read_only_mount(path: Path) -> bool:
    """True when `path` (or its nearest existing parent) lies on a file system mounted read-only."""
    for candidate in (path, *path.parents):
        try:
            return bool(os.statvfs(candidate).f_flag & os.ST_RDONLY)
        except OSError:
            continue
    return False


def read_only_error(repo: str) -> RepositoryError:
    """A command that must write refused up front (restic itself would retry its lock for ~45 s)."""
    return RepositoryError(f"repository {repo} is on a read-only file system",
                           "backups, retention and repairs write to it: remount it read-write or use a writable "
                           "location (listing, verifying and restoring work as it is)")


def _shell_source(secret: Secret, as_file: bool = False) -> str:
    """Where bash finds a secret: its file (or the file's content), or its environment variable."""
    kind, _, where = secret.reference.partition(":")
    if kind == "file":
        path = shlex.quote(str(Path(where).expanduser()))
        return path if as_file else f'"$(cat {path})"'
    if kind == "env":
        return f"<(printenv {where})" if as_file else f'"${where}"'
    return "SECRET_FILE" if as_file else "SECRET"  # a Secret made in code, with no reference to name


@dataclass
class _Call:
    """One restic process's environment and options, and the file its ssh writes errors to (sftp:)."""

    env: dict[str, str]
    options: list[str]
    ssh_log: Path | None
    # The repository's name when it lies on a read-only mount.
    read_only: str | None = None

    def refuse_writing(self, command: str) -> None:
        """Raise when `command` would have to write to a read-only repository."""
        if self.read_only is not None and command not in READING_COMMANDS:
            raise read_only_error(self.read_only)

    def argv(self, *args: str) -> list[str]:
        self.refuse_writing(args[0])
        return ["restic", *self.options, *(["--no-lock"] if self.read_only else []), *args]


@dataclass
class Repository:
    """One restic repository as configured, with its secrets resolved."""

    name: str
    url: str
    password: Secret
    env: dict[str, Secret] = field(default_factory=dict)
    extra_args: list[str] = field(default_factory=list)
    # Where the sftp ssh command writes its errors; each call writes to its own copy of this name.
    ssh_log: Path | None = None
    # Holds the URL's hash once a run has opened the repository here, so later runs skip that check (a
    # restic call costs the key derivation, about half a second).
    known_file: Path | None = None
    # While the repository holds points with lost data, file backups take no parent snapshot (restic
    # would fail on a parent's lost tree) and read every file: set from the damage record.
    read_all: bool = False
    # For a repository on an SFTP server: what its folder there holds ([] when missing, None when it
    # cannot be listed), so a repository is never created beside other files (see ssh.remote_entries).
    remote_entries: Callable[[], list[str] | None] | None = None
    # The flock that makes safehold's restic commands on this host take turns (lock.repository_lock).
    lock_file: Path | None = None
    lock_wait: float = 4 * 3600
    # restic's cache when the environment names none: a systemd service (no User=) has no $HOME, and
    # restic then runs without a cache, reading every index and tree from the storage on each run.
    cache_dir: Path | None = None

    # -- plumbing -------------------------------------------------------------------------

    @property
    def secrets(self) -> list[Secret]:
        return [self.password, *self.env.values()]

    def _explain(self, stderr: str, call: _Call, name: str | None = None) -> RepositoryError:
        """explain(), with ssh's own errors from `call`: restic may exit before it relays them."""
        if call.ssh_log is not None:
            with contextlib.suppress(OSError):
                stderr = call.ssh_log.read_text(errors="replace")[-4000:] + "\n" + stderr
        error = explain(stderr, name or self.name)
        if name is None and isinstance(error, RepositoryMissing) and self._known():
            self.known_file.unlink(missing_ok=True)  # the next run checks again (and may initialise)
            return self._disappeared()
        return error

    def _disappeared(self) -> RepositoryError:
        return RepositoryError(f"repository {self.name} ({mask_url(self.url)}) has disappeared: earlier runs used it",
                               "check the storage (deleted? not mounted?); the next run creates a new, empty "
                               "repository there")

    @property
    def read_only(self) -> bool:
        """True for a repository on this host whose disk is mounted read-only."""
        path = local_path(self.url)
        return path is not None and on_read_only_mount(path)

    def _url_digest(self) -> str:
        # A hash, not the URL: a rest: or s3 URL may carry credentials, and the state dir is not secret.
        return hashlib.sha256(self.url.encode()).hexdigest()

    def _known(self) -> bool:
        try:
            return self.known_file is not None and self.known_file.read_text() == self._url_digest()
        except OSError:
            return False

    @contextlib.contextmanager
    def _call(self, *args: str) -> Iterator[_Call]:
        """Environment and options of one restic process running `args` (its command first).

        Calls run side by side (the read-back lists snapshots while it reads the manifest), so
        each gets its own ssh error log, named after `ssh_log`, removed when the call ends. While the
        call runs it holds the repository's flock on this host (see lock.repository_lock): exclusively
        for the commands restic runs under its exclusive lock, shared for the others.
        """
        with contextlib.ExitStack() as stack:
            if args and "--no-lock" not in args:
                stack.enter_context(self.turn(args[0], args[0] in EXCLUSIVE_COMMANDS))
            yield stack.enter_context(self._process())

    def turn(self, what: str, exclusive: bool) -> contextlib.AbstractContextManager[None]:
        """This host's turn on the repository (see lock.repository_lock), for work around several calls."""
        if self.lock_file is None:
            return contextlib.nullcontext()
        return repository_lock(self.lock_file, exclusive, what, self.lock_wait)

    @contextlib.contextmanager
    def _process(self) -> Iterator[_Call]:
        log = None
        if self.ssh_log is not None:
            self.ssh_log.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd, name = tempfile.mkstemp(prefix=f"{self.ssh_log.stem}.", suffix=".log", dir=self.ssh_log.parent)
            os.close(fd)
            log = Path(name)
        try:
            with secret_files(password=self.password) as files:
                env = {"RESTIC_REPOSITORY": self.url, "RESTIC_PASSWORD_FILE": str(files["password"])}
                if self.cache_dir is not None and not any(
                        os.environ.get(name) for name in ("RESTIC_CACHE_DIR", "XDG_CACHE_HOME", "HOME")):
                    env["RESTIC_CACHE_DIR"] = str(self.cache_dir)
                env.update({key: value.reveal() for key, value in self.env.items()})
                # The ssh command names the log by its path (see ssh.sftp_command); point it at this call's.
                options = [arg.replace(str(self.ssh_log), str(log)) for arg in self.extra_args] if log else \
                    list(self.extra_args)
                yield _Call(env, options, log, self.name if self.read_only else None)
        finally:
            if log is not None:
                log.unlink(missing_ok=True)

    def run(self, *args: str, input: bytes | None = None,
            local_error: Callable[[str], SafeholdError | None] | None = None) -> bytes:
        """Run one restic command to completion; translate failures.

        `local_error` may claim a failure that is not the repository's (a full restore target).
        """
        def attempt() -> bytes:
            with self._call(*args) as call:
                try:
                    return runner.run(call.argv(*args), what=f"restic {args[0]}", env=call.env, input=input,
                                      secrets=self.secrets)
                except runner.ProcessFailed as exc:
                    raise (local_error and local_error(exc.stderr)) or self._explain(exc.stderr, call) from None

        return self._while_locked_elsewhere(args[0], attempt)

    def _while_locked_elsewhere(self, command: str, attempt: Callable[[], T]) -> T:
        """Run `attempt`, again every LOCK_RETRY_SECONDS while a run on another host holds restic's lock.

        restic 0.14 has no --retry-lock; this host's runs wait for each other on a flock, but another
        host's are met as restic's "already locked". restic fails so before it writes anything, so a
        command is simply tried again, up to lock_wait (as long as this host's runs wait for each other).
        """
        deadline, announced = time.monotonic() + self.lock_wait, False
        while True:
            try:
                return attempt()
            except RepositoryLocked as error:
                if time.monotonic() + LOCK_RETRY_SECONDS > deadline:
                    raise
                if not announced:
                    logging.getLogger("safehold").warning("%s: restic %s tries again every %d s", error.message,
                                                          command, LOCK_RETRY_SECONDS)
                    announced = True
            time.sleep(LOCK_RETRY_SECONDS)

    def run_json(self, *args: str) -> Any:
        """Run a restic command with --json and parse its output."""
        out = self.run(*args, "--json")
        return json.loads(out or b"null")

    # -- lifecycle ------------------------------------------------------------------------

    def is_initialised(self) -> bool:
        """True when a repository exists at the URL (and the password opens it)."""
        try:
            self.run("cat", "config")
            return True
        except RepositoryMissing:
            # Only "no config file there": a missing bucket is a mistake to report, not a repository to create
            # (restic would create it), and lost data is damage, not a new repository.
            return False

    def probe(self) -> bool:
        """Whether the repository exists and the password opens it (False: a backup would initialise it),
        changing nothing: no lock file, no init, the record of earlier runs kept.

        Raises what a backup would fail with: a read-only mount, a repository earlier runs used that
        is gone, a folder that holds other files, a wrong password, an unreachable server.
        """
        if self.read_only:
            raise read_only_error(self.name)
        with self._call("cat", "config", "--no-lock") as call:
            try:
                runner.run(call.argv("cat", "config", "--no-lock"), what="restic cat", env=call.env,
                           secrets=self.secrets)
                return True
            except runner.ProcessFailed as exc:
                # Named, so _explain leaves the record of earlier runs alone (a backup would drop it).
                error = self._explain(exc.stderr, call, self.name)
        if not isinstance(error, RepositoryMissing):
            raise error
        if self._known():
            raise self._disappeared()
        self._refuse_occupied_location()
        return False

    def _refuse_occupied_location(self) -> None:
        """Refuse to create a repository in a folder or S3 prefix that holds other files.

        restic would put its own files beside them (a typo in the URL pointing at /srv or at a
        mounted share, a bucket whose repository lives under a prefix, or a repository whose config
        file was lost). A missing or empty location is fine.
        """
        if self.url.startswith("s3:"):
            s3.refuse_occupied(self.name, self.url, self.env)
            return
        path = local_path(self.url)
        if self.remote_entries is not None:
            entries, where = self.remote_entries() or [], mask_url(self.url)
        else:
            try:
                entries, where = [e.name for e in path.iterdir()] if path else [], str(path)
            except OSError:
                return  # missing (restic creates it) or not a folder / not readable (restic's init says why)
        found = sorted(set(entries) - FRESH_FOLDER_ENTRIES)
        if found:
            shown = ", ".join(found[:3]) + (f" and {len(found) - 3} more" if len(found) > 3 else "")
            raise RepositoryError(f"repository {self.name}: {where} is not a restic repository but is not empty either "
                                  f"(it holds {shown}), so no repository is created there",
                                  "point the URL at a new or empty folder, or move those files away")

    def ensure(self, reporter: Reporter) -> None:
        """Open the repository for writing, initialising it (with a clear message) on first use."""
        if self.read_only:
            raise read_only_error(self.name)
        if self._known():
            return
        if not self.is_initialised():
            self._refuse_occupied_location()
            reporter.step(f"repository {self.name} ({mask_url(self.url)}) is new: initialising it")
            self.run("init")
        self._remember()

    def _remember(self) -> None:
        """Record that runs use the repository at this URL: if it is gone later, that is reported."""
        if self.known_file is not None:
            self.known_file.parent.mkdir(parents=True, exist_ok=True)
            self.known_file.write_text(self._url_digest())

    def _run_with(self, source: Repository, *args: str) -> bytes:
        """Run restic on this repository with `source` as --from-repo, both given by environment."""
        secrets = [*self.secrets, *source.secrets]
        # The source is only read (restic takes its non-exclusive lock there), the target written.
        with self._call(*args) as call, source._call("snapshots") as from_call:
            env = {**call.env, **{key: value.reveal() for key, value in source.env.items()},
                   "RESTIC_FROM_REPOSITORY": source.url, "RESTIC_FROM_PASSWORD_FILE": from_call.env[
                       "RESTIC_PASSWORD_FILE"]}
            # -o options (the sftp command) are global in restic 0.14, so the source's come first and ours win.
            call.refuse_writing(args[0])
            argv = ["restic", *from_call.options, *call.options, *args]
            try:
                return runner.run(argv, what=f"restic {args[0]}", env=env, secrets=secrets)
            except runner.ProcessFailed as exc:
                text = exc.stderr.lower()
                # Say which side failed: restic names the source repository as "source" / its URL.
                if "source" in text or source.url.lower() in text:
                    raise source._explain(exc.stderr, from_call) from None
                raise self._explain(exc.stderr, call) from None

    def ensure_copy_of(self, source: Repository, reporter: Reporter) -> None:
        """Open this repository, initialising it with `source`'s chunker so copies deduplicate.

        A copy that earlier runs used is not created anew when it is gone, as in ensure(): an
        unmounted backup disk leaves an empty mount point, and every point would be copied there.
        """
        if self._known():
            return
        if not self.is_initialised():
            self._refuse_occupied_location()
            reporter.step(f"repository {self.name} ({mask_url(self.url)}) is new: initialising it as a copy of "
                          f"{source.name}")
            self._run_with(source, "init", "--copy-chunker-params")
        self._remember()

    def copy_from(self, source: Repository, snapshot_ids: Sequence[str]) -> None:
        """Copy snapshots (and only the data they need) from `source`; restic skips ones already here."""
        if snapshot_ids:
            self._run_with(source, "copy", *snapshot_ids)

    def unlock_stale(self) -> None:
        """Remove only locks restic can prove dead (same host, process gone, or too old)."""
        if not self.read_only:  # none can be left where nothing can write
            self.run("unlock")

    # -- writing --------------------------------------------------------------------------

    def _summary(self, lines: list[dict[str, Any]]) -> Summary:
        for item in reversed(lines):
            if item.get("message_type") == "summary":
                return Summary(
                    snapshot_id=item["snapshot_id"],
                    data_added=int(item.get("data_added", 0)),
                    total_bytes=int(item.get("total_bytes_processed", 0)),
                    files_new=int(item.get("files_new", 0)),
                    files_changed=int(item.get("files_changed", 0)),
                    raw=item,
                )
        raise RepositoryError(f"repository {self.name}: restic reported no snapshot", "see the log for details")

    def _read_json_lines(self, stream: IO[bytes], sink: list[dict[str, Any]],
                         on_status: Callable[[dict[str, Any]], None] | None) -> threading.Thread:
        def read() -> None:
            for raw in stream:
                try:
                    item = json.loads(raw)
                except ValueError:
                    continue
                if item.get("message_type") == "status":
                    if on_status:
                        on_status(item)
                else:
                    sink.append(item)

        thread = threading.Thread(target=read, daemon=True)
        thread.start()
        return thread

    def backup_stream(self, filename: str, tags: Sequence[str], producer: Callable[[IO[bytes]], T],
                      reporter: Reporter, label: str, compressed: bool = False) -> tuple[Summary, T]:
        """Store what `producer` writes as one file in a new snapshot (`compressed`: it is already).

        If the producer fails, restic is killed before it sees end-of-input, so no snapshot holding
        a truncated stream is ever created. The producer must be able to start over: it is called
        again when another host's restic lock stopped restic before it read anything.
        """
        # restic ignores the option for format-1 repositories, which never compress.
        args = ["backup", "--stdin", "--stdin-filename", filename, "--json", *(["--compression", "off"] * compressed),
                "--host", socket.gethostname(), *self._tag_args(tags)]
        return self._while_locked_elsewhere("backup", lambda: self._backup_stream_once(args, producer, reporter, label))

    def _backup_stream_once(self, args: list[str], producer: Callable[[IO[bytes]], T], reporter: Reporter,
                            label: str) -> tuple[Summary, T]:
        lines: list[dict[str, Any]] = []
        with self._call(*args) as call:
            child = runner.start(call.argv(*args), what="restic backup", env=call.env, stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, secrets=self.secrets)
            reader = self._read_json_lines(child.stdout, lines, None)
            writer = _CountingWriter(child.stdin, lambda n: reporter.advance(label, n))
            try:
                result = producer(writer)
                child.stdin.close()
            except BaseException as exc:
                child.kill()
                reader.join(timeout=5)
                if isinstance(exc, BrokenPipeError | OSError) and child.popen.returncode:
                    raise self._explain(child.stderr_text(), call) from None
                raise
            try:
                child.wait()
            except runner.ProcessFailed as exc:
                raise self._explain(exc.stderr, call) from None
            reader.join()
        reporter.advance(label, writer.count, writer.count)
        return self._summary(lines), result

    def backup_paths(self, paths: Sequence[Path], tags: Sequence[str], excludes: Sequence[str],
                     reporter: Reporter, label: str) -> Summary:
        """Store file trees (owners, modes, mtimes, symlinks kept by restic) as one snapshot."""
        args = ["backup", "--json", "--host", socket.gethostname(), *self._tag_args(tags), *["--force"] * self.read_all]
        for pattern in excludes:
            args += ["--exclude", pattern]
        args += ["--", *[str(p) for p in paths]]
        return self._while_locked_elsewhere("backup", lambda: self._backup_paths_once(args, reporter, label))

    def _backup_paths_once(self, args: list[str], reporter: Reporter, label: str) -> Summary:
        lines: list[dict[str, Any]] = []

        def status(item: dict[str, Any]) -> None:
            reporter.advance(label, int(item.get("bytes_done", 0)), int(item.get("total_bytes", 0)) or None)

        with self._call(*args) as call:
            child = runner.start(call.argv(*args), what="restic backup", env=call.env, stdin=subprocess.DEVNULL,
                                 stdout=subprocess.PIPE, secrets=self.secrets)
            reader = self._read_json_lines(child.stdout, lines, status)
            stderr = ""
            try:
                child.wait()
            except runner.ProcessFailed as exc:
                if exc.returncode != UNREADABLE_SOURCE:
                    raise self._explain(exc.stderr, call) from None
                stderr = exc.stderr
            reader.join()
        errors = source_errors(lines, stderr)
        if stderr and (not errors or not all(error.vanished for error in errors)):
            raise unreadable_files(label, [error for error in errors if not error.vanished])
        for error in errors:  # files deleted while restic ran: the point holds the tree as it was after
            reporter.warn(f"{label}: {error.path} disappeared while it was being saved")
        return self._summary(lines)

    @staticmethod
    def _tag_args(tags: Sequence[str]) -> list[str]:
        return ["--tag", ",".join([TAG, *tags])]

    # -- reading --------------------------------------------------------------------------

    def snapshots(self, tags: Sequence[str] = ()) -> list[dict[str, Any]]:
        """Snapshots carrying all `tags` (and the safehold tag), oldest first."""
        return self.run_json("snapshots", "--tag", ",".join([TAG, *tags])) or []

    def cat_file(self, snapshot_id: str, path: str) -> bytes:
        """The whole content of one (small) file in a snapshot."""
        return self.run("dump", snapshot_id, path)

    @contextlib.contextmanager
    def open_file(self, snapshot_id: str, path: str, archive: bool = False) -> Iterator[IO[bytes]]:
        """Stream one file (or, with `archive`, a tar of a folder) out of a snapshot.

        A failed read raises after the consumer is done.
        """
        args = ["dump", *(["--archive", "tar"] if archive else []), snapshot_id, path]
        with self._call(*args) as call:
            child = runner.start(call.argv(*args), what="restic dump", env=call.env,
                                 stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, secrets=self.secrets)
            try:
                yield child.stdout
            except BaseException:
                child.kill()
                raise
            try:
                # Drain in blocks: a consumer that stopped early (a check reading only the start of
                # a dump) must not pull the rest of a multi-GB stream into memory.
                while child.stdout.read(1 << 20):
                    pass
                child.wait()
            except runner.ProcessFailed as exc:
                raise self._explain(exc.stderr, call) from None

    def walk(self, snapshot_id: str, paths: Sequence[str] = (), recursive: bool = True) -> Iterator[dict[str, Any]]:
        """Every node of a snapshot (path, type, size, mode, uid, gid, mtime), streamed as `restic ls --json`
        lists them (a tree may hold millions), parents before their content.

        With `paths` (absolute), only those and what lies in them: all of it when `recursive`, else each
        path and its direct content; restic then reads only the folders on the way there.
        """
        args = ["ls", "--json", *(["--recursive"] if recursive and paths else []), snapshot_id, *paths]
        with self._call(*args) as call:
            child = runner.start(call.argv(*args), what="restic ls", env=call.env,
                                 stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, secrets=self.secrets)
            try:
                for raw in child.stdout:
                    item = json.loads(raw)
                    if item.get("struct_type") == "node":
                        yield item
            except BaseException:
                child.kill()
                raise
            try:
                child.wait()
            except runner.ProcessFailed as exc:
                raise self._explain(exc.stderr, call) from None

    def restore(self, snapshot_id: str, target: Path, includes: Sequence[str], reporter: Reporter) -> None:
        """Restore paths of a snapshot under `target` ("/" puts them back where they were)."""
        args = ["restore", snapshot_id, "--target", str(target)]
        for path in includes:
            args += ["--include", literal_pattern(path)]
        reporter.step(f"restoring files from {self.name} into {target}")
        self.run(*args, local_error=lambda stderr: target_error(stderr, target))

    # -- maintenance ----------------------------------------------------------------------

    def forget(self, snapshot_ids: Sequence[str]) -> None:
        """Drop snapshots (data is freed by prune)."""
        if snapshot_ids:
            self.run("forget", *snapshot_ids)

    def prune(self) -> None:
        """Free data no snapshot references; needs the exclusive lock, so clear stale ones first."""
        self.unlock_stale()
        self.run("prune")

    def repair_index(self) -> None:
        """Rebuild the index from the pack files present, so lost data is no longer known and the next
        backup stores it anew; needs the exclusive lock, so clear stale ones first."""
        self.unlock_stale()
        self.run(*index_repair_command(restic_version()))

    def readable(self, snapshot_ids: Sequence[str]) -> bool:
        """Whether the index holds every tree and data blob these snapshots reference.

        `stats --mode raw-data` walks the trees and looks each data blob up without reading it: after a
        rebuilt index, the cheap way to tell which snapshots lost data. Other failures raise.
        """
        try:
            self.run("stats", "--mode", "raw-data", "--json", *snapshot_ids)
        except RepositoryDamaged:
            return False
        return True

    def command_line(self, *args: str) -> str:
        """A restic command line (bash) a person can run on this repository.

        The secrets stay where the config keeps them: RESTIC_PASSWORD_FILE names the password's file
        (or reads its environment variable through a pipe) and the other variables are read from
        theirs, so no secret value is on the line or in any process's argv.
        """
        env = [f"RESTIC_REPOSITORY={shlex.quote(mask_url(self.url))}",
               f"RESTIC_PASSWORD_FILE={_shell_source(self.password, as_file=True)}",
               *[f"{key}={_shell_source(value)}" for key, value in self.env.items()]]
        return " ".join([*env, "restic", *map(shlex.quote, [*self.extra_args, *args])])

    # -- keys (passwords) -----------------------------------------------------------------

    def keys(self) -> list[dict[str, Any]]:
        """The repository's keys: `id` (short in restic 0.14, full later) and `current`, the one this
        password opens; listing them opens the repository, so it also proves the password."""
        return self.run_json("key", "list") or []

    def add_key(self, password: Secret) -> None:
        """Add a key for `password`, handed to restic as a memfd like the current one (never argv)."""
        with self._call("key", "add") as call, secret_files(new_password=password) as files:
            try:
                runner.run(call.argv("key", "add", "--new-password-file", str(files["new_password"])),
                           what="restic key add", env=call.env, secrets=[*self.secrets, password])
            except runner.ProcessFailed as exc:
                raise self._explain(exc.stderr, call) from None

    def remove_key(self, key_id: str) -> None:
        """Remove one key (restic refuses to remove the one this password opens)."""
        self.run("key", "remove", key_id)

    def check(self, read_data: bool = False, subset: str | None = None) -> str:
        """restic's own integrity check, reading all stored data or a `subset` of it (restic's
        --read-data-subset: "5%", "2G", "1/7"); returns its output."""
        self.unlock_stale()
        args = ["check", *(["--read-data"] if read_data else [f"--read-data-subset={subset}"] if subset else [])]
        return self.run(*args).decode(errors="replace")

    def raw_size(self) -> int:
        """Bytes the repository stores (after dedup and compression)."""
        stats = self.run_json("stats", "--mode", "raw-data")
        return int(stats.get("total_size", 0))
