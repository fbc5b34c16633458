"""restic, the storage engine. Every restic call goes through this package, split by job:

- `errors`: restic's stderr turned into one line (what happened, what to do), source and target errors;
- `process`: one restic process (password file, environment, this host's turn, another host's lock),
  opening a repository (probe, initialise, remember);
- `writing`: streams and file trees stored as snapshots;
- `reading`: listings, files, restores, and `PointReader`, what a restore reads from;
- `maintenance`: copies, forget/prune, repairs, check, keys.

`Repository` is the facade the actions use: one object per configured repository with every command.
"""

from __future__ import annotations

from safehold import runner
from safehold.repository.restic.errors import (
    REPAIR,
    RepositoryDamaged,
    RepositoryLocked,
    RepositoryMissing,
    explain,
    source_errors,
    target_error,
    unreadable_files,
)
from safehold.repository.restic.maintenance import Maintenance
from safehold.repository.restic.process import LOCK_RETRY_SECONDS, index_repair_command, restic_version
from safehold.repository.restic.reading import PointReader, Reading, literal_pattern, snapshot_time
from safehold.repository.restic.writing import TAG, Summary, Writing


class Repository(Writing, Reading, Maintenance):
    """One restic repository as configured, with its secrets resolved, and every command safehold runs on it."""


__all__ = ["LOCK_RETRY_SECONDS", "REPAIR", "TAG", "PointReader", "Repository", "RepositoryDamaged", "RepositoryLocked",
           "RepositoryMissing", "Summary", "explain", "index_repair_command", "literal_pattern", "restic_version",
           "runner", "snapshot_time", "source_errors", "target_error", "unreadable_files"]
