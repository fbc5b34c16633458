"""File trees: statistics and sampled hashes for the manifest, and the in-place restore that swaps whole trees.

The manifest's counts and sample describe what restic stored, taken from the new snapshot's own
listing: restic's exclude rules (patterns matching at any depth, `!` re-includes) are restic's
alone, so they are never imitated here. A drill counts the restored tree the same way.

An in-place restore first restores each tree into a staging folder beside it (same file system),
then swaps it in with two renames. So a restore that fails half-way leaves the live tree as it
was, and files created after the point do not survive the restore (the folder is as it was).
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import os
import re
import secrets
import shutil
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from safehold.errors import SafeholdError, os_reason
from safehold.output import Reporter
from safehold.repository.restic import PointReader
from safehold.tempdirs import private_dir, remove_orphans, remove_tree

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
SAMPLE_FILES = 16
SAMPLE_MAX_BYTES = 64 << 20
COUNTED = ("file", "symlink")  # what a tree's file count counts; restic may not recreate other node types


@dataclass
class StoredTree:
    """One tree root as restic stored it: counted from the snapshot's own listing, so the manifest
    describes exactly what a restore brings back (restic's exclude rules, `!` patterns included)."""

    root: str
    files: int = 0
    bytes: int = 0
    # Sample candidates (path hash, relative path, node), the lowest path hashes, kept sorted.
    candidates: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)

    def offer(self, rel: str, node: dict[str, Any], keep: int) -> None:
        rank = hashlib.sha256(rel.encode("utf-8", "surrogateescape")).hexdigest()
        if len(self.candidates) < keep:
            self.candidates.append((rank, rel, node))
            self.candidates.sort(key=lambda c: c[0])
        elif rank < self.candidates[-1][0]:
            self.candidates[-1] = (rank, rel, node)
            self.candidates.sort(key=lambda c: c[0])


def stored_trees(nodes: Iterable[dict[str, Any]], roots: Iterable[str],
                 count: int = SAMPLE_FILES) -> dict[str, StoredTree]:
    """Files (regular files and symlinks), bytes (of regular files) and sample candidates per tree root,
    from a snapshot's listing (`Repository.walk`); a root that is a single file counts as one, `.`.

    The sample is the files whose relative path hashes lowest, so it is spread over the whole tree,
    the same files night after night, and chosen in one pass with bounded memory. Big files are
    left out so recording the sample stays cheap next to the backup itself; twice `count` are kept
    so files changed since restic read them can be passed over.
    """
    trees = {root: StoredTree(root) for root in roots}
    for node in nodes:
        kind, path = node.get("type"), str(node.get("path", ""))
        if kind not in COUNTED:
            continue
        for root, tree in trees.items():
            if path == root:
                rel = "."
            elif path.startswith(root.rstrip("/") + "/"):
                rel = path[len(root.rstrip("/")) + 1:]
            else:
                continue
            tree.files += 1
            if kind == "file":
                size = int(node.get("size") or 0)
                tree.bytes += size
                if size <= SAMPLE_MAX_BYTES:
                    tree.offer(rel, node, 2 * count)
    return trees


def restic_time_ns(text: str) -> int | None:
    """Nanoseconds since the epoch of a time as restic lists it (`2024-05-01T10:00:00.123456789+02:00`)."""
    match = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)", text or "")
    if not match:
        return None
    zone = "+00:00" if match[3] == "Z" else match[3]
    seconds = (datetime.fromisoformat(match[1] + zone) - EPOCH) // timedelta(seconds=1)
    return seconds * 1_000_000_000 + int((match[2] or "0")[:9].ljust(9, "0"))


def _hash_if_unchanged(path: str, node: dict[str, Any]) -> str | None:
    """sha256 of a file on disk, if it is still what restic stored (same size and mtime, before and after)."""
    expected = (int(node.get("size") or 0), restic_time_ns(str(node.get("mtime", ""))))
    try:
        before = os.lstat(path)
        if not stat.S_ISREG(before.st_mode) or (before.st_size, before.st_mtime_ns) != expected:
            return None
        digest = file_sha256(path)
        after = os.lstat(path)
    except OSError:  # vanished since the backup: simply not sampled
        return None
    return digest if (after.st_size, after.st_mtime_ns) == expected else None


def sample_hashes(tree: StoredTree, count: int = SAMPLE_FILES) -> dict[str, str]:
    """sha256 of up to `count` stored files of a tree (relative path → hash), read from disk right
    after the backup; a file changed since restic read it is passed over for the next candidate."""
    result: dict[str, str] = {}
    for _, rel, node in tree.candidates:
        if len(result) == count:
            break
        path = tree.root if rel == "." else f"{tree.root.rstrip('/')}/{rel}"
        if (digest := _hash_if_unchanged(path, node)) is not None:
            result[rel] = digest
    return result


