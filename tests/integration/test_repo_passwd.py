"""`safehold repo passwd`: a real local restic repository gets a new password; the old one stops
opening it, no password is ever printed, and a run killed half-way leaves the repository openable
with the password the config references."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from safehold.config import load
from safehold.lock import instance_lock
from safehold.output import Silent
from tests.conftest import SRC, run_cli
from tests.integration.test_core_errors import one_line_error
from tests.integration.unattended import make_instance

ENV_VAR = "SH_TEST_REPO_PASSWORD"
# Runs the CLI with one step replaced by a SIGKILL of the process itself: a crash at that very point.
KILLED_AT = """
import os, signal, sys
from safehold.actions import repo_password
from safehold.repository.restic import Repository

def die(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)

if sys.argv[1] == "store":
    repo_password._store = die
else:
    Repository.remove_key = die
sys.argv = ["safehold", *sys.argv[2:]]
from safehold.cli import main
main()
"""


def restic(repo: dict[str, str], password_file: Path | str, *args: str) -> subprocess.CompletedProcess[str]:
    """restic itself on the test repository with this password file."""
    env = {**os.environ, "RESTIC_REPOSITORY": repo["url"], "RESTIC_PASSWORD_FILE": str(password_file)}
    return subprocess.run(["restic", *args], env=env, capture_output=True, text=True, timeout=120)


def key_count(repo: dict[str, str], password_file: Path | str) -> int:
    listed = restic(repo, password_file, "key", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    return len(json.loads(listed.stdout))


def keep_copy(path: Path, into: Path) -> Path:
    """A 0600 copy of a password file as it is now (the old password, once it has changed)."""
    into.write_bytes(path.read_bytes())
    into.chmod(0o600)
    return into


def no_password_shown(result: subprocess.CompletedProcess[str], *passwords: str) -> None:
    for password in passwords:
        assert password.strip() not in result.stdout + result.stderr


def init_repository(repo: dict[str, str]) -> None:
    made = restic(repo, repo["password_file"], "init")
    assert made.returncode == 0, made.stderr


def test_file_password_is_rotated_and_the_old_one_no_longer_opens(tmp_path: Path, repo: dict[str, str]) -> None:
    config = make_instance(tmp_path, repo)
    assert run_cli("backup", "app", config=config).returncode == 0
    kit = tmp_path / "kit.html"
    assert run_cli("key", "kit", "--output", str(kit), config=config).returncode == 0
    password_file = Path(repo["password_file"])
    old = keep_copy(password_file, tmp_path / "old.pass")

    changed = run_cli("repo", "passwd", "main", config=config)
    assert changed.returncode == 0, changed.stderr
    new = password_file.read_text()
    assert new.strip() and new != old.read_text()
    no_password_shown(changed, old.read_text(), new)
    assert "password changed" in changed.stdout and "1 old key(s) removed" in changed.stdout
    assert "RE-PRINT THE RECOVERY KIT" in changed.stdout and f"{kit} holds the old password" in changed.stdout
    assert str(password_file) in changed.stdout
    assert password_file.stat().st_mode & 0o777 == 0o600
    assert not (tmp_path / "secrets" / "repo.pass.old").exists()

    refused = restic(repo, old, "cat", "config")
    assert refused.returncode != 0 and "wrong password" in refused.stderr
    assert key_count(repo, password_file) == 1
    again = run_cli("backup", "app", config=config)
    assert again.returncode == 0, again.stderr
    listed = run_cli("list", "--json", config=config)
    assert listed.returncode == 0 and len(json.loads(listed.stdout)) == 2


def test_env_password_needs_a_new_place_then_finishes_after_the_env_changed(tmp_path: Path,
                                                                            repo: dict[str, str]) -> None:
    init_repository(repo)
    config = make_instance(tmp_path, repo)
    config.write_text(config.read_text().replace(f'"file:{repo["password_file"]}"', f'"env:{ENV_VAR}"'))
    env = {ENV_VAR: repo["password"]}

    refused = run_cli("repo", "passwd", "main", config=config, env=env)
    assert refused.returncode == 2 and "--new-password-ref" in one_line_error(refused)
    assert key_count(repo, repo["password_file"]) == 1

    new_file = tmp_path / "secrets" / "new.pass"
    added = run_cli("repo", "passwd", "main", "--new-password-ref", f"file:{new_file}", "--json", config=config,
                    env=env)
    assert added.returncode == 0, added.stderr
    result = json.loads(added.stdout)
    assert not result["done"] and result["new_password"] == f"file:{new_file}"
    assert any("--remove-old-keys" in step for step in result["next_steps"])
    assert new_file.stat().st_mode & 0o777 == 0o600
    no_password_shown(added, repo["password"], new_file.read_text())
    assert key_count(repo, repo["password_file"]) == 2 and key_count(repo, new_file) == 2

    # The environment still holds the old password: removing keys now would keep the old one.
    early = run_cli("repo", "passwd", "main", "--remove-old-keys", config=config, env=env)
    assert early.returncode == 1 and "still opens key" in one_line_error(early)
    assert key_count(repo, new_file) == 2

    finished = run_cli("repo", "passwd", "main", "--remove-old-keys", config=config,
                       env={ENV_VAR: new_file.read_text().strip()})
    assert finished.returncode == 0, finished.stderr
    no_password_shown(finished, repo["password"], new_file.read_text())
    assert "only the new key is left" in finished.stdout and "RE-PRINT THE RECOVERY KIT" in finished.stdout
    assert key_count(repo, new_file) == 1
    assert "wrong password" in restic(repo, repo["password_file"], "cat", "config").stderr


@pytest.mark.parametrize("point", ["store", "remove"])
def test_a_killed_change_leaves_the_repository_open_with_the_configured_password(
        tmp_path: Path, repo: dict[str, str], point: str) -> None:
    config = make_instance(tmp_path, repo)
    assert run_cli("backup", "app", config=config).returncode == 0
    password_file = Path(repo["password_file"])
    old = keep_copy(password_file, tmp_path / "old.pass")

    killed = subprocess.run([sys.executable, "-c", KILLED_AT, point, "repo", "passwd", "main", "--config",
                             str(config)], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "PYTHONPATH": str(SRC)})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    # Killed before the file was written it still holds the old password, after it the new one: both open.
    assert (password_file.read_text() == old.read_text()) == (point == "store")
    assert key_count(repo, password_file) == 2
    listed = run_cli("list", "--json", config=config)
    assert listed.returncode == 0 and len(json.loads(listed.stdout)) == 1, listed.stderr

    # Either way the change can be completed: start over, or (file written) remove the old keys.
    finish = ["--remove-old-keys"] if point == "remove" else []
    done = run_cli("repo", "passwd", "main", *finish, config=config)
    assert done.returncode == 0, done.stderr
    assert key_count(repo, password_file) == 1
    assert "wrong password" in restic(repo, old, "cat", "config").stderr
    assert not (tmp_path / "secrets" / "repo.pass.old").exists()
    assert run_cli("backup", "app", config=config).returncode == 0


def test_a_running_backup_makes_the_change_wait_or_refuse(tmp_path: Path, repo: dict[str, str]) -> None:
    init_repository(repo)
    config = make_instance(tmp_path, repo)
    # This test process holds the lock as a running backup would (flock: another process sees it held).
    with instance_lock(load(config).state_dir, "app", "20261126T000000Z-beef", "backup", Silent()):
        refused = run_cli("repo", "passwd", "main", config=config)
    assert refused.returncode == 1
    assert "instance app is busy: run 20261126T000000Z-beef" in one_line_error(refused)
    assert key_count(repo, repo["password_file"]) == 1
