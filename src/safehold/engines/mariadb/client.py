"""Connections to MariaDB/MySQL: in-process (mysqlclient) and option files for the CLI tools."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import MySQLdb

from safehold.errors import DatabaseError
from safehold.models import Connection, Database, DatabaseReport, TableReport, default_port
from safehold.secrets import secret_text_file

OBJECT_QUERIES = {
    "views": "SELECT COUNT(*) FROM information_schema.VIEWS WHERE TABLE_SCHEMA=%s",
    "routines": "SELECT COUNT(*) FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA=%s",
    "triggers": "SELECT COUNT(*) FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA=%s",
    "events": "SELECT COUNT(*) FROM information_schema.EVENTS WHERE EVENT_SCHEMA=%s",
}


# MariaDB 10.5+ (4166), MySQL 8 (3948) and older servers (1148) refusing LOAD DATA LOCAL INFILE.
LOCAL_INFILE_REFUSED = (4166, 3948, 1148)


def quote(name: str) -> str:
    """Quote an identifier for MariaDB."""
    return "`" + name.replace("`", "``") + "`"


def _local_infile_refused(conn: Connection) -> DatabaseError:
    return DatabaseError(f"{conn.describe()} does not allow LOAD DATA LOCAL INFILE (local_infile is OFF)",
                         "allow it while restoring: SET GLOBAL local_infile=1 (the point is unharmed)")


def explain(exc: Exception, conn: Connection, database: str | None = None) -> DatabaseError:
    """Translate a MySQLdb error into one line without credentials (its `code` is the server's number)."""
    code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else 0
    error = _explained(exc, code, conn, database)
    error.code = code
    return error


def _explained(exc: Exception, code: int, conn: Connection, database: str | None) -> DatabaseError:
    where = conn.describe()
    if code in (1045, 1698):
        return DatabaseError(f"cannot log in to {where}: access denied", "check the database user and password")
    if code in (2002, 2003, 2005, 2006, 2013):
        return DatabaseError(f"database server {where} is unreachable",
                             f"is MariaDB running and the {'socket' if conn.socket else 'host/port'} right?")
    if code == 1049:
        return DatabaseError(f"database {database!r} does not exist on {where}", "check the database name")
    if code in LOCAL_INFILE_REFUSED:
        return _local_infile_refused(conn)
    if code in (1044, 1142, 1227):
        return DatabaseError(f"{where}: missing privilege ({exc.args[1]})", "grant the privilege or use another user")
    message = exc.args[1] if len(exc.args) > 1 else str(exc)
    return DatabaseError(f"{where}: {message}", "see the MariaDB error above")


def problem(conn: Connection, database: str) -> DatabaseError | None:
    """Why `database` cannot be opened with these credentials (code 1049: it does not exist), or None."""
    try:
        connect(conn, database).close()
    except DatabaseError as exc:
        return exc
    return None


def connect(conn: Connection, database: str | None = None, **options: object) -> MySQLdb.Connection:
    """Open a connection; errors are translated, credentials never shown."""
    kwargs: dict[str, object] = {"user": conn.user or "root", "charset": "utf8mb4", "local_infile": 1}
    if conn.password is not None:
        kwargs["password"] = conn.password.reveal()
    if conn.socket:
        kwargs["unix_socket"] = conn.socket
    else:
        kwargs["host"] = conn.host
        kwargs["port"] = conn.port or default_port("mariadb")
    if database:
        kwargs["database"] = database
    kwargs.update(options)
    try:
        return MySQLdb.connect(**kwargs)
    except MySQLdb.Error as exc:
        raise explain(exc, conn, database) from None


@contextlib.contextmanager
def cursor(conn: Connection, database: str | None = None) -> Iterator[MySQLdb.cursors.Cursor]:
    """A cursor on a fresh connection that is closed afterwards."""
    connection = connect(conn, database)
    try:
        yield connection.cursor()
        connection.commit()
    except MySQLdb.Error as exc:
        raise explain(exc, conn, database) from None
    finally:
        connection.close()


def _option_value(value: str) -> str:
    """A value for a double-quoted option-file setting, read back byte for byte by the MariaDB tools.

    The option-file reader undoes `\\\\ \\" \\n \\r`; a raw line break would end the setting (a PHP
    config can hold one: "pa\\nss")."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")


@contextlib.contextmanager
def option_file(conn: Connection) -> Iterator[Path]:
    """A [client] option file (in memory, 0600) so mariadb/mariadb-dump get the password without argv."""
    lines = ["[client]", f"user={conn.user or 'root'}"]
    if conn.password is not None:
        lines.append(f'password="{_option_value(conn.password.reveal())}"')
    if conn.socket:  # the app's own transport; a [client] host or protocol in my.cnf must not move it to TCP
        lines += [f"socket={conn.socket}", "protocol=socket"]
    else:
        lines += [f"host={conn.host}", f"port={conn.port or default_port('mariadb')}", "protocol=tcp"]
    with secret_text_file("client.cnf", "\n".join(lines)) as path:
        yield path


def base_tables(cur: MySQLdb.cursors.Cursor, name: str, prefix: str | None = None) -> list[str]:
    """Base tables of a database (only those starting with `prefix` when given), sorted."""
    cur.execute(
        "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA=%s AND TABLE_TYPE IN"
        " ('BASE TABLE','SYSTEM VERSIONED','SEQUENCE') ORDER BY TABLE_NAME",
        (name,),
    )
    tables = [row[0].decode() if isinstance(row[0], bytes) else row[0] for row in cur.fetchall()]
    if prefix:
        tables = [t for t in tables if t.startswith(prefix)]
    return tables


def inspect(db: Database, name: str) -> DatabaseReport:
    """Exact row counts per table and object counts of a live database."""
    report = DatabaseReport(key=db.key, engine="mariadb", name=name, method="inspect")
    with cursor(db.connection) as cur:
        for table in base_tables(cur, name, db.table_prefix):
            cur.execute(f"SELECT COUNT(*) FROM {quote(name)}.{quote(table)}")
            report.tables[table] = TableReport(rows=int(cur.fetchone()[0]))
        for kind, query in OBJECT_QUERIES.items():
            cur.execute(query, (name,))
            report.objects[kind] = int(cur.fetchone()[0])
        cur.execute("SELECT VERSION()")
        report.server_version = cur.fetchone()[0]
    return report


def exists(db: Database, name: str) -> bool:
    """True when the database (schema) exists."""
    with cursor(db.connection) as cur:
        cur.execute("SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME=%s", (name,))
        return bool(cur.fetchone()[0])


def is_empty(db: Database, name: str) -> bool:
    """True when the database is missing or holds none of the tables/objects this point would write."""
    if not exists(db, name):
        return True
    with cursor(db.connection) as cur:
        if base_tables(cur, name, db.table_prefix):
            return False
        if db.table_prefix:
            return True
        return all(_count(cur, query, name) == 0 for query in OBJECT_QUERIES.values())


def _count(cur: MySQLdb.cursors.Cursor, query: str, name: str) -> int:
    cur.execute(query, (name,))
    return int(cur.fetchone()[0])


def require_local_infile(db: Database) -> None:
    """Refuse, before anything is loaded, a server that will not take LOAD DATA LOCAL INFILE."""
    with cursor(db.connection) as cur:
        cur.execute("SELECT @@local_infile")
        if not int(cur.fetchone()[0]):
            raise _local_infile_refused(db.connection)


def create(db: Database, name: str) -> None:
    """Create the database if it does not exist (utf8mb4)."""
    with cursor(db.connection) as cur:
        cur.execute(f"CREATE DATABASE IF NOT EXISTS {quote(name)} CHARACTER SET utf8mb4")


def drop(db: Database, name: str) -> None:
    """Empty what the point would restore: the whole database, or only the prefixed tables (iTop)."""
    with cursor(db.connection) as cur:
        if not db.table_prefix:
            cur.execute(f"DROP DATABASE IF EXISTS {quote(name)}")
            return
        cur.execute("SET FOREIGN_KEY_CHECKS=0")
        for table in base_tables(cur, name, db.table_prefix):
            cur.execute(f"DROP TABLE IF EXISTS {quote(name)}.{quote(table)}")
        cur.execute(
            "SELECT TABLE_NAME FROM information_schema.VIEWS WHERE TABLE_SCHEMA=%s AND TABLE_NAME LIKE %s",
            (name, db.table_prefix.replace("_", "\\_") + "%"),
        )
        for (view,) in cur.fetchall():
            cur.execute(f"DROP VIEW IF EXISTS {quote(name)}.{quote(view)}")


def names(db: Database, prefix: str) -> list[str]:
    """Databases on the server (that the user can see) whose name starts with `prefix`."""
    pattern = prefix.replace("\\", "\\\\").replace("_", "\\_").replace("%", "\\%") + "%"
    with cursor(db.connection) as cur:
        cur.execute("SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME LIKE %s", (pattern,))
        return sorted(row[0].decode() if isinstance(row[0], bytes) else row[0] for row in cur.fetchall())


def server_version(db: Database) -> str:
    """The server's VERSION() string."""
    with cursor(db.connection) as cur:
        cur.execute("SELECT VERSION()")
        return str(cur.fetchone()[0])
