"""The contract every application profile module fulfils; `APPS` is typed with it, so mypy checks each
profile module against it (modules implement protocols as classes do).

Optional members, looked up with getattr where used, because most profiles have nothing to say there:
`read_schema_version(instance, database_name) -> str | None` (drills), `escrow(instance, state_dir,
password, user, reporter)` (a key that must be escrowed by hand: ITFlow), `prepare_restore(...)` and
`post_copy(...)` (apps whose copies elsewhere need fixing up: i-doit's tenant table).
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path
from typing import Protocol

from safehold.config import InstanceConfig
from safehold.models import Instance
from safehold.output import Reporter
from safehold.repository.manifest import Manifest
from safehold.secrets import Secret


class AppProfile(Protocol):
    """What safehold needs to know and do for one kind of application."""

    APP_KEYS: str  # what the escrowed keys are, for messages; "" when the app has none
    RUNS_ON_PHP: bool  # points record PHP's version and extensions (the host must provide them)

    def detect(self, root: Path) -> bool:
        """Does this install root hold this application?"""
        ...

    def describe(self, name: str, config: InstanceConfig) -> Instance:
        """Databases (credentials from the app's own config), trees, config files, excludes, versions."""
        ...

    def quiesce(self, instance: Instance, config: InstanceConfig, reporter: Reporter,
                state_dir: Path) -> AbstractContextManager[dict[str, object]]:
        """Pause the app for a backup and always resume it; yields the quiesce window for the manifest."""
        ...

    def restore_quiesce(self, instance: Instance, config: InstanceConfig, reporter: Reporter,
                        state_dir: Path) -> AbstractContextManager[dict[str, object]]:
        """The same, held while a restore puts databases or trees back in place."""
        ...

    def quiesce_plan(self, instance: Instance, config: InstanceConfig, state_dir: Path) -> list[str]:
        """What `quiesce` would do, one line per step, found without doing it (`backup --dry-run`)."""
        ...

    def keys(self, instance: Instance, state_dir: Path) -> dict[str, Secret]:
        """Secrets to escrow inside the point."""
        ...

    def check_restore(self, instance: Instance, manifest: Manifest, in_place: set[str],
                      reporter: Reporter) -> list[str]:
        """Reasons to refuse putting the parts `in_place` of a point back into the live instance."""
        ...

    def post_restore(self, instance: Instance, reporter: Reporter, manifest: Manifest, restored: set[str]) -> None:
        """Owners, modes, caches and app switches after a restore of the parts `restored`."""
        ...

    def verify_keys(self, instance: Instance, keys: dict[str, Secret],
                    database_name: str | None = None) -> list[str]:
        """Problems with the escrowed keys, tested on the copy `database_name` (a drill's) or the live one."""
        ...
