"""Multi-row INSERTs for shared lanes and the CRC of chunks loaded out of order (the server-side proof is in
tests/integration/test_mariadb_shared_lanes.py)."""

from __future__ import annotations

import os
import random
import zlib

from safehold.engines.mariadb import inserts
from safehold.engines.mariadb.stream import crc32_combine
from safehold.engines.mariadb.tables import Column, Table


def _table(*columns: Column, **options: object) -> Table:
    return Table(0, "t", "InnoDB", False, list(columns), key=["id"], **options)  # type: ignore[arg-type]


def test_narrow_lines_become_binary_literals_with_null_and_quotes_escaped() -> None:
    table = _table(Column("id", "int"), Column("v", "varchar"))
    data = b"1\tit's\n2\t\\N\n3\t\\\\N\n4\ta\\tb\x00\n"
    sql = inserts.statement(table, "db", data, 1 << 20)
    assert sql == (b"INSERT IGNORE INTO `db`.`t` (`id`,`v`) VALUES (_binary'1',_binary'it\\'s'),(_binary'2',NULL),"
                   b"(_binary'3',_binary'\\\\N'),(_binary'4',_binary'a\\tb\\0')")


def test_wide_columns_drop_their_tag_and_come_last() -> None:
    table = _table(Column("id", "int"), Column("body", "longtext", True), Column("kind", "varchar"), wide_last=True)
    sql = inserts.statement(table, "db", b"1\ta\tTx'y\n2\t\\N\t\\N\n3\tb\tH6869\n", 1 << 20)
    assert sql is not None and sql.endswith(b"(`id`,`kind`,`body`) VALUES (_binary'1',_binary'a',_binary'x\\'y'),"
                                            b"(_binary'2',NULL,NULL),(_binary'3',_binary'b',UNHEX('6869'))")
    in_place = _table(Column("id", "int"), Column("body", "longtext", True), Column("kind", "varchar"))
    assert inserts.statement(in_place, "db", b"1\tTz\tk\n", 1 << 20).endswith(  # type: ignore[union-attr]
        b"(_binary'1',_binary'z',_binary'k')")


def test_anything_but_our_escapes_or_too_long_is_left_to_load_data() -> None:
    table = _table(Column("id", "int"), Column("v", "varchar"))
    for data in (b"1\tx\\'),(1\n", b"1\tx\\\\\\'\n", b"1\tx\\\n", b"1\tx\\r\n"):
        assert inserts.statement(table, "db", data, 1 << 20) is None, data
    assert inserts.statement(table, "db", b"1\t" + b"x" * 100 + b"\n", 100) is None
    assert not inserts.insertable(_table(Column("id", "int"), Column("b", "bit")))
    assert not inserts.insertable(Table(0, "t", "InnoDB", True, [Column("id", "int")], key=["id"]))


def test_crc_of_chunks_put_together_in_any_order_equals_the_whole() -> None:
    rng = random.Random(5)
    chunks = [os.urandom(rng.randint(0, 5000)) for _ in range(20)]
    whole = 0
    for chunk in chunks:
        whole = crc32_combine(whole, zlib.crc32(chunk), len(chunk))
    assert whole == zlib.crc32(b"".join(chunks))
