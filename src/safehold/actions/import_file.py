"""`safehold restore INSTANCE --from-file FILE`: restore a point from a portable export.

The file is unpacked into a staging folder next to the destination, refusing any member that
could land outside it (absolute paths, `..`, writes through symlinks, links climbing out, device
files), and every file's SHA-256 is compared with the archive's SHA256SUMS. Only when the whole
archive is proven intact — its SHA256SUMS signed by a key this installation trusts, and every file
matching it — does the normal restore run, reading from the staging folder; a damaged,
truncated or hostile file therefore writes nothing to the destination.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
import stat
import tarfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import zstandard

from safehold import signing
from safehold.actions.common import Point
from safehold.actions.export import BUFFER, ROOT, SIGNATURE, SUMS, identities, is_encrypted
from safehold.actions.restore import restore
from safehold.agestream import AgeError, Decryptor, is_passphrase_file
from safehold.config import Config
from safehold.errors import ConfigError, SafeholdError, os_reason
from safehold.lifecycle import RunRecord, tracked
from safehold.output import Reporter
from safehold.repository.manifest import MANIFEST_PATH, MAX_BYTES, Manifest, too_big
from safehold.secrets import resolve
from safehold.signing import MAX_SIGNATURE_BYTES
from safehold.tempdirs import private_dir

ZEROS = bytes(BUFFER)


class Damaged(SafeholdError):
    """The export file is truncated, corrupt, not decryptable or hostile."""


@contextlib.contextmanager
def _decrypted(config: Config, path: Path) -> Iterator[IO[bytes]]:
    """The file's plain tar.zst bytes (decrypting .age on the fly in a thread)."""
    with open(path, "rb", buffering=BUFFER) as raw:
        if not is_encrypted(path):
            yield raw
            return
        if is_passphrase_file(raw):
            if not config.export.passphrase:
                raise ConfigError("this .age export is passphrase-encrypted: it needs [export] passphrase",
                                  'set passphrase = "file:/path/to/passphrase" (0600)')
            try:
                yield Decryptor(raw, resolve(config.export.passphrase, "export.passphrase"))  # type: ignore[misc]
            except AgeError as exc:
                raise Damaged(f"{path} cannot be decrypted ({exc})",
                              "check the passphrase, or use an intact copy; nothing was restored") from None
            return
        import pyrage

        keys = identities(config)
        read_fd, write_fd = os.pipe()
        errors: list[BaseException] = []

        def decrypt() -> None:
            with os.fdopen(write_fd, "wb", buffering=BUFFER) as sink:
                try:
                    pyrage.decrypt_io(raw, sink, keys)
                except BaseException as exc:  # noqa: BLE001 - reported by the reader below
                    errors.append(exc)

        thread = threading.Thread(target=decrypt, daemon=True)
        thread.start()
        plain = os.fdopen(read_fd, "rb", buffering=BUFFER)
        try:
            yield plain
        except Exception:
            # A decryption failure shows up downstream as a short stream; name the real cause.
            thread.join(timeout=1)
            if not thread.is_alive() and errors:
                raise Damaged(f"{path} cannot be decrypted ({errors[0]})",
                              "use the age identity the export was encrypted to; nothing was restored") from None
            raise
        finally:
            plain.close()  # unblocks the thread if it is still writing
            thread.join()
        if errors:
            raise Damaged(f"{path} cannot be decrypted ({errors[0]})",
                          "use the age identity the export was encrypted to; nothing was restored")


def _hostile(name: str, why: str) -> Damaged:
    return Damaged(f"export refused: member {name!r} {why}", "the file is not a safehold export or was tampered with; "
                   "nothing was restored")


def _check_member(member: tarfile.TarInfo, staging: Path) -> Path:
    """The staging path of a member, or an error if it could land outside the staging folder."""
    name = member.name
    parts = name.split("/")
    if name.startswith("/") or ".." in parts:
        raise _hostile(name, "has an absolute or '..' path")
    if parts[0] != ROOT:
        raise _hostile(name, f"is outside {ROOT}/")
    if not (member.isfile() or member.isdir() or member.issym()):
        raise _hostile(name, "is not a file, folder or symlink")
    if member.issym() and not member.linkname.startswith("/"):
        resolved = os.path.normpath(os.path.join(os.path.dirname(name), member.linkname))
        if resolved.split("/")[0] != ROOT:
            raise _hostile(name, f"is a symlink leaving the archive ({member.linkname})")
    folder = staging
    for part in parts[:-1]:
        folder = folder / part
        if folder.is_symlink():
            raise _hostile(name, "would be written through a symlink")
    return staging / name


def _write_file(source: IO[bytes], target: Path, size: int) -> str:
    """Copy a member into a new file, keeping runs of zeros as holes; returns its SHA-256."""
    digest = hashlib.sha256()
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb", buffering=0) as out:
        while chunk := source.read(BUFFER):
            digest.update(chunk)
            if chunk == ZEROS[: len(chunk)]:
                out.seek(len(chunk), os.SEEK_CUR)
            else:
                out.write(chunk)
        out.truncate(size)
    return digest.hexdigest()


