"""Pure parts of the parallel MariaDB method: chunk cutting, tar members, schema rewriting, row SQL."""

from __future__ import annotations

import io
import random
import tarfile
import zlib

import MySQLdb
import pytest

from safehold.engines.mariadb import client, schema, stream
from safehold.engines.mariadb.tables import Column, Table, mark_dominant, wide_line
from safehold.models import Connection

CREATE = """--
-- Table structure for table `t`
--

DROP TABLE IF EXISTS `t`;
CREATE TABLE `t` (
  `id` int(11) NOT NULL AUTO_INCREMENT,
  `p` int(11) DEFAULT NULL,
  `body` text DEFAULT NULL,
  PRIMARY KEY (`id`),
  UNIQUE KEY `u` (`p`),
  KEY `by_id_p` (`id`,`p`),
  KEY `by_p` (`p`),
  FULLTEXT KEY `ft` (`body`),
  CONSTRAINT `fk` FOREIGN KEY (`p`) REFERENCES `t` (`id`),
  CONSTRAINT `chk` CHECK (`p` > 0)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
"""


def rows(count: int, seed: int = 1) -> list[bytes]:
    rng = random.Random(seed)
    return [b"%d\t%s\n" % (i, b"x" * rng.randint(10, 300)) for i in range(count)]


def chunks_of(data: list[bytes], piece_rows: int) -> list[bytes]:
    out: list[bytes] = []
    chunker = stream.Chunker(out.append)
    for start in range(0, len(data), piece_rows):
        chunker.feed(b"".join(data[start:start + piece_rows]))
    chunker.finish()
    return out


def test_chunks_reassemble_end_on_rows_and_respect_limits() -> None:
    data = rows(100_000)
    chunks = chunks_of(data, 1000)
    assert b"".join(chunks) == b"".join(data)
    assert all(c.endswith(b"\n") for c in chunks)
    assert all(stream.CHUNK_MIN <= len(c) <= stream.CHUNK_MAX for c in chunks[:-1])


def test_chunk_boundaries_depend_on_content_not_on_feeding_or_position() -> None:
    data = rows(100_000)
    assert chunks_of(data, 1000) == chunks_of(data, 777)
    changed = list(data)
    changed[100] = b"100\tedited\n"
    before, after = chunks_of(data, 1000), chunks_of(changed, 1000)
    assert len(set(after) - set(before)) == 1


def reference_chunks(data: bytes) -> list[bytes]:
    """The cut rule spelled out row by row, on the whole text at once."""
    out, chunk = [], b""
    for row in data.splitlines(keepends=True):
        if chunk and len(chunk) + len(row) > stream.CHUNK_MAX:
            out.append(chunk)
            chunk = b""
        chunk += row
        if len(chunk) > stream.CHUNK_MAX or (len(chunk) >= stream.CHUNK_MIN
                                            and zlib.crc32(row[:-1]) & stream.CUT_MASK == 0):
            out.append(chunk)
            chunk = b""
    return out + ([chunk] if chunk else [])


def test_chunks_follow_the_cut_rule_with_huge_and_tiny_rows() -> None:
    rng = random.Random(5)
    data = [b"%d\t%s\n" % (i, b"y" * rng.choice([5, 40, 3000, 700_000, 5_000_000])) for i in range(60)]
    data += rows(20_000, seed=9)
    text = b"".join(data)
    assert chunks_of(data, 7) == chunks_of(data, 1) == reference_chunks(text)
    assert chunks_of(rows(50_000), 300) == reference_chunks(b"".join(rows(50_000)))


def test_wide_values_escape_like_the_servers_replace_chain() -> None:
    assert wide_line((b"a\\b\tc\nd\0", None, b"", b"\\N")) == b"Ta\\\\b\\tc\\nd\0\t\\N\tT\tT\\\\N"


def test_compressed_frames_round_trip() -> None:
    data = b"".join(rows(5000))
    assert stream.decompress(stream.compress(data)) == data
    assert stream.compress(data) == stream.compress(data)


