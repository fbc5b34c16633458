"""How an application reaches its database server, decided by the rules its client library applies.

PHP's mysqli and PDO (mysqlnd) never resolve `localhost`: that name means the server's Unix
socket (mysqlnd's `get_scheme`: host "localhost", compared without case, → `unix://SOCKET`), and
any other name or address means TCP. The database user the app's installer created is then often
`'user'@'localhost'`, which a server with `skip-name-resolve` (or `skip-networking`) accepts over
the socket only. So safehold connects exactly the same way, with every tool (mysqlclient,
mariadb-dump, mariadb) on the one transport decided here.

Host strings, as PHP apps write them (ITFlow's `$dbhost`, iTop's `db_host`, i-doit's `host`):
`localhost` (socket), `p:localhost` (mysqli's persistent prefix, same transport),
`localhost:/path/mysql.sock` (that socket), `localhost:3307` (still the socket: the client
ignores the port for it), `` (empty: mysqli's default host, localhost), `db.example`,
`127.0.0.1`, `host:port`, `[::1]:3307` and `::1` (TCP).

Which socket, when the host string names none: the one the safehold config sets, else PHP's
`mysqli.default_socket` / `pdo_mysql.default_socket` (from `php` itself when installed, as it
includes the compiled-in default; else from Debian's ini files), else the first of the MariaDB
server's standard locations that exists.

PostgreSQL follows libpq: an empty host or one starting with `/` is a socket directory (empty:
the first standard one holding the server's socket); `localhost` is TCP there.
"""

from __future__ import annotations

import functools
import glob
import os
import re
import shutil
import stat
from dataclasses import dataclass

from safehold import runner
from safehold.models import Connection
from safehold.secrets import Secret

PHP_SOCKET_SETTINGS = ("mysqli.default_socket", "pdo_mysql.default_socket")
MARIADB_SOCKETS = ("/run/mysqld/mysqld.sock", "/var/run/mysqld/mysqld.sock", "/var/lib/mysql/mysql.sock",
                   "/tmp/mysql.sock")
POSTGRES_SOCKET_DIRS = ("/var/run/postgresql", "/run/postgresql", "/tmp")
PHP_INI_ROOT = "/etc/php"
LOCAL_NAMES = ("", "localhost")


@dataclass(frozen=True)
class Endpoint:
    """Where a client connects: a Unix socket (`socket` set) or TCP `host`:`port`."""

    host: str
    port: int | None = None
    socket: str | None = None


def parse_php_host(value: str, port: int | None = None) -> tuple[str, int | None, str | None]:
    """A PHP host string → (host, port, socket named in it); host "localhost" means the socket.

    `p:` is dropped; `[v6]:port` and `name:port` give the port; `name:/path` gives the socket. An
    empty host is mysqli's default host, localhost.
    """
    host = value.strip().removeprefix("p:")
    socket: str | None = None
    if host.startswith("[") and "]" in host:
        inside, _, rest = host[1:].partition("]")
        return inside, int(rest[1:]) if rest.startswith(":") and rest[1:].isdigit() else port, None
    if host.count(":") == 1:
        name, _, after = host.partition(":")
        if after.isdigit():
            host, port = name, int(after)
        elif after.startswith("/"):
            host, socket = name, after
    if host.lower() in LOCAL_NAMES:
        host = "localhost"
    return host, port, socket


def mariadb_endpoint(host: str, port: int | None = None, socket: str | None = None) -> Endpoint:
    """How a PHP app (and so safehold) reaches MariaDB for this host string, port and socket setting.

    `socket` is an explicit socket setting (safehold's config, PDO's `unix_socket`): it always wins.
    """
    name, port, named = parse_php_host(host, port)
    if socket or named:
        return Endpoint("localhost", port, socket or named)
    if name.lower() == "localhost":
        return Endpoint("localhost", port, default_mariadb_socket())
    return Endpoint(name, port)


