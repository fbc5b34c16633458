"""The app's MariaDB account as SQL: read it at backup, re-create it (and missing databases) at restore.

What is read: `SHOW CREATE USER` (auth plugin and password hash: a secret, kept only in the point's
encrypted accounts part, never in logs, messages or the manifest) and `SHOW GRANTS` of the account
the app logs in as (`CURRENT_USER()`, the account the server matched, e.g. 'app'@'localhost'), and
each database's default character set and collation. MariaDB lets any user read its own CREATE
USER and grants; where a server does not, an administrative connection reads them.

`admin_script` is the same SQL with every secret replaced by a placeholder, for an admin to run
by hand when safehold has no administrative login.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import NotRequired, TypedDict

import MySQLdb

from safehold.engines.mariadb import client
from safehold.errors import DatabaseError
from safehold.models import Connection

PASSWORD_PLACEHOLDER = "<the app database password>"
# `IDENTIFIED BY PASSWORD '*hash'` and `IDENTIFIED VIA plugin USING 'hash'` (ed25519, …) hold the secret.
HASHED = re.compile(r"IDENTIFIED BY PASSWORD '(?:[^'\\]|\\.)*'")
USING = re.compile(r"USING '(?:[^'\\]|\\.)*'")
# The clause SHOW GRANTS repeats on the USAGE line; CREATE USER sets it, so grants are run without it.
GRANT_AUTH = re.compile(r" IDENTIFIED (?:BY PASSWORD '(?:[^'\\]|\\.)*'|VIA (?:[^'\\]|'(?:[^'\\]|\\.)*')*?)"
                        r"(?= REQUIRE | WITH |$)")


class AccountRecord(TypedDict):
    """An Account as the point's accounts part holds it (JSON)."""

    user: str
    host: str
    create: NotRequired[str | None]
    grants: NotRequired[list[str] | None]


@dataclass
class Account:
    """One database account as the server describes it."""

    user: str
    host: str
    create: str | None = None  # SHOW CREATE USER (None: not readable with the rights at hand)
    grants: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        """'user'@'host', as SQL and messages name it (no secret)."""
        return f"{_literal(self.user)}@{_literal(self.host)}"

    def to_json(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: AccountRecord) -> Account:
        return cls(user=str(data["user"]), host=str(data["host"]), create=data.get("create"),
                   grants=[str(g) for g in data.get("grants") or []])


def _literal(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def read(conn: Connection, admin: Connection | None) -> tuple[Account, list[str]]:
    """The account `conn` logs in as, with its CREATE USER and grants, and what could not be read."""
    with client.cursor(conn) as cur:
        cur.execute("SELECT CURRENT_USER()")
        user, _, host = _text(cur.fetchone()[0]).rpartition("@")
        account = Account(user, host)
        try:
            cur.execute("SHOW CREATE USER CURRENT_USER")
            account.create = _text(cur.fetchone()[0])
        except MySQLdb.Error:
            pass
        try:
            cur.execute("SHOW GRANTS FOR CURRENT_USER")
            account.grants = [_text(row[0]) for row in cur.fetchall()]
        except MySQLdb.Error:
            pass
    problems: list[str] = []
    if (account.create is None or not account.grants) and admin is not None:
        try:
            with client.cursor(admin) as cur:
                if account.create is None:
                    cur.execute(f"SHOW CREATE USER {account.name}")
                    account.create = _text(cur.fetchone()[0])
                if not account.grants:
                    cur.execute(f"SHOW GRANTS FOR {account.name}")
                    account.grants = [_text(row[0]) for row in cur.fetchall()]
        except (DatabaseError, MySQLdb.Error) as exc:
            problems.append(f"the administrative login could not read it either ({_reason(exc)})")
    if account.create is None:
        problems.insert(0, f"{account.name} may not read its own CREATE USER, so the point does not hold its "
                           "password hash: a restore onto a new server needs the password typed into the SQL it "
                           "prints")
    if not account.grants:
        problems.insert(0, f"the grants of {account.name} could not be read")
    return account, problems


def _reason(exc: Exception) -> str:
    return exc.message if isinstance(exc, DatabaseError) else str(exc.args[-1] if exc.args else exc)


def charset(conn: Connection, database: str) -> tuple[str, str] | None:
    """(default character set, collation) of a database, None when it cannot be seen."""
    with client.cursor(conn) as cur:
        cur.execute("SELECT DEFAULT_CHARACTER_SET_NAME, DEFAULT_COLLATION_NAME FROM information_schema.SCHEMATA"
                    " WHERE SCHEMA_NAME=%s", (database,))
        row = cur.fetchone()
    return (_text(row[0]), _text(row[1])) if row else None


def account_exists(admin: Connection, account: Account) -> bool:
    """True when the server has this user@host."""
    with client.cursor(admin) as cur:
        cur.execute("SELECT COUNT(*) FROM mysql.user WHERE User=%s AND Host=%s", (account.user, account.host))
        return bool(cur.fetchone()[0])


def create_database(name: str, character_set: str | None, collation: str | None) -> str:
    """CREATE DATABASE IF NOT EXISTS with the recorded defaults."""
    spec = (f" CHARACTER SET {character_set}" if character_set else "") + (f" COLLATE {collation}" if collation else "")
    return f"CREATE DATABASE IF NOT EXISTS {client.quote(name)}{spec}"


def create_user(account: Account, redact: bool = False) -> str:
    """CREATE USER IF NOT EXISTS as recorded (the hash), or with the password placeholder when `redact`."""
    if account.create is None:
        return f"CREATE USER IF NOT EXISTS {account.name} IDENTIFIED BY '{PASSWORD_PLACEHOLDER}'"
    statement = re.sub(r"^CREATE USER ", "CREATE USER IF NOT EXISTS ", account.create)
    if redact:
        statement = HASHED.sub(f"IDENTIFIED BY '{PASSWORD_PLACEHOLDER}'", statement)
        statement = USING.sub(f"USING PASSWORD('{PASSWORD_PLACEHOLDER}')", statement)
    return statement


def grant_statements(account: Account) -> list[str]:
    """The recorded grants without the authentication clause SHOW GRANTS repeats (CREATE USER sets it)."""
    return [GRANT_AUTH.sub("", grant) for grant in account.grants]


def statements(accounts: list[Account], databases: list[tuple[str, str | None, str | None]],
               redact: bool = False) -> list[str]:
    """Databases first (grants may name them), then each account and its grants."""
    result = [create_database(*db) for db in databases]
    for account in accounts:
        result += [create_user(account, redact), *grant_statements(account)]
    return result


def run(admin: Connection, sql: list[str]) -> None:
    """Run statements on the administrative connection; errors never echo a statement (it holds the hash)."""
    with client.cursor(admin) as cur:
        for statement in sql:
            cur.execute(statement)


def can_log_in(conn: Connection) -> tuple[bool, DatabaseError | None]:
    """(True, None) when `conn` logs in; (False, error) when the server refuses the login (no such account,
    or another password); other failures (server down) raise."""
    try:
        client.connect(conn).close()
    except DatabaseError as exc:
        if exc.code in (1045, 1698):
            return False, exc
        raise
    return True, None
