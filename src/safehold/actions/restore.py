"""`safehold restore`: bring databases, files and config of a point back, safely.

Databases are loaded only into empty databases; a non-empty target needs --force, and then a
safety point of the current state is taken first. After loading, row counts are compared with
the manifest and the comparison is part of the result.

This module runs a restore (checks, safety point, app pause, the record of an unfinished one); its
parts live beside it: the plan and its target checks (restore_plan), the databases (restore_database),
the files (restore_files).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from safehold import hostinfo, restoring
from safehold.actions.accounts import AccountStep, ensure_postgres_roles
from safehold.actions.accounts import apply as apply_accounts
from safehold.actions.accounts import plan as plan_accounts
from safehold.actions.backup import backup_instance, declared_trees
from safehold.actions.common import Point, describe, open_point
from safehold.actions.restore_database import as_found, check_foreign_references, restore_database, table_problem
from safehold.actions.restore_files import describe_live, holds_something, prepare_files_target, restore_files
from safehold.actions.restore_plan import PARTS, Plan, live_database, make_plan, overwrites_files, parse_to_db
from safehold.actions.targets import check_in_place_database
from safehold.apps import profile_for
from safehold.apps.contract import AppProfile
from safehold.config import Config
from safehold.errors import RestoreRefused
from safehold.files import own_folder_inside, remove_leftovers
from safehold.lifecycle import RunRecord, tracked
from safehold.lock import instance_lock
from safehold.models import Instance
from safehold.output import Reporter
from safehold.repository.manifest import KEYS_PATH, new_run_id
from safehold.repository.restic import PointReader
from safehold.secrets import Secret

# Callers (cli, web, import_file, demo, tests) import the restore's pieces from here.
__all__ = ["PARTS", "make_plan", "parse_to_db", "restore", "table_problem"]


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
    held_before = {t.root for t in point.manifest.trees if holds_something(t.root)}
    # Read-only first (a missing app config file is read from the point into a private folder), so a
    # restore that stops for a missing database account has changed nothing, not even that file.
    instance, profile, from_point = describe_live(config, name, repo, point, reporter, True)
    _refuse_other_instance(point, instance, force)
    accounts = _account_step(config, name, instance, repo, point, options, reporter, dry_run)
    if from_point is not None and not dry_run:
        instance, profile, from_point = describe_live(config, name, repo, point, reporter, False)
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
        files_replaced = overwrites_files(plan)
        comparison: list[dict[str, object]] = []
        changed: dict[str, None] = {}  # what the restore began to change, in order: all a failure can leave incomplete
        safety_id = new_run_id() if busy or files_replaced else None
        unfinished = _record_unfinished(config, name, repo, plan, in_place, options, safety_id)
        with _app_paused(config, name, profile, instance, in_place, plan, reporter) as window:
            if safety_id:
                reporter.step("taking a safety point of the current state before overwriting it")
                try:
                    safety = backup_instance(config, name, reporter, safety_point=True,
                                             databases=[as_found(s) for s in plan.databases if s.non_empty],
                                             with_files=files_replaced,
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
                    comparison += restore_database(repo, step, reporter, phases,
                                                    partial(changed.setdefault, f"database {step.target}"))
                copies = {s.entry.name: s.database for s in plan.databases if s.target != s.entry.name}
                if copies and hasattr(profile, "post_copy"):
                    profile.post_copy(instance, point.manifest, copies, plan.left_alone, reporter)
                if plan.includes:
                    changed.update(dict.fromkeys(plan.includes if plan.files_target == Path("/")
                                                 else [str(plan.files_target)]))
                    t0 = time.monotonic()
                    if (restored := restore_files(repo, point, plan, reporter)) is not None:
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
    steps = [(entry, live_database(instance, entry)) for entry in point.manifest.databases
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
