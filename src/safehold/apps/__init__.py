"""Application profiles. Every profile module exposes the same functions:

- `detect(root: Path) -> bool`: does this install root hold this application?
- `describe(name: str, config: InstanceConfig) -> Instance`: databases (credentials read from the
  app's own config file, never by running PHP: see `phpconfig`), file trees, config files,
  excludes, app and schema version. A missing app config file raises `common.AppConfigMissing`
  (restore then brings that file back from the point first).
- `quiesce(instance, config, reporter, state_dir)`: context manager that pauses the app, always
  resumes it (exceptions, SIGTERM; after SIGKILL `quiesce.resume_leftovers` at the next start),
  and yields a dict describing the quiesce window (recorded in the manifest).
- `restore_quiesce(instance, config, reporter, state_dir)`: the same kind of context manager, held
  while a restore puts databases or whole trees back in place (safety point, load, `post_restore`):
  the users' guides stop the web server (i-doit) or switch to read-only mode (iTop) for a recovery
  too. It may differ from `quiesce` where pausing would write into what is being replaced.
- `quiesce_plan(instance, config, state_dir) -> list[str]`: what `quiesce` would do, one line per
  step, found without doing it (`backup --dry-run`).
- `keys(instance, state_dir) -> dict[str, Secret]`: escrowed secrets to store inside the point.
- `APP_KEYS: str`: what those keys are, for messages ("iTop's encryption_key"); empty when the
  application has none (generic), so `safehold key escrow|verify` refuse it rather than advise steps
  that cannot work. Only a profile with `escrow(instance, state_dir, password, user, reporter)` has a
  key that must be escrowed by hand (ITFlow); the others' come from their config files.
- `RUNS_ON_PHP: bool`: the app runs on PHP, so a point records PHP's version and loaded extensions
  as the host's requirements (see `safehold.hostinfo`).
- `check_restore(instance, manifest, in_place, reporter) -> list[str]`: reasons to refuse putting
  the parts `in_place` ⊆ {"db" (databases under their live names), "files" (file and config trees
  to /)} of a point back into the live instance (e.g. other app/schema version); `--allow-version-change`
  overrides them. Copies elsewhere (`--to-db`, `--files-to`) are never refused. Warnings go to
  the reporter.
- `post_restore(instance, reporter, manifest, restored)`: owners, modes, caches, app switches after a
  restore; `restored` is the same `in_place` set.
- optional `post_copy(instance, manifest, copies, left_alone, reporter)`: after `--to-db` loaded
  databases under other names (`copies`: point database name → the loaded copy; `left_alone`: point
  databases it did not name), what the app needs to use the copies, said in the output (i-doit: a
  copied system database's `isys_mandator` is pointed at the tenant copies).
- `verify_keys(instance, keys, database_name) -> list[str]`: problems found with the escrowed keys
  (`instance.databases` may point at a drill's scratch server; `database_name` is the copy to test).
- optional `read_schema_version(instance, database_name) -> str | None`: the schema version recorded
  in a restored copy of the (first) database, for drills (itflow, idoit, itop).
"""

from __future__ import annotations

from types import ModuleType

from safehold.apps import bookstack, generic, glpi, idoit, itflow, itop, netbox, snipeit

APPS: dict[str, ModuleType] = {"generic": generic, "itflow": itflow, "idoit": idoit, "itop": itop, "glpi": glpi,
                                "snipeit": snipeit, "bookstack": bookstack, "netbox": netbox}


def profile_for(app: str) -> ModuleType:
    """The profile module for an instance's `app`."""
    from safehold.errors import ConfigError

    if app not in APPS:
        raise ConfigError(f"application profile {app!r} is not available", f"use one of {sorted(APPS)}")
    return APPS[app]
