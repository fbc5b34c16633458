"""Schema text from mariadb-dump, and deferring secondary indexes and foreign keys until after the load.

mariadb-dump prints each CREATE TABLE with one definition per line, so secondary `KEY`,
`FULLTEXT KEY`, `SPATIAL KEY` and `CONSTRAINT … FOREIGN KEY` lines are taken out of the CREATE
statement and re-added afterwards, in their original order (the server orders keys the same way
then, so SHOW CREATE TABLE is unchanged). Keys on the AUTO_INCREMENT column stay (the server
requires one), as do primary/unique keys and CHECK constraints.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from safehold.engines.mariadb.client import quote

IDENT = r"`(?:[^`]|``)+`"
CREATE = re.compile(rf"^CREATE TABLE ({IDENT}) \(\n(.*?)\n\)", re.S | re.M)
INDEX = re.compile(r"^(KEY|FULLTEXT KEY|SPATIAL KEY) ")
FOREIGN = re.compile(rf"^CONSTRAINT {IDENT} FOREIGN KEY ")
AUTO_COLUMN = re.compile(rf"^({IDENT}) .* AUTO_INCREMENT$")
TABLE_SECTION = "\n--\n-- Table structure for table "
SECTION = re.compile(r"\n--\n-- (?!Host: )")  # a section header (the dump's own header names the host)


@dataclass
class Deferred:
    """Definitions taken out of one CREATE TABLE."""

    table: str
    indexes: list[str] = field(default_factory=list)
    foreign_keys: list[str] = field(default_factory=list)

    def index_statements(self, database: str) -> list[str]:
        """ALTERs re-adding the indexes; InnoDB builds one FULLTEXT index per statement."""
        target = f"ALTER TABLE {quote(database)}.{quote(self.table)} "
        plain = [d for d in self.indexes if not d.startswith("FULLTEXT")]
        statements = [target + ", ".join(f"ADD {d}" for d in plain)] if plain else []
        statements += [target + f"ADD {d}" for d in self.indexes if d.startswith("FULLTEXT")]
        return statements

    def foreign_key_statement(self, database: str) -> str | None:
        """One ALTER re-adding the foreign keys (run with foreign_key_checks=0: no validation scan)."""
        if not self.foreign_keys:
            return None
        return f"ALTER TABLE {quote(database)}.{quote(self.table)} " + ", ".join(f"ADD {d}" for d in self.foreign_keys)


def unquote(identifier: str) -> str:
    """`a``b` -> a`b"""
    return identifier[1:-1].replace("``", "`")


def defer(schema: str, keep_indexes: frozenset[str] = frozenset()) -> tuple[str, list[Deferred]]:
    """The schema without deferrable definitions, and what was taken out per table; the tables named in
    `keep_indexes` keep their plain secondary indexes (their FULLTEXT and SPATIAL ones and their foreign
    keys are still deferred)."""
    deferred: list[Deferred] = []

    def rewrite(match: re.Match[str]) -> str:
        lines = [line.strip().removesuffix(",") for line in match.group(2).split("\n")]
        autos = [m.group(1) for line in lines if (m := AUTO_COLUMN.match(line))]
        kept, taken = [], Deferred(unquote(match.group(1)))
        for line in lines:
            # A kept table's FULLTEXT and SPATIAL indexes are still built after its rows: InnoDB fills
            # those row by row through its own caches, far slower than one build from the loaded table.
            late = taken.table not in keep_indexes or line.startswith(("FULLTEXT", "SPATIAL"))
            if INDEX.match(line) and late and not any(f"({auto}" in line for auto in autos):
                taken.indexes.append(line)
            elif FOREIGN.match(line):
                taken.foreign_keys.append(line)
            else:
                kept.append(line)
        if taken.indexes or taken.foreign_keys:
            deferred.append(taken)
        return f"CREATE TABLE {match.group(1)} (\n" + ",\n".join(f"  {line}" for line in kept) + "\n)"

    return CREATE.sub(rewrite, schema), deferred


def split(schema: str) -> tuple[str, str, list[str], str]:
    """(session prelude, sections before the first table (sequences), one section per CREATE TABLE, the rest).

    Tables can then be created on several connections at once (each CREATE TABLE waits for its
    own disk syncs), each connection first running the prelude's session settings; sequences
    come before (a DEFAULT may use them), views and the closing statements after.
    """
    starts = [match.start() for match in SECTION.finditer(schema)]
    if not starts:
        return schema, "", [], ""
    prelude = schema[:starts[0]]
    before: list[str] = []
    tables: list[str] = []
    after: list[str] = []
    for start, end in zip(starts, [*starts[1:], len(schema)], strict=True):
        section = schema[start:end]
        if section.startswith(TABLE_SECTION):
            tables.append(section)
        else:
            (after if tables else before).append(section)
    return prelude, "".join(before), tables, "".join(after)


def statements(script: str) -> list[bytes]:
    """Statements of a mariadb-dump script without DELIMITER blocks (one per `;` at a line end)."""
    result = []
    for chunk in script.split(";\n"):
        text = "\n".join(line for line in chunk.split("\n") if not line.startswith("--")).strip()
        if text:
            result.append(text.removesuffix(";").encode("utf-8", "surrogateescape"))
    return result
