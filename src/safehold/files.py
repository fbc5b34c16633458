"""File trees: statistics and sampled hashes for the manifest, and the in-place restore that swaps whole trees.

An in-place restore first restores each tree into a staging folder beside it (same file system),
then swaps it in with two renames. So a restore that fails half-way leaves the live tree as it
was, and files created after the point do not survive the restore (the folder is as it was).
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from safehold.errors import SafeholdError
from safehold.output import Reporter
from safehold.repository.restic import Repository

SAMPLE_FILES = 16
SAMPLE_MAX_BYTES = 64 << 20


def walk_files(root: Path, excludes: list[str]) -> Iterator[tuple[str, str]]:
    """(absolute path, path relative to root) of every file under root; a single file is `.`."""
    if root.is_file() or root.is_symlink():
        yield str(root), "."
        return
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not any(fnmatch.fnmatch(os.path.join(folder, d), p) for p in excludes)]
        for name in files:
            path = os.path.join(folder, name)
            if not any(fnmatch.fnmatch(path, p) for p in excludes):
                yield path, os.path.relpath(path, root)


def tree_stats(root: Path, excludes: list[str]) -> tuple[int, int]:
    """File count and bytes under a path (a single file counts as one)."""
    count = size = 0
    for path, _ in walk_files(root, excludes):
        count += 1
        size += os.lstat(path).st_size
    return count, size


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file's content, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def sample_hashes(root: Path, excludes: list[str], count: int = SAMPLE_FILES) -> dict[str, str]:
    """sha256 of a stable pseudo-random sample of regular files (relative path → hash).

    The sample is the `count` files whose path hashes lowest, so it is spread over the whole tree,
    the same files night after night, and chosen in one pass with bounded memory. Big files are
    left out so recording the sample stays cheap next to the backup itself.
    """
    chosen: list[tuple[str, str, str]] = []  # (path hash, relative path, path), kept sorted
    for path, rel in walk_files(root, excludes):
        if not os.path.isfile(path) or os.path.islink(path) or os.path.getsize(path) > SAMPLE_MAX_BYTES:
            continue
        rank = hashlib.sha256(rel.encode("utf-8", "surrogateescape")).hexdigest()
        if len(chosen) < count:
            chosen.append((rank, rel, path))
            chosen.sort()
        elif rank < chosen[-1][0]:
            chosen[-1] = (rank, rel, path)
            chosen.sort()
    result: dict[str, str] = {}
    for _, rel, path in chosen:
        with contextlib.suppress(OSError):  # vanished since the walk: simply not sampled
            result[rel] = file_sha256(path)
    return result


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


def own_folder_inside(roots: list[str] | list[Path], own: dict[str, Path]) -> str | None:
    """Why one of safehold's own folders (a local repository, the state folder) lies in a tree, or None.

    Saved, every point would hold the repository itself; restored in place, the tree is swapped
    as a whole and the live repository with it.
    """
    for root in map(Path, roots):
        inside = root.resolve()
        for what, folder in own.items():
            if folder.resolve().is_relative_to(inside):
                return f"{what} ({folder}) lies inside {root}"
    return None


def restore_in_place(repo: Repository, snapshot: str, roots: list[str], reporter: Reporter) -> None:
    """Put each tree of a snapshot back at its original path, replacing what is there."""
    for root in map(Path, roots):
        root.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".safehold-restore-", dir=root.parent))
        try:
            repo.restore(snapshot, staging, [str(root)], reporter)
            restored = staging / root.relative_to("/")
            if not restored.exists() and not restored.is_symlink():
                raise SafeholdError(f"{root} is not in the point's files", "run `safehold verify` on this point")
            if not (root.exists() or root.is_symlink()):
                os.rename(restored, root)
                continue
            old = root.parent / f".{root.name}.safehold-old-{secrets.token_hex(3)}"
            try:
                os.rename(root, old)
            except OSError:
                # A mount point or busy path cannot be swapped: overwrite its content instead.
                reporter.warn(f"{root} cannot be replaced as a whole; restoring over it (stale files stay)")
                repo.restore(snapshot, Path("/"), [str(root)], reporter)
                continue
            os.rename(restored, root)
            _remove(old)
        finally:
            with contextlib.suppress(FileNotFoundError):
                shutil.rmtree(staging)
