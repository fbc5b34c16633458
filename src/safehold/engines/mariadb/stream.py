"""The parallel method's byte stream: a deterministic tar of schema, row chunks and a closing report.

Members, in order: `safehold/tables.json` (column lists), `restore.sh` (loads the dump without
safehold, see handscript.py), `schema.sql` and `post.sql` (from mariadb-dump), then
`data/NNNNN.tsv.zst` chunks of table NNNNN in key order (the same name repeats for every chunk
of a table), and last `safehold/report.json` (row counts and CRC32 per table).
A split table (format 2) has two chunk streams of the same rows: all chunks of its narrow columns
(`data/NNNNN.tsv.zst`), then all chunks of its wide ones (`data/NNNNN.wide.tsv.zst`); line n of
one belongs to line n of the other. Kept apart, not interleaved, so restic's own chunks (about
1 MiB of this stream) never mix the two and a changed narrow chunk re-stores no wide data.
Since format 3 the lines of every table with wide columns hold the narrow columns first, then
the wide values (escaped by safehold, tagged T), split or not.
Each chunk is one zstd frame compressed on its own, so equal chunks stay equal bytes and restic
hashes a third of the data it would otherwise (its own compression finds nothing left to do).

Chunks are cut where a row's CRC32 hits a pattern once the chunk holds CHUNK_MIN bytes (or at
CHUNK_MAX), so boundaries depend on row content, not on position: an inserted or changed row
moves at most one boundary, and the rest of the stream (including tar headers) stays
byte-identical for restic's deduplication.
"""

from __future__ import annotations

import tarfile
import tempfile
import threading
import zlib
from collections.abc import Callable, Iterator
from typing import IO

import zstandard

from safehold.tempdirs import room_in

CHUNK_MIN = 1 << 20  # about restic's own chunk size, so a changed row costs about what it would there
CHUNK_MAX = 4 << 20
CUT_MASK = 0xFF  # a row ends a chunk with probability 1/256 once CHUNK_MIN is reached
ZSTD_LEVEL = 3
DATA_SUFFIX = ".tsv.zst"
WIDE_SUFFIX = ".wide.tsv.zst"
TABLES_MEMBER = "safehold/tables.json"
SCRIPT_MEMBER = "restore.sh"
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


def table_checksum(*crcs: int) -> str:
    """A table's checksum as the report records it: one CRC32 per chunk stream (two for a split table)."""
    return "crc32:" + ":".join(f"{crc:08x}" for crc in crcs)


def write_frame(spool: IO[bytes], frame: bytes) -> None:
    """Append one compressed chunk to a private spool file (length-prefixed)."""
    spool.write(len(frame).to_bytes(8, "big"))
    spool.write(frame)


def read_frame(spool: IO[bytes]) -> bytes | None:
    """The next chunk written by write_frame, None at the end."""
    size = spool.read(8)
    return spool.read(int.from_bytes(size, "big")) if size else None


_local = threading.local()


def compress(chunk: bytes | memoryview) -> bytes:
    """One zstd frame (deterministic for a given zstd version and level); safe to call from many threads."""
    if not hasattr(_local, "compressor"):
        _local.compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_checksum=True)
    return _local.compressor.compress(chunk)


def decompress(frame: bytes) -> bytes:
    """Inverse of compress."""
    if not hasattr(_local, "decompressor"):
        _local.decompressor = zstandard.ZstdDecompressor()
    return _local.decompressor.decompress(frame)


class TarWriter:
    """Writes members with fixed metadata (mtime 0, mode 0600, no owner) so equal data gives equal bytes.

    The bytes are those of tarfile's "w|" stream, written directly: tarfile copies each member
    through 16 KiB reads and writes, which on a multi-GB dump costs a core's worth of seconds.
    """

    def __init__(self, out: IO[bytes]) -> None:
        self.out = out
        self.size = 0  # bytes written so far

    def _write(self, data: bytes | memoryview) -> None:
        self.out.write(data)
        self.size += len(data)

    def add(self, name: str, data: bytes | memoryview) -> None:
        """Append one member."""
        info = tarfile.TarInfo(name)
        info.size = len(data)
        info.mode = 0o600
        info.mtime = 0
        self._write(info.tobuf(tarfile.USTAR_FORMAT, tarfile.ENCODING, "surrogateescape"))
        self._write(data)
        if padding := -len(data) % tarfile.BLOCKSIZE:
            self._write(tarfile.NUL * padding)

    def close(self) -> None:
        """Write the end-of-archive blocks, padded to a whole tar record (the underlying stream stays open)."""
        self._write(tarfile.NUL * (2 * tarfile.BLOCKSIZE))
        if rest := self.size % tarfile.RECORDSIZE:
            self._write(tarfile.NUL * (tarfile.RECORDSIZE - rest))


