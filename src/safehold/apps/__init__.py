"""Application profiles. Every profile module exposes the same functions:

- `detect(root: Path) -> bool`: does this install root hold this application?
- `describe(name: str, config: InstanceConfig) -> Instance`: databases (credentials read from the
  app's own config file), file trees, config files, excludes, app and schema version.
- `quiesce(instance, config, reporter)`: context manager that pauses the app, always resumes it,
  and yields a dict describing the quiesce window (recorded in the manifest).
- `keys(instance, state_dir) -> dict[str, Secret]`: escrowed secrets to store inside the point.
- `post_restore(instance, reporter)`: owners, modes, caches after a restore.
- `verify_keys(instance, keys, database_name) -> list[str]`: problems found with the escrowed keys.
- optional `read_schema_version(instance, database_name) -> str | None`: the schema version stored in a
  (restored) database; `safehold drill` compares it with the manifest when the profile has it.
"""

from __future__ import annotations

from types import ModuleType

from safehold.apps import generic

APPS: dict[str, ModuleType] = {"generic": generic}


def profile_for(app: str) -> ModuleType:
    """The profile module for an instance's `app`."""
    from safehold.errors import ConfigError

    if app not in APPS:
        raise ConfigError(f"application profile {app!r} is not available", f"use one of {sorted(APPS)}")
    return APPS[app]
