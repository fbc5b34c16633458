"""The parallel method's byte stream: a deterministic tar of schema, row chunks and a closing report.

Members, in order: `safehold/tables.json` (column lists), `schema.sql` and `post.sql` (from
mariadb-dump), then `data/NNNNN.tsv.zst` chunks of table NNNNN in key order (the same name repeats
for every chunk of a table), and last `safehold/report.json` (row counts and CRC32 per table).
A split table (format 2) has two chunk streams of the same rows: its narrow columns in
`data/NNNNN.tsv.zst` and its wide ones in `data/NNNNN.wide.tsv.zst`; line n of one belongs to line
n of the other, and neither stream runs more than LAG_CHUNKS chunks ahead of the other.
Each chunk is one zstd frame compressed on its own, so equal chunks stay equal bytes and restic
hashes a third of the data it would otherwise (its own compression finds nothing left to do).

Chunks are cut where a row's CRC32 hits a pattern once the chunk holds CHUNK_MIN bytes (or at
CHUNK_MAX), so boundaries depend on row content, not on position: an inserted or changed row
moves at most one boundary, and the rest of the stream (including tar headers) stays
byte-identical for restic's deduplication.
"""

from __future__ import annotations

import io
import tarfile
import threading
import zlib
from collections.abc import Callable, Iterator
from typing import IO

import zstandard

CHUNK_MIN = 1 << 20  # about restic's own chunk size, so a changed row costs about what it would there
CHUNK_MAX = 4 << 20
CUT_MASK = 0xFF  # a row ends a chunk with probability 1/256 once CHUNK_MIN is reached
ZSTD_LEVEL = 3
DATA_SUFFIX = ".tsv.zst"
WIDE_SUFFIX = ".wide.tsv.zst"
LAG_CHUNKS = 4
TABLES_MEMBER = "safehold/tables.json"
SCHEMA_MEMBER = "schema.sql"
POST_MEMBER = "post.sql"
REPORT_MEMBER = "safehold/report.json"


def data_member(index: int, wide: bool = False) -> str:
    """Member name of every chunk of table number `index` (of its wide columns, for a split table)."""
    return f"data/{index:05d}{WIDE_SUFFIX if wide else DATA_SUFFIX}"


def data_part(member: str) -> tuple[int, bool] | None:
    """(table number, wide columns?) of a data member, None for other members."""
    if not member.startswith("data/"):
        return None
    for suffix, wide in ((WIDE_SUFFIX, True), (DATA_SUFFIX, False)):
        if member.endswith(suffix):
            return int(member[5:-len(suffix)]), wide
    return None


_local = threading.local()


def compress(chunk: bytes) -> bytes:
    """One zstd frame (deterministic for a given zstd version and level); safe to call from many threads."""
    if not hasattr(_local, "compressor"):
        _local.compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_checksum=True)
    return _local.compressor.compress(chunk)


def decompress(frame: bytes) -> bytes:
    """Inverse of compress."""
    if not hasattr(_local, "decompressor"):
        _local.decompressor = zstandard.ZstdDecompressor()
    return _local.decompressor.decompress(frame)


class CountingWriter:
    """Passes writes through and counts the bytes."""

    def __init__(self, out: IO[bytes]) -> None:
        self.out = out
        self.count = 0

    def write(self, data: bytes) -> int:
        """Write and count."""
        self.out.write(data)
        self.count += len(data)
        return len(data)


class TarWriter:
    """Writes members with fixed metadata (mtime 0, mode 0600, no owner) so equal data gives equal bytes."""

    def __init__(self, out: IO[bytes]) -> None:
        self.tar = tarfile.open(fileobj=out, mode="w|", format=tarfile.USTAR_FORMAT)  # noqa: SIM115 - closed by close()

    def add(self, name: str, data: bytes) -> None:
        """Append one member."""
        info = tarfile.TarInfo(name)
        info.size = len(data)
        info.mode = 0o600
        info.mtime = 0
        self.tar.addfile(info, io.BytesIO(data))

    def close(self) -> None:
        """Write the end-of-archive blocks (the underlying stream stays open)."""
        self.tar.close()


def members(stream: IO[bytes]) -> Iterator[tuple[str, bytes]]:
    """(name, content) of each member, read sequentially; one member in memory at a time."""
    with tarfile.open(fileobj=stream, mode="r|") as tar:
        for info in tar:
            handle = tar.extractfile(info)
            yield info.name, handle.read() if handle else b""


