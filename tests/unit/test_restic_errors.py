"""restic's failures, as restic 0.14 words them, become the right one-line diagnosis.

The texts are restic's own (captured from runs against damaged, read-only and locked repositories);
the specific diagnosis must win over a generic one that shares a word ("does not exist", "lock").
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from safehold.errors import RepositoryError
from safehold.repository.restic import Repository, RepositoryDamaged, RepositoryLocked, RepositoryMissing, explain
from safehold.runner import ProcessFailed, run
from safehold.secrets import Secret

FIXTURES = Path(__file__).parent / "fixtures"
PACK = "a8d0f330c874b9d97d5fb234d77a1389a60a76807a5fdc003358000b85912e74"
READ_DATA_MISSING = "".join(
    f"Load(<data/a8d0f330c8>, 2000335, 0) returned error, retrying after {delay}: open /srv/repo/data/a8/{PACK}: "
    "no such file or directory\n" for delay in ("552.330144ms", "1.080381816s", "15.394871241s")) + \
    f"pack {PACK} failed to download: StreamPack: open /srv/repo/data/a8/{PACK}: no such file or directory\n" \
    "Fatal: repository contains errors\n"


def restic_stderr(text: str) -> str:
    """`text` as a failed child's stderr reaches explain(): through the runner's tail of the last lines."""
    with pytest.raises(ProcessFailed) as info:
        run([sys.executable, "-c", "import sys; sys.stderr.write(sys.stdin.read()); sys.exit(1)"],
            input=text.encode())
    return info.value.stderr


@pytest.mark.parametrize(("stderr", "expected"), [
    # `safehold verify`: restic check with one pack file deleted.
    (f"pack {PACK}: does not exist\nFatal: repository contains errors\n", "is damaged: data its snapshots need"),
    # `verify --read-data`: the pack cannot be downloaded.
    (READ_DATA_MISSING, "is damaged: data its snapshots need"),
    # A restore or dump that needs the lost pack.
    (f"cannot dump file: ReadFull(<data/a8d0f330c8>): open /srv/repo/data/a8/{PACK}: no such file or directory",
     "is damaged: data its snapshots need"),
    # The same over sftp, where Go says "file does not exist".
    ("Load(<data/a8d0f330c8>, 0, 0) returned error, retrying after 1.08s: file does not exist\n"
     "cannot dump file: ReadFull(<data/a8d0f330c8>): file does not exist", "is damaged: data its snapshots need"),
    # The index lost (check of a repository whose index files were deleted).
    ("error for tree e7c1fc8e:\n  id e7c1fc8e5268f0b05483290a87259460b5aec6ffaf899000c73773d7d1462144 not found in "
     "repository\nFatal: repository contains errors", "is damaged: data its snapshots need"),
    # check --read-data of a pack with flipped bytes.
    (f"Pack ID does not match, want {PACK}, got d25a6361057c079b2261f67b60e8d247d1d32e634667bb7e496d06206cb2bae8\n"
     "Fatal: repository contains errors", "does not match its checksum"),
    ("cannot dump file: decrypting blob c9431ea5 failed: ciphertext verification failed",
     "does not match its checksum"),
])
def test_damaged_repository_is_called_damaged_with_repair_steps(stderr: str, expected: str) -> None:
    error = explain(restic_stderr(stderr), "main")
    assert type(error) is RepositoryDamaged and expected in error.message, error.line()
    assert "does not exist" not in error.line() and "not reachable" not in error.line()
    assert "safehold verify --repair" in error.hint
    assert "another repository" in error.hint


def test_read_only_repository_is_not_a_lock_held_by_another_run() -> None:
    # restic 0.14 retries writing its lock file ten times, then prints a Go stack trace of ~46 lines below
    # the reason; the runner keeps the last 40 lines, which once held only the trace and "unable to create lock".
    captured = (FIXTURES / "restic-0.14-snapshots-read-only.txt").read_text()
    assert len(captured.splitlines()) > 40
    error = explain(restic_stderr(captured), "main")
    assert "read-only file system" in error.message and "another run" not in error.line()
    assert "remount it read-write" in error.hint


@pytest.mark.parametrize(("stderr", "expected", "kind"), [
    ("unable to create lock in backend: repository is already locked by PID 9257 on vm by root (UID 0, GID 0)\n"
     "lock was created at 2026-11-26 07:23:38 (3.041062176s ago)\nstorage ID 88aad243\n"
     "the `unlock` command can be used to remove stale locks", "is locked by another run", RepositoryLocked),
    # restic without its cache (a read-only home under a hardened service) says so, then fails for its own reason.
    ("unable to open cache: mkdir /root/.cache/restic: read-only file system\nunable to create lock in backend: "
     "repository is already locked by PID 9257 on vm by root (UID 0, GID 0)", "is locked by another run",
     RepositoryLocked),
    ("unable to open cache: mkdir /nonexistent: permission denied\nFatal: wrong password or no key found",
     "wrong password", RepositoryError),
    ("unable to open cache: mkdir /root/.cache/restic: permission denied\nFatal: repository contains errors",
     "is damaged", RepositoryDamaged),
    ("open /srv/repo/locks/1fc7-tmp-1: input/output error\nunable to create lock in backend",
     "cannot write its lock file", RepositoryError),
    ("Fatal: unable to open config file: stat /srv/repo/config: no such file or directory\n"
     "Is there a repository at the following location?\n/srv/repo", "does not exist", RepositoryMissing),
    ("Fatal: unable to open config file: Lstat: file does not exist\nIs there a repository at the following "
     "location?\nsftp:backup@nas:/srv/repo", "does not exist", RepositoryMissing),
    ("Fatal: unable to open config file: Stat: The specified bucket does not exist", "bucket does not exist",
     RepositoryError),
    (f"pack {PACK} failed to download: StreamPack: read tcp 10.0.0.2:50412->10.0.0.5:22: i/o timeout\n"
     "Fatal: repository contains errors", "connection timed out", RepositoryError),
    (f"pack {PACK}: open /srv/repo/data/a8/{PACK}: permission denied\nFatal: repository contains errors",
     "permission denied", RepositoryError),
])
def test_generic_words_do_not_hide_the_cause(stderr: str, expected: str, kind: type) -> None:
    error = explain(restic_stderr(stderr), "main")
    assert type(error) is kind and expected in error.message, error.line()


def test_damage_is_not_taken_for_a_repository_that_disappeared(tmp_path: Path) -> None:
    # A repository earlier runs used and that now lacks a pack is damaged, not gone: the state that lets
    # the next run create a new repository there must stay.
    known = tmp_path / "main.url"
    repo = Repository("main", str(tmp_path / "repo"), Secret("pw-long-enough"), known_file=known)
    known.write_text(repo._url_digest())
    with repo._call() as call:
        error = repo._explain(f"pack {PACK}: does not exist\nFatal: repository contains errors", call)
        assert "is damaged" in error.message and known.exists()
        gone = repo._explain("Fatal: unable to open config file: stat /x/config: no such file or directory", call)
        assert "has disappeared" in gone.message and not known.exists()


@pytest.mark.parametrize("stderr", [
    # restic 0.14 `dump`/`restore` of a snapshot that was forgotten by hand
    'invalid id "1c5e1234": no matching ID found for prefix "1c5e1234"\n',
    # restic 0.16+
    'Fatal: failed to find snapshot: no matching ID found for prefix "1c5e1234"\n',
])
def test_a_forgotten_part_snapshot_is_named_as_such(stderr: str) -> None:
    error = explain(restic_stderr(stderr), "main")
    assert "a snapshot this point needs is not in the repository" in error.message, error.line()
    assert "safehold list" in error.hint and "not reachable" not in error.line()


def test_a_cut_sftp_connection_is_named_with_its_host() -> None:
    # What restic 0.14 says when the ssh session under an sftp repository dies (traffic dropped).
    cut = "Save(<data/1a2b3c4d5e>) returned error, retrying after 552ms: connection lost\n" \
          "error in cleanup handler: ssh command exited: exit status 255\n"
    error = explain(restic_stderr(cut), "nas", "nas.example")
    assert error.message == "repository nas: the connection to nas.example was lost (ssh exited mid-run)"
    assert "other repositories hold is intact" in error.hint and "log above" not in error.line()
    # A local repository's broken pipe is not called a lost connection.
    assert "was lost" not in explain(restic_stderr("write: broken pipe\n"), "local").message
