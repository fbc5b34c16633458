"""The app's database account comes back too: a server that lost the app's user and database gets them
re-created exactly (auth, grants, character set and collation) by `restore`, or told the SQL to run."""

from __future__ import annotations

import json
import secrets
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import MySQLdb
import pytest

from tests.conftest import database_config, mariadb_dump, private_file, run_cli, sql, write_config
from tests.integration.appkit import ok

SOCKET = "/run/mysqld/mysqld.sock"
PLACEHOLDER = "<the app database password>"


@pytest.fixture
def app_account(mariadb: dict[str, object], new_db: Callable[[str], str]) -> Iterator[dict[str, str]]:
    """'app_x…'@'localhost' with a password, ALL on its latin1/german database and SELECT on one more table."""
    database = new_db("t_acc")
    sql(f"ALTER DATABASE `{database}` CHARACTER SET latin1 COLLATE latin1_german1_ci")
    user, password = f"app_x{secrets.token_hex(3)}", "pw'" + secrets.token_hex(8)
    escaped = password.replace("'", "\\'")
    sql(["CREATE TABLE t (id INT PRIMARY KEY, name VARCHAR(30)) ENGINE=InnoDB",
         "INSERT INTO t VALUES (1, 'Müller'), (2, 'Straße')", "CREATE TABLE extra (k INT)"], database)
    sql([f"CREATE USER '{user}'@'localhost' IDENTIFIED BY '{escaped}'",
         f"GRANT ALL ON `{database}`.* TO '{user}'@'localhost'"])
    hashed = sql(f"SELECT authentication_string FROM mysql.user WHERE User='{user}'")[0][0]
    try:
        yield {"db": database, "user": user, "password": password, "hash": hashed}
    finally:
        sql(f"DROP USER IF EXISTS '{user}'@'localhost'")


def _config(tmp_path: Path, repo: dict[str, str], account: dict[str, str], extra: str = "") -> Path:
    password = private_file(tmp_path / "secrets" / "db.pass", account["password"])
    return write_config(tmp_path, repo, f"""
[instances.app]
repositories = ["main"]
{extra}
[[instances.app.databases]]
engine = "mariadb"
host = "localhost"
user = "{account['user']}"
password = "file:{password}"
names = ["{account['db']}"]
""")


def _state(account: dict[str, str]) -> tuple[object, ...]:
    """Everything the restore must bring back: grants, auth, database defaults, data."""
    user = account["user"]
    grants = sorted(r[0] for r in sql(f"SHOW GRANTS FOR '{user}'@'localhost'"))
    auth = sql(f"SELECT plugin, authentication_string FROM mysql.user WHERE User='{user}' AND Host='localhost'")
    defaults = sql(f"SELECT DEFAULT_CHARACTER_SET_NAME, DEFAULT_COLLATION_NAME FROM information_schema.SCHEMATA "
                   f"WHERE SCHEMA_NAME='{account['db']}'")
    return grants, auth, defaults, mariadb_dump(account["db"])


def _drop_all(account: dict[str, str]) -> None:
    sql([f"DROP DATABASE `{account['db']}`", f"DROP USER '{account['user']}'@'localhost'"])


def _app_logs_in(account: dict[str, str]) -> int:
    conn = MySQLdb.connect(unix_socket=SOCKET, user=account["user"], password=account["password"],
                           database=account["db"])
    try:
        cur = conn.cursor()
        cur.execute("SELECT COUNT(*) FROM t")
        return int(cur.fetchone()[0])
    finally:
        conn.close()


def _no_secret_anywhere(account: dict[str, str], texts: list[str], state: Path) -> None:
    for text in texts:
        assert account["hash"] not in text and account["hash"][1:] not in text and account["password"] not in text
    for path in state.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert account["hash"][1:].encode() not in data and account["password"].encode() not in data, path


def _nothing_there(account: dict[str, str]) -> bool:
    return not sql(f"SELECT 1 FROM mysql.user WHERE User='{account['user']}'") and not sql(
        f"SELECT 1 FROM information_schema.SCHEMATA WHERE SCHEMA_NAME='{account['db']}'")


def test_restore_recreates_account_and_database(app_account: dict[str, str], tmp_path: Path,
                                                repo: dict[str, str]) -> None:
    config = _config(tmp_path, repo, app_account)
    before = _state(app_account)
    backup = ok(run_cli("backup", "app", config=config))
    show = ok(run_cli("show", "latest", "--json", config=config))
    manifest = json.loads(show.stdout)
    assert manifest["accounts"] == [f"'{app_account['user']}'@'localhost'"]
    assert (manifest["databases"][0]["character_set"], manifest["databases"][0]["collation"]) == \
        ("latin1", "latin1_german1_ci")

    _drop_all(app_account)
    plan = ok(run_cli("restore", "app", "latest", "--dry-run", config=config))
    assert f"database account '{app_account['user']}'@'localhost' is missing: re-created as recorded" in plan.stdout
    assert f"database {app_account['db']} is missing: created with its recorded character set" in plan.stdout
    assert "via socket" in plan.stdout and _nothing_there(app_account)  # the dry run changed nothing
    restored = ok(run_cli("restore", "app", "latest", config=config))
    assert _state(app_account) == before
    assert _app_logs_in(app_account) == 2
    _no_secret_anywhere(app_account, [backup.stdout, backup.stderr, show.stdout, plan.stdout, plan.stderr,
                                      restored.stdout, restored.stderr], tmp_path / "state")


