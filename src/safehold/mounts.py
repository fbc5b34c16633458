"""Which file system a path lives on, read from /proc/self/mountinfo (no statfs magic numbers to keep up)."""

from __future__ import annotations

import os
from pathlib import Path

MOUNTINFO = Path("/proc/self/mountinfo")
# File systems whose data lies on another machine: a repository there survives the loss of this host.
NETWORK_TYPES = frozenset({"nfs", "nfs4", "cifs", "smb3", "smbfs", "9p", "ceph", "glusterfs", "lustre", "afs",
                           "fuse.sshfs", "fuse.rclone", "fuse.s3fs", "fuse.glusterfs", "fuse.cephfs", "davfs",
                           "fuse.davfs2"})


def _unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash in paths as octal escapes (\\040…)."""
    return field.encode().decode("unicode_escape").encode("latin-1").decode(errors="replace")


def mounts(mountinfo: Path = MOUNTINFO) -> list[tuple[str, str]]:
    """(mount point, file system type) of every mount, in mountinfo order; [] where it cannot be read."""
    try:
        lines = mountinfo.read_text().splitlines()
    except OSError:
        return []
    result = []
    for line in lines:
        before, _, after = line.partition(" - ")
        fields, tail = before.split(), after.split()
        if len(fields) >= 5 and tail:
            result.append((_unescape(fields[4]), tail[0]))
    return result


def filesystem_type(path: Path, mountinfo: Path = MOUNTINFO) -> str | None:
    """The type of the file system holding `path` (its deepest mount; a path not yet created is judged by
    its nearest existing parent), or None where mountinfo cannot be read."""
    target = Path(os.path.realpath(path))
    best: tuple[int, str] | None = None
    for point, kind in mounts(mountinfo):  # later mounts over the same point win, as the kernel shows them
        if target == Path(point) or Path(point) in target.parents:
            depth = len(Path(point).parts)
            if best is None or depth >= best[0]:
                best = (depth, kind)
    return best[1] if best else None


def on_network_filesystem(path: Path, mountinfo: Path = MOUNTINFO) -> str | None:
    """The network file system type (nfs4, cifs…) `path` lives on, or None when it is on this host's disks."""
    kind = filesystem_type(path, mountinfo)
    return kind if kind in NETWORK_TYPES else None
