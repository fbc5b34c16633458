"""[repositories.*]: where points are stored, and how a URL says whether it is on this host."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import Field, field_validator

from safehold.config.base import Model, SecretRef, check_absolute
from safehold.errors import ConfigError
from safehold.mounts import on_network_filesystem
from safehold.sftp_url import parse_sftp

# restic URL schemes that store somewhere else; anything else (a path, local:) is on this host.
REMOTE_SCHEMES = ("sftp:", "s3:", "rest:", "rclone:", "b2:", "azure:", "gs:", "swift:")


def local_path(url: str) -> Path | None:
    """The folder of a repository on this host (a path, or local:path); None for a remote one."""
    return None if url.startswith(REMOTE_SCHEMES) else Path(url.removeprefix("local:"))


# What the S3 client inside restic accepts as a bucket name; it checks only when the repository is opened.
S3_BUCKET = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{1,61}[A-Za-z0-9]")
S3_FORM = "write s3:https://HOST/BUCKET or s3:https://HOST/BUCKET/PREFIX"


def s3_location(url: str) -> tuple[str, str, str, str]:
    """An s3: URL split as restic splits it: (scheme, endpoint, bucket, prefix); the scheme is https unless
    the URL says http."""
    if url.startswith("s3:http"):
        parts = urlsplit(url.removeprefix("s3:"))
        scheme, endpoint, path = parts.scheme, parts.netloc, parts.path.removeprefix("/")
    else:
        scheme = "https"
        endpoint, _, path = url.removeprefix("s3://" if url.startswith("s3://") else "s3:").partition("/")
    bucket, _, prefix = path.partition("/")
    return scheme, endpoint, bucket, prefix.strip("/")


def _check_s3_url(url: str) -> None:
    """Refuse an s3: URL without an endpoint or a valid bucket, split as restic splits it.

    restic takes the first part after the endpoint as the bucket: `s3:https://host` fails only when
    the repository is opened, with "Bucket name cannot be empty" that reads like a repository not
    created yet, and `s3:backups/x` (the endpoint left out) makes `backups` the host.
    """
    _, endpoint, bucket, _ = s3_location(url)
    if not endpoint:
        raise ValueError(f"the s3: URL names no endpoint; {S3_FORM}")
    if not bucket:
        raise ValueError(f"the s3: URL names no bucket after the endpoint; {S3_FORM}")
    if not S3_BUCKET.fullmatch(bucket):
        raise ValueError(f"{bucket!r} is not a valid S3 bucket name (3 to 63 letters, digits, dots and hyphens); "
                         f"{S3_FORM}")


class RepositoryConfig(Model):
    """One restic repository: a local path or any restic URL (sftp:, s3:, rest:, rclone:)."""

    url: str = Field(
        description="where the repository lives: a full local path (or local:/path), sftp:user@host:/path, "
                    "s3:https://host/bucket/prefix, rest:, rclone:, b2:, azure:, gs: or swift:; the first repository "
                    "of an instance receives every run, the others receive copies",
        examples=["/var/backups/safehold"])
    password: SecretRef = Field(
        description="the repository password, as a secret reference; without it no point can be read, so keep a "
                    "copy off this host (`safehold kit`)",
        examples=["file:/etc/safehold/repo.pass"])
    env: dict[str, SecretRef] = Field(
        default_factory=dict,
        description="extra environment for restic (S3 or B2 credentials...), each value a secret reference",
        examples=[{"AWS_ACCESS_KEY_ID": "env:AWS_ACCESS_KEY_ID",
                   "AWS_SECRET_ACCESS_KEY": "file:/etc/safehold/s3.secret"}])
    known_hosts: str | None = Field(
        default=None, description="sftp: the server's SSH known_hosts line(s); unset: pinned once with "
                                  "`safehold repo trust`",
        examples=["backup.example.org ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI..."])
    ssh_key: str | None = Field(
        default=None, description="sftp: the private key file (0600, without a passphrase); unset: ssh's own "
                                  "default keys",
        examples=["/etc/safehold/id_ed25519"])
    # An office uplink that nightly uploads must not fill: restic's own limiter.
    limit_upload: int | None = Field(default=None, ge=1, strict=True,
                                     description="upload limit in KiB/s; unset: no limit", examples=[2048])
    limit_download: int | None = Field(default=None, ge=1, strict=True,
                                       description="download limit in KiB/s; unset: no limit", examples=[8192])

    @field_validator("url")
    @classmethod
    def _url_shape(cls, value: str) -> str:
        if (path := local_path(value)) is not None:
            check_absolute(str(path))
        elif value.startswith("s3:"):
            _check_s3_url(value)
        else:
            try:
                parse_sftp(value)
            except ConfigError as exc:  # shown after the file and key, as the other URL errors
                raise ValueError(f"{exc.message}; {exc.hint}") from None
        return value

    def is_remote(self) -> bool:
        """True when the repository lies off this host: a remote URL, or a path on a network file system
        (NFS, CIFS…), whose data survives this host's disks."""
        folder = self.local_path()
        return folder is None or on_network_filesystem(folder) is not None

    def local_path(self) -> Path | None:
        """The folder of a repository on this host; None for a remote one."""
        return local_path(self.url)

    def rate_limits(self) -> list[str]:
        """restic's options for the configured upload and download limits."""
        return [*(["--limit-upload", str(self.limit_upload)] if self.limit_upload else []),
                *(["--limit-download", str(self.limit_download)] if self.limit_download else [])]

