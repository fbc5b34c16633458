"""PHP's (mysqlnd's) and libpq's rules for host strings: which transport safehold must use."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from safehold.apps import dbhost
from safehold.apps.common import databases_from_config
from safehold.apps.dbhost import mariadb_connection
from safehold.config import DatabaseConfig
from safehold.engines.mariadb import client
from safehold.models import Connection


@pytest.mark.parametrize("value, port, expected", [
    ("localhost", None, ("localhost", None, None)),
    ("LocalHost", None, ("localhost", None, None)),
    ("", None, ("localhost", None, None)),
    ("  localhost ", None, ("localhost", None, None)),
    ("p:localhost", None, ("localhost", None, None)),
    ("localhost:3307", None, ("localhost", 3307, None)),
    ("localhost:/srv/db/mysql.sock", None, ("localhost", None, "/srv/db/mysql.sock")),
    ("p:localhost:/srv/db/mysql.sock", 3306, ("localhost", 3306, "/srv/db/mysql.sock")),
    ("127.0.0.1", None, ("127.0.0.1", None, None)),
    ("127.0.0.1", 3310, ("127.0.0.1", 3310, None)),
    ("db:3307", None, ("db", 3307, None)),
    ("p:db.example:3308", None, ("db.example", 3308, None)),
    ("db.example:3308", 3306, ("db.example", 3308, None)),  # the host string's port wins, as in PHP
    ("[::1]:3309", None, ("::1", 3309, None)),
    ("[::1]", 3306, ("::1", 3306, None)),
    ("::1", None, ("::1", None, None)),
    ("fe80::1:2", 3306, ("fe80::1:2", 3306, None)),
])
def test_parse_php_host(value: str, port: int | None, expected: tuple[str, int | None, str | None]) -> None:
    assert dbhost.parse_php_host(value, port) == expected


@pytest.fixture
def fake_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A real Unix socket standing for PHP's default; the server's standard places are made absent."""
    path = str(tmp_path / "php.sock")
    server = socket.socket(socket.AF_UNIX)
    server.bind(path)
    monkeypatch.setattr(dbhost, "php_default_sockets", lambda: (path,))
    yield path
    server.close()


@pytest.mark.parametrize("host", ["localhost", "p:localhost", "", "localhost:3306", "LOCALHOST"])
def test_localhost_is_php_default_socket(host: str, fake_socket: str) -> None:
    assert dbhost.mariadb_endpoint(host) == dbhost.Endpoint("localhost", 3306 if host.endswith("6") else None,
                                                            fake_socket)


def test_socket_named_or_configured_wins(fake_socket: str) -> None:
    assert dbhost.mariadb_endpoint("localhost:/x/my.sock").socket == "/x/my.sock"
    assert dbhost.mariadb_endpoint("localhost", socket="/y/my.sock").socket == "/y/my.sock"
    # An explicit socket setting in safehold.toml is used whatever the host says.
    assert dbhost.mariadb_endpoint("127.0.0.1", socket="/y/my.sock").socket == "/y/my.sock"


@pytest.mark.parametrize("host, expected", [
    ("127.0.0.1", dbhost.Endpoint("127.0.0.1")), ("db.example:3307", dbhost.Endpoint("db.example", 3307)),
    ("[2001:db8::5]:3306", dbhost.Endpoint("2001:db8::5", 3306)), ("p:10.0.0.2", dbhost.Endpoint("10.0.0.2")),
])
def test_names_and_addresses_are_tcp(host: str, expected: dbhost.Endpoint, fake_socket: str) -> None:
    assert dbhost.mariadb_endpoint(host) == expected


def test_no_php_socket_takes_first_existing_standard_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dbhost, "php_default_sockets", lambda: ())
    second = tmp_path / "second.sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(second))
    try:
        monkeypatch.setattr(dbhost, "MARIADB_SOCKETS", (str(tmp_path / "none.sock"), str(second)))
        assert dbhost.default_mariadb_socket() == str(second)
        # A plain file is not a socket; with none at all the first candidate is named (connecting says so).
        monkeypatch.setattr(dbhost, "MARIADB_SOCKETS", (str(tmp_path / "none.sock"), str(tmp_path)))
        assert dbhost.default_mariadb_socket() == str(tmp_path / "none.sock")
    finally:
        server.close()


