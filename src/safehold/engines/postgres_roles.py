"""The PostgreSQL role an application logs in with, recorded at backup and re-created on restore.

`pg_dump` holds no roles (NetBox's "replicating NetBox": "PostgreSQL roles and permissions are
not in the dump"), so a server rebuilt from nothing refuses the app's login and a restore as the
app's role cannot even look at the server. The record keeps what `CREATE ROLE` needs: the
role's attributes (`pg_roles`), its password hash (`pg_authid.rolpassword`, readable only by a
superuser: read through the administrative connection; PostgreSQL accepts a SCRAM/MD5 hash as
`PASSWORD` and stores it as it is), the roles it is a member of, and its database's owner,
encoding and collation. The record travels inside the point's encrypted keys stream, never in
output or manifests.

The administrative connection is the server's `postgres` superuser over the same socket
directory or host the app uses (peer or trust authentication, as Debian sets up locally). Without
it, a restore stops before changing anything and prints the SQL to run, the password left as a
placeholder.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import NotRequired, TypedDict

from safehold.engines import postgres
from safehold.errors import SafeholdError
from safehold.models import Database
from safehold.output import Reporter

ADMIN_USER = "postgres"
ATTRIBUTES = ("SUPERUSER", "INHERIT", "CREATEROLE", "CREATEDB", "LOGIN", "REPLICATION", "BYPASSRLS")
PASSWORD_PLACEHOLDER = "'<the password from the app config>'"


class DatabaseRecord(TypedDict):
    """The role's database as `CREATE DATABASE` needs it."""

    name: str
    owner: str
    encoding: str
    collate: str
    ctype: str


class RoleRecord(TypedDict):
    """What a point keeps of the app's role (JSON in its keys stream); `statements` re-creates it.

    Only `role` and `attributes` are read unguarded: a record lacking the others still restores.
    """

    role: str
    attributes: list[str]
    connection_limit: NotRequired[int]
    valid_until: NotRequired[str | None]
    password_hash: NotRequired[str | None]
    member_of: NotRequired[list[str] | None]
    database: NotRequired[DatabaseRecord | None]


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def admin_database(like: Database) -> Database:
    """The administrative connection to the app's server: the `postgres` superuser, same socket or host."""
    conn = replace(like.connection, user=ADMIN_USER, password=None)
    return Database(conn, "postgres")


def _admin_works(admin: Database) -> bool:
    try:
        return postgres.rows(admin, "postgres", "SELECT rolsuper FROM pg_roles WHERE rolname = current_user") == [["t"]]
    except SafeholdError:
        return False


def record(db: Database) -> RoleRecord | None:
    """The app role's record (with its password hash when a superuser can read it); None if it cannot be read."""
    role = db.connection.user or ADMIN_USER
    admin = admin_database(db)
    reader = admin if _admin_works(admin) else db
    try:
        found = postgres.rows(reader, "postgres",
                              "SELECT rolsuper, rolinherit, rolcreaterole, rolcreatedb, rolcanlogin, rolreplication, "
                              "rolbypassrls, rolconnlimit, COALESCE(rolvaliduntil::text, '') FROM pg_roles "
                              f"WHERE rolname = {_literal(role)}")
        if not found:
            return None
        members = postgres.rows(reader, "postgres",
                                "SELECT r.rolname FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.roleid "
                                f"JOIN pg_roles u ON u.oid = m.member WHERE u.rolname = {_literal(role)} ORDER BY 1")
        database = postgres.rows(reader, "postgres",
                                 "SELECT pg_get_userbyid(datdba), pg_encoding_to_char(encoding), datcollate, "
                                 f"datctype FROM pg_database WHERE datname = {_literal(db.name)}")
        password = (postgres.rows(admin, "postgres", f"SELECT COALESCE(rolpassword, '') FROM pg_authid "
                                                     f"WHERE rolname = {_literal(role)}")
                    if reader is admin else [])
    except SafeholdError:
        return None
    flags = found[0]
    result: RoleRecord = {
        "role": role,
        "attributes": [name for name, value in zip(ATTRIBUTES, flags[:7], strict=True) if value == "t"],
        "connection_limit": int(flags[7]),
        "valid_until": flags[8] or None,
        "password_hash": password[0][0] if password and password[0][0] else None,
        "member_of": [row[0] for row in members],
        "database": None,
    }
    if database:
        owner, encoding, collate, ctype = database[0]
        result["database"] = {"name": db.name, "owner": owner, "encoding": encoding, "collate": collate,
                              "ctype": ctype}
    return result


