"""`safehold export RUN FILE`: one portable file holding a whole recovery point.

The file is a tar stream compressed with zstd (frame checksums on), encrypted with age when its
name ends in `.age`. Layout, all under `safehold-export/`:

    safehold/manifest.json      the point's manifest
    safehold/db/<key>.<ext>     the database dumps, as stored in the point
    safehold/keys.json          escrowed application keys (encrypted exports only)
    files/<absolute path>       file trees and config files, owners, modes and mtimes kept
    safehold.toml               the configuration (secrets are references, never values)
    SHA256SUMS                  `sha256sum -c` format, checked before any restore
    SIGNATURE                   last member: the installation's Ed25519 signature over SHA256SUMS

Everything streams (restic dump → tar → zstd → age → file): no size limit and no temporary copy.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, cast

import zstandard

from safehold import signing
from safehold.actions.common import Point, search_point
from safehold.agestream import Encryptor
from safehold.config import Config
from safehold.errors import ConfigError, SafeholdError, os_reason
from safehold.output import Reporter
from safehold.repository.manifest import MANIFEST_PATH
from safehold.repository.restic import Repository
from safehold.secrets import resolve

ROOT = "safehold-export"
SUMS = "SHA256SUMS"
SIGNATURE = "SIGNATURE"  # the installation's Ed25519 signature over SHA256SUMS (see safehold.signing)
BUFFER = 1 << 20
ZSTD_LEVEL = 3


NAMES = (".tar.zst", ".tar.zst.age")


def check_name(path: Path) -> None:
    """Refuse a file name that would hide what the file is (x.zip holding a tar.zst)."""
    if not path.name.endswith(NAMES):
        raise ConfigError(f"{path.name}: an export file is named NAME.tar.zst or NAME.tar.zst.age",
                          "end the name in .tar.zst (compressed) or .tar.zst.age (compressed and age-encrypted)")


def is_encrypted(path: Path) -> bool:
    """Exports whose name ends in .age are age-encrypted."""
    return path.name.endswith(".age")


class _Hashing(io.RawIOBase):
    """A reader that hashes what passes through it."""

    def __init__(self, source: IO[bytes]) -> None:
        self.source = source
        self.digest = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        data = self.source.read(size)
        self.digest.update(data)
        return data


class _Writer:
    """Adds members to the export tar and records each file's checksum."""

    def __init__(self, tar: tarfile.TarFile, reporter: Reporter) -> None:
        self.tar = tar
        self.sums: list[tuple[str, str]] = []
        self.dirs: set[str] = set()
        self.reporter = reporter
        self.bytes = 0

    def add(self, info: tarfile.TarInfo, data: IO[bytes] | None) -> None:
        if info.isdir():
            if info.name in self.dirs:
                return
            self.dirs.add(info.name)
        if not info.isfile() or data is None:
            self.tar.addfile(info)
            return
        hashing = _Hashing(data)
        self.tar.addfile(info, hashing)
        self.sums.append((hashing.digest.hexdigest(), info.name.removeprefix(ROOT + "/")))
        self.bytes += info.size
        self.reporter.advance("export", self.bytes)

    def add_bytes(self, name: str, data: bytes) -> None:
        info = tarfile.TarInfo(f"{ROOT}/{name}")
        info.size, info.mtime, info.mode = len(data), int(time.time()), 0o600
        self.add(info, io.BytesIO(data))

    def add_snapshot(self, repo: Repository, snapshot: str, prefix: str) -> None:
        """Every member of a snapshot (restic's tar dump), renamed under `prefix`."""
        with repo.open_file(snapshot, "/", archive=True) as stream, \
                tarfile.open(fileobj=stream, mode="r|", bufsize=BUFFER) as source:
            for member in source:
                if not (member.isfile() or member.isdir() or member.issym()):
                    # Devices, fifos and sockets are not data; restoring them is refused as unsafe.
                    self.reporter.warn(f"export: {member.name} is a special file and was left out")
                    continue
                member.name = f"{prefix}/{member.name.lstrip('/')}".rstrip("/")
                self.add(member, source.extractfile(member) if member.isfile() else None)

    def finish(self, state_dir: Path) -> None:
        """SHA256SUMS, then the installation's signature over exactly those bytes (the last member)."""
        sums = "".join(f"{digest}  {name}\n" for digest, name in self.sums).encode()
        self.add_bytes(SUMS, sums)
        self.add_bytes(SIGNATURE, signing.sign(state_dir, sums))


def _write_tar(config: Config, repo: Repository, point: Point, sink: IO[bytes], encrypted: bool,
               reporter: Reporter) -> int:
    """The tar.zst stream of a point, written to `sink`; returns the payload bytes."""
    compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_checksum=True)
    # tarfile.open hands `copybufsize` on to TarFile (Lib/tarfile.py), but typeshed's overloads do not list it.
    with compressor.stream_writer(sink, closefd=False) as zstd_out, \
            tarfile.open(fileobj=zstd_out, mode="w|", format=tarfile.PAX_FORMAT,  # type: ignore[call-overload]
                         copybufsize=BUFFER) as tar:
        writer = _Writer(tar, reporter)
        manifest = point.manifest
        writer.add_bytes(MANIFEST_PATH.lstrip("/"), repo.cat_file(point.snapshot, MANIFEST_PATH))
        for snapshot in dict.fromkeys(db.snapshot for db in manifest.databases):
            writer.add_snapshot(repo, snapshot, ROOT)
        if manifest.keys_snapshot and encrypted:
            writer.add_snapshot(repo, manifest.keys_snapshot, ROOT)
        elif manifest.keys_snapshot:
            reporter.warn("escrowed keys are left out of an unencrypted export (name it *.age to include them)")
        if manifest.accounts_snapshot and encrypted:
            writer.add_snapshot(repo, manifest.accounts_snapshot, ROOT)
        elif manifest.accounts_snapshot:
            reporter.warn("the database accounts (password hashes) are left out of an unencrypted export (name it "
                          "*.age to include them)")
        if manifest.files_snapshot:
            writer.add_snapshot(repo, manifest.files_snapshot, f"{ROOT}/files")
        if config.source and config.source.is_file():
            writer.add_bytes("safehold.toml", config.source.read_bytes())
        writer.finish(config.state_dir)
    return writer.bytes


