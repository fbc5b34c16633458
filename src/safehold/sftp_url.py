"""sftp: repository URLs, parsed as restic reads them.

Pure parsing with no I/O, apart from the ssh machinery: config validation uses it to refuse a
mistyped URL when the file is loaded, and ssh.py to build the command restic runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from safehold.errors import ConfigError
from safehold.secrets import mask_url


@dataclass(frozen=True)
class SftpTarget:
    """Where an sftp: repository lives."""

    host: str
    user: str
    port: int
    path: str

    @property
    def known_hosts_name(self) -> str:
        """How ssh names this host in known_hosts (`[host]:port` off port 22)."""
        return self.host if self.port == 22 else f"[{self.host}]:{self.port}"


def parse_sftp(url: str) -> SftpTarget | None:
    """`sftp:user@host:/path` or `sftp://user@host:port//path`; None for other URLs."""
    shown = repr(mask_url(url))
    if url.startswith("sftp://"):
        parts = urlsplit(url)
        if not parts.hostname:
            raise ConfigError(f"repository URL {shown} has no host", "use sftp://user@host:port//path")
        host, user, port, path = parts.hostname, parts.username, parts.port or 22, parts.path.removeprefix("/")
    elif url.startswith("sftp:"):
        rest = url[5:]
        user, _, hostpath = rest.rpartition("@") if "@" in rest.split(":", 1)[0] else ("", "", rest)
        if hostpath.startswith("["):
            host, _, path = hostpath[1:].partition("]:")
        else:
            host, _, path = hostpath.partition(":")
        if not host or not path:
            raise ConfigError(f"repository URL {shown} is not sftp:user@host:/path", "fix the repository URL")
        port = 22
    else:
        return None
    # ssh runs with no ~/.ssh/config (see ssh.sftp_command): without a user in the URL it would log in as
    # whoever runs safehold, root at night and someone else restoring by hand.
    if not user:
        raise ConfigError(f"repository URL {shown} names no user",
                          "write sftp:USER@host:/path or sftp://USER@host:port//path")
    return SftpTarget(host, user, port, path)
