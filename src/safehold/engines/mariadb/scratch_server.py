"""A private MariaDB server for a drill, started from this host's own mariadbd (see engines/scratch.py).

The datadir comes from mariadb-install-db (root without a password, reachable only through the
socket in the 0700 folder; no test database), and the server runs without networking, with a small
buffer pool, the event scheduler off (a restored event must not run) and server-side file access
confined to its folder. The settings of the host's own server that decide how a dump loads (SQL
mode, character sets, name case and the like) are carried over from the host's option files, so the
point loads as it would on the live server.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path

from safehold import runner
from safehold.engines import scratch
from safehold.engines.mariadb import client
from safehold.errors import DatabaseError, SafeholdError
from safehold.models import Connection, Database

SERVERS = ("mariadbd", "mysqld")
INSTALLERS = ("mariadb-install-db", "mysql_install_db")
FOLDERS = ("/usr/sbin", "/usr/libexec", "/usr/local/sbin", "/usr/local/mysql/bin", "/usr/bin")
ACCOUNTS = ("mysql",)
SOCKET = "mysqld.sock"
# Server settings that change what a dump's statements do; taken from the host's [mysqld] groups.
CARRIED = frozenset({
    "sql_mode", "character_set_server", "collation_server", "lower_case_table_names",
    "explicit_defaults_for_timestamp", "innodb_strict_mode", "innodb_default_row_format", "innodb_file_per_table",
    "max_allowed_packet", "default_storage_engine", "default_time_zone", "group_concat_max_len", "old_mode",
    "character_set_collations", "innodb_page_size",
})
OWN = """[mysqld]
datadir={folder}/data
socket={folder}/{socket}
pid-file={folder}/mariadbd.pid
tmpdir={folder}/tmp
secure-file-priv={folder}/tmp
skip-networking
skip-name-resolve
skip-log-bin
event-scheduler=OFF
local-infile=1
innodb-buffer-pool-size=128M
innodb-log-file-size=32M
innodb-doublewrite=0
innodb-flush-log-at-trx-commit=0
max-connections=64
performance-schema=OFF
"""


def _binaries() -> tuple[Path, Path] | None:
    server, installer = scratch.binary(SERVERS, FOLDERS), scratch.binary(INSTALLERS, FOLDERS)
    return (server, installer) if server and installer else None


def available() -> bool:
    """True when this host has the binaries to start a private MariaDB server."""
    return _binaries() is not None


def host_settings() -> list[str]:
    """The host server's option-file settings in CARRIED, as `name=value` lines (its last value wins)."""
    tool = scratch.binary(("my_print_defaults", "mariadb-print-defaults"), FOLDERS)
    if tool is None:
        return []
    try:
        out = runner.run([str(tool), "--mysqld"], what="my_print_defaults").decode(errors="replace")
    except runner.ProcessFailed:
        return []
    found: dict[str, str] = {}
    for line in out.splitlines():
        name, _, value = line.removeprefix("--").partition("=")
        key = name.replace("-", "_")
        if key in CARRIED and value and "\n" not in value:
            found[key] = value
    return [f"{key}={value}" for key, value in found.items()]


def _ready(connection: Connection) -> bool:
    try:
        client.connect(connection).close()
    except DatabaseError:
        return False
    return True


def _same_release(version: str, expected: str | None) -> str | None:
    """A note when the point came from another MariaDB release than the private server's."""
    def release(text: str) -> str:
        match = re.match(r"(\d+\.\d+)", text)
        return match.group(1) if match else text

    if expected and release(expected) != release(version):
        return f"the point was taken on server {expected}; the private server is {version}"
    return None


def _install(installer: Path, settings: Path) -> None:
    scratch.initialise([str(installer), f"--defaults-file={settings}", "--auth-root-authentication-method=normal",
                        "--skip-test-db"], "mariadb-install-db", "see the log, or set drill_server")


@contextlib.contextmanager
def private_server(name: str, point_version: str | None = None, cache: Path | None = None) -> Iterator[scratch.Server]:
    """Start a private MariaDB server in a new folder `name` (a pristine datadir from `cache` when
    there is one); stopped and its folder removed on exit."""
    binaries = _binaries()
    if binaries is None:
        raise SafeholdError("no local mariadbd and mariadb-install-db", "install mariadb-server, or set drill_server")
    server_bin, installer = binaries
    begun = time.monotonic()
    owner = scratch.account(ACCOUNTS)
    folder = scratch.make_folder(name, owner, SOCKET)
    try:
        (folder / "tmp").mkdir(mode=0o700)
        carried = "".join(f"{line}\n" for line in host_settings())
        settings = folder / "my.cnf"
        run_as = f"user={owner.name}\n" if owner else ""
        settings.write_text(OWN.format(folder=folder, socket=SOCKET) + carried + run_as)
        if owner is not None:
            for path in (folder / "tmp", settings):
                os.chown(path, owner.uid, owner.gid)
        key = scratch.cache_key("mariadb", binaries, OWN + carried)
        copied = scratch.seed(folder / "data", cache, key, lambda: _install(installer, settings), owner)
        child = scratch.start([str(server_bin), f"--defaults-file={settings}"], owner, "private mariadbd")
    except BaseException:
        scratch.discard(folder)
        raise
    connection = Connection(engine="mariadb", socket=str(folder / SOCKET), user="root")
    server = scratch.Server("mariadb", folder, connection, "", child, signal.SIGTERM, begun=begun)
    server.notes.append("datadir copied from the cached pristine one" if copied else "datadir initialised")
    with scratch.running(server):
        scratch.wait_ready(server, lambda: _ready(connection), "private mariadbd")
        server.version = client.server_version(Database(connection, ""))
        if note := _same_release(server.version, point_version):
            server.notes.append(note)
        yield server
