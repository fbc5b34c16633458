"""Hostile points and exports, built from real ones: what an attacker holding one export can make of it.

Each case edits the manifest (or the signature) of a real export and repacks it with fresh SHA256SUMS,
as anyone with tar, zstd and sha256sum can. `area_state` is the checksum the corpus compares before
and after: every file under the scratch area (declared trees, their parents, undeclared targets) and
every database named.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from collections.abc import Callable
from pathlib import Path

import zstandard

from tests.conftest import mariadb_dump

Members = list[tuple[tarfile.TarInfo, bytes]]
ROOT = "safehold-export"
MANIFEST = f"{ROOT}/safehold/manifest.json"
SIGNATURE = f"{ROOT}/SIGNATURE"


def read_export(path: Path) -> Members:
    """Every member of an (unencrypted, small) export with its content."""
    members: Members = []
    with tarfile.open(fileobj=zstandard.ZstdDecompressor().stream_reader(path.open("rb")), mode="r|") as tar:
        for info in tar:
            members.append((info, tar.extractfile(info).read() if info.isfile() else b""))  # type: ignore[union-attr]
    return members


def write_export(path: Path, members: Members, sign: Callable[[bytes], bytes] | None = None) -> Path:
    """Pack members into an export with fresh SHA256SUMS and, when `sign` is given, a SIGNATURE of them made
    by `sign` (last, as safehold writes them); the members' own SHA256SUMS and SIGNATURE are dropped."""
    members = [(i, d) for i, d in members if i.name not in (f"{ROOT}/SHA256SUMS", SIGNATURE)]
    sums = "".join(f"{hashlib.sha256(d).hexdigest()}  {i.name.removeprefix(ROOT + '/')}\n"
                   for i, d in members if i.isfile()).encode()
    members.append((_file("SHA256SUMS"), sums))
    if sign is not None:
        members.append((_file("SIGNATURE"), sign(sums)))
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            info.size = len(data) if info.isfile() else 0
            tar.addfile(info, io.BytesIO(data) if info.isfile() else None)
    path.write_bytes(zstandard.ZstdCompressor().compress(raw.getvalue()))
    return path


def _file(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(f"{ROOT}/{name}")
    info.mode = 0o600
    return info


def signature_of(members: Members) -> bytes:
    """The SIGNATURE member's content of an export."""
    return next(data for info, data in members if info.name == SIGNATURE)


def edit_manifest(members: Members, change: Callable[[dict], None]) -> Members:
    """Members with the manifest changed by `change` (a function editing the parsed JSON in place)."""
    result: Members = []
    for info, data in members:
        if info.name == MANIFEST:
            manifest = json.loads(data)
            change(manifest)
            data = json.dumps(manifest, indent=2).encode()
        result.append((info, data))
    return result


def add_file(members: Members, name: str, data: bytes) -> Members:
    """Members with one more file."""
    return [*members, (_file(name), data)]


def area_state(area: Path, databases: list[str]) -> str:
    """One checksum of every file, folder and link under `area` (content, mode, link target) and of
    each database's full dump."""
    digest = hashlib.sha256()
    for folder, dirs, files in os.walk(area):
        dirs.sort()
        for name in sorted([*dirs, *files]):
            path = Path(folder) / name
            info = path.lstat()
            digest.update(f"{path.relative_to(area)} {info.st_mode:o}\n".encode())
            if path.is_symlink():
                digest.update(os.readlink(path).encode())
            elif path.is_file():
                digest.update(path.read_bytes())
    for database in databases:
        digest.update(mariadb_dump(database))
    return digest.hexdigest()
