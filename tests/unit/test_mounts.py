"""A repository on a network file system counts as off-host; one on a local disk does not."""

from __future__ import annotations

from pathlib import Path

from safehold.mounts import filesystem_type, on_network_filesystem

MOUNTINFO = """\
22 1 253:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw
25 22 0:22 / /proc rw,nosuid shared:12 - proc proc rw
40 22 0:40 / /mnt/nas rw,relatime shared:20 - nfs4 nas:/export rw,vers=4.2
41 40 0:41 / /mnt/nas/local\\040disk rw,relatime shared:21 - ext4 /dev/vdb1 rw
42 22 0:42 / /srv/smb rw,relatime shared:22 - cifs //files/backup rw
43 22 0:43 / /srv/sshfs rw shared:23 - fuse.sshfs backup@nas:/srv rw
"""


def test_deepest_mount_decides(tmp_path: Path) -> None:
    info = tmp_path / "mountinfo"
    info.write_text(MOUNTINFO)
    assert on_network_filesystem(Path("/mnt/nas/safehold/repo"), info) == "nfs4"
    assert on_network_filesystem(Path("/srv/smb/repo"), info) == "cifs"
    assert on_network_filesystem(Path("/srv/sshfs/repo"), info) == "fuse.sshfs"
    # A local disk mounted inside the NFS share (escaped space in its name) is this host's again.
    assert filesystem_type(Path("/mnt/nas/local disk/repo"), info) == "ext4"
    assert on_network_filesystem(Path("/mnt/nas/local disk/repo"), info) is None
    assert on_network_filesystem(Path("/var/backups/repo"), info) is None
    assert on_network_filesystem(Path("/mnt/nasty"), info) is None  # a prefix of the name is not a parent


def test_unreadable_mountinfo_means_local(tmp_path: Path) -> None:
    assert on_network_filesystem(Path("/mnt/nas"), tmp_path / "missing") is None


def test_this_hosts_own_mounts_are_read() -> None:
    assert filesystem_type(Path("/")) is not None  # the real /proc/self/mountinfo parses
    assert on_network_filesystem(Path("/proc")) is None
