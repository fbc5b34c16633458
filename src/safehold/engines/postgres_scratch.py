"""A private PostgreSQL server for a drill, started from this host's own initdb/postgres (see engines/scratch.py).

The cluster is made by initdb (trust, UTF-8; the only way in is the socket in its 0700 folder) and
runs with no TCP listener (`listen_addresses=''`), small shared buffers and no fsync: it lives for
one drill. Of several installed major versions, the one the point was taken on is used when
present, else the newest. PostgreSQL refuses to run as root: as root it runs as `postgres`.

Roles belong to the cluster, not to a database's dump: before a dump loads, the roles its GRANTs
and default privileges name are created (without login), so `pg_restore --exit-on-error` does not
stop at the first GRANT to an application role the live cluster has.
"""

from __future__ import annotations

import contextlib
import re
import signal
import time
from collections.abc import Callable, Iterator
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


# Roles named in pg_restore's SQL: GRANT … TO x / REVOKE … FROM x, also inside ALTER DEFAULT
# PRIVILEGES, whose FOR ROLE x names one more.
ROLE = r'("(?:[^"]|"")+"|[A-Za-z_][A-Za-z0-9_$]*)'
GRANTEE = re.compile(rf"^(?:ALTER DEFAULT PRIVILEGES\s.*?)?(?:GRANT|REVOKE)\s.*?\s(?:TO|FROM)\s+{ROLE}", re.M)
FOR_ROLE = re.compile(rf"^ALTER DEFAULT PRIVILEGES FOR ROLE\s+{ROLE}", re.M)
KNOWN_ROLES = {"public", "current_user", "session_user", "current_role", SUPERUSER}


def granted_roles(sql: str) -> list[str]:
    """The roles the dump's SQL grants to (or takes from), other than PUBLIC, the superuser and pg_* roles."""
    found: dict[str, None] = {}
    for word in [*GRANTEE.findall(sql), *FOR_ROLE.findall(sql)]:
        name = word[1:-1].replace('""', '"') if word.startswith('"') else word.lower()
        if name.lower() not in KNOWN_ROLES and not name.startswith("pg_"):
            found[name] = None
    return list(found)


def _role_maker(bin_folder: Path, connection: Connection) -> Callable[[Path], None]:
    """The server's `prepare`: create the roles a dump grants to that this cluster does not have yet."""
    made: set[str] = set()
    env = {"PGHOST": str(connection.socket), "PGUSER": SUPERUSER, "PGDATABASE": "postgres"}

    def prepare(dump: Path) -> None:
        restore = scratch.binary(("pg_restore",), [bin_folder]) or Path("pg_restore")
        psql = scratch.binary(("psql",), [bin_folder]) or Path("psql")
        try:
            sql = runner.run([str(restore), "--schema-only", "-f", "-", str(dump)], what="pg_restore")
            wanted = [name for name in granted_roles(sql.decode(errors="replace")) if name not in made]
            creates = [a for name in wanted for a in ("-c", 'CREATE ROLE "' + name.replace('"', '""') + '"')]
            if creates:
                runner.run([str(psql), "-X", "-q", "-v", "ON_ERROR_STOP=1", *creates], what="psql", env=env)
        except runner.ProcessFailed as exc:
            raise SafeholdError(f"cannot create the roles the dump grants to on the private server: "
                                f"{exc.stderr.strip()[-300:]}", "see the log") from None
        made.update(wanted)

    return prepare


def _ready(data: Path) -> bool:
    """The postmaster writes "ready" into its pid file once it accepts connections (PostgreSQL 10+)."""
    try:
        lines = (data / "postmaster.pid").read_text().splitlines()
    except OSError:
        return False
    return len(lines) >= 8 and lines[7].strip() == "ready"


def _initdb(initdb: Path, data: Path, owner: scratch.Account | None) -> None:
    scratch.initialise([str(initdb), "-D", str(data), "--auth=trust", f"--username={SUPERUSER}", "--encoding=UTF8",
                        "--locale=C", "--no-sync"], "initdb", "see the log", owner, {"LC_ALL": "C"})


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
    server.prepare = _role_maker(postgres.parent, connection)
    server.notes.append("cluster copied from the cached pristine one" if copied else "cluster initialised")
    if (major := _major(point_version)) and major != _major(version):
        server.notes.append(f"the point was taken on server {point_version}; the private server is {version}")
    with scratch.running(server):
        scratch.wait_ready(server, lambda: _ready(data), "private postgres")
        yield server

