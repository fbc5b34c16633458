"""The recovery-point manifest (`safehold/manifest.json`): what a point holds and how to check it.

Versioned (`format`), JSON, and never holds a secret: keys are listed by name only.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from safehold.errors import RepositoryError
from safehold.hostinfo import HostRequirements

FORMAT = 1
MANIFEST_PATH = "/safehold/manifest.json"
DB_DIR = "/safehold/db"
KEYS_PATH = "/safehold/keys.json"
ACCOUNTS_PATH = "/safehold/accounts.json"
# Far above any manifest safehold writes (one line per table: 100,000 tables stay under 16 MiB); a larger
# one is not a point safehold made, and parsing it would only cost memory.
MAX_BYTES = 16 << 20


class TableEntry(BaseModel):
    rows: int
    checksum: str | None = None
    read: str | None = Field(default=None, description="how the dump read it: snapshot (consistent snapshot), "
                             "locked (non-transactional, under a read lock) or unlocked (non-transactional, "
                             "no lock: a warning says so)")


class DatabaseEntry(BaseModel):
    key: str
    engine: str
    name: str
    method: str
    path: str = Field(description="file inside the point holding the dump")
    snapshot: str
    server_version: str | None = None
    bytes: int = 0
    tables: dict[str, TableEntry] = Field(default_factory=dict)
    objects: dict[str, int] = Field(default_factory=dict)
    table_prefix: str | None = None
    notes: list[str] = Field(default_factory=list)
    character_set: str | None = Field(default=None, description="the database's default character set")
    collation: str | None = Field(default=None, description="the database's default collation")
    self_reference: str | None = Field(
        default=None, description="a dump statement naming the database itself, '' for none; "
                                  "absent when not known at backup time (the restore then reads the dump)")


class TreeEntry(BaseModel):
    root: str
    kind: str = "files"  # files | config
    files: int = 0
    bytes: int = 0
    samples: dict[str, str] = Field(default_factory=dict,
                                    description="sha256 of a stable sample of files, by path relative to root")
    link: str | None = Field(default=None,
                             description="the configured path when it is (or lies behind) a symlink: root is "
                                         "the real path it led to, saved and restored there; the link is left alone")


class Manifest(BaseModel):
    """Everything needed to know what a recovery point contains and to check a restore."""

    format: int = FORMAT
    run_id: str
    instance: str
    app: str
    app_version: str | None = None
    schema_version: str | None = None
    host: str
    safehold_version: str
    started: datetime
    finished: datetime | None = None
    databases: list[DatabaseEntry] = Field(default_factory=list)
    trees: list[TreeEntry] = Field(default_factory=list)
    files_snapshot: str | None = None
    keys: list[str] = Field(default_factory=list, description="names of escrowed keys, never values")
    keys_snapshot: str | None = None
    accounts: list[str] = Field(default_factory=list, description="database accounts the app logs in as "
                                "('user'@'host'); their CREATE USER and grants are in the accounts part")
    accounts_snapshot: str | None = None
    quiesce: dict[str, Any] = Field(default_factory=dict)
    details: dict[str, Any] = Field(default_factory=dict)
    safety_point: bool = False
    warnings: list[str] = Field(default_factory=list)
    # Optional, so manifests written before them still load (and an older safehold ignores them).
    note: str | None = Field(default=None, description="why the point was made (`backup --note`), one line")
    keep_until: datetime | None = Field(default=None, description="prune keeps the point until then "
                                        "(`backup --keep-days`), whatever the retention rules say")
    requirements: HostRequirements | None = Field(default=None, description="what the host provided the app: "
                                                  "PHP version and extensions, web server (none recorded: None)")

    def stored_path(self, path: str) -> str:
        """Where a configured path is in the point: under the real folder of a tree whose symlink was followed."""
        for tree in self.trees:
            link = tree.link
            if link and (path == link or path.startswith(link.rstrip("/") + "/")):
                return tree.root + path[len(link):]
        return path

    def snapshot_ids(self) -> list[str]:
        """Every restic snapshot this point is made of (the manifest's own excluded)."""
        ids = [db.snapshot for db in self.databases]
        ids += [s for s in (self.files_snapshot, self.keys_snapshot, self.accounts_snapshot) if s]
        return ids

    def to_bytes(self) -> bytes:
        return self.model_dump_json(indent=2).encode()

    @classmethod
    def from_bytes(cls, data: bytes, where: str) -> Manifest:
        """Parse a manifest; a damaged, foreign or enormous one gives a clear error."""
        if len(data) > MAX_BYTES:
            raise too_big(where, len(data))
        try:
            manifest = cls.model_validate_json(data)
        except ValidationError as exc:
            raise RepositoryError(f"manifest of {where} is unreadable ({exc.errors()[0]['msg']})",
                                  "the point is damaged: restore an older one and run `safehold verify`") from None
        if manifest.format > FORMAT:
            raise RepositoryError(f"manifest of {where} has format {manifest.format}, newer than this safehold",
                                  "upgrade safehold to read it")
        return manifest


def too_big(where: str, size: int) -> RepositoryError:
    """The error for a manifest larger than any safehold writes."""
    return RepositoryError(f"manifest of {where} is {size / (1 << 20):.0f} MiB, larger than any safehold writes "
                           f"({MAX_BYTES >> 20} MiB)", "it is not a point safehold made; nothing was restored")


def now() -> datetime:
    return datetime.now(UTC)


def new_run_id(when: datetime | None = None) -> str:
    """Sortable, unique run id: UTC time plus a short random suffix."""
    import secrets as _secrets

    when = when or now()
    return when.strftime("%Y%m%dT%H%M%SZ") + "-" + _secrets.token_hex(2)
