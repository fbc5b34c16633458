"""Helpers for the application-profile tests: configs, file-tree snapshots, DB users, crypto."""

from __future__ import annotations

import base64
import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from Crypto.Cipher import AES
from Crypto.Util.Padding import pad

from tests import conftest
from tests.conftest import SRC, sql

WEB_UID = WEB_GID = 33  # www-data on Debian


def write_config(tmp_path: Path, repo: dict[str, str], name: str, app: str, root: Path, extra: str = "") -> Path:
    """A safehold.toml with one instance of `app` at `root` (conftest's writer: state dir, repository)."""
    return conftest.write_config(tmp_path, repo, f"""
[instances.{name}]
app = "{app}"
root = "{root}"
repositories = ["main"]
{extra}
""")


def put(path: Path, content: str | bytes, mode: int = 0o644, owner: tuple[int, int] | None = None) -> Path:
    """Write a file with a mode and an owner (the app's files belong to the web user)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    path.chmod(mode)
    if owner:
        os.chown(path, *owner)
    return path


def tree_state(root: Path, skip: tuple[str, ...] = ()) -> dict[str, tuple[object, ...]]:
    """Every path under root with type, mode, owner and content (or link target)."""
    state: dict[str, tuple[object, ...]] = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder) / name
            rel = str(path.relative_to(root))
            if any(rel == s or rel.startswith(s + "/") for s in skip):
                continue
            info = path.lstat()
            if path.is_symlink():
                body: object = os.readlink(path)
            elif path.is_file():
                body = path.read_bytes()
            else:
                body = "dir"
            state[rel] = (body, oct(info.st_mode), info.st_uid, info.st_gid)
    return state


def safehold_on_path(folder: Path) -> Path:
    """A `safehold` command running this tree's code (the recovery kit tells the reader to run `safehold`)."""
    folder.mkdir(parents=True)
    script = folder / "safehold"
    script.write_text(f"#!/bin/sh\nPYTHONPATH={SRC} exec {sys.executable} -m safehold \"$@\"\n")
    script.chmod(0o755)
    return folder


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    """Assert a CLI run succeeded, showing its output when not."""
    assert result.returncode == 0, f"exit {result.returncode}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    return result


def db_user(created: list[str]) -> tuple[str, str]:
    """A uniquely named MariaDB user with a password (dropped by the caller's cleanup)."""
    user, password = f"t_apps_{secrets.token_hex(3)}", "pw'" + secrets.token_hex(6)
    escaped = password.replace("'", "\\'")
    sql(f"CREATE USER '{user}'@'%' IDENTIFIED BY '{escaped}'")
    created.append(user)
    return user, password


@contextlib.contextmanager
def app_user(database: str, user: str, password: str) -> Iterator[None]:
    """The app's own database account, with every right on its database, dropped afterwards."""
    created: list[str] = []
    try:
        sql(f"CREATE USER '{user}'@'%' IDENTIFIED BY '{password}'")
        created.append(user)
        sql(f"GRANT ALL ON `{database}`.* TO '{user}'@'%'")
        yield
    finally:
        drop_users(created)


def held_instance(tmp_path: Path, repo: dict[str, str], app: str, root: Path) -> dict[str, object]:
    """A config with one instance of `app` at `root` named after it, paused by `held_stop` commands: the
    config, their log and hold files, the state folder and tmp_path, as the app fixtures yield them."""
    log, hold = tmp_path / "quiesce.log", tmp_path / "hold"
    return {"config": write_config(tmp_path, repo, app, app, root, held_stop(log, hold)), "log": log, "hold": hold,
            "state": tmp_path / "state", "tmp": tmp_path}


def drop_users(created: list[str]) -> None:
    for user in created:
        sql(f"DROP USER IF EXISTS '{user}'@'%'")


def start_cli(*args: str, config: Path) -> subprocess.Popen[str]:
    """Start `safehold ARGS` in its own session (so its children can be cleaned up as a group)."""
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    return subprocess.Popen([sys.executable, "-m", "safehold", *args, "--config", str(config)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def wait_for(condition: Callable[[], bool], seconds: float = 60, every: float = 0.05) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(every)


def kill_group(proc: subprocess.Popen[str]) -> None:
    """End what a test started (the CLI and the commands it ran), by process group id."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def backup_killed_while_paused(fixture: dict[str, object], instance: str, paused: Callable[[], object] = lambda: None,
                               stops: int = 1) -> None:
    """Start a backup of `instance` and SIGKILL it inside its held stop command (the `stops`-th logged since
    the fixture began): the app is paused then, as `paused` (the test's look at it) sees it, and stays so."""
    log, hold, config = (Path(str(fixture[key])) for key in ("log", "hold", "config"))
    hold.touch()
    proc = start_cli("backup", instance, config=config)
    try:
        wait_for(lambda: log.exists() and log.read_text().count("stopped") >= stops)
        paused()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        hold.unlink()
        kill_group(proc)


def held_stop(log: Path, hold: Path) -> str:
    """quiesce commands that log stop/start and block while the `hold` file exists."""
    return (f'quiesce = {{ stop = [["sh", "-c", "echo stopped >> {log}; while [ -e {hold} ]; do sleep 0.1; done"]], '
            f'start = [["sh", "-c", "echo started >> {log}"]] }}')


# ITFlow's vault crypto, the encrypting side (functions/security.php), to build realistic rows.
def itflow_kek(password: str, salt: str) -> bytes:
    import hashlib

    return hashlib.pbkdf2_hmac("sha256", password.encode(), salt.encode(), 100_000)[:8].hex().encode()


def itflow_random() -> str:
    return base64.b64encode(os.urandom(12)).decode().replace("+", "-").replace("/", "_").rstrip("=")[:16]


def itflow_wrap(master: str, password: str) -> str:
    salt, iv = itflow_random(), itflow_random()
    body = AES.new(itflow_kek(password, salt), AES.MODE_CBC, iv.encode()).encrypt(pad(master.encode(), 16))
    return salt + iv + base64.b64encode(body).decode()


def itflow_encrypt(plain: str, master: str) -> str:
    iv = itflow_random()
    body = AES.new(master.encode(), AES.MODE_CBC, iv.encode()).encrypt(pad(plain.encode(), 16))
    return iv + base64.b64encode(body).decode()
