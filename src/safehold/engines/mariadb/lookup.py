"""Read queries that tell facts about an instance which may be half destroyed (versions, tenant lists,
one stored secret to prove a key on): no answer is `None`, never an error.

A backup still fails loudly when it dumps an unreachable database; these only ask.
"""

from __future__ import annotations

from safehold.engines.mariadb import client
from safehold.errors import SafeholdError
from safehold.models import Connection


def query_or_none(conn: Connection, database: str, sql: str, args: tuple[object, ...] = ()) -> list[tuple] | None:
    """Rows of a read query (bytes decoded), or None when it cannot run (database or table missing, server down)."""
    try:
        with client.cursor(conn, database) as cur:
            cur.execute(sql, args)
            return [tuple(v.decode() if isinstance(v, bytes) else v for v in row) for row in cur.fetchall()]
    except SafeholdError:
        return None


def first_filled(conn: Connection, database: str, table: str, column: str) -> tuple[object, str] | None:
    """(id, value) of the first row (by `id`) whose `column` is neither NULL nor empty, or None."""
    rows = query_or_none(conn, database, f"SELECT id, {client.quote(column)} FROM {client.quote(table)} WHERE "
                         f"{client.quote(column)} IS NOT NULL AND {client.quote(column)} <> '' ORDER BY id LIMIT 1")
    return (rows[0][0], str(rows[0][1])) if rows else None