def _apply_meta(member: tarfile.TarInfo, target: Path) -> None:
    if os.geteuid() == 0:
        with contextlib.suppress(OSError):
            os.chown(target, member.uid, member.gid, follow_symlinks=False)
    if not member.issym():
        os.chmod(target, stat.S_IMODE(member.mode))
    os.utime(target, (member.mtime, member.mtime), follow_symlinks=False)


def _unpack(stream: IO[bytes], staging: Path, check_signature: Callable[[bytes, bytes | None], object]) -> None:
    """Unpack and verify (the signature over SHA256SUMS first, with `check_signature`, then every checksum);
    raises Damaged or SignatureRefused on any problem."""
    sums: dict[str, str] = {}
    expected: dict[str, str] | None = None
    sums_bytes = b""
    signature: bytes | None = None
    folders: list[tuple[tarfile.TarInfo, Path]] = []
    reader = zstandard.ZstdDecompressor().stream_reader(stream, read_size=BUFFER, read_across_frames=True)
    with tarfile.open(fileobj=reader, mode="r|", bufsize=BUFFER) as tar:
        for member in tar:
            target = _check_member(member, staging)
            relative = member.name.removeprefix(ROOT + "/")
            if expected is not None and (member.name != f"{ROOT}/{SIGNATURE}" or signature is not None):
                raise _hostile(member.name, f"follows {SUMS}")
            if member.name == f"{ROOT}/{SIGNATURE}":
                if expected is None or not member.isfile():
                    raise _hostile(member.name, f"comes before {SUMS}")
                signature = tar.extractfile(member).read(MAX_SIGNATURE_BYTES + 1)  # type: ignore[union-attr]
                continue
            if member.name == f"{ROOT}/{SUMS}":
                sums_bytes = tar.extractfile(member).read()  # type: ignore[union-attr]
                expected = {line[66:]: line[:64] for line in sums_bytes.decode(errors="replace").splitlines()
                            if len(line) > 66}
                continue
            again = os.path.lexists(target)
            if again and not (member.isdir() and target.is_dir() and not target.is_symlink()):
                raise _hostile(member.name, "appears twice")
            target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            if member.isdir():
                target.mkdir(exist_ok=True, mode=0o700)
                folders.append((member, target))
            elif member.issym():
                os.symlink(member.linkname, target)
                _apply_meta(member, target)
            else:
                sums[relative] = _write_file(tar.extractfile(member), target, member.size)  # type: ignore[arg-type]
                _apply_meta(member, target)
        # Read to the end: zstd checks its frame checksum there, and a decrypting thread finishes cleanly.
        while reader.read(BUFFER):
            pass
    for member, target in reversed(folders):
        _apply_meta(member, target)
    if expected is None:
        raise Damaged(f"the export ends before its {SUMS} (truncated)", "use an intact copy; nothing was restored")
    check_signature(sums_bytes, signature)  # who made it, before any checksum or content is believed
    bad = sorted(name for name in set(sums) | set(expected) if sums.get(name) != expected.get(name))
    if bad:
        raise Damaged(f"{len(bad)} file(s) in the export do not match their checksum ({bad[0]})",
                      "the file is damaged; use an intact copy — nothing was restored")


class Staged:
    """An unpacked, verified export: offers the repository calls restore() needs."""

    name = "file"

    def __init__(self, folder: Path, origin: Path) -> None:
        self.folder = folder
        self.root = folder / ROOT
        self.origin = origin  # the export file, named in the command that finishes an interrupted restore

    def manifest(self, source: Path) -> Manifest:
        path = self.root / MANIFEST_PATH.lstrip("/")
        if not path.is_file():
            raise Damaged(f"{source} holds no {MANIFEST_PATH}", "this is not a safehold export; nothing was restored")
        if (size := path.stat().st_size) > MAX_BYTES:  # refused before it is read into memory
            raise too_big(str(source), size)
        manifest = Manifest.from_bytes(path.read_bytes(), str(source))
        for entry in manifest.databases:  # refused here, before the restore changes anything
            self.path(entry.path)
        for tree in manifest.trees:
            self.path(f"files/{tree.root}")
        return manifest

    def path(self, name: str) -> Path:
        """Where a part the manifest names lies in the staging folder; refused when the way there climbs out.

        The checksums prove the file intact, not honest: a tampered export carries its own, and a symlink
        on the way (`files/srv -> /srv`) would make the restore read, and move away, the host's own files.
        """
        parts = Path(name.lstrip("/")).parts
        if ".." in parts:
            raise _hostile("/".join(parts), "is named with a '..' path in the manifest")
        for depth in range(1, len(parts)):
            if self.root.joinpath(*parts[:depth]).is_symlink():
                raise _hostile("/".join(parts), "would be read through a symlink")
        return self.root.joinpath(*parts)

    @contextlib.contextmanager
    def open_file(self, snapshot_id: str, path: str) -> Iterator[IO[bytes]]:
        """A dump of the point, from the staging folder."""
        with open(self.path(path), "rb", buffering=BUFFER) as stream:
            yield stream

    def restore(self, snapshot_id: str, target: Path, includes: list[str], reporter: Reporter) -> None:
        """Move file trees from the staging folder into place under `target`."""
        reporter.step(f"restoring files from the export into {target}")
        for include in includes:
            source = self.path(f"files/{include}")
            if os.path.lexists(source):
                _move_into(source, target / include.lstrip("/"))