def tree_stats(root: Path) -> tuple[int, int]:
    """Files and bytes of a tree on disk (a restored one), counted as `stored_trees` counts a snapshot:
    regular files and symlinks (never followed), bytes of regular files."""
    info = os.lstat(root)
    if not stat.S_ISDIR(info.st_mode):
        counted = stat.S_ISREG(info.st_mode) or stat.S_ISLNK(info.st_mode)
        return int(counted), info.st_size if stat.S_ISREG(info.st_mode) else 0
    count = size = 0
    folders = [str(root)]
    while folders:
        with os.scandir(folders.pop()) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    folders.append(entry.path)
                elif entry.is_symlink():
                    count += 1
                elif entry.is_file(follow_symlinks=False):
                    count += 1
                    size += entry.stat(follow_symlinks=False).st_size
    return count, size


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file's content, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def real_path(path: Path, kind: str) -> Path:
    """Where a tree really lives. A files tree is followed through symlinks (its own and its folders');
    a config file only through its folders' (a config path that is itself a symlink is kept as the link).
    A dangling link stays as it is."""
    if not path.exists():
        return path
    return Path(os.path.realpath(path)) if kind == "files" else Path(os.path.realpath(path.parent)) / path.name


def follow_links(excludes: Iterable[str], followed: dict[Path, Path]) -> list[str]:
    """Exclude patterns that name a followed link (`/srv/app_link/tmp/*`, `!/srv/app_link/tmp/keep`)
    rewritten to the real folder restic now saves; order kept (it decides `!` re-includes)."""
    result = []
    for pattern in excludes:
        negated, body = pattern.startswith("!"), pattern.removeprefix("!")
        for link, real in sorted(followed.items(), key=lambda item: -len(str(item[0]))):
            if body == str(link) or body.startswith(str(link).rstrip("/") + "/"):
                body = str(real) + body[len(str(link)):]
                break
        result.append("!" * negated + body)
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


@contextlib.contextmanager
def _staged(repo: PointReader, snapshot: str, path: Path, folder: Path, reporter: Reporter) -> Iterator[Path]:
    """`path` (and what lies in it) restored from a snapshot into a new private folder inside `folder`;
    yields where it landed, and removes the folder with whatever was not moved out of it.

    `folder` is on the file system where `path` goes, so moving it into place is a rename. The folder's name
    holds the PID: one a killed restore left in a live tree is removed by the next restore there.
    """
    staging = private_dir(".safehold-restore-", folder)
    try:
        repo.restore(snapshot, staging, [str(path)], reporter)
        restored = staging / path.relative_to("/")
        if not os.path.lexists(restored):
            raise SafeholdError(f"{path} is not in the point's files", "run `safehold verify` on this point")
        yield restored
    finally:
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(staging)


def remove_leftovers(trees: list[tuple[Path, str]], staging: Path, reporter: Reporter) -> list[str]:
    """Remove what killed runs left beside an instance's trees and in its staging folder; returns them.

    Called by every run that holds the instance lock (so no restore of it is swapping right now): the
    staging folders of dead restores (`.safehold-restore-<pid>-…`, `.safehold-staging-<pid>-…`), and a
    tree set aside by a swap that was killed after the new tree was already in place
    (`.NAME.safehold-old-…`; one whose tree is missing is the only copy and stays).
    """
    removed = [str(p) for p in remove_orphans(".safehold-staging-", staging)] if staging.is_dir() else []
    for path, kind in trees:
        root = real_path(path, kind)
        if not root.parent.is_dir():
            continue
        removed += [str(p) for p in remove_orphans(".safehold-restore-", root.parent)]
        if os.path.lexists(root):
            for old in root.parent.glob(f".{glob.escape(root.name)}.safehold-old-*"):
                if remove_tree(old):
                    removed.append(str(old))
    for gone in removed:
        reporter.warn(f"removed {gone}, left behind by a safehold run that was killed")
    return removed


def restore_in_place(repo: PointReader, snapshot: str, roots: list[str], reporter: Reporter) -> None:
    """Put each tree of a snapshot back at its original path, replacing what is there."""
    done: list[Path] = []
    for root in map(Path, roots):
        root.parent.mkdir(parents=True, exist_ok=True)
        # A tree inside one just restored (config.php in the app folder): staging it there and swapping
        # it in would change the times the point gave that folder.
        times = root.parent.stat() if any(root.parent == d or d in root.parent.parents for d in done) else None
        _swap_in(repo, snapshot, root, reporter)
        if times is not None:
            os.utime(root.parent, ns=(times.st_atime_ns, times.st_mtime_ns), follow_symlinks=False)
        done.append(root)


def _swap_in(repo: PointReader, snapshot: str, root: Path, reporter: Reporter) -> None:
    with _staged(repo, snapshot, root, root.parent, reporter) as restored:
        if not os.path.lexists(root):
            os.rename(restored, root)
            return
        old = root.parent / f".{root.name}.safehold-old-{secrets.token_hex(3)}"
        try:
            os.rename(root, old)
        except OSError:
            # A mount point or busy path cannot be swapped: overwrite its content instead.
            reporter.warn(f"{root} cannot be replaced as a whole; restoring over it (stale files stay)")
            repo.restore(snapshot, Path("/"), [str(root)], reporter)
            return
        os.rename(restored, root)
        _remove(old)


