"""Multi-row INSERTs from LOAD DATA chunks, for bench/one_table.py (one table loaded on two connections).

LOAD DATA into a table with an AUTO_INCREMENT column holds InnoDB's table-level AUTO-INC lock for
the whole statement (`innodb_autoinc_lock_mode=1`, the default and a read-only server variable), so
two connections loading one such table take turns. A multi-row INSERT is a "simple insert" to
InnoDB: it takes the lock's mutex for a moment only, so lanes sharing such a table load it with
INSERTs and run side by side. (Creating the table without AUTO_INCREMENT and adding the attribute
afterwards is no way out: MariaDB 10.11 can only do that with ALGORITHM=COPY, a rewrite of the table.)

The statement stores exactly what LOAD DATA would: every value is a `_binary` literal (the bytes as
they are, like LOAD DATA's CHARACTER SET binary, so each column keeps its own charset), `\\N` is
NULL, a wide column's T tag is dropped (H: hex), and INSERT IGNORE treats bad rows like LOAD DATA
LOCAL does (warnings, not errors). Escapes in our chunks (`\\\\`, `\\t`, `\\n`, `\\0`, `\\N`) mean the
same inside an SQL string literal. A chunk holding any other backslash sequence (no dump of ours
writes one; in a string literal `\\'` would end the value early) is left to LOAD DATA.
"""

from __future__ import annotations

import re

from safehold.engines.mariadb.client import quote
from safehold.engines.mariadb.tables import NULL_FIELD, Table

# After removing escaped backslashes, any backslash left must start one of these escapes.
_FOREIGN_ESCAPE = re.compile(rb"\\(?:[^tn0N]|\Z)")
_NULL = b"_binary'\\N'"  # a whole field `\N` once wrapped (a literal backslash would be doubled)
_NEXT_FIELD = b"',_binary'"


def insertable(table: Table) -> bool:
    """True when INSERT can store every column of `table` like LOAD DATA does.

    BIT values travel as numbers LOAD DATA casts (a string literal would store their digits'
    bytes), and history rows of system-versioned tables are left to LOAD DATA as well.
    """
    return not table.versioned and all(c.data_type != "bit" for c in table.columns)


def statement(table: Table, database: str, data: bytes, limit: int) -> bytes | None:
    """An INSERT IGNORE of the lines in `data` into `database`.`table`, or None (use LOAD DATA).

    None also when the statement would be longer than `limit` bytes (the server's max_allowed_packet).
    """
    if not data or _FOREIGN_ESCAPE.search(data.replace(b"\\\\", b"")):
        return None
    columns = table.line_columns()
    body = data[:-1] if data.endswith(b"\n") else data
    body = body.replace(b"'", b"\\'").replace(b"\0", b"\\0")
    wide = [n for n, column in enumerate(columns) if column.wide]
    if not wide:
        rows = b"(_binary'" + body.replace(b"\t", _NEXT_FIELD).replace(b"\n", b"'),(_binary'") + b"')"
    elif wide == list(range(len(columns) - len(wide), len(columns))):
        rows = b",".join([_tail_row(line, len(wide), len(wide) < len(columns)) for line in body.split(b"\n")])
    else:  # wide columns in place: dumps before format 3 of tables that were not split
        rows = b",".join([_row(line, wide) for line in body.split(b"\n")])
    names = ",".join(quote(c.name) for c in columns)
    sql = (f"INSERT IGNORE INTO {quote(database)}.{quote(table.name)} ({names}) VALUES ".encode()
           + rows.replace(_NULL, b"NULL"))
    return sql if len(sql) <= limit else None


def _wide(value: bytes) -> bytes:
    """A wide column's field (tagged T raw text, H hex, or `\\N`) as an SQL value."""
    if value == NULL_FIELD:
        return b"NULL"
    if value[:1] == b"H":
        return b"UNHEX('" + value[1:] + b"')"
    return b"_binary'" + value[1:] + b"'"


def _tail_row(line: bytes, count: int, narrow: bool) -> bytes:
    """One row whose last `count` fields are wide (format 3 and split tables)."""
    fields = line.rsplit(b"\t", count) if narrow else line.split(b"\t")
    values = [_wide(value) for value in fields[-count:]]
    if narrow:
        values.insert(0, b"_binary'" + fields[0].replace(b"\t", _NEXT_FIELD) + b"'")
    return b"(" + b",".join(values) + b")"


def _row(line: bytes, wide: list[int]) -> bytes:
    """One row with wide fields at the positions `wide`."""
    fields = line.split(b"\t")
    values = [b"_binary'" + value + b"'" for value in fields]
    for position in wide:
        values[position] = _wide(fields[position])
    return b"(" + b",".join(values) + b")"
