"""Application profiles, one module each, every one fulfilling the `contract.AppProfile` protocol (its
docstrings say what each member does; mypy checks every module in `APPS` against it). Adding an
application is adding one module and one entry here.

Notes on the members that the protocol's one-liners leave out:
- `describe` reads credentials from the app's own config file, never by running PHP (see `appconfig`);
  a missing app config file raises `common.AppConfigMissing` (restore then brings that file back from
  the point first).
- `quiesce` always resumes the app (exceptions, SIGTERM; after SIGKILL `quiesce.resume_leftovers` at
  the next start). `restore_quiesce` is held while a restore puts databases or whole trees back in place
  (safety point, load, `post_restore`): the users' guides stop the web server (i-doit) or switch to
  read-only mode (iTop) for a recovery too; it may differ from `quiesce` where pausing would write into
  what is being replaced.
- `APP_KEYS` is empty when the application has none (generic), so `safehold key escrow|verify` refuse
  it rather than advise steps that cannot work. Only a profile with the optional `escrow` has a key that
  must be escrowed by hand (ITFlow); the others' come from their config files.
- `check_restore`'s reasons concern the parts `in_place` ⊆ {"db" (databases under their live names),
  "files" (file and config trees to /)}, e.g. another app/schema version; `--allow-version-change`
  overrides them. Copies elsewhere (`--to-db`, `--files-to`) are never refused.
- `verify_keys`: `instance.databases` may point at a drill's scratch server.
- optional `post_copy(instance, manifest, copies, left_alone, reporter)`: after `--to-db` loaded
  databases under other names, what the app needs to use the copies, said in the output (i-doit: a
  copied system database's `isys_mandator` is pointed at the tenant copies).
- optional `account_records(instance) -> dict[str, Secret]`: records of the database accounts the dump
  does not hold (NetBox's PostgreSQL role), stored in the point beside the keys (not listed as keys in
  the kit); optional `prepare_restore(instance, point_keys, reporter, dry_run) -> list[str]` re-creates
  them before a restore looks at the databases (what it did or would do).
- optional `read_schema_version(instance, database_name) -> str | None`: the schema version recorded
  in a restored copy of the (first) database, for drills.
"""

from __future__ import annotations

from safehold.apps import bookstack, generic, glpi, idoit, itflow, itop, netbox, snipeit
from safehold.apps.contract import AppProfile
from safehold.errors import ConfigError

APPS: dict[str, AppProfile] = {"generic": generic, "itflow": itflow, "idoit": idoit, "itop": itop, "glpi": glpi,
                                "snipeit": snipeit, "bookstack": bookstack, "netbox": netbox}


def profile_for(app: str) -> AppProfile:
    """The profile module for an instance's `app`."""
    if app not in APPS:
        raise ConfigError(f"application profile {app!r} is not available", f"use one of {sorted(APPS)}")
    return APPS[app]
