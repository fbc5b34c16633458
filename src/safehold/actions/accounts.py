"""The app's database account(s) travel with the point: recorded at backup, re-created on restore.

Backup: for every MariaDB login the instance uses, the account the server matched (CREATE USER
with its auth plugin and hash, and its grants) goes into the point's accounts part
(`/safehold/accounts.json`, encrypted by restic like every part, left out of unencrypted exports);
the manifest names the accounts only, and records each database's character set and collation.

Restore: before anything is changed, every login the restore needs is tried. When the server
refuses it and the point holds that account, or a database of the point is missing, the step
re-creates them exactly (CREATE DATABASE with the recorded defaults, CREATE USER with the recorded
hash, GRANTs) through an administrative login: `[instances.NAME.db_admin]`, by default root over
the local server's socket without a password (unix_socket auth). Without one the restore stops
before changing anything and prints the SQL to run, with a placeholder where the password goes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from safehold.apps.common import server_connection
from safehold.apps.dbhost import default_mariadb_socket
from safehold.config import InstanceConfig
from safehold.engines import postgres_roles
from safehold.engines.mariadb import accounts as sql
from safehold.engines.mariadb import client
from safehold.errors import DatabaseError, RestoreRefused, SafeholdError
from safehold.models import Connection, Database, Instance
from safehold.output import Reporter
from safehold.repository.manifest import ACCOUNTS_PATH, DatabaseEntry, Manifest
from safehold.secrets import resolve

LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")


def admin_connection(name: str, instance_config: InstanceConfig, app: Connection) -> Connection | None:
    """The configured administrative login, else root over the local socket (no password) when the app's
    server is on this host; None when there is none to try (a remote server and nothing configured)."""
    admin = instance_config.db_admin
    if admin is not None:
        password = resolve(admin.password, f"instances.{name}.db_admin.password") if admin.password else None
        return server_connection("mariadb", admin.host, admin.port, admin.socket, admin.user, password)
    if app.socket or app.host in LOCAL_HOSTS:
        return Connection("mariadb", host="localhost", socket=app.socket or default_mariadb_socket(), user="root")
    return None


def _logins(databases: list[Database]) -> list[Connection]:
    """Each distinct MariaDB login among the databases, in order."""
    return list(dict.fromkeys(db.connection for db in databases if db.connection.engine == "mariadb"))


@dataclass
class Recorded:
    """What a backup learnt about the accounts: the encrypted part's bytes, names, defaults, warnings."""

    payload: bytes | None = None
    names: list[str] = field(default_factory=list)
    defaults: dict[str, tuple[str, str]] = field(default_factory=dict)  # database → (charset, collation)
    warnings: list[str] = field(default_factory=list)


def record(instance: Instance, instance_config: InstanceConfig, reporter: Reporter,
           postgres_roles_too: bool = True) -> Recorded:
    """Read the account of every MariaDB login of the instance and the defaults of its databases, and
    (unless the profile records them itself, `postgres_roles_too` False) each PostgreSQL database's role."""
    result = Recorded()
    found: list[sql.Account] = []
    roles: list[postgres_roles.RoleRecord] = []
    for db in instance.databases:
        if db.connection.engine == "postgres" and postgres_roles_too:
            if (role := postgres_roles.record(db)) is not None:
                roles.append(role)
                reporter.step(f"recorded PostgreSQL role {role['role']} of database {db.name}")
            else:
                result.warnings.append(f"PostgreSQL role of database {db.name} not recorded: it could not be read")
    for conn in _logins(instance.databases):
        try:
            admin = admin_connection(instance.name, instance_config, conn)
        except SafeholdError as exc:  # a db_admin password reference that does not resolve
            admin = None
            result.warnings.append(exc.line())
        try:
            account, problems = sql.read(conn, admin)
        except DatabaseError as exc:
            result.warnings.append(f"database account of {conn.describe()} not recorded: {exc.message}")
            continue
        if account.name not in {a.name for a in found}:
            found.append(account)
            result.warnings += [f"database account {account.name}: {line}" for line in problems]
            reporter.step(f"recorded database account {account.name} ({len(account.grants)} grant(s))")
    for db in instance.databases:
        if db.connection.engine == "mariadb" and not db.table_prefix:
            # A shared database (iTop's prefix) is not the app's own: its defaults are not the app's to set.
            try:
                if defaults := sql.charset(db.connection, db.name):
                    result.defaults[db.name] = defaults
            except DatabaseError:
                pass  # the dump of that database reports it
    if found or roles:
        result.payload = json.dumps({"format": 1, "accounts": [a.to_json() for a in found],
                                     "postgres_roles": roles}).encode()
        result.names = [a.name for a in found] + list(dict.fromkeys(f"postgres role {r['role']}" for r in roles))
    return result


def apply_defaults(entries: list[DatabaseEntry], defaults: dict[str, tuple[str, str]]) -> None:
    """Put each database's recorded character set and collation into its manifest entry."""
    for entry in entries:
        if entry.name in defaults:
            entry.character_set, entry.collation = defaults[entry.name]


# -- restore ------------------------------------------------------------------------------------

