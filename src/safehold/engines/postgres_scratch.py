"""A private PostgreSQL server for a drill, started from this host's own initdb/postgres (see engines/scratch.py).

The cluster is made by initdb (trust, UTF-8; the only way in is the socket in its 0700 folder) and
runs with no TCP listener (`listen_addresses=''`), small shared buffers and no fsync: it lives for
one drill. Of several installed major versions, the one the point was taken on is used when
present, else the newest. PostgreSQL refuses to run as root: as root it runs as `postgres`.
"""

from __future__ import annotations

import contextlib
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path

from safehold import runner
from safehold.engines import scratch
from safehold.errors import SafeholdError
from safehold.models import Connection

ACCOUNTS = ("postgres",)
SOCKET = ".s.PGSQL.5432"
SUPERUSER = "postgres"
INSTALLS = "/usr/lib/postgresql"  # Debian/Ubuntu: one folder per major version
FOLDERS = ("/usr/pgsql/bin", "/usr/local/pgsql/bin", "/usr/bin")
SETTINGS = {"listen_addresses": "", "unix_socket_permissions": "0700", "shared_buffers": "32MB",
            "max_connections": "30", "fsync": "off", "full_page_writes": "off", "synchronous_commit": "off",
            "logging_collector": "off", "max_wal_size": "1GB"}


def _major(version: str | None) -> str | None:
    match = re.match(r"(\d+)", version or "")
    return match.group(1) if match else None


def _bin_folders(point_version: str | None) -> list[Path]:
    """Folders holding initdb/postgres, the point's major version first, then newest first."""
    installs = sorted((p for p in Path(INSTALLS).glob("*/bin") if p.parent.name.isdigit()),
                      key=lambda p: int(p.parent.name), reverse=True)
    wanted = _major(point_version)
    installs.sort(key=lambda p: p.parent.name != wanted)
    return installs + [Path(folder) for folder in FOLDERS]


def _binaries(point_version: str | None) -> tuple[Path, Path] | None:
    for folder in _bin_folders(point_version):
        initdb, postgres = scratch.binary(("initdb",), [folder]), scratch.binary(("postgres",), [folder])
        if initdb and postgres and initdb.parent == folder == postgres.parent:
            return initdb, postgres
    return None


def available(point_version: str | None = None) -> bool:
    """True when this host has the binaries to start a private PostgreSQL server."""
    return _binaries(point_version) is not None


def _ready(data: Path) -> bool:
    """The postmaster writes "ready" into its pid file once it accepts connections (PostgreSQL 10+)."""
    try:
        lines = (data / "postmaster.pid").read_text().splitlines()
    except OSError:
        return False
    return len(lines) >= 8 and lines[7].strip() == "ready"


def _initdb(initdb: Path, data: Path, owner: scratch.Account | None) -> None:
    try:
        runner.run([str(initdb), "-D", str(data), "--auth=trust", f"--username={SUPERUSER}", "--encoding=UTF8",
                    "--locale=C", "--no-sync"], what="initdb", account=owner.ids if owner else None,
                   env={"LC_ALL": "C"})
    except runner.ProcessFailed as exc:
        last = exc.stderr.strip().splitlines()[-1:] or [f"exit {exc.returncode}"]
        raise SafeholdError(f"initdb failed for the private drill server: {last[0][:300]}",
                            "see the log") from None


@contextlib.contextmanager
def private_server(name: str, point_version: str | None = None, cache: Path | None = None) -> Iterator[scratch.Server]:
    """Start a private PostgreSQL server in a new folder `name` (a pristine cluster from `cache` when
    there is one); stopped and its folder removed on exit."""
    binaries = _binaries(point_version)
    if binaries is None:
        raise SafeholdError("no local initdb and postgres", "install postgresql, or drill on the live server")
    initdb, postgres = binaries
    said = runner.run([str(postgres), "--version"], what="postgres").decode()
    version = match.group(1) if (match := re.search(r"\(PostgreSQL\) (\S+)", said)) else said.strip()
    begun = time.monotonic()
    owner = scratch.account(ACCOUNTS)
    folder = scratch.make_folder(name, owner, SOCKET)
    data = folder / "data"
    try:
        key = scratch.cache_key("postgres", binaries, repr(sorted(SETTINGS.items())))
        copied = scratch.seed(data, cache, key, lambda: _initdb(initdb, data, owner), owner)
        options = [f"--{k.replace('_', '-')}={v}" for k, v in {**SETTINGS, "unix_socket_directories": folder}.items()]
        child = scratch.start([str(postgres), "-D", str(data), *options], owner, "private postgres")
    except BaseException:
        scratch.discard(folder)
        raise
    connection = Connection(engine="postgres", socket=str(folder), user=SUPERUSER)
    server = scratch.Server("postgres", folder, connection, version, child, signal.SIGINT, begun=begun)
    server.notes.append("cluster copied from the cached pristine one" if copied else "cluster initialised")
    if (major := _major(point_version)) and major != _major(version):
        server.notes.append(f"the point was taken on server {point_version}; the private server is {version}")
    with scratch.running(server):
        scratch.wait_ready(server, lambda: _ready(data), "private postgres")
        yield server