def test_php_default_that_is_gone_falls_back_to_a_standard_socket(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    live = tmp_path / "live.sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(live))
    try:
        monkeypatch.setattr(dbhost, "php_default_sockets", lambda: (str(tmp_path / "gone.sock"),))
        monkeypatch.setattr(dbhost, "MARIADB_SOCKETS", (str(live),))
        assert dbhost.default_mariadb_socket() == str(live)
    finally:
        server.close()


def test_ini_files_debian_layout(tmp_path: Path) -> None:
    """php.ini first, then conf.d by name, a newer PHP after an older one; quotes and comments removed."""
    for version, ini, confd in (("7.4", 'mysqli.default_socket = "/old/mysql.sock"\n', {}),
                                ("8.2", "mysqli.default_socket =\npdo_mysql.default_socket=/from/php.ini ; c\n",
                                 {"20-mysqli.ini": "mysqli.default_socket = '/from/conf.d.sock'\n",
                                  "10-pdo.ini": "; pdo_mysql.default_socket = /commented\n"})):
        folder = tmp_path / version / "cli"
        (folder / "conf.d").mkdir(parents=True)
        (folder / "php.ini").write_text("[PHP]\nengine = On\n" + ini)
        for name, text in confd.items():
            (folder / "conf.d" / name).write_text(text)
    files = dbhost.php_ini_files(str(tmp_path))
    assert [Path(f).relative_to(tmp_path).as_posix() for f in files] == [
        "7.4/cli/php.ini", "8.2/cli/php.ini", "8.2/cli/conf.d/10-pdo.ini", "8.2/cli/conf.d/20-mysqli.ini"]
    assert dbhost.ini_file_values(files) == ["/from/conf.d.sock", "/from/php.ini"]
    assert dbhost.ini_file_values([str(tmp_path / "missing.ini")]) == ["", ""]


def test_php_itself_is_asked_when_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    """With php on PATH its answer (compiled-in default included) is taken; without it the ini files."""
    dbhost.php_default_sockets.cache_clear()
    monkeypatch.setattr(dbhost.shutil, "which", lambda name: "/usr/bin/php")
    monkeypatch.setattr(dbhost.runner, "run", lambda argv, what: b"/a.sock\n\n" if argv[:2] == ["php", "-r"] else b"")
    assert dbhost.php_default_sockets() == ("/a.sock",)
    dbhost.php_default_sockets.cache_clear()
    monkeypatch.setattr(dbhost.shutil, "which", lambda name: None)
    monkeypatch.setattr(dbhost, "ini_file_values", lambda files: ["", "/b.sock"])
    assert dbhost.php_default_sockets() == ("/b.sock",)
    dbhost.php_default_sockets.cache_clear()


@pytest.mark.parametrize("host, socket_dir, expected", [
    ("", None, "default"), ("/var/run/postgresql", None, "/var/run/postgresql"), ("/srv/pg", None, "/srv/pg"),
    ("localhost", None, None), ("127.0.0.1", None, None), ("db.example", "/sock", "/sock"),
])
def test_postgres_follows_libpq(host: str, socket_dir: str | None, expected: str | None,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dbhost, "default_postgres_socket_dir", lambda port: "default")
    where = dbhost.postgres_endpoint(host, 5432, socket_dir)
    assert where.socket == expected
    assert where.host == (host if expected is None else "localhost")


def test_connections_from_config_and_app_strings(fake_socket: str) -> None:
    """Generic config and profiles build the same connection; the line says which transport it is."""
    local, tcp = databases_from_config("x", [
        DatabaseConfig(engine="mariadb", host="localhost", user="app", names=["a"]),
        DatabaseConfig(engine="mariadb", user="app", names=["b"])])
    assert local.connection.socket == fake_socket
    assert local.connection.describe() == f"mariadb app@localhost via socket {fake_socket}"
    assert tcp.connection.socket is None and tcp.connection.describe() == "mariadb app@127.0.0.1:3306"
    (ported,) = databases_from_config("x", [DatabaseConfig(engine="mariadb", host="db.example:3307", names=["c"])])
    assert (ported.connection.host, ported.connection.port, ported.connection.socket) == ("db.example", 3307, None)
    (pg,) = databases_from_config("x", [DatabaseConfig(engine="postgres", host="/srv/pg", names=["d"])])
    assert pg.connection.socket == "/srv/pg" and pg.connection.describe() == "postgres localhost via socket /srv/pg"
    app = mariadb_connection("p:localhost", None, "app", "pw")
    assert (app.socket, app.user, app.password.reveal()) == (fake_socket, "app", "pw")
    assert mariadb_connection("db:3307", None, "app", "").describe() == "mariadb app@db:3307"


def test_option_file_keeps_the_tools_on_the_same_transport() -> None:
    """mariadb/mariadb-dump read the transport from the option file: a socket is forced, TCP too."""
    with client.option_file(Connection("mariadb", host="localhost", socket="/run/x.sock", user="u")) as path:
        text = Path(path).read_text()
    assert "socket=/run/x.sock\nprotocol=socket" in text and "host=" not in text
    with client.option_file(Connection("mariadb", host="127.0.0.1", port=3307, user="u")) as path:
        text = Path(path).read_text()
    assert "host=127.0.0.1\nport=3307\nprotocol=tcp" in text and "socket=" not in text
