"""Connecting as the app does: `localhost` is the Unix socket, for every tool of a backup and a restore.

The local server runs with skip-name-resolve, so a user created only as 'u'@'localhost' (as the
apps' install guides create it) can log in over the socket and never over TCP.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import MySQLdb
import pytest

from tests.conftest import database_config, mariadb_dump, private_file, run_cli, sql, write_config
from tests.integration.appkit import ok
from tests.integration.test_apps_itflow import build_itflow, fill_database


@pytest.fixture
def local_account(mariadb: dict[str, object], new_db: Callable[[str], str]) -> Iterator[dict[str, str]]:
    """A database and a user that exists only as 'user'@'localhost', with every privilege on it."""
    database = new_db("t_tr")
    user, password = f"t_tr_{secrets.token_hex(3)}", "pw'" + secrets.token_hex(6)
    escaped = password.replace("'", "\\'")
    sql([f"CREATE USER '{user}'@'localhost' IDENTIFIED BY '{escaped}'",
         f"GRANT ALL ON `{database}`.* TO '{user}'@'localhost'"])
    sql(["CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(20)) ENGINE=InnoDB",
         "INSERT INTO t VALUES (1, 'one'), (2, 'zwei')"], database)
    try:
        yield {"db": database, "user": user, "password": password}
    finally:
        sql(f"DROP USER IF EXISTS '{user}'@'localhost'")


def test_the_user_cannot_use_tcp(local_account: dict[str, str]) -> None:
    """What makes the other tests worth having: over TCP this user is refused."""
    try:
        conn = MySQLdb.connect(host="127.0.0.1", port=3306, user=local_account["user"],
                               password=local_account["password"])
    except MySQLdb.OperationalError as refused:
        # 1698: refused by an account of the same name using unix_socket that another test may hold
        assert refused.args[0] in (1045, 1130, 1698), refused.args
        return
    try:  # only an anonymous account another test made lets it in, and then not as this user
        cur = conn.cursor()
        cur.execute("SELECT CURRENT_USER()")
        assert not cur.fetchone()[0].startswith(f"{local_account['user']}@")
    finally:
        conn.close()


def test_generic_localhost_backs_up_and_restores_over_the_socket(local_account: dict[str, str], tmp_path: Path,
                                                                repo: dict[str, str]) -> None:
    database = local_account["db"]
    password = private_file(tmp_path / "secrets" / "db.pass", local_account["password"])
    config = database_config(tmp_path, repo, "local", "mariadb", local_account["user"], database,
                             f'host = "localhost"\npassword = "file:{password}"')
    plan = ok(run_cli("backup", "--dry-run", config=config))
    assert f"database mariadb {database} on mariadb {local_account['user']}@localhost via socket " in plan.stdout
    before = mariadb_dump(database)
    ok(run_cli("backup", "local", config=config))
    sql(f"DROP DATABASE `{database}`")
    ok(run_cli("restore", "local", "latest", config=config))
    assert mariadb_dump(database) == before


def test_itflow_with_localhost_host_string(local_account: dict[str, str], tmp_path: Path,
                                           repo: dict[str, str]) -> None:
    """A profile reads `$dbhost = 'localhost'` as PHP does; dry run, backup and restore take the socket."""
    database = local_account["db"]
    sql(f"DROP TABLE `{database}`.t")
    fill_database(database)
    root = tmp_path / "www" / "itflow"
    build_itflow(root, database)
    config_php = root / "config.php"
    escaped = local_account["password"].replace("'", "\\'")
    text = config_php.read_text().replace("$dbhost = '127.0.0.1';", "$dbhost = 'p:localhost';")
    config_php.write_text(text.replace("$dbusername = 'root';", f"$dbusername = '{local_account['user']}';")
                          .replace("$dbpassword = '';", f"$dbpassword = '{escaped}';"))
    config = write_config(tmp_path, repo, f'[instances.it]\napp = "itflow"\nroot = "{root}"\nrepositories = ["main"]\n')
    plan = ok(run_cli("backup", "--dry-run", "it", config=config))
    assert f"on mariadb {local_account['user']}@localhost via socket" in plan.stdout
    before = mariadb_dump(database)
    ok(run_cli("backup", "it", config=config))
    sql(f"DROP DATABASE `{database}`")
    ok(run_cli("restore", "it", "latest", "--only", "db", config=config))
    assert mariadb_dump(database) == before
