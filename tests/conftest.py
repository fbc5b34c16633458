"""Shared fixtures: real MariaDB, real restic repositories, configs, and a CLI runner.

Integration tests skip only where a service cannot exist; under CI (CI=true) a missing service is
a failure, not a skip.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
MARIADB = {"host": "127.0.0.1", "port": 3306, "user": "root"}

# restic derives each repository's key with scrypt (~0.45 CPU-s) on every call; tests/tools/restic
# runs the real restic but gives the repositories the tests create a cheap key (see there).
if os.environ.get("TESTS_REAL_RESTIC") is None and (_found := shutil.which("restic")):
    os.environ["TESTS_REAL_RESTIC"] = _found
    os.environ["PATH"] = f"{Path(__file__).resolve().parent / 'tools'}{os.pathsep}{os.environ['PATH']}"


def need(condition: bool, reason: str) -> None:
    """Skip (locally) or fail (under CI) when a required service is missing."""
    if condition:
        return
    if os.environ.get("CI"):
        pytest.fail(f"required in CI: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def mariadb() -> dict[str, object]:
    """Connection parameters of the real MariaDB server (root, no password, 127.0.0.1:3306)."""
    try:
        import MySQLdb

        MySQLdb.connect(**MARIADB).close()
    except Exception as exc:  # noqa: BLE001 - any failure means no server
        need(False, f"MariaDB on 127.0.0.1:3306 is not reachable ({exc})")
    return dict(MARIADB)


def sql(statements: str | list[str], database: str | None = None) -> list[tuple]:
    """Run SQL as root on the test server; returns the last statement's rows."""
    import MySQLdb

    conn = MySQLdb.connect(**MARIADB, database=database or "", charset="utf8mb4", autocommit=True)
    rows: list[tuple] = []
    try:
        cur = conn.cursor()
        for statement in [statements] if isinstance(statements, str) else statements:
            cur.execute(statement)
            rows = list(cur.fetchall()) if cur.description else []
    finally:
        conn.close()
    return rows


@pytest.fixture
def new_db(mariadb: dict[str, object]) -> Iterator[Callable[[str], str]]:
    """Factory for uniquely named test databases, all dropped afterwards."""
    created: list[str] = []

    def make(prefix: str = "t") -> str:
        name = f"{prefix}_{secrets.token_hex(4)}"
        sql(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
        created.append(name)
        return name

    make.created = created  # type: ignore[attr-defined]
    yield make
    for name in created:
        sql(f"DROP DATABASE IF EXISTS `{name}`")


def mariadb_dump(database: str) -> bytes:
    """The reference comparison: mariadb-dump of one database, stable across runs."""
    return subprocess.run(
        ["mariadb-dump", "-h127.0.0.1", "-uroot", "--skip-dump-date", "--routines", "--events", "--triggers",
         "--hex-blob", database], check=True, capture_output=True).stdout


@pytest.fixture(scope="session")
def restic() -> str:
    path = shutil.which("restic")
    need(path is not None, "restic is not installed (apt-get install restic)")
    return path or "restic"


def private_file(path: Path, content: str) -> Path:
    """Write a 0600 file (how secrets are kept)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content)
    path.chmod(0o600)
    return path


@pytest.fixture
def repo(tmp_path: Path, restic: str) -> dict[str, str]:
    """A local restic repository location (not yet initialised) and its 0600 password file."""
    password = private_file(tmp_path / "secrets" / "repo.pass", secrets.token_urlsafe(24))
    return {"url": str(tmp_path / "repo"), "password_file": str(password), "password": password.read_text()}


def write_config(tmp_path: Path, repo: dict[str, str], body: str, name: str = "safehold.toml",
                 settings: str = "") -> Path:
    """A config with a state dir in tmp_path, repository `main` = `repo`, and `body` appended;
    `settings` adds lines to [settings]."""
    path = tmp_path / name
    path.write_text(f"""
[settings]
state_dir = "{tmp_path / 'state'}"
{settings}
[repositories.main]
url = "{repo['url']}"
password = "file:{repo['password_file']}"
{body}""")
    return path


def files_instances(files: Path | str, copy: tuple[Path | str, str] | None = None, **instances: list[str]) -> str:
    """Config text for write_config: each instance (name=its repositories) backs up folder `files`;
    with `copy` (URL, password file) a repository `copy` is defined too."""
    text = f'\n[repositories.copy]\nurl = "{copy[0]}"\npassword = "file:{copy[1]}"\n' if copy else ""
    for name, repositories in instances.items():
        text += f'\n[instances.{name}]\nrepositories = {json.dumps(repositories)}\nfiles = ["{files}"]\n'
    return text


@contextmanager
def databases_appearing(interval: float = 0.1) -> Iterator[set[str]]:
    """Poll SHOW DATABASES on the test server while the block runs; once it ends, the set it gave holds the
    databases that appeared meanwhile (also ones dropped again before the block ended)."""
    before = {row[0] for row in sql("SHOW DATABASES")}
    seen: set[str] = set()
    appeared: set[str] = set()
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            seen.update(row[0] for row in sql("SHOW DATABASES"))
            time.sleep(interval)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        yield appeared
    finally:
        stop.set()
        watcher.join()
        appeared.update(seen - before)


def database_config(tmp_path: Path, repo: dict[str, str], instance: str, engine: str, user: str, name: str,
                    extra: str = "") -> Path:
    """write_config with one instance backing up database `name` (`extra` adds lines to its table)."""
    return write_config(tmp_path, repo, f"""
[instances.{instance}]
repositories = ["main"]
[[instances.{instance}.databases]]
engine = "{engine}"
user = "{user}"
names = ["{name}"]
{extra}""")


def run_cli(*args: str, config: Path | None = None, env: dict[str, str] | None = None,
            timeout: float = 600, input: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run `python -m safehold ARGS` the way a user would; returns the completed process."""
    argv = [sys.executable, "-m", "safehold", *args]
    if config is not None:
        argv += ["--config", str(config)]
    full_env = {**os.environ, "PYTHONPATH": str(SRC), **(env or {})}
    return subprocess.run(argv, capture_output=True, text=True, env=full_env, timeout=timeout, input=input)


@pytest.fixture
def cli() -> Callable[..., subprocess.CompletedProcess[str]]:
    return run_cli


@pytest.fixture
def mount_point(tmp_path: Path) -> Iterator[Callable[[str, str], Path]]:
    """Mounts a tmpfs with the given options (size=1m, ro…) under tmp_path: a full or read-only disk."""
    mounted: list[Path] = []

    def mount(name: str, options: str) -> Path:
        path = tmp_path / name
        path.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount tmpfs here: {done.stderr.decode().strip()}")
        mounted.append(path)
        return path

    yield mount
    for path in mounted:
        subprocess.run(["umount", "-l", str(path)], check=False)