def test_tar_members_are_deterministic_and_read_back() -> None:
    def write() -> bytes:
        out = io.BytesIO()
        writer = stream.TarWriter(out)
        writer.add(stream.data_member(3), b"1\ta\n")
        writer.add(stream.data_member(3), b"2\tb\n")
        writer.close()
        return out.getvalue()

    assert write() == write()
    # The same bytes tarfile's own stream writer gives (older points deduplicate against new ones).
    reference = io.BytesIO()
    with tarfile.open(fileobj=reference, mode="w|", format=tarfile.USTAR_FORMAT) as tar:
        for data in (b"1\ta\n", b"2\tb\n"):
            info = tarfile.TarInfo(stream.data_member(3))
            info.size, info.mode, info.mtime = len(data), 0o600, 0
            tar.addfile(info, io.BytesIO(data))
    assert write() == reference.getvalue()
    assert list(stream.members(io.BytesIO(write()))) == [("data/00003.tsv.zst", b"1\ta\n"),
                                                        ("data/00003.tsv.zst", b"2\tb\n")]
    assert stream.data_part("data/00003.tsv.zst") == (3, False) and stream.data_part(stream.REPORT_MEMBER) is None
    assert stream.data_part(stream.data_member(3, wide=True)) == (3, True)


def test_defer_takes_out_secondary_keys_and_foreign_keys_only() -> None:
    text, deferred = schema.defer(CREATE)
    assert "KEY `by_p`" not in text and "FULLTEXT" not in text and "FOREIGN KEY" not in text
    assert "UNIQUE KEY `u`" in text and "CHECK (`p` > 0)" in text and "PRIMARY KEY" in text
    assert "KEY `by_id_p`" in text  # keeps a key on the AUTO_INCREMENT column
    assert text.count(",\n") == text.split("(\n", 1)[1].split("\n)")[0].count("\n")  # no dangling comma
    (item,) = deferred
    assert item.index_statements("db") == ["ALTER TABLE `db`.`t` ADD KEY `by_p` (`p`)",
                                           "ALTER TABLE `db`.`t` ADD FULLTEXT KEY `ft` (`body`)"]
    assert item.foreign_key_statement("db") == (
        "ALTER TABLE `db`.`t` ADD CONSTRAINT `fk` FOREIGN KEY (`p`) REFERENCES `t` (`id`)")


def test_defer_leaves_a_kept_tables_plain_keys_in_and_takes_the_rest() -> None:
    text, deferred = schema.defer(CREATE, frozenset({"t"}))
    assert "KEY `by_p` (`p`)" in text and "UNIQUE KEY `u`" in text
    assert "FULLTEXT" not in text and "FOREIGN KEY" not in text
    (item,) = deferred
    assert item.index_statements("db") == ["ALTER TABLE `db`.`t` ADD FULLTEXT KEY `ft` (`body`)"]
    assert item.foreign_key_statement("db") is not None
    assert schema.defer(CREATE, frozenset({"other"})) == schema.defer(CREATE)


def test_only_a_dominant_table_of_wide_rows_keeps_its_indexes() -> None:
    def tables(*sizes: tuple[int, int]) -> list[Table]:
        return [Table(n, f"t{n}", "InnoDB", False, data_length=length, avg_row_length=row)
                for n, (length, row) in enumerate(sizes)]

    def kept(*sizes: tuple[int, int]) -> list[str]:
        marked = tables(*sizes)
        mark_dominant(marked)
        return [t.name for t in marked if t.keep_indexes]

    assert kept((700, 2000), (300, 2000)) == ["t0"]
    assert kept((300, 100), (500, 1500), (200, 50)) == ["t1"]  # exactly half
    assert kept((700, 200), (300, 2000)) == []  # narrow rows: an index is a large part of them
    assert kept((400, 2000), (300, 2000), (300, 2000)) == []  # no table holds half
    assert kept((0, 0), (0, 0)) == [] and kept() == []
    flagged, plain = tables((700, 2000), (300, 2000))
    flagged.keep_indexes = True
    # The flag travels in the stream header, and only when set (other headers stay as they were).
    assert Table.from_json(flagged.to_json()).keep_indexes and "keep_indexes" not in plain.to_json()
    assert not Table.from_json(plain.to_json()).keep_indexes


def test_split_orders_sequences_tables_and_views() -> None:
    script = ("/*!40101 SET NAMES utf8mb4 */;\n--\n-- Host: x    Database: d\n--\n"
              "\n--\n-- Sequence structure for `s`\n--\nCREATE SEQUENCE `s`;\n"
              + "\n" + CREATE + "\n--\n-- Temporary table structure for view `v`\n--\nSELECT 1;\n")
    prelude, before, tables, after = schema.split(script)
    assert "SET NAMES" in prelude and "Host:" in prelude
    assert "CREATE SEQUENCE" in before and len(tables) == 1 and "view `v`" in after
    assert schema.statements(tables[0])[0] == b"DROP TABLE IF EXISTS `t`"