def statements(found: RoleRecord, with_hash: bool = True) -> list[str]:
    """The SQL that re-creates the role, its memberships and its database as recorded."""
    role = postgres._quote(str(found["role"]))
    attributes = list(found["attributes"])
    parts = [*attributes, *(f"NO{a}" for a in ATTRIBUTES if a not in attributes)]
    if (limit := int(found.get("connection_limit", -1))) != -1:
        parts.append(f"CONNECTION LIMIT {limit}")
    if found.get("valid_until"):
        parts.append(f"VALID UNTIL {_literal(str(found['valid_until']))}")
    if found.get("password_hash"):
        parts.append(f"PASSWORD {_literal(str(found['password_hash'])) if with_hash else PASSWORD_PLACEHOLDER}")
    elif "LOGIN" in attributes:
        parts.append(f"PASSWORD {PASSWORD_PLACEHOLDER}")
    sql = [f"CREATE ROLE {role} WITH {' '.join(parts)};"]
    sql += [f"GRANT {postgres._quote(str(group))} TO {role};" for group in found.get("member_of") or []]
    database = found.get("database")
    if isinstance(database, dict):
        sql.append(f"CREATE DATABASE {postgres._quote(database['name'])} OWNER {postgres._quote(database['owner'])} "
                   f"TEMPLATE template0 ENCODING {_literal(database['encoding'])} "
                   f"LC_COLLATE {_literal(database['collate'])} LC_CTYPE {_literal(database['ctype'])};")
    return sql


def ensure(db: Database, found: RoleRecord, reporter: Reporter, dry_run: bool = False,
           password: str | None = None) -> list[str]:
    """Re-create the recorded role and its database where they are missing; returns what was (or would be) done.

    `password` (the app config's, as text) is used when the record holds no hash. Without a working
    administrative connection nothing is changed and the error carries the SQL to run.
    """
    admin = admin_database(db)
    role = str(found["role"])
    database = found.get("database") if isinstance(found.get("database"), dict) else None
    if not _admin_works(admin):
        if _app_login_works(db) and (database is None or postgres.exists(db, str(database["name"]))):
            return []
        raise _no_admin(db, found)
    role_missing = not postgres.rows(admin, "postgres", f"SELECT 1 FROM pg_roles WHERE rolname = {_literal(role)}")
    db_missing = database is not None and not postgres.exists(admin, str(database["name"]))
    sql = statements(found)
    todo = ([line for line in sql if line.startswith(("CREATE ROLE", "GRANT"))] if role_missing else [])
    todo += [line for line in sql if line.startswith("CREATE DATABASE")] if db_missing else []
    if role_missing and not found.get("password_hash") and password:
        todo[0] = todo[0].replace(PASSWORD_PLACEHOLDER, _literal(password))
    done = [_say(line) for line in todo]
    if dry_run or not todo:
        return done
    for line, said in zip(todo, done, strict=True):
        if PASSWORD_PLACEHOLDER in line:
            raise SafeholdError(f"the point holds no password hash for PostgreSQL role {role} and the app config "
                                "none either", "create the role by hand, then restore again")
        reporter.step(said)
        postgres.rows(admin, "postgres", line.rstrip(";"))
    return done


def _say(line: str) -> str:
    """A statement as output shows it: never a password or its hash."""
    head, _, _ = line.partition(" PASSWORD ")
    return head.rstrip(";") + (" PASSWORD …" if " PASSWORD " in line else "")


def _app_login_works(db: Database) -> bool:
    try:
        postgres.rows(Database(db.connection, "postgres"), "postgres", "SELECT 1")
        return True
    except SafeholdError:
        return False


def _no_admin(db: Database, found: RoleRecord) -> SafeholdError:
    where = admin_database(db).connection.describe()
    sql = " ".join(statements(found, with_hash=False))
    return SafeholdError(f"PostgreSQL role {found['role']} or its database is missing and safehold cannot log in "
                         f"as the administrator ({where}); nothing was changed",
                         f"run as a superuser: {sql} — then run the same restore again")


def to_secret_text(found: RoleRecord) -> str:
    """The record as it is kept in the point's keys stream."""
    return json.dumps(found, sort_keys=True)