def recipients(config: Config) -> list[object]:
    """age recipients of the config's [export] section; empty when a passphrase is used instead."""
    import pyrage

    if config.export.recipients:
        try:
            return [pyrage.x25519.Recipient.from_str(r) for r in config.export.recipients]
        except pyrage.RecipientError as exc:
            raise ConfigError(f"export.recipients: not an age public key ({exc})", "use age1... keys") from None
    if config.export.passphrase:
        return []
    raise ConfigError("an .age export needs [export] recipients = [\"age1...\"] or passphrase = \"file:...\"",
                      "generate a key pair with `age-keygen` and list its public key")


@contextlib.contextmanager
def _pipe_through(worker: Callable[[IO[bytes]], object]) -> Iterator[tuple[IO[bytes], list[BaseException]]]:
    """Run `worker(read_end)` in a thread while the caller writes into the yielded write end."""
    read_fd, write_fd = os.pipe()
    errors: list[BaseException] = []
    reader = os.fdopen(read_fd, "rb", buffering=BUFFER)
    writer = os.fdopen(write_fd, "wb", buffering=BUFFER)

    def run() -> None:
        try:
            worker(reader)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            errors.append(exc)
        finally:
            reader.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield writer, errors
    finally:
        with contextlib.suppress(BrokenPipeError):
            writer.close()
        thread.join()


def export(config: Config, run: str, target: Path, reporter: Reporter, instance: str | None = None,
           force: bool = False) -> dict[str, object]:
    """Write point `run` (searched in every repository of the instance(s)) to the file `target`."""
    check_name(target)
    if target.exists() and not force:
        raise SafeholdError(f"{target} already exists", "choose another file name or remove it first")
    repo, point = search_point(config, run, instance)
    encrypted = is_encrypted(target)
    age_recipients = recipients(config) if encrypted else []
    partial = target.with_name(f".{target.name}.partial")
    started = time.monotonic()
    reporter.step(f"exporting point {point.run_id} of {point.manifest.instance} from {repo.name} to {target}"
                  + (" (age-encrypted)" if encrypted else ""))
    try:
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    except OSError as exc:
        raise _write_error(target, exc) from None
    try:
        with os.fdopen(fd, "wb", buffering=BUFFER) as out:
            if encrypted and age_recipients:
                import pyrage

                with _pipe_through(lambda src: pyrage.encrypt_io(src, out, age_recipients)) as (pipe, errors):
                    payload = _write_tar(config, repo, point, pipe, True, reporter)
                if errors:
                    raise SafeholdError(f"encrypting {target} failed: {errors[0]}", "check [export] recipients")
            elif encrypted:
                passphrase = resolve(config.export.passphrase or "", "export.passphrase")
                encryptor = Encryptor(out, passphrase)
                # A RawIOBase (write and flush, all zstd's writer calls), which typeshed does not count as an IO[bytes].
                payload = _write_tar(config, repo, point, cast(IO[bytes], encryptor), True, reporter)
                encryptor.close()
            else:
                payload = _write_tar(config, repo, point, out, False, reporter)
            out.flush()
            os.fsync(out.fileno())
        os.replace(partial, target)
    except OSError as exc:  # the export file's disk: the point itself is only read
        partial.unlink(missing_ok=True)
        raise _write_error(target, exc) from None
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    size = target.stat().st_size
    reporter.step(f"export complete: {payload / 1e6:.1f} MB of data in {size / 1e6:.1f} MB")
    return {"instance": point.manifest.instance, "run_id": point.run_id, "repository": repo.name, "file": str(target),
            "bytes": size, "payload_bytes": payload, "encrypted": encrypted,
            "seconds": round(time.monotonic() - started, 2)}


def _write_error(target: Path, exc: OSError) -> SafeholdError:
    return SafeholdError(f"cannot write {target}: {os_reason(exc)}",
                         "free space there or export somewhere else; no partial file was left behind")


def identities(config: Config) -> list[object]:
    """age identities for reading an encrypted export: [export] identity (an age secret key file)."""
    import pyrage

    if not config.export.identity:
        raise ConfigError("this .age export was encrypted to a key: it needs [export] identity = \"file:/path\"",
                          "point it at the age secret key the export was encrypted to")
    text = resolve(config.export.identity, "export.identity").reveal()
    keys = [line.strip() for line in text.splitlines() if line.strip().startswith("AGE-SECRET-KEY-")]
    if not keys:
        raise ConfigError("export.identity holds no AGE-SECRET-KEY line", "point it at an age-keygen key file")
    return [pyrage.x25519.Identity.from_str(k) for k in keys]