def test_row_sql_escapes_text_and_sends_wide_columns_raw_and_last() -> None:
    columns = [Column("id", "int"), Column("body", "longtext", True), Column("b", "bit"), Column("s", "varchar")]
    table = Table(0, "t", "InnoDB", False, columns, key=["id"], key_type="int", wide_last=True)
    select = table.select("db", 10, 20)
    assert "`id` >= 10 AND `id` < 20" in select and select.endswith("ORDER BY `id`")
    assert select.startswith("SELECT CONCAT_WS('\\t',") and select.count("REPLACE(CAST(`s` AS BINARY)") == 1
    assert "`b`+0" in select and ",CAST(`body` AS BINARY) FROM" in select and "HEX(" not in select
    assert table.lines([(b"1\t5\tx", b"a\tb\\")]) == [b"1\t5\tx\tTa\\tb\\\\"]
    load = table.load("db", "/tmp/x.tsv")
    assert "(`id`,@v1,`s`,@v3)" in load and "`body`=IF(LEFT(@v3,1)='H',UNHEX(SUBSTRING(@v3,2))" in load
    # A point of format 2 kept the table's own column order in tables that were not split.
    old = Table.from_json({**table.to_json(), "wide_last": False})
    assert "(`id`,@v1,@v2,`s`)" in old.load("db", "/tmp/x.tsv")
    assert Table.from_json(table.to_json()).line_columns() == table.line_columns()
    myisam = Table(1, "m", "MyISAM", False, [Column("id", "int")], key=["id"], key_type="int")
    assert "ORDER BY" not in myisam.select("db") and myisam.ordered


def test_zipper_pairs_narrow_lines_kept_on_disk_with_wide_lines(tmp_path) -> None:  # noqa: ANN001
    rng = random.Random(5)
    rows = [(b"%d\t%d" % (i, rng.randrange(9)), rng.randbytes(rng.randrange(1, 300)).hex().encode())
            for i in range(5000)]

    def frames(side: int, size: int) -> list[bytes]:
        text = [r[side] + b"\n" for r in rows]
        return [stream.compress(b"".join(text[i:i + size])) for i in range(0, len(text), size)]

    zipper = stream.Zipper(str(tmp_path))
    joined = b"".join(zipper.add(False, f) for f in frames(0, 700))
    joined += b"".join(zipper.add(True, f) for f in frames(1, 333))
    zipper.finish()
    assert joined == b"".join(n + b"\t" + w + b"\n" for n, w in rows)
    narrow_crc = zlib.crc32(b"".join(r[0] + b"\n" for r in rows))
    assert zipper.checksum().startswith(f"crc32:{narrow_crc:08x}:")

    short = stream.Zipper(str(tmp_path))
    short.add(False, frames(0, 5000)[0])
    with pytest.raises(ValueError, match="more narrow rows"):
        short.finish()
    long = stream.Zipper(str(tmp_path))
    long.add(False, stream.compress(b"1\t2\n"))
    with pytest.raises(ValueError, match="fewer narrow rows"):
        long.add(True, frames(1, 5000)[0])


def test_split_table_reads_and_loads_narrow_columns_first() -> None:
    table = Table(0, "t", "InnoDB", False, [Column("id", "int"), Column("body", "text", True),
                                            Column("state", "int")], key=["id"])
    table.split = table.splittable
    assert table.split and [c.name for c in table.line_columns()] == ["id", "state", "body"]
    select = table.select("db")
    # Narrow columns formatted by the server, the wide one raw (escaped by wide_line).
    assert select.count("CONCAT_WS") == 1 and select.index("`state`") < select.index("CAST(`body` AS BINARY)")
    assert table.load("db", "/x").index("`state`") < table.load("db", "/x").index("@v2")
    assert Table.from_json(table.to_json()).split


@pytest.mark.parametrize("code", [4166, 3948, 1148])
def test_a_server_refusing_local_infile_is_named_with_the_fix(code: int) -> None:
    # The texts of MariaDB 10.5+, MySQL 8 and older servers differ; the codes say the same thing.
    error = client.explain(MySQLdb.OperationalError(code, "The used command is not allowed"),
                           Connection("mariadb", user="backup"))
    assert "does not allow LOAD DATA LOCAL INFILE" in error.line() and "SET GLOBAL local_infile=1" in error.line()