class Chunker:
    """Cuts one table's row text (fed in pieces that end on row boundaries) into content-defined chunks."""

    def __init__(self, emit: Callable[[bytes], None]) -> None:
        self.emit = emit
        self.parts: list[bytes] = []
        self.size = 0
        self.scanned = 0  # offset up to which no cut point was found in the joined buffer
        self.rows_emitted = 0

    def _out(self, chunk: bytes) -> None:
        self.rows_emitted += chunk.count(b"\n")
        self.emit(chunk)

    def feed(self, piece: bytes) -> None:
        """Add complete rows; emits every chunk that is complete."""
        self.parts.append(piece)
        self.size += len(piece)
        while self.size >= CHUNK_MIN:
            buffer = b"".join(self.parts) if len(self.parts) > 1 else self.parts[0]
            cut = self._cut(buffer)
            if cut is None:
                self.parts = [buffer]
                return
            self._out(buffer[:cut])
            rest = buffer[cut:]
            self.parts = [rest] if rest else []
            self.size = len(rest)
            self.scanned = 0

    def _cut(self, buffer: bytes) -> int | None:
        """End offset of the first content-defined cut, CHUNK_MAX fallback, or None (need more rows)."""
        start = max(self.scanned, CHUNK_MIN - 1)
        line_start = buffer.rfind(b"\n", 0, start) + 1
        limit = min(len(buffer), CHUNK_MAX)
        while True:
            end = buffer.find(b"\n", line_start)
            if end < 0:
                break
            if end >= limit:
                # Past the hard limit: cut at the last row end before it (or after this single huge row).
                return line_start if line_start > 0 else end + 1
            if end + 1 >= CHUNK_MIN and zlib.crc32(memoryview(buffer)[line_start:end]) & CUT_MASK == 0:
                return end + 1
            line_start = end + 1
        if len(buffer) >= CHUNK_MAX:
            return line_start if line_start > 0 else len(buffer)
        self.scanned = line_start
        return None

    def finish(self) -> None:
        """Emit what is left."""
        if self.size:
            self._out(b"".join(self.parts))
        self.parts, self.size, self.scanned = [], 0, 0

    def cut_at_row(self, rows: int) -> None:
        """Emit a chunk ending right after row number `rows` (counted from the table's first row)."""
        buffer = b"".join(self.parts)
        end = 0
        for _ in range(rows - self.rows_emitted):
            end = buffer.index(b"\n", end) + 1
        self._out(buffer[:end])
        rest = buffer[end:]
        self.parts, self.size, self.scanned = ([rest] if rest else []), len(rest), 0


class SplitChunker:
    """Chunks the narrow and wide streams of a split table, neither more than LAG_CHUNKS chunks ahead.

    When one side has cut LAG_CHUNKS chunks since the other last did, the other is cut at the row
    where the leader's LAG_CHUNKS-th chunk ended. Every cut still depends on row content only, so
    unchanged rows give the same chunks; chunks go out ordered by their last row (narrow first on
    a tie), so the stream's bytes do not depend on how rows arrived either, and a restore needs at
    most LAG_CHUNKS chunks of one side in memory to pair lines.
    """

    def __init__(self, emit_narrow: Callable[[bytes], None], emit_wide: Callable[[bytes], None]) -> None:
        self.sides = [Chunker(lambda c: self._emitted(0, c)), Chunker(lambda c: self._emitted(1, c))]
        self.outputs = [emit_narrow, emit_wide]
        self.marks: list[list[int]] = [[], []]  # row counts at each cut not yet matched by the other side
        self.held: list[list[tuple[int, bytes]]] = [[], []]  # cut chunks not yet given out, with their last row

    def _emitted(self, side: int, chunk: bytes) -> None:
        row = self.sides[side].rows_emitted
        self.held[side].append((row, chunk))
        self.marks[side].append(row)
        self.marks[1 - side] = [mark for mark in self.marks[1 - side] if mark > row]
        self._release(all_cut=False)

    def _release(self, all_cut: bool) -> None:
        # A chunk goes out once the other side's next chunk is known (or no more will come).
        while (self.held[0] or self.held[1]) and (all_cut or (self.held[0] and self.held[1])):
            side = 0 if self.held[0] and (not self.held[1] or self.held[0][0][0] <= self.held[1][0][0]) else 1
            self.outputs[side](self.held[side].pop(0)[1])

    def feed(self, pair: tuple[bytes, bytes]) -> None:
        """Add the narrow and wide text of the same complete rows."""
        self.sides[0].feed(pair[0])
        self.sides[1].feed(pair[1])
        for leader in (0, 1):
            while len(self.marks[leader]) >= LAG_CHUNKS:
                self.sides[1 - leader].cut_at_row(self.marks[leader][LAG_CHUNKS - 1])

    def finish(self) -> None:
        """Emit what is left on both sides."""
        for side in self.sides:
            side.finish()
        self._release(all_cut=True)


class Zipper:
    """Pairs the lines of a split table's two streams back into whole LOAD DATA lines."""

    def __init__(self) -> None:
        self.lines: list[list[bytes]] = [[], []]
        self.crcs = [0, 0]

    def add(self, wide: bool, data: bytes) -> bytes:
        """Take one decompressed chunk of one side; returns the whole lines now complete (maybe b"")."""
        side = int(wide)
        self.crcs[side] = zlib.crc32(data, self.crcs[side])
        self.lines[side] += data.split(b"\n")[:-1]
        count = min(len(self.lines[0]), len(self.lines[1]))
        if not count:
            return b""
        narrow, wide_lines = self.lines[0][:count], self.lines[1][:count]
        del self.lines[0][:count], self.lines[1][:count]
        return b"".join([n + b"\t" + w + b"\n" for n, w in zip(narrow, wide_lines, strict=True)])

    @property
    def complete(self) -> bool:
        """True when no line waits for its other half."""
        return not (self.lines[0] or self.lines[1])

    def checksum(self) -> str:
        """The split table's checksum as the dump recorded it."""
        return f"crc32:{self.crcs[0]:08x}:{self.crcs[1]:08x}"
