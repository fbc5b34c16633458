"""`safehold restore`: bring databases, files and config of a point back, safely.

Databases are loaded only into empty databases; a non-empty target needs --force, and then a
safety point of the current state is taken first. After loading, row counts are compared with
the manifest and the comparison is part of the result.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import IO, Any

from safehold import hostinfo, restoring
from safehold.actions.accounts import AccountStep, ensure_postgres_roles
from safehold.actions.accounts import apply as apply_accounts
from safehold.actions.accounts import plan as plan_accounts
from safehold.actions.backup import backup_instance, declared_trees
from safehold.actions.browse import Selection, locate_all
from safehold.actions.common import Point, describe, open_point
from safehold.actions.targets import check_in_place_database, check_in_place_paths, in_place_trees, owns_database
from safehold.apps import profile_for
from safehold.apps.common import AppConfigMissing
from safehold.apps.contract import AppProfile
from safehold.config import Config
from safehold.engines import engine_for
from safehold.errors import ConfigError, RestoreRefused, SafeholdError
from safehold.files import make_folder, own_folder_inside, remove_leftovers, restore_in_place, restore_paths_in_place
from safehold.lifecycle import RunRecord, tracked
from safehold.lock import instance_lock
from safehold.models import Database, DatabaseReport, Instance, TableReport
from safehold.output import Reporter
from safehold.repository.manifest import KEYS_PATH, DatabaseEntry, Manifest, TableEntry, new_run_id
from safehold.repository.restic import PointReader
from safehold.secrets import Secret
from safehold.tempdirs import private_dir

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
        return any(s.non_empty for s in self.databases) or _overwrites_files(self)

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


def _live_database(instance: Instance, entry: DatabaseEntry) -> Database:
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
            live = _live_database(instance, entry)
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


def table_problem(database: str, table: str, expected: TableEntry | None, found: TableReport | None) -> str | None:
    """What is wrong with one restored table compared with the manifest, in words; None when it matches."""
    if expected is None:
        return f"table {database}.{table} restored but not in the point's manifest"
    if found is None:
        return f"table {database}.{table} missing"
    if expected.rows != found.rows:
        return f"table {database}.{table}: {expected.rows} rows expected, {found.rows} restored"
    if expected.checksum and found.checksum and expected.checksum != found.checksum:
        return f"table {database}.{table}: checksum differs ({expected.checksum} expected, {found.checksum} restored)"
    return None


def compare(entry: DatabaseEntry, restored: dict[str, TableReport]) -> list[dict[str, object]]:
    """Per-table rows (and checksums, where both sides have one) expected (manifest) versus restored."""
    rows: list[dict[str, object]] = []
    for table in sorted(set(entry.tables) | set(restored)):
        expected, found = entry.tables.get(table), restored.get(table)
        problem = table_problem(entry.name, table, expected, found)
        rows.append({"database": entry.name, "table": table, "expected": expected.rows if expected else None,
                     "restored": found.rows if found else None, "ok": problem is None, "problem": problem})
    return rows


def prepare_files_target(target: Path) -> None:
    """Create the --files-to folder before anything is restored, so a bad target costs nothing."""
    make_folder(target, "the restore folder", "restore somewhere writable with --files-to")
    if not os.access(target, os.W_OK | os.X_OK):
        raise SafeholdError(f"cannot write into the restore folder {target}",
                            "restore somewhere writable with --files-to")


def restore(config: Config, name: str, run: str, reporter: Reporter, *, only: list[str] | None = None,
            to_db: list[str] | None = None, files_to: Path | None = None, dry_run: bool = False,
            force: bool = False, allow_version_change: bool = False, repository: str | None = None,
            source: tuple[Any, Point] | None = None, paths: Sequence[str] = (),
            record: RunRecord | None = None) -> dict[str, object]:
    """Restore a point of instance `name`; returns the plan and, unless dry-run, the comparison.

    `source` replaces the repository lookup with another holder of the point's parts (an unpacked
    export file) that offers the same `open_file`/`restore` calls. `paths` restores only those
    files and folders (and no database); the result then says how many files and bytes came back.
    `force` overwrites what holds data (after a safety point); `allow_version_change` alone lets a
    point of another app or schema version go back under the live code (warned and recorded).

    Every restore that is not a dry run is a run in the history, one refused or failing before it
    changed anything too (an unknown instance is a usage error, not a run); `record` is that run when
    the caller recorded it already (an export file's unpacking is part of its restore).
    """
    options = _Options(only or [], to_db or [], files_to, force, allow_version_change, repository, paths)
    if dry_run or record is not None:
        return _restore(config, name, run, reporter, options, source, record)
    config.instance(name)
    with tracked(config, name, "restore", reporter, {"run_id": run}) as record:
        return _restore(config, name, run, reporter, options, source, record)


@dataclass
class _Options:
    only: list[str]
    to_db: list[str]
    files_to: Path | None
    force: bool
    allow_version_change: bool
    repository: str | None
    paths: Sequence[str]


def _restore(config: Config, name: str, run: str, reporter: Reporter, options: _Options,
             source: tuple[Any, Point] | None, record: RunRecord | None) -> dict[str, object]:
    """restore() once it is known whether the run is recorded (`record`) or a dry run (None)."""
    dry_run = record is None
    force = options.force
    repo, point = source if source is not None else open_point(config, name, run, options.repository)
    if record is not None:
        record.details["run_id"] = point.run_id
    held_before = {t.root for t in point.manifest.trees if _holds_something(t.root)}
    # Read-only first (a missing app config file is read from the point into a private folder), so a
    # restore that stops for a missing database account has changed nothing, not even that file.
    instance, profile, from_point = _describe_live(config, name, repo, point, reporter, True)
    _refuse_other_instance(point, instance, force)
    accounts = _account_step(config, name, instance, repo, point, options, reporter, dry_run)
    if from_point is not None and not dry_run:
        instance, profile, from_point = _describe_live(config, name, repo, point, reporter, False)
    prepared = _prepare_accounts(repo, point, profile, instance, options, reporter, dry_run)
    # A dry run only plans the re-creation: the app's databases cannot be looked at yet, they count as empty.
    pending = {db.name for db in instance.databases} if dry_run and prepared else set()
    plan = make_plan(config, instance, point, options.only, options.to_db, options.files_to, paths=options.paths,
                     unreachable=accounts.unreachable | pending)
    plan.held_before = held_before
    plan.config_from_point = str(from_point) if from_point else None
    if plan.left_alone:
        reporter.step(f"left alone: {', '.join(plan.left_alone)} (--to-db names no target for them)")
    if plan.selection is not None:
        plan.selection.compare(repo, point, keep_items=dry_run)
    result: dict[str, object] = {"plan": {**plan.describe(), "accounts": accounts.describe()}, "dry_run": dry_run}
    if prepared:
        result["app_accounts"] = prepared
        for line in prepared if dry_run else []:
            reporter.step(f"would re-create first: {line}")
    in_place = _in_place(plan)
    if "files" in in_place and (lacking := hostinfo.lacking_here(point.manifest.requirements, point.manifest.app)):
        reporter.warn(lacking)
        result["host_lacks"] = lacking
    if refusals := profile.check_restore(instance, point.manifest, in_place, reporter):
        _version_change(refusals, options.allow_version_change, reporter, result, record)
    if plan.includes and plan.files_target == Path("/") and (problem := own_folder_inside(plan.includes,
                                                                                         config.own_folders())):
        raise RestoreRefused(f"{problem}: restoring that tree in place would replace it",
                             "restore the files with --files-to DIR and copy back what you need, "
                             "then move the repository out of the tree")
    if record is None:
        return result
    busy = [s.target for s in plan.databases if s.non_empty]
    if busy and not force:
        raise RestoreRefused(f"database(s) {', '.join(busy)} already hold data",
                             "restore with --to-db NEWNAME, or add --force (a safety point is taken first)")
    conflicts = plan.selection.conflicts if plan.selection else []  # found in place only
    if conflicts and not force:
        shown = ", ".join(conflicts[:3]) + (f" and {len(conflicts) - 3} more" if len(conflicts) > 3 else "")
        raise RestoreRefused(f"{len(conflicts)} file(s) on the host differ from the point and would be "
                             f"overwritten: {shown}", "add --force (a safety point of them is taken first), or "
                                                      "restore them elsewhere with --files-to DIR to compare")
    check_foreign_references(repo, plan)
    if plan.includes and plan.files_target != Path("/"):
        prepare_files_target(plan.files_target)
    lock = instance_lock(config.state_dir, name, point.run_id, "restore", reporter,
                         config.settings.lock_wait_seconds)
    if plan.selection:
        record.details["paths"] = list(plan.includes)
    with lock:
        started = time.monotonic()
        remove_leftovers(declared_trees(instance), config.state_dir / "staging", reporter)
        apply_accounts(accounts, reporter)
        phases: dict[str, float] = {}
        overwrites_files = _overwrites_files(plan)
        comparison: list[dict[str, object]] = []
        changed: dict[str, None] = {}  # what the restore began to change, in order: all a failure can leave incomplete
        safety_id = new_run_id() if busy or overwrites_files else None
        unfinished = _record_unfinished(config, name, repo, plan, in_place, options, safety_id)
        with _app_paused(config, name, profile, instance, in_place, plan, reporter) as window:
            if safety_id:
                reporter.step("taking a safety point of the current state before overwriting it")
                try:
                    safety = backup_instance(config, name, reporter, safety_point=True,
                                             databases=[_as_found(s) for s in plan.databases if s.non_empty],
                                             with_files=overwrites_files,
                                             trees=plan.selection.on_host() if plan.selection else None,
                                             paused=window, run_id=safety_id)
                except BaseException:
                    _nothing_changed(config, name, unfinished)
                    raise
                result["safety_point"] = safety["run_id"]
                record.details["safety_point"] = safety["run_id"]
            elif in_place:
                reporter.step(NOTHING_TO_SAVE)
            if unfinished is not None:
                unfinished.stage = "changing"
                restoring.save(config.state_dir, unfinished)
            try:
                for step in plan.databases:
                    if step.declared_later:  # the database that declares it is back now: the config decides
                        check_in_place_database(describe(config, name)[0], point.manifest, step.entry)
                    comparison += _restore_database(repo, step, reporter, phases,
                                                    partial(changed.setdefault, f"database {step.target}"))
                copies = {s.entry.name: s.database for s in plan.databases if s.target != s.entry.name}
                if copies and hasattr(profile, "post_copy"):
                    profile.post_copy(instance, point.manifest, copies, plan.left_alone, reporter)
                if plan.includes:
                    changed.update(dict.fromkeys(plan.includes if plan.files_target == Path("/")
                                                 else [str(plan.files_target)]))
                    t0 = time.monotonic()
                    if (restored := _restore_files(repo, point, plan, reporter)) is not None:
                        result["restored"] = restored
                    phases["files"] = round(time.monotonic() - t0, 3)
                if in_place:
                    profile.post_restore(instance, reporter, point.manifest, in_place)
            except BaseException:  # failed, interrupted or stopped: say what may now be half-restored
                reporter.warn(_stopped_part_way(name, list(changed), result.get("safety_point")))
                if not changed:
                    _nothing_changed(config, name, unfinished)
                raise
        mismatches = [row for row in comparison if not row["ok"]]
        result.update(comparison=comparison, phases=phases, seconds=round(time.monotonic() - started, 2),
                      ok=not mismatches)
        if mismatches:
            reporter.warn(f"{len(mismatches)} table(s) differ from the manifest: "
                          + ", ".join(f"{r['database']}.{r['table']}" for r in mismatches[:5]))
            record.result = "failed"
            record.error = f"{len(mismatches)} table(s) differ from the manifest"
        else:
            if unfinished is not None:
                restoring.clear(config.state_dir, name)
            reporter.step("restore complete" + ("; every table's row count matches the manifest" if comparison
                                                else ""))
    return result


def _account_step(config: Config, name: str, instance: Instance, repo: PointReader, point: Point,
                  options: _Options, reporter: Reporter, dry_run: bool) -> AccountStep:
    """The database accounts and databases to re-create for the databases going back under their own names."""
    if options.paths or (options.only and "db" not in options.only):
        return AccountStep()
    renamed = parse_to_db(options.to_db, point.manifest)
    steps = [(entry, _live_database(instance, entry)) for entry in point.manifest.databases
             if entry.name not in renamed]
    step = plan_accounts(name, config.instance(name), repo, point.manifest, steps, dry_run)
    if getattr(profile_for(config.instance(name).app), "prepare_restore", None) is None:  # none of its own
        ensure_postgres_roles(repo, point.manifest, steps, reporter, dry_run, step)
    return step


NOTHING_TO_SAVE = "nothing to save: no safety point (no database holds data and no file would be replaced)"
VERSION_FLAG = "--allow-version-change"


def _version_change(refusals: list[str], allowed: bool, reporter: Reporter, result: dict[str, object],
                    record: RunRecord | None) -> None:
    """Refuse a point of another app or schema version, unless allowed: then warn and record it (result,
    history), so a later look at the run shows that the code and the data did not match."""
    line = "; ".join(refusals)
    if not allowed:
        raise RestoreRefused(line, f"{VERSION_FLAG} restores it anyway (--force does not); nothing was changed")
    reporter.warn(f"restoring across a version change ({VERSION_FLAG}): {line}")
    result["version_change"] = refusals
    if record is not None:
        record.details["version_change"] = refusals


def _holds_something(path: str) -> bool:
    """True when `path` exists on the host with something a restore in place would replace (a file, a
    link, or a folder with anything in it); an empty folder loses nothing."""
    try:
        if os.path.isdir(path) and not os.path.islink(path):
            with os.scandir(path) as entries:
                return next(entries, None) is not None
        return os.path.lexists(path)
    except OSError:
        return True  # unreadable: assume it holds something, so a safety point is attempted


def _prepare_accounts(repo: PointReader, point: Point, profile: AppProfile, instance: Instance,
                      options: _Options, reporter: Reporter, dry_run: bool) -> list[str]:
    """Re-create the app's database account and database where the server lacks them (a server rebuilt from
    nothing), from the record the point keeps with its keys, before the plan logs in to look at the targets.
    A profile without `prepare_restore` (its engine's dumps carry no accounts) is left alone."""
    prepare = getattr(profile, "prepare_restore", None)
    if (prepare is None or options.to_db or options.paths or (options.only and "db" not in options.only)
            or not point.manifest.keys_snapshot):
        return []
    with repo.open_file(point.manifest.keys_snapshot, KEYS_PATH) as stream:
        data = json.loads(stream.read())
    return list(prepare(instance, {key: Secret(value, key) for key, value in data.items()}, reporter, dry_run))


def _nothing_changed(config: Config, name: str, unfinished: restoring.Unfinished | None) -> None:
    """A restore that stopped before changing anything leaves no record (but one of an earlier
    interrupted restore stands: the instance is still as that one left it)."""
    if unfinished is not None and not unfinished.earlier:
        restoring.clear(config.state_dir, name)


def _record_unfinished(config: Config, name: str, repo: PointReader, plan: Plan,
                       in_place: set[str], options: _Options, safety_id: str | None) -> restoring.Unfinished | None:
    """Record, before anything changes, that an in-place restore is changing the live instance and how to
    finish it (the same restore again); None for a restore that goes elsewhere."""
    if not in_place:
        return None
    point = plan.point
    origin = getattr(repo, "origin", None)  # an unpacked export file names the file it came from
    finish = [name, *(["--from-file", str(origin)] if origin else [point.run_id, "--repository", point.repository])]
    finish += [arg for part in options.only for arg in ("--only", part)]
    finish += [arg for db in options.to_db for arg in ("--to-db", db)]
    finish += [arg for path in (plan.selection.paths if plan.selection else []) for arg in ("--path", path)]
    finish += [*([VERSION_FLAG] if options.allow_version_change else []), "--force"]
    finish += ["--config", str(config.source)] if config.source else []
    record = restoring.Unfinished(name, point.run_id, sorted(in_place), safety_id, finish,
                                  stage="safety point" if safety_id else "changing")
    return restoring.begin(config.state_dir, record)


def _app_paused(config: Config, name: str, profile: AppProfile, instance: Instance, in_place: set[str],
                plan: Plan, reporter: Reporter) -> AbstractContextManager[dict[str, object] | None]:
    """The app's restore pause (stop commands, iTop read-only mode) while databases or whole trees go
    back in place: the users' guides keep the web server and cron away from a recovery as from a
    backup. Copies elsewhere and single `--path` files do not pause it (None: a safety point of
    single files pauses on its own, as before)."""
    if not in_place or plan.selection is not None:
        return nullcontext(None)
    return profile.restore_quiesce(instance, config.instance(name), reporter, config.state_dir)


def _as_found(step: DatabaseStep) -> Database:
    """The database a step overwrites, as a backup reads it: the target (with --to-db, not the point's
    database of that name, which the restore leaves alone); an SQLite target is read from its own file."""
    connection = step.database.connection
    if connection.path is not None:
        connection = replace(connection, path=Path(step.target))
    return replace(step.database, connection=connection)


def _overwrites_files(plan: Plan) -> bool:
    """True when files go back in place over files the host holds: what a safety point saves first."""
    if plan.files_target != Path("/"):
        return False
    if plan.selection is not None:
        return bool(plan.selection.conflicts)
    return bool(plan.replaced_trees())


def _restore_files(repo: PointReader, point: Point, plan: Plan,
                   reporter: Reporter) -> dict[str, int] | None:
    """Put the plan's files back; for `--path`, returns the files and bytes that came back."""
    snapshot = point.manifest.files_snapshot or ""
    selection = plan.selection
    if plan.files_target != Path("/"):
        repo.restore(snapshot, plan.files_target, plan.includes, reporter)
        return None if selection is None else {"files": selection.files, "bytes": selection.bytes}
    if selection is None:
        restore_in_place(repo, snapshot, plan.includes, reporter)
        return None
    files, size = restore_paths_in_place(repo, snapshot, plan.includes, set(selection.conflicts), reporter)
    return {"files": files, "bytes": size, "unchanged": selection.unchanged}


def _stopped_part_way(name: str, changed: list[str], safety_point: object) -> str:
    """The line for a restore that ended early: what it had begun to change (and may be incomplete) and how
    to get back, or that it changed nothing."""
    if not changed:
        return "the restore stopped before it changed anything: every database and file is as it was"
    line = f"the restore stopped part-way: {', '.join(changed)} may be incomplete"
    if safety_point:
        return (f"{line}; what was there before is in safety point {safety_point} "
                f"(safehold restore {name} {safety_point} --force)")
    return f"{line}; run the same restore again (with --force) to finish it"


def _in_place(plan: Plan) -> set[str]:
    """What goes back into the live instance: "db" (a database under its own name), "files" (to /)."""
    parts = {"db"} if any(s.target == s.entry.name for s in plan.databases) else set()
    return parts | ({"files"} if plan.includes and plan.files_target == Path("/") else set())


def _refuse_other_instance(point: Point, instance: Instance, force: bool) -> None:
    """Refuse a point made of another instance (an export file names its own): its databases and trees would
    replace this one's. Another app's point is refused always, as its profile's restore steps do not fit;
    the same app's (a production export into a staging instance) with --force."""
    made_of = point.manifest
    if made_of.app != instance.app:
        raise RestoreRefused(f"point {made_of.run_id} is of {made_of.app} instance {made_of.instance!r}, and "
                             f"{instance.name!r} is a {instance.app} instance",
                             f"restore it into an instance with app = \"{made_of.app}\"; nothing was changed")
    if made_of.instance != instance.name and not force:
        raise RestoreRefused(f"point {made_of.run_id} was made of instance {made_of.instance!r}, not "
                             f"{instance.name!r}: its databases and files would replace {instance.name!r}'s",
                             f"name {made_of.instance!r} to restore it as it was, or add --force to restore it "
                             f"into {instance.name!r} on purpose; nothing was changed")


def _describe_live(config: Config, name: str, repo: PointReader, point: Point, reporter: Reporter,
                   dry_run: bool) -> tuple[Instance, AppProfile, Path | None]:
    """The live instance; when the app's own config file is gone (a restore from nothing), it is first
    restored from the point, and its path is returned third (None when it was there). A dry run reads
    the point's copy in a private folder instead and changes nothing."""
    try:
        instance, profile, _ = describe(config, name)
        return instance, profile, None
    except AppConfigMissing as missing:
        if not point.manifest.files_snapshot:
            raise
        if dry_run:
            return (*_described_from_point(config, name, repo, point, missing.path), missing.path)
        reporter.step(f"{missing.path} is missing: restoring it from point {point.run_id} first")
        repo.restore(point.manifest.files_snapshot, Path("/"), [point.manifest.stored_path(str(missing.path))],
                     reporter)
        if not missing.path.is_file():
            raise
        brought_back = missing.path
    instance, profile, _ = describe(config, name)
    return instance, profile, brought_back


def _described_from_point(config: Config, name: str, repo: PointReader, point: Point,
                          path: Path) -> tuple[Instance, AppProfile]:
    """The instance as its profile describes it from the point's copy of its config file `path` (under
    the configured root), read into a private folder that stands in for the root; paths said in
    the result are the real ones."""
    instance_config = config.instance(name)
    root = Path(instance_config.root or "/")
    parent = config.state_dir / "staging"
    parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    stand_in = private_dir(".safehold-plan-", parent)
    try:
        copy = stand_in / path.relative_to(root)
        copy.parent.mkdir(parents=True, exist_ok=True)
        # The config file is found among the point's trees (missing.path), so the point has a files part.
        assert point.manifest.files_snapshot is not None
        with repo.open_file(point.manifest.files_snapshot, point.manifest.stored_path(str(path))) as stream, \
                copy.open("wb") as out:
            shutil.copyfileobj(stream, out)
        profile = profile_for(instance_config.app)
        instance = profile.describe(name, instance_config.model_copy(update={"root": str(stand_in)}))
    finally:
        shutil.rmtree(stand_in, ignore_errors=True)

    def real(item: Path) -> Path:
        return root / item.relative_to(stand_in) if item.is_relative_to(stand_in) else item

    return replace(instance, root=root, files=[real(f) for f in instance.files],
                   config_files=[real(f) for f in instance.config_files]), profile


def self_reference(entry: DatabaseEntry, open_dump: Callable[[], AbstractContextManager[IO[bytes]]]) -> str:
    """A statement of the dump that names its own database ("" for none): from the manifest, else read."""
    if entry.self_reference is not None:
        return entry.self_reference
    with open_dump() as stream:  # a point from before the manifest recorded it
        return engine_for(entry.engine).foreign_reference(entry.method, stream, entry.name) or ""


def check_foreign_references(repo: PointReader, plan: Plan) -> None:
    """Refuse, before anything changes, a rename whose dump would write into the original database.

    mariadb-dump keeps trigger statements as written: one created as `live`.`trg` would be created in
    `live` again when the dump is loaded under another name.
    """
    for step in plan.databases:
        if step.target == step.entry.name:
            continue
        statement = self_reference(step.entry, partial(repo.open_file, step.entry.snapshot, step.entry.path))
        if statement:
            raise RestoreRefused(f"restoring {step.entry.name} as {step.target} would write into {step.entry.name}: "
                                 f"the dump names it in `{statement}`",
                                 "restore under the original name on another server, or recreate that object "
                                 "without the database name and back up again")


def _restore_database(repo: PointReader, step: DatabaseStep, reporter: Reporter,
                      phases: dict[str, float], changing: Callable[[], object]) -> list[dict[str, object]]:
    with repo.open_file(step.entry.snapshot, step.entry.path) as stream:
        report = load_database(step, stream, reporter, phases, changing)
    return compare(step.entry, report.tables)


def load_database(step: DatabaseStep, stream: IO[bytes], reporter: Reporter, phases: dict[str, float],
                  changing: Callable[[], object] = lambda: None) -> DatabaseReport:
    """Empty (when it holds data), create and load one database of a plan; adds its phases' seconds.

    `changing` is called before each step that can leave the target other than it was (emptying it,
    loading it); creating a missing database leaves nothing to lose, so a failure there changed nothing.
    """
    engine = engine_for(step.entry.engine)
    t0 = time.monotonic()
    if step.non_empty:
        reporter.step(f"emptying {step.target} (saved in the safety point)")
        changing()
        engine.drop(step.database, step.target)
    engine.create(step.database, step.target)
    reporter.step(f"loading {step.entry.name} into {step.target}")
    changing()
    try:
        report = engine.restore(step.database, step.target, stream, reporter, step.entry.method)
    except SafeholdError:
        raise
    except Exception as exc:  # the load failed half-way: say so, never leave it silent
        raise SafeholdError(f"loading {step.entry.name} into {step.target} failed: {exc}",
                            "the target is incomplete; fix the cause and restore again with --force") from exc
    phases[f"database {step.target}"] = round(time.monotonic() - t0, 3)
    phases.update({f"{step.target} {k}": v for k, v in report.phases.items()})
    return report
