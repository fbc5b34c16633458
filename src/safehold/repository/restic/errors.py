"""restic's stderr turned into one line that says what happened and what to do, and the errors a
run meets on its sources and targets (unreadable files, a full restore target)."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safehold.errors import RepositoryError, SafeholdError
from safehold.secrets import mask_url


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


# ssh (restic's sftp transport) dying mid-run: the session was cut (traffic dropped, server gone).
LOST_CONNECTION = (r"ssh command exited|exit status 255|connection reset by peer|broken pipe|connection closed by|"
                   r"client_loop: send disconnect|connection to .* closed")


def explain(stderr: str, repo: str, host: str | None = None) -> RepositoryError:
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
    if host is not None and re.search(LOST_CONNECTION, text):  # an sftp repository's ssh session
        return RepositoryError(f"repository {repo}: the connection to {host} was lost (ssh exited "
                               "mid-run)", "what the other repositories hold is intact and nothing stored here is "
                               "lost (restic writes whole files only); check the network and the server, then run "
                               "again: the next run copies what is missing")
    last = next((line for line in reversed(stderr.strip().splitlines()) if line.strip()), "no message")
    # restic may quote the repository URL, with a rest: server's password in it.
    return RepositoryError(f"repository {repo}: restic failed: {mask_url(last)[:300]}", "see the log above for details")

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


def read_only_error(repo: str) -> RepositoryError:
    """A command that must write refused up front (restic itself would retry its lock for ~45 s)."""
    return RepositoryError(f"repository {repo} is on a read-only file system",
                           "backups, retention and repairs write to it: remount it read-write or use a writable "
                           "location (listing, verifying and restoring work as it is)")