def postgres_endpoint(host: str | None, port: int | None = None, socket: str | None = None) -> Endpoint:
    """libpq's rule: an empty host or one starting with `/` is a socket directory; anything else is TCP."""
    host = (host or "").strip()
    if socket or host.startswith("/"):
        return Endpoint("localhost", port, socket or host)
    if not host:
        return Endpoint("localhost", port, default_postgres_socket_dir(port or 5432))
    return Endpoint(host, port)


def mariadb_connection(host: str, port: int | None, user: str, password: str,
                       socket: str | None = None) -> Connection:
    """The connection the app itself makes from its host string (PHP's rules: `localhost` is the Unix
    socket), port and socket setting; `password` as the app's config holds it."""
    where = mariadb_endpoint(host, port, socket)
    return Connection(engine="mariadb", host=where.host, port=where.port, socket=where.socket, user=user,
                      password=Secret(password, "app config") if password else None)


def default_mariadb_socket() -> str:
    """PHP's default socket when set, else the first standard MariaDB socket that exists (else the first
    candidate: connecting then fails naming it)."""
    candidates = [*php_default_sockets(), *MARIADB_SOCKETS]
    return next((path for path in candidates if _is_socket(path)), candidates[0])


def default_postgres_socket_dir(port: int) -> str:
    """The first standard directory holding the server's socket `.s.PGSQL.PORT` (else Debian's)."""
    return next((folder for folder in POSTGRES_SOCKET_DIRS if _is_socket(f"{folder}/.s.PGSQL.{port}")),
                POSTGRES_SOCKET_DIRS[0])


def _is_socket(path: str) -> bool:
    try:
        return stat.S_ISSOCK(os.stat(path).st_mode)
    except OSError:
        return False


@functools.cache
def php_default_sockets() -> tuple[str, ...]:
    """The non-empty `mysqli.default_socket` and `pdo_mysql.default_socket` PHP uses, in that order."""
    values = _php_ini_values() if shutil.which("php") else None
    if values is None:
        values = ini_file_values(php_ini_files(PHP_INI_ROOT))
    return tuple(dict.fromkeys(v for v in values if v))


def _php_ini_values() -> list[str] | None:
    code = "foreach ([" + ", ".join(f"'{s}'" for s in PHP_SOCKET_SETTINGS) + "] as $k) echo ini_get($k), PHP_EOL;"
    try:
        out = runner.run(["php", "-r", code], what="php")
    except runner.ProcessFailed:
        return None
    return [line.strip() for line in out.decode(errors="replace").splitlines()]


INI_LINE = re.compile(r"^\s*([A-Za-z0-9_.]+)\s*=\s*(.*?)\s*$")


def php_ini_files(root: str) -> list[str]:
    """Debian's CLI ini files in the order PHP reads them (php.ini, then conf.d by name), oldest PHP first."""
    def version(folder: str) -> tuple[int, ...]:
        return tuple(int(part) for part in re.findall(r"\d+", os.path.basename(folder)))

    files: list[str] = []
    for folder in sorted(glob.glob(f"{root}/*/cli"), key=lambda path: version(os.path.dirname(path))):
        files += [f"{folder}/php.ini", *sorted(glob.glob(f"{folder}/conf.d/*.ini"))]
    return files


def ini_file_values(paths: list[str]) -> list[str]:
    """The socket settings as PHP would read these ini files (later files override earlier ones; a
    newer PHP version's files are listed after an older one's, so it wins)."""
    found: dict[str, str] = {}
    for path in paths:
        try:
            lines = open(path, encoding="utf-8", errors="replace").read().splitlines()  # noqa: SIM115
        except OSError:
            continue
        for line in lines:
            match = INI_LINE.match(line)
            if match and match[1] in PHP_SOCKET_SETTINGS:
                found[match[1]] = _ini_value(match[2])
    return [found.get(name, "") for name in PHP_SOCKET_SETTINGS]


def _ini_value(raw: str) -> str:
    """An ini value without its quotes or trailing `;` comment."""
    if raw and raw[0] in "\"'" and raw[0] in raw[1:]:
        return raw[1:raw.index(raw[0], 1)]
    return raw.split(";", 1)[0].strip()
