"""A real NetBox for the integration tests, built once per machine and reused.

`pip install -r requirements.txt` (~2 min, psycopg[c] compiles against Debian's libpq-dev) and
`manage.py migrate` (~7 min on a busy 2-core machine) are far too slow to repeat per test: the venv
and a `pg_dump` of the freshly migrated database are kept in a cache folder under /var/tmp keyed
by the tarball's sha256, built behind a file lock (xdist workers and parallel runs wait for the
first builder). A test then unpacks the sources, restores the dump into its own database owned
by its own role (3 s) and runs NetBox with `manage.py runserver` plus its own redis-server.

Run as a script (`python3 -m tests.integration.netbox_real`) it builds the cache ahead of a run.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import re
import secrets
import shutil
import socket
import subprocess
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

# ../shared beside the repository (CI, /work/main); a git worktree elsewhere falls back to /work/shared.
SHARED_APPS = next((p for p in (Path(__file__).resolve().parents[3] / "shared" / "apps", Path("/work/shared/apps"))
                    if p.is_dir()), Path(__file__).resolve().parents[3] / "shared" / "apps")
TARBALL = SHARED_APPS / "netbox-4.6.8.tar.gz"
PYTHON = Path("/root/.pyenv/versions/3.12.1/bin/python3.12")
CACHE_PARENT = Path("/var/tmp")
PG = ["-h", "127.0.0.1", "-U", "postgres"]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def psql(database: str, query: str) -> str:
    """Run SQL as the postgres superuser."""
    return subprocess.run(["psql", *PG, "-X", "-At", "-v", "ON_ERROR_STOP=1", "-d", database, "-c", query],
                          check=True, capture_output=True, text=True).stdout


def unpack(target: Path) -> Path:
    """Unpack the NetBox sources into `target`; returns the install root (`target/netbox`)."""
    with tarfile.open(TARBALL) as archive:
        archive.extractall(target, filter="tar")
    return target / "netbox"


def write_configuration(root: Path, *, database: str, user: str, password: str, redis_port: int,
                        secret_key: str, pepper: str) -> Path:
    """configuration.py made from NetBox's own configuration_example.py, the values filled in."""
    folder = root / "netbox" / "netbox"
    text = (folder / "configuration_example.py").read_text()
    replacements = [
        (r"^ALLOWED_HOSTS = \[\]", "ALLOWED_HOSTS = ['*']"),
        (r"'NAME': 'netbox',", f"'NAME': {database!r},"),
        (r"'USER': '',", f"'USER': {user!r},"),
        (r"'PASSWORD': '',(\s+# PostgreSQL)", f"'PASSWORD': {password!r},\\1"),
        (r"'HOST': 'localhost',(\s+# Database)", "'HOST': '127.0.0.1',\\1"),
        (r"'PORT': 6379,", f"'PORT': {redis_port},"),
        (r"^SECRET_KEY = ''", f"SECRET_KEY = {secret_key!r}"),
        (r"^API_TOKEN_PEPPERS = \{\}", f"API_TOKEN_PEPPERS = {{1: {pepper!r}}}"),
    ]
    for pattern, value in replacements:
        text, count = re.subn(pattern, value, text, flags=re.MULTILINE)
        assert count, f"configuration_example.py no longer has {pattern!r}"
    path = folder / "configuration.py"
    path.write_text(text)
    return path


@contextlib.contextmanager
def redis_server() -> Iterator[int]:
    """A private redis-server (no persistence) on a free port."""
    port = free_port()
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            time.sleep(0.1)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@dataclass
class Cache:
    """The built venv and the migrated database dump."""

    folder: Path

    @property
    def python(self) -> Path:
        return self.folder / "venv" / "bin" / "python"

    @property
    def dump(self) -> Path:
        return self.folder / "migrated.pgdump"


def ensure_cache() -> Cache:
    """Build (or wait for, or reuse) the venv and the migrated dump for this tarball."""
    key = _sha256(TARBALL)[:16]
    folder = CACHE_PARENT / f"safehold-netbox-{key}"
    cache = Cache(folder)
    with (CACHE_PARENT / f"safehold-netbox-{key}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (folder / "ready").is_file():
            return cache
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        _build(cache)
        (folder / "ready").write_text(time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    return cache


def _build(cache: Cache) -> None:
    folder = cache.folder
    started = time.monotonic()
    subprocess.run([str(PYTHON), "-m", "venv", str(folder / "venv")], check=True)
    root = unpack(folder / "src")
    subprocess.run([str(cache.python), "-m", "pip", "install", "-q", "-r", str(root / "requirements.txt")],
                   check=True, capture_output=True)
    pip_done = time.monotonic()
    database = f"nbbuild_{secrets.token_hex(4)}"
    psql("postgres", f"CREATE DATABASE {database}")
    try:
        with redis_server() as redis_port:
            write_configuration(root, database=database, user="postgres", password="", redis_port=redis_port,
                                secret_key=secrets.token_urlsafe(50), pepper=secrets.token_urlsafe(50))
            subprocess.run([str(cache.python), "manage.py", "migrate", "--no-input"], cwd=root / "netbox",
                           check=True, capture_output=True)
        subprocess.run(["pg_dump", *PG, "-Fc", "--no-owner", "--no-acl", "-f", str(cache.dump), database],
                       check=True)
    finally:
        psql("postgres", f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
    shutil.rmtree(folder / "src")
    (folder / "timings").write_text(f"pip {pip_done - started:.0f} s, migrate {time.monotonic() - pip_done:.0f} s\n")


if __name__ == "__main__":
    print(ensure_cache().folder)
