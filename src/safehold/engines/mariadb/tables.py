"""What the parallel reader needs to know about each table, and the SQL that reads and loads its rows.

Rows travel as LOAD DATA text: fields separated by TAB, rows ended by LF, `\\N` for NULL, and
backslash escapes for backslash, TAB and LF. The server formats each row itself
(`CONCAT_WS` over `REPLACE`d binary casts), so Python never converts single values of ordinary
columns, and bytes are loaded back with `CHARACTER SET binary`, so every column keeps its own
charset untouched. The one exception is the wide column group of a split table (long text,
blobs): the server sends those values raw and `wide_line` escapes them here, because MariaDB's
REPLACE searches byte by byte and moves the rest of the value for every hit, while Python's
`bytes.replace` runs at memory speed (a third of the server's CPU during a dump went to REPLACE).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from safehold.engines.mariadb.client import quote

# Types whose text form can never hold TAB, LF, NUL or backslash: no escaping needed.
PLAIN_TYPES = {
    "tinyint", "smallint", "mediumint", "int", "bigint", "decimal", "float", "double", "date", "datetime",
    "timestamp", "time", "year",
}
INTEGER_TYPES = {"tinyint", "smallint", "mediumint", "int", "bigint"}
# Columns that can hold values longer than this are "wide": their values leave the server raw and
# are escaped here (see wide_line), tagged T. Dumps before format 3 sent long values of tables that
# were not split through the server's REPLACE or as hex (tag H); loading still decodes both.
WIDE_BYTES = 4096
# A table holding at least half of a database's bytes in rows this wide keeps its secondary indexes in
# CREATE TABLE at restore time (see Table.keep_indexes).
DOMINANT_SHARE = 0.5
DOMINANT_ROW_BYTES = 1024
WIDE_TYPES = {"text", "mediumtext", "longtext", "blob", "mediumblob", "longblob", "json", "geometry", "point",
              "linestring", "polygon", "multipoint", "multilinestring", "multipolygon", "geometrycollection"}
TRANSACTIONAL_ENGINES = {"InnoDB"}
NULL = "'\\\\N'"
NULL_FIELD = b"\\N"
# What a LOAD DATA field escapes, in the order it must be done (backslash first). NUL needs no
# escape: LOAD DATA reads it as data (the escaped NULs of older dumps still decode).
ESCAPES = ((b"\\", b"\\\\"), (b"\t", b"\\t"), (b"\n", b"\\n"))
_BACKSLASH, _TAB, _LF = ESCAPES
# Implicit system-versioning columns are invisible in information_schema but readable by name.
VERSION_COLUMNS = ("ROW_START", "ROW_END")
VERSION_EXPRESSIONS = {"ROW START", "ROW END"}


@dataclass
class Column:
    """One stored column: its name and type (generated columns are never listed)."""

    name: str
    data_type: str
    wide: bool = False  # can hold values longer than WIDE_BYTES

    def select_expr(self) -> str:
        """Server-side expression giving this column as escaped LOAD DATA text."""
        name = quote(self.name)
        if self.data_type == "bit":
            # BIT cannot be loaded from text bits; travel as an unsigned integer instead.
            return f"IFNULL({name}+0,{NULL})"
        if self.data_type in PLAIN_TYPES:
            return f"IFNULL(CAST({name} AS BINARY),{NULL})"
        escaped = f"CAST({name} AS BINARY)"
        for raw, text in ESCAPES:
            escaped = f"REPLACE({escaped},X'{raw.hex()}',X'{text.hex()}')"
        return f"IFNULL({escaped},{NULL})"

    def load_target(self, number: int) -> tuple[str, str | None]:
        """LOAD DATA target for this column and the SET clause that decodes it, if any."""
        if self.data_type == "bit":
            return f"@v{number}", f"{quote(self.name)}=CAST(@v{number} AS UNSIGNED)"
        if self.wide:
            value = f"@v{number}"
            return value, f"{quote(self.name)}=IF(LEFT({value},1)='H',UNHEX(SUBSTRING({value},2)),SUBSTRING({value},2))"
        return quote(self.name), None


@dataclass
class Table:
    """A base table as the dump reads it and the restore loads it."""

    index: int
    name: str
    engine: str
    versioned: bool
    columns: list[Column] = field(default_factory=list)
    key: list[str] = field(default_factory=list)  # primary key, else a NOT NULL unique key, else empty
    key_type: str = ""
    period_end: str = ""  # system-versioned tables: the ROW END column
    data_length: int = 0
    avg_row_length: int = 0
    # Rows travel as two streams, all narrow columns first, then the wide ones (text, blobs) that
    # rarely change: an update of a status or timestamp then re-stores only the small narrow stream.
    split: bool = False
    # Format 3: the wide columns come raw, after the narrow ones, in every line of the table, split or
    # not. The server returns NULL (with a warning) for a HEX() or REPLACE() result larger than
    # max_allowed_packet, so a blob over half of it in a table without a key used to be lost.
    wide_last: bool = False
    # The restore creates this table with its secondary indexes instead of adding them after its rows.
    # Its load is the restore's critical path (one lane: InnoDB's AUTO-INC lock serialises LOAD DATA
    # into one table), and an index added afterwards reads the whole table back from disk while the
    # other lanes have nothing left to do (measured on a 3.5 GB ITFlow-shaped database: 10 s at 0.45
    # cores after 44 s). In wide rows an index entry is a small part of each row, so keeping the index
    # during the load costs less than that: 48.7 s instead of 55.3 s. Set by `mark_dominant`.
    keep_indexes: bool = False

    @property
    def splittable(self) -> bool:
        """True when the table has both wide and narrow columns and a key both reads are ordered by.

        A table read in physical order is never split: the server may scan an index for one column
        group and the table for the other, and give the same rows in different orders.
        """
        return not self.ordered and any(c.wide for c in self.columns) and not all(c.wide for c in self.columns)

    def column_groups(self) -> list[list[Column]]:
        """The columns as read: narrow then wide group for a split table, else all in one group."""
        if not self.split:
            return [self.columns]
        return [[c for c in self.columns if not c.wide], [c for c in self.columns if c.wide]]

    def line_columns(self) -> list[Column]:
        """Columns in the order of a loaded line: narrow ones first when the wide ones come raw."""
        if self.split or self.wide_last:
            return [c for c in self.columns if not c.wide] + [c for c in self.columns if c.wide]
        return list(self.columns)

    def lines(self, rows: Sequence[tuple]) -> list[bytes]:
        """Lines of a table with wide_last from its SELECT rows (narrow text, then the raw wide values)."""
        if any(not c.wide for c in self.columns):
            return [row[0] + b"\t" + wide_line(row[1:]) for row in rows]
        return [wide_line(row) for row in rows]

    @property
    def transactional(self) -> bool:
        """True when a consistent-snapshot transaction sees this table (InnoDB)."""
        return self.engine in TRANSACTIONAL_ENGINES

    @property
    def ordered(self) -> bool:
        """True when row order is physical (no clustered key): chunks must load one after another."""
        return not (self.key and self.transactional)

    def source(self, database: str) -> str:
        """The FROM clause, including system-versioned history."""
        history = " FOR SYSTEM_TIME ALL" if self.versioned else ""
        return f"{quote(database)}.{quote(self.name)}{history}"

    def select(self, database: str, low: int | None = None, high: int | None = None) -> str:
        """SELECT of one key range (bounds on the first key column), one text line per row, key order.

        A table with wide columns gives its narrow columns as one text field, then each wide column
        raw (see `wide_line`).
        """
        raw = self.split or self.wide_last
        narrow = [c for c in self.columns if not (raw and c.wide)]
        parts = ["CONCAT_WS('\\t'," + ",".join(c.select_expr() for c in narrow) + ")"] if narrow else []
        parts += [f"CAST({quote(c.name)} AS BINARY)" for c in self.columns if raw and c.wide]
        line = ",".join(parts)
        where = []
        if low is not None:
            where.append(f"{quote(self.key[0])} >= {int(low)}")
        if high is not None:
            where.append(f"{quote(self.key[0])} < {int(high)}")
        sql = f"SELECT {line} FROM {self.source(database)}"
        if where:
            sql += " WHERE " + " AND ".join(where)
        # Only InnoDB stores rows in key order; other engines are read (and reloaded) in physical order.
        order = [quote(k) for k in self.key] + ([quote(self.period_end)] if self.versioned and self.key else [])
        if order and not self.ordered:
            sql += " ORDER BY " + ",".join(order)
        return sql

    def load(self, database: str, path: str) -> str:
        """LOAD DATA statement for one chunk file of this table (into the current database when `database` is "")."""
        targets, sets = [], []
        for number, column in enumerate(self.line_columns()):
            target, decode = column.load_target(number)
            targets.append(target)
            if decode:
                sets.append(decode)
        escaped_path = path.replace("\\", "\\\\").replace("'", "\\'")
        into = f"{quote(database)}.{quote(self.name)}" if database else quote(self.name)
        sql = (f"LOAD DATA LOCAL INFILE '{escaped_path}' INTO TABLE {into}"
               " CHARACTER SET binary FIELDS TERMINATED BY '\\t' ESCAPED BY '\\\\' LINES TERMINATED BY '\\n'"
               f" ({','.join(targets)})")
        if sets:
            sql += " SET " + ",".join(sets)
        return sql

    def to_json(self) -> dict[str, object]:
        """What the restore needs, stored at the start of the stream."""
        return {"index": self.index, "name": self.name, "engine": self.engine, "versioned": self.versioned,
                "columns": [[c.name, c.data_type, c.wide] for c in self.columns], "key": self.key, "split": self.split,
                "wide_last": self.wide_last, **({"keep_indexes": True} if self.keep_indexes else {})}

    @classmethod
    def from_json(cls, item: dict) -> Table:
        """Inverse of to_json."""
        return cls(index=item["index"], name=item["name"], engine=item["engine"], versioned=item["versioned"],
                   columns=[Column(*column) for column in item["columns"]], key=list(item["key"]),
                   split=bool(item.get("split")), wide_last=bool(item.get("wide_last")),
                   keep_indexes=bool(item.get("keep_indexes")))


def mark_dominant(tables: Sequence[Table]) -> None:
    """Set `keep_indexes` on the table holding at least DOMINANT_SHARE of the bytes in rows of at least
    DOMINANT_ROW_BYTES (the server's own estimates). Narrow rows keep deferring: there an index is a
    large part of the table, and maintained row by row during the load it doubled a load (session 5,
    bench/RESULTS.md)."""
    total = sum(table.data_length for table in tables)
    if not total:
        return
    largest = max(tables, key=lambda table: table.data_length)
    if largest.data_length >= DOMINANT_SHARE * total and largest.avg_row_length >= DOMINANT_ROW_BYTES:
        largest.keep_indexes = True


def wide_line(values: tuple) -> bytes:
    """One row's raw wide values (bytes or None) as a line of the wide stream, tagged like select_expr's.

    The same ESCAPES as select_expr's REPLACE chain, always with the T tag: no value needs hex
    here, however long. The three replaces are spelled out rather than looped: this runs once per
    value of every wide column.
    """
    return b"\t".join([NULL_FIELD if value is None else
                        b"T" + value.replace(*_BACKSLASH).replace(*_TAB).replace(*_LF)
                        for value in values])


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def describe(cur, database: str, prefix: str | None) -> list[Table]:  # noqa: ANN001 - MySQLdb cursor
    """Base tables of `database` (sequences excluded: mariadb-dump writes their state) in name order."""
    cur.execute(
        "SELECT TABLE_NAME, ENGINE, TABLE_TYPE, IFNULL(DATA_LENGTH,0), IFNULL(AVG_ROW_LENGTH,0)"
        " FROM information_schema.TABLES WHERE TABLE_SCHEMA=%s AND TABLE_TYPE IN ('BASE TABLE','SYSTEM VERSIONED')"
        " ORDER BY TABLE_NAME", (database,))
    tables: dict[str, Table] = {}
    for name, engine, kind, length, avg in cur.fetchall():
        name = _text(name)
        if prefix and not name.startswith(prefix):
            continue
        tables[name] = Table(index=len(tables), name=name, engine=_text(engine or ""),
                             versioned=_text(kind) == "SYSTEM VERSIONED", data_length=int(length),
                             avg_row_length=int(avg))
    cur.execute(
        "SELECT TABLE_NAME, COLUMN_NAME, DATA_TYPE, IS_GENERATED, GENERATION_EXPRESSION, CHARACTER_OCTET_LENGTH,"
        " IS_NULLABLE FROM information_schema.COLUMNS"
        " WHERE TABLE_SCHEMA=%s ORDER BY TABLE_NAME, ORDINAL_POSITION", (database,))
    # Kept for _keys: joining STATISTICS with COLUMNS in the server opens every table's definition again
    # (0.8 s of a 200-table iTop's 2 s dump).
    column_facts: dict[tuple[str, str], tuple[str, bool]] = {}
    for table_name, column, data_type, generated, expression, octets, nullable in cur.fetchall():
        column_facts[(_text(table_name), _text(column))] = (_text(data_type), _text(nullable) == "YES")
        table = tables.get(_text(table_name))
        period = _text(expression or "").upper()
        # Declared ROW START/END columns are written with system_versioning_insert_history; others are computed.
        if table is None or (_text(generated) == "ALWAYS" and period not in VERSION_EXPRESSIONS):
            continue
        if period == "ROW END":
            table.period_end = _text(column)
        kind = _text(data_type).lower()
        table.columns.append(Column(_text(column), kind, kind in WIDE_TYPES or int(octets or 0) > WIDE_BYTES))
    for table in tables.values():
        if table.versioned and not table.period_end:
            table.columns += [Column(name, "timestamp") for name in VERSION_COLUMNS]
            table.period_end = VERSION_COLUMNS[1]
    _keys(cur, database, tables, column_facts)
    for table in tables.values():
        table.split = table.splittable
        table.wide_last = any(c.wide for c in table.columns)
    return list(tables.values())


def _keys(cur, database: str, tables: dict[str, Table],  # noqa: ANN001 - MySQLdb cursor
          column_facts: dict[tuple[str, str], tuple[str, bool]]) -> None:
    """The clustered key of each table: PRIMARY, else the first unique key over NOT NULL columns
    (`column_facts`: data type and nullability per (table, column), from information_schema.COLUMNS)."""
    cur.execute(
        "SELECT TABLE_NAME, INDEX_NAME, COLUMN_NAME, NON_UNIQUE FROM information_schema.STATISTICS"
        " WHERE TABLE_SCHEMA=%s ORDER BY TABLE_NAME, INDEX_NAME='PRIMARY' DESC, INDEX_NAME, SEQ_IN_INDEX",
        (database,))
    candidates: dict[str, dict[str, list[tuple[str, str, bool]]]] = {}
    for table_name, index, column, non_unique in cur.fetchall():
        if int(non_unique):
            continue
        # A part over an expression names no column: nullable for this purpose, so the key is not used.
        data_type, nullable = column_facts.get((_text(table_name), _text(column or "")), ("", True))
        per_table = candidates.setdefault(_text(table_name), {})
        per_table.setdefault(_text(index), []).append((_text(column or ""), data_type, nullable))
    for name, indexes in candidates.items():
        table = tables.get(name)
        if table is None:
            continue
        for parts in indexes.values():  # PRIMARY comes first
            if not any(nullable for _, _, nullable in parts):
                table.key = [column for column, _, _ in parts]
                table.key_type = parts[0][1].lower()
                break