def test_without_admin_access_the_sql_to_run_is_printed(app_account: dict[str, str], tmp_path: Path,
                                                        repo: dict[str, str]) -> None:
    nobody = f"t_no_admin_{secrets.token_hex(3)}"
    config = _config(tmp_path, repo, app_account, f'db_admin = {{ user = "{nobody}" }}')
    before = _state(app_account)
    backup = ok(run_cli("backup", "app", config=config))
    _drop_all(app_account)

    refused = run_cli("restore", "app", "latest", config=config)
    assert refused.returncode == 1, refused.stderr
    assert f"the database account '{app_account['user']}'@'localhost' is missing and no administrative login" \
        in refused.stderr
    assert _nothing_there(app_account)
    script = [line for line in refused.stderr.splitlines() if line.startswith(("CREATE ", "GRANT "))]
    assert script and any(PLACEHOLDER in line for line in script)
    dry = ok(run_cli("restore", "app", "latest", "--dry-run", config=config))
    assert "the restore would stop" in dry.stdout and PLACEHOLDER in dry.stdout
    _no_secret_anywhere(app_account, [backup.stdout, backup.stderr, refused.stdout, refused.stderr, dry.stdout],
                        tmp_path / "state")

    # The admin runs it, as root over the socket, with the app's password in place of the placeholder.
    text = "\n".join(script).replace(PLACEHOLDER, app_account["password"].replace("'", "\\'"))
    subprocess.run(["mariadb", "-uroot", f"--socket={SOCKET}"], input=text.encode(), check=True)
    ok(run_cli("restore", "app", "latest", config=config))
    grants, _, defaults, dump = _state(app_account)
    assert (grants, defaults, dump) == (before[0], before[2], before[3])
    assert _app_logs_in(app_account) == 2


def test_postgres_role_and_database_come_back(tmp_path: Path, repo: dict[str, str]) -> None:
    """A generic PostgreSQL instance: its login role (attributes, password hash) and its database (owner,
    encoding, collation) are recorded and re-created by the restore through the `postgres` superuser."""
    from tests.integration.test_postgres import need_postgres, plain_dump, psql

    need_postgres()
    role, database = f"t_pgacc_{secrets.token_hex(3)}", f"t_pgacc_db_{secrets.token_hex(3)}"
    psql("postgres", f"CREATE ROLE {role} LOGIN CREATEDB PASSWORD 'pw{secrets.token_hex(6)}'")
    psql("postgres", f"CREATE DATABASE {database} OWNER {role} TEMPLATE template0 ENCODING 'UTF8'")
    try:
        psql(database, f"SET ROLE {role}; CREATE TABLE notes (id int PRIMARY KEY, body text);"
                       "INSERT INTO notes VALUES (1, 'Grüße'), (2, 'x');")
        hashed = psql("postgres", f"SELECT rolpassword FROM pg_authid WHERE rolname = '{role}'").strip()
        config = database_config(tmp_path, repo, "pg", "postgres", role, database)
        before = plain_dump(database)
        backup = ok(run_cli("backup", "pg", config=config))
        assert json.loads(ok(run_cli("show", "latest", "--json", config=config)).stdout)["accounts"] == \
            [f"postgres role {role}"]
        psql("postgres", f"DROP DATABASE {database} WITH (FORCE)")
        psql("postgres", f"DROP ROLE {role}")
        plan = ok(run_cli("restore", "pg", "latest", "--dry-run", config=config))
        assert "CREATE ROLE" in plan.stdout and not psql("postgres", f"SELECT 1 FROM pg_roles WHERE rolname = '{role}'")
        restored = ok(run_cli("restore", "pg", "latest", config=config))
        assert psql("postgres", f"SELECT rolpassword FROM pg_authid WHERE rolname = '{role}'").strip() == hashed
        assert psql("postgres", f"SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = '{database}'"
                    ).strip() == role
        assert plain_dump(database) == before
        for text in (backup.stdout, backup.stderr, plan.stdout, restored.stdout, restored.stderr):
            assert hashed not in text
    finally:
        psql("postgres", f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
        psql("postgres", f"DROP ROLE IF EXISTS {role}")
