"""File trees: statistics for the manifest and the in-place restore that swaps whole trees.

An in-place restore first restores each tree into a staging folder beside it (same file system),
then swaps it in with two renames. So a restore that fails half-way leaves the live tree as it
was, and files created after the point do not survive the restore (the folder is as it was).
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
import secrets
import shutil
import tempfile
from pathlib import Path

from safehold.errors import SafeholdError
from safehold.output import Reporter
from safehold.repository.restic import Repository


def tree_stats(root: Path, excludes: list[str]) -> tuple[int, int]:
    """File count and bytes under a path (a single file counts as one)."""
    if root.is_file() or root.is_symlink():
        return 1, root.lstat().st_size
    count = size = 0
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not any(fnmatch.fnmatch(os.path.join(folder, d), p) for p in excludes)]
        for name in files:
            path = os.path.join(folder, name)
            if any(fnmatch.fnmatch(path, p) for p in excludes):
                continue
            count += 1
            size += os.lstat(path).st_size
    return count, size


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


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