def members(stream: IO[bytes]) -> Iterator[tuple[str, bytes]]:
    """(name, content) of each member, read sequentially; one member in memory at a time."""
    with tarfile.open(fileobj=stream, mode="r|") as tar:
        for info in tar:
            handle = tar.extractfile(info)
            yield info.name, handle.read() if handle else b""


class Chunker:
    """Cuts one table's row text (fed in pieces that end on row boundaries) into content-defined chunks.

    A chunk is cut after the first row that ends at CHUNK_MIN bytes or later and whose CRC32 hits
    CUT_MASK, or before a row that would take it past CHUNK_MAX (after it, when that row alone is
    bigger). Pieces are scanned where they lie and kept as views: a byte is copied only when its
    chunk spans two pieces (this runs under the GIL, on every byte of the database).
    """

    def __init__(self, emit: Callable[[bytes | memoryview], None]) -> None:
        self.emit = emit
        self.parts: list[bytes | memoryview] = []  # rows not yet in a chunk, none of them a cut point
        self.size = 0

    def feed(self, piece: bytes) -> None:
        """Add complete rows; emits every chunk that is complete."""
        view = memoryview(piece)
        start = line = 0  # piece[start:] is not in a chunk yet; piece[line:] is not scanned yet
        while True:
            first_end = start + CHUNK_MIN - self.size  # a cut before this offset is too early
            if line < first_end - 1:  # skip to the row that reaches CHUNK_MIN
                line = max(line, piece.rfind(b"\n", line, first_end - 1) + 1)
            end = piece.find(b"\n", line)
            if end < 0:
                break
            if self.size + end + 1 - start > CHUNK_MAX:
                cut = line if self.size + line - start > 0 else end + 1
            elif end + 1 >= first_end and zlib.crc32(view[line:end]) & CUT_MASK == 0:
                cut = end + 1
            else:
                line = end + 1
                continue
            # A chunk inside one piece goes out as a view of it: no copy at all.
            self.emit(b"".join([*self.parts, view[start:cut]]) if self.parts else view[start:cut])
            self.parts, self.size = [], 0
            start = line = cut
        if start < len(piece):
            self.parts.append(view[start:] if start else piece)
            self.size += len(piece) - start

    def finish(self) -> None:
        """Emit what is left."""
        if self.size:
            self.emit(b"".join(self.parts))
        self.parts, self.size = [], 0


class Zipper:
    """Pairs a split table's wide lines with its narrow ones, which came first and wait on disk.

    The narrow chunks (a few percent of the table) are kept compressed in a private temporary
    file; each wide chunk then takes as many narrow lines as it has lines. Memory: one chunk of
    each side.
    """

    def __init__(self, folder: str) -> None:
        self.folder = folder
        self.spool = tempfile.TemporaryFile(dir=folder)  # noqa: SIM115 - closed by finish() or close()
        self.waiting: list[bytes] = []  # narrow lines read back, not yet paired
        self.reading = False
        self.crcs = [0, 0]

    def add(self, wide: bool, frame: bytes) -> bytes:
        """Take one compressed chunk; returns whole lines ready to load (b"" while narrow chunks arrive)."""
        if not wide:
            if self.reading:
                raise ValueError("narrow rows after wide rows")
            with room_in(self.folder, "a split table's narrow rows"):
                write_frame(self.spool, frame)
            return b""
        if not self.reading:
            self.spool.seek(0)
            self.reading = True
        data = decompress(frame)
        self.crcs[1] = zlib.crc32(data, self.crcs[1])
        lines = data.split(b"\n")[:-1]
        while len(self.waiting) < len(lines):
            narrow = self._next_narrow()
            if narrow is None:
                raise ValueError("fewer narrow rows than wide rows")
            self.waiting += narrow.split(b"\n")[:-1]
        narrow_lines = self.waiting[:len(lines)]
        del self.waiting[:len(lines)]
        return b"".join([n + b"\t" + w + b"\n" for n, w in zip(narrow_lines, lines, strict=True)])

    def _next_narrow(self) -> bytes | None:
        frame = read_frame(self.spool)
        if frame is None:
            return None
        data = decompress(frame)
        self.crcs[0] = zlib.crc32(data, self.crcs[0])
        return data

    def finish(self) -> None:
        """Check that both sides held the same rows; raises ValueError otherwise. Closes the spool."""
        try:
            if not self.reading:
                self.spool.seek(0)
            if self.waiting or self._next_narrow() is not None:
                raise ValueError("more narrow rows than wide rows")
        finally:
            self.close()

    def close(self) -> None:
        """Remove the spool (also after a failed restore)."""
        self.spool.close()

    def checksum(self) -> str:
        """The split table's checksum as the dump recorded it."""
        return table_checksum(*self.crcs)