# restic's node types as file types of os.lstat, and where Go's FileMode (restic's `mode`) keeps the bits
# that st_mode keeps at 0o7000.
NODE_TYPES = {"file": stat.S_IFREG, "dir": stat.S_IFDIR, "symlink": stat.S_IFLNK, "fifo": stat.S_IFIFO,
              "socket": stat.S_IFSOCK, "dev": stat.S_IFBLK, "chardev": stat.S_IFCHR}
GO_SPECIAL_BITS = {1 << 23: stat.S_ISUID, 1 << 22: stat.S_ISGID, 1 << 20: stat.S_ISVTX}


def node_permissions(node: dict[str, Any]) -> int:
    """The permission bits (0o7777, as os.lstat gives them) of a node of a snapshot listing."""
    mode = int(node.get("mode") or 0)
    return (mode & 0o777) | sum(bit for go_bit, bit in GO_SPECIAL_BITS.items() if mode & go_bit)


def node_filemode(node: dict[str, Any]) -> str:
    """A node's type and permissions as `ls -l` shows them (`drwxr-xr-x`, `-rwsr-xr-x`)."""
    return stat.filemode(NODE_TYPES.get(str(node.get("type")), 0) | node_permissions(node))


def live_state(node: dict[str, Any]) -> str:
    """How the host's file at a node's path compares with the node: "missing", "same" or "differs".

    Compared as restic decides a file is unchanged: type, size and mtime, here with permissions and
    owner too. A folder on the host counts as the same folder (its content is compared item by item).
    """
    try:
        info = os.lstat(node["path"])
    except (FileNotFoundError, NotADirectoryError):
        return "missing"
    kind = node.get("type")
    if stat.S_IFMT(info.st_mode) != NODE_TYPES.get(str(kind)):
        return "differs"
    if kind == "dir":
        return "same"
    facts = (stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid)
    if facts != (node_permissions(node), node.get("uid", 0), node.get("gid", 0)):
        return "differs"
    if kind == "file" and info.st_size != int(node.get("size") or 0):
        return "differs"
    if kind in COUNTED and info.st_mtime_ns != restic_time_ns(str(node.get("mtime", ""))):
        return "differs"
    return "same"


def _is_folder(path: Path) -> bool:
    return path.is_dir() and not path.is_symlink()


def make_folder(path: Path, what: str, hint: str) -> None:
    """Create folder `path` (and its parents) for `what`; a failure is one line that names the path on the
    way that is a file, not a folder, where mkdir says only "File exists" or "Not a directory"."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        blocker = next((p for p in (path, *path.parents) if os.path.lexists(p) and not p.is_dir()), None)
        reason = f"{blocker} is a file, not a folder" if blocker is not None else os_reason(exc)
        raise SafeholdError(f"cannot create {what} {path}: {reason}", hint) from None


def not_a_folder_on_the_way(root: str, path: str) -> Path | None:
    """The first folder on the way from tree `root` down to `path` that exists on the host but is not a
    plain folder (a symlink put there since the point, which writing through would follow out of the tree)."""
    way = [folder for folder in reversed(Path(path).parents) if folder.is_relative_to(root)]
    return next((folder for folder in way if os.path.lexists(folder) and not _is_folder(folder)), None)


def restore_paths_in_place(repo: PointReader, snapshot: str, paths: list[str], replace: set[str],
                           reporter: Reporter) -> tuple[int, int]:
    """Put single files and folders of a snapshot back at their paths, among what is there now.

    A file missing on the host comes back; one whose path is in `replace` is replaced; any other is
    left as it is (the same as in the point, or new since the check); files added to a folder since
    the point stay. Each path is restored into a private folder inside the deepest folder on its way
    that exists (the same file system), then renamed into place file by file. Returns the files and
    bytes put back.
    """
    counts = [0, 0]
    for path in map(Path, paths):
        # Inside the folder it merges into, else beside it: a folder on a mount of its own gets its files
        # by rename too. Symlinks above the tree are the admin's layout: followed, they lead to that file system.
        merged = _is_folder(path) and str(path) not in replace
        folder = path if merged else next(parent for parent in path.parents if parent.is_dir())
        with _staged(repo, snapshot, path, folder, reporter) as restored:
            if not path.parent.exists():
                path.parent.mkdir(parents=True)
                reporter.warn(f"created {path.parent} for {path.name}: folders not named with --path get "
                              "safehold's owner and default mode, not the point's")
            _place(restored, path, replace, counts)
    return counts[0], counts[1]


def _place(restored: Path, live: Path, replace: set[str], counts: list[int]) -> None:
    """Move `restored` to `live` unless something is there that is not to be replaced; folders merge."""
    if os.path.lexists(live) and str(live) not in replace:
        if _is_folder(live) and _is_folder(restored):
            for name in sorted(os.listdir(restored)):
                _place(restored / name, live / name, replace, counts)
        return
    files, size = tree_stats(restored)
    if os.path.lexists(live) and (_is_folder(live) or _is_folder(restored)):
        _remove(live)  # a rename replaces a file, not a folder, nor a file by a folder
    os.replace(restored, live)
    counts[0] += files
    counts[1] += size