def _move_into(source: Path, dest: Path) -> None:
    """Put `source` at `dest`, merging folders; files already there are replaced."""
    if source.is_dir() and not source.is_symlink():
        dest.mkdir(parents=True, exist_ok=True)
        for child in source.iterdir():
            _move_into(child, dest / child.name)
        shutil.copystat(source, dest, follow_symlinks=False)
        with contextlib.suppress(OSError):
            st = source.lstat()
            os.chown(dest, st.st_uid, st.st_gid)
        return
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.is_dir() and not dest.is_symlink():
        shutil.rmtree(dest)
    try:
        os.replace(source, dest)
    except OSError:
        shutil.move(source, dest)  # another file system: copy (holes are not kept then)


def _staging_parent(config: Config, files_to: Path | None) -> Path:
    """Next to the destination (same file system, so moving into place is a rename)."""
    parent = files_to.resolve().parent if files_to is not None else config.state_dir / "staging"
    parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    return parent


def restore_from_file(config: Config, name: str, path: Path, reporter: Reporter, *, only: list[str] | None = None,
                      to_db: list[str] | None = None, files_to: Path | None = None, dry_run: bool = False,
                      force: bool = False, allow_version_change: bool = False, trust_signer: str | None = None,
                      allow_unsigned: bool = False) -> dict[str, object]:
    """Verify and unpack an export, then restore its point into instance `name`; recorded in the run
    history as a restore (unless a dry run), one that fails unpacking or checking the file too.

    The export's signature must be made by a key this installation trusts (see safehold.signing), or by
    the one `trust_signer` names by fingerprint; `allow_unsigned` accepts one without a valid signature.
    Either way the restore writes only where the instance's config says (see safehold.actions.targets).
    """
    options = {"only": only, "to_db": to_db, "files_to": files_to, "dry_run": dry_run, "force": force,
               "allow_version_change": allow_version_change}
    signed = (trust_signer, allow_unsigned)
    if dry_run:
        return _restore_file(config, name, path, reporter, options, signed, None)
    config.instance(name)
    with tracked(config, name, "restore", reporter, {"file": str(path)}) as record:
        return _restore_file(config, name, path, reporter, options, signed, record)


def _restore_file(config: Config, name: str, path: Path, reporter: Reporter, options: dict[str, Any],
                  signed: tuple[str | None, bool], record: RunRecord | None) -> dict[str, object]:
    signers: list[str | None] = []

    def check_signature(sums: bytes, signature: bytes | None) -> None:
        signers.append(signing.verify(config.state_dir, sums, signature, *signed))

    if path.is_dir():
        raise ConfigError(f"{path} is a folder, not an export file",
                          "give the NAME.tar.zst or NAME.tar.zst.age file that `safehold export` wrote")
    if not path.is_file():
        raise ConfigError(f"export file {path} does not exist", "check the path")
    staging = private_dir(".safehold-staging-", _staging_parent(config, options["files_to"]))
    try:
        reporter.step(f"unpacking and verifying {path}")
        try:
            with _decrypted(config, path) as stream:
                _unpack(stream, staging, check_signature)
        except (zstandard.ZstdError, tarfile.TarError, EOFError) as exc:
            raise Damaged(f"{path} is damaged or truncated ({exc})",
                          "use an intact copy of the export; nothing was restored") from None
        except OSError as exc:  # the folder it is unpacked into (or the disk it is read from), not the file's content
            full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
            raise SafeholdError(f"cannot unpack {path} into {staging.parent}: {os_reason(exc)}",
                                ("free space there, or restore with --files-to on a disk with room (the export is "
                                 "unpacked beside it)" if full else "check that folder and the export file")
                                + "; nothing was restored") from None
        staged = Staged(staging, path.resolve())
        manifest = staged.manifest(path)
        if signers and signers[0] is None:
            reporter.warn(f"{path} has no valid signature; restored because --allow-unsigned was given")
        reporter.step(f"{path}: point {manifest.run_id} of {manifest.instance}, signed by "
                      f"{signers[0] if signers else '?'}, every checksum matches")
        point = Point(manifest, snapshot="", repository=f"file {path.name}")
        result = restore(config, name, manifest.run_id, reporter, source=(staged, point), record=record, **options)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return result
