"""One restic process: its password file, environment and options, this host's turn on the repository,
another host's lock waited out, and the repository opened (probed, initialised, remembered).

The password reaches restic only as RESTIC_PASSWORD_FILE (a 0600 file in a private folder that lives
as long as the call); backend credentials go in the environment, never argv.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import re
import shlex
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from safehold import runner
from safehold.config import local_path
from safehold.errors import RepositoryError, SafeholdError
from safehold.lock import repository_lock
from safehold.output import Reporter
from safehold.repository import s3
from safehold.repository.restic.errors import (
    RepositoryLocked,
    RepositoryMissing,
    explain,
    read_only_error,
)
from safehold.secrets import Secret, mask_url, secret_files
from safehold.sftp_url import parse_sftp

T = TypeVar("T")
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


def index_repair_command(version: tuple[int, int, int]) -> list[str]:
    """restic's subcommand that rebuilds the index from the pack files present (renamed in 0.16)."""
    return ["repair", "index"] if version >= (0, 16, 0) else ["rebuild-index"]




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


class ResticProcess:
    """One restic repository as configured, with its secrets resolved: what every restic process of it
    needs (the facade `Repository` adds writing, reading and maintenance)."""

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
        target = None
        with contextlib.suppress(SafeholdError):
            target = parse_sftp(self.url)
        error = explain(stderr, name or self.name, target.host if target else None)
        if name is None and isinstance(error, RepositoryMissing) and self.known_file is not None and self._known():
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
