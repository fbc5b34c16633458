"""What a restore will do: the plan of databases, trees and single files, and its checks of the targets.

`make_plan` works out what goes where and refuses, before anything changes, a target the instance's
config does not own; `Plan.describe()` is what --dry-run prints.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from safehold.actions.browse import Selection, locate_all
from safehold.actions.common import Point
from safehold.actions.targets import check_in_place_database, check_in_place_paths, in_place_trees, owns_database
from safehold.config import Config
from safehold.engines import engine_for
from safehold.errors import ConfigError
from safehold.models import Database, Instance
from safehold.repository.manifest import DatabaseEntry, Manifest

PARTS = ("db", "files", "config")


@dataclass
class DatabaseStep:
    entry: DatabaseEntry
    database: Database
    target: str
    non_empty: bool
    # Declared by a database this restore loads first (i-doit's tenants by the system database's
    # isys_mandator): checked against the instance as described once that one is back.
    declared_later: bool = False


@dataclass
class Plan:
    """What a restore will do; printed as-is by --dry-run."""

    point: Point
    databases: list[DatabaseStep] = field(default_factory=list)
    includes: list[str] = field(default_factory=list)
    files_target: Path = Path("/")
    selection: Selection | None = None  # restore --path: single files and folders
    # The trees that held something when the restore began (None: look now); a config file the
    # restore itself brought back first (a restore from nothing) replaces nothing.
    held_before: set[str] | None = None
    config_from_point: str | None = None  # the app's config file, missing, comes back from the point first
    left_alone: list[str] = field(default_factory=list)  # point databases --to-db did not name

    def replaced_trees(self) -> list[str]:
        """The whole trees going back in place over ones the host holds (--path items say it on their own)."""
        if self.files_target != Path("/") or self.selection is not None:
            return []
        if self.held_before is not None:
            return [path for path in self.includes if path in self.held_before]
        return [path for path in self.includes if os.path.lexists(path)]

    def saves_first(self) -> bool:
        """True when a safety point is taken first: a database holds data or files would be replaced."""
        return any(s.non_empty for s in self.databases) or overwrites_files(self)

    def describe(self) -> dict[str, object]:
        return {
            "instance": self.point.manifest.instance,
            "run_id": self.point.run_id,
            "repository": self.point.repository,
            "databases": [{"from": s.entry.name, "into": s.target, "engine": s.entry.engine,
                           "tables": len(s.entry.tables), "target_has_data": s.non_empty}
                          for s in self.databases],
            "paths": self.includes,
            "files_into": str(self.files_target),
            "replaces": self.replaced_trees(),
            "config_from_point": self.config_from_point,
            "safety_point": self.saves_first(),
            **({"databases_left_alone": self.left_alone} if self.left_alone else {}),
            **({"selection": self.selection.describe()} if self.selection else {}),
        }


def parse_to_db(values: list[str], manifest: Manifest) -> dict[str, str]:
    """`--to-db NAME` (single database) or `--to-db OLD=NEW` per database."""
    mapping: dict[str, str] = {}
    for value in values:
        if "=" in value:
            old, new = value.split("=", 1)
            mapping[old] = new
        elif len(manifest.databases) == 1:
            mapping[manifest.databases[0].name] = value
        else:
            names = ", ".join(d.name for d in manifest.databases)
            raise ConfigError(f"this point holds {len(manifest.databases)} databases ({names})",
                              "use --to-db OLD=NEW for each one to rename")
    unknown = set(mapping) - {d.name for d in manifest.databases}
    if unknown:
        raise ConfigError(f"--to-db names {sorted(unknown)}, not in this point", "see `safehold show NAME RUN`")
    engines = {d.name: d.engine for d in manifest.databases}
    for old, new in mapping.items():
        if engines[old] != "sqlite" and not _server_database_name(new):
            raise ConfigError(f"--to-db {new!r} is not a usable database name for {old}",
                              f"give 1 to {SERVER_NAME_LIMIT} characters, not ending in a space")
    # Loaded one after the other, the second would go over (or into) the first.
    sources: dict[tuple[str, str], list[str]] = {}
    for entry in manifest.databases:
        sources.setdefault((entry.engine, mapping.get(entry.name, entry.name)), []).append(entry.name)
    for (_, target), loaded in sources.items():
        if len(loaded) > 1:
            raise ConfigError(f"--to-db would restore {' and '.join(loaded)} into one database, {target}",
                              "give each database of the point a target of its own")
    return mapping


SERVER_NAME_LIMIT = 63  # PostgreSQL's limit; MariaDB allows 64


def _server_database_name(name: str) -> bool:
    """A name a database server accepts for a new database (checked here to fail before any work)."""
    return 0 < len(name) <= SERVER_NAME_LIMIT and not name.endswith(" ") and "\0" not in name


def live_database(instance: Instance, entry: DatabaseEntry) -> Database:
    for db in instance.databases:
        if db.key == entry.key or db.name == entry.name:
            return db
    # A database renamed since the point, or a --to-db target a safety point saved: reach it through a
    # server of its engine (an SQLite file needs none, but gets there the same way).
    if server := next((db.connection for db in instance.databases if db.connection.engine == entry.engine), None):
        return Database(server, entry.name, table_prefix=entry.table_prefix)
    raise ConfigError(f"point database {entry.name} ({entry.engine}) has no server in the current config",
                      "add it to the instance's databases, then retry")


def make_plan(config: Config, instance: Instance, point: Point, only: list[str], to_db: list[str],
              files_to: Path | None, targets: dict[str, str] | None = None, paths: Sequence[str] = (),
              unreachable: set[str] | frozenset[str] = frozenset()) -> Plan:
    """Work out what goes where, checking targets without changing anything.

    `targets` (database name in the point → target name) replaces `--to-db` parsing for callers
    that choose the names themselves, like the drill's scratch databases. `paths` (`--path`)
    restores only those files and folders, and no database. `unreachable` databases cannot be looked
    at yet (their account is re-created first, see actions.accounts): they count as empty.
    """
    for part in only:
        if part not in PARTS:
            raise ConfigError(f"--only {part!r} is not a part", f"use one of {', '.join(PARTS)}")
    parts = set(only or PARTS)
    if paths:
        _check_path_options(only, to_db)
        parts.discard("db")
    manifest = point.manifest
    # Resolved, so `--files-to /` or `/srv/..` is the restore in place it is (its checks and safety point).
    plan = Plan(point=point, files_target=files_to.resolve() if files_to else Path("/"))
    if "db" in parts:
        mapping = parse_to_db(to_db, manifest) if targets is None else targets
        for entry in manifest.databases:
            if mapping and entry.name not in mapping:  # --to-db copies only the databases it names
                plan.left_alone.append(entry.name)
                continue
            live = live_database(instance, entry)
            target = mapping.get(entry.name, entry.name)
            later = entry.name not in mapping and bool(instance.details.get("declared_later_by")) \
                and not owns_database(instance, entry, entry.name)
            if entry.name not in mapping and not later:  # under its own name: the config decides, never the point
                check_in_place_database(instance, manifest, entry)
            engine = engine_for(entry.engine)
            step_db = Database(live.connection, target, table_prefix=entry.table_prefix, method=entry.method)
            if target in unreachable:
                plan.databases.append(DatabaseStep(entry, step_db, target, False, later))
                continue
            engine.check_load(step_db, entry.method)
            plan.databases.append(DatabaseStep(entry, step_db, target, not engine.is_empty(step_db, target), later))
    kinds = {"files"} if "files" in parts else set()
    kinds |= {"config"} if "config" in parts else set()
    if paths:
        plan.selection = Selection(locate_all(point, list(paths), kinds), in_place=plan.files_target == Path("/"))
        plan.includes = plan.selection.paths
        if plan.selection.in_place:
            check_in_place_paths(instance, manifest, plan.includes)
    else:
        plan.includes = (in_place_trees(instance, manifest, kinds) if plan.files_target == Path("/")
                         else [t.root for t in manifest.trees if t.kind in kinds])
        if to_db and not only and files_to is None and plan.includes:
            # `--to-db NAME` reads as "a copy to look at": the trees going back over the live ones with it is
            # seldom meant, so the parts are chosen out loud.
            raise ConfigError("--to-db puts the databases under other names, but the point's file trees and config "
                              "files would still go back in place over the live ones",
                              "add --only db for the databases alone, --files-to DIR to put the files elsewhere "
                              "too, or --only db --only files --only config to restore them in place as well")
    return plan


def _check_path_options(only: list[str], to_db: list[str]) -> None:
    """--path restores files and config files only: options about databases are mistakes next to it."""
    if "db" in only:
        raise ConfigError("--path restores files and config files, never a database, so it does not go with "
                          "--only db", "drop --only db, or drop --path to restore the database")
    if to_db:
        raise ConfigError("--to-db does not go with --path: --path restores no database",
                          "drop --to-db, or drop --path to restore the database")


def overwrites_files(plan: Plan) -> bool:
    """True when files go back in place over files the host holds: what a safety point saves first."""
    if plan.files_target != Path("/"):
        return False
    if plan.selection is not None:
        return bool(plan.selection.conflicts)
    return bool(plan.replaced_trees())