@dataclass
class AccountStep:
    """What the restore re-creates before loading, and through which login."""

    accounts: list[sql.Account] = field(default_factory=list)
    databases: list[tuple[str, str | None, str | None]] = field(default_factory=list)
    admin: Connection | None = None
    app_login: Connection | None = None  # creates the missing databases when no account is missing
    problem: str | None = None  # why it cannot be done (no administrative login); the SQL says the rest
    postgres: list[str] = field(default_factory=list)  # PostgreSQL roles/databases created (or, dry run, to be)

    @property
    def needed(self) -> bool:
        return bool(self.accounts or self.databases)

    unreachable: set[str] = field(default_factory=set)  # databases whose login the server refuses yet

    def script(self) -> str:
        """The SQL an administrator runs by hand: every secret replaced by the placeholder."""
        return "\n".join(f"{line};" for line in sql.statements(self.accounts, self.databases, redact=True))

    def describe(self) -> dict[str, Any]:
        via = self.admin or self.app_login
        return {"create_accounts": [a.name for a in self.accounts],
                "create_databases": [name for name, _, _ in self.databases],
                "via": via.describe() if via and not self.problem else None, "problem": self.problem,
                "sql": self.script() if self.problem else None, "postgres": self.postgres}


def _recorded(repo: Any, manifest: Manifest) -> dict[str, Any]:  # noqa: ANN401 - Repository or an export
    """The point's accounts part (empty when it has none)."""
    if not manifest.accounts_snapshot:
        return {}
    try:
        with repo.open_file(manifest.accounts_snapshot, ACCOUNTS_PATH) as stream:
            return dict(json.loads(stream.read()))
    except FileNotFoundError:  # an unencrypted export leaves the accounts part out
        return {}


def plan(name: str, instance_config: InstanceConfig, repo: Any,  # noqa: ANN401 - Repository or an export
         manifest: Manifest, steps: list[tuple[DatabaseEntry, Database]], dry_run: bool) -> AccountStep:
    """Find, changing nothing, which accounts and databases the restore must create (entries restored under
    their own name, each with its live database); refuse, with the SQL, when that needs a login safehold lacks.
    """
    step = AccountStep()
    part = _recorded(repo, manifest)
    recorded = {a.user: a for a in map(sql.Account.from_json, part.get("accounts", []))}
    by_login: dict[Connection, list[DatabaseEntry]] = {}
    for entry, live in steps:
        if entry.engine == "mariadb":
            by_login.setdefault(live.connection, []).append(entry)
    admin_needed: list[DatabaseEntry] = []
    for conn, entries in by_login.items():
        logs_in, refused = sql.can_log_in(conn)
        if logs_in:
            missing = [e for e in entries if not client.exists(Database(conn, e.name), e.name)]
            step.databases += [(e.name, e.character_set, e.collation) for e in missing]
            step.app_login = step.app_login or (conn if missing else None)
            continue
        account = recorded.get(conn.user or "")
        if account is None:
            raise RestoreRefused(f"{refused.message if refused else conn.describe()}, and the point holds no "
                                 f"record of that account", "create the database user the app's config names, "
                                                            "then run the same restore again; nothing was changed")
        if account.name not in {a.name for a in step.accounts}:  # i-doit: tenants often share the system's user
            step.accounts.append(account)
        admin_needed += entries
        step.unreachable |= {e.name for e in entries}
    if not admin_needed:
        return step
    admin = admin_connection(name, instance_config, next(iter(by_login)))
    problem = None
    if admin is None:
        problem = "the database server is not on this host and no [instances.*.db_admin] login is configured"
    else:
        try:
            admin_db = Database(admin, "mysql")
            for account in list(step.accounts):
                if sql.account_exists(admin, account):
                    raise RestoreRefused(f"the server has {account.name} but refuses the password in the app's "
                                         "config", "set that account's password to the app's, or fix the app's "
                                                   "config; nothing was changed")
            step.databases += [(e.name, e.character_set, e.collation) for e in admin_needed
                               if not client.exists(admin_db, e.name)]
        except DatabaseError as exc:
            problem = f"no administrative login ({exc.message})"
    step.admin = admin if problem is None else None
    step.problem = problem
    if problem:  # every database of those logins goes into the SQL (IF NOT EXISTS): nothing could be checked
        step.databases += [(e.name, e.character_set, e.collation) for e in admin_needed]
    if problem and not dry_run:
        names = ", ".join(a.name for a in step.accounts)
        raise RestoreRefused(f"the database account {names} is missing and {problem}",
                             "nothing was changed; run this SQL as a database administrator (put the password from "
                             "the app's config in place of the placeholder), then run the same restore again, "
                             f"or set [instances.{name}.db_admin]:\n{step.script()}")
    return step


def ensure_postgres_roles(repo: Any, manifest: Manifest,  # noqa: ANN401 - Repository or an export
                          steps: list[tuple[DatabaseEntry, Database]], reporter: Reporter, dry_run: bool,
                          step: AccountStep) -> None:
    """Re-create the recorded PostgreSQL role and database of each entry restored under its own name where the
    server lacks them (engines.postgres_roles; without the `postgres` superuser it stops and prints the SQL).
    What is (or, in a dry run, would be) done goes into `step`; a dry run's missing ones count as unreachable."""
    roles = {str((r.get("database") or {}).get("name")): r for r in _recorded(repo, manifest).get("postgres_roles", [])}
    for entry, live in steps:
        if entry.engine == "postgres" and (found := roles.get(entry.name)):
            password = live.connection.password.reveal() if live.connection.password else None
            if lines := postgres_roles.ensure(live, found, reporter, dry_run, password):
                step.postgres += lines
                step.unreachable |= {entry.name} if dry_run else set()


def apply(step: AccountStep, reporter: Reporter) -> None:
    """Create what the plan found missing: databases first, then accounts and their grants."""
    if not step.needed:
        return
    via = step.admin or step.app_login
    assert via is not None
    for name, _, _ in step.databases:
        reporter.step(f"creating database {name} with its recorded character set and collation")
    for account in step.accounts:
        reporter.step(f"creating database account {account.name} as recorded, with {len(account.grants)} grant(s)")
    sql.run(via, sql.statements(step.accounts, step.databases))
