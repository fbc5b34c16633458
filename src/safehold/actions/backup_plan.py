"""`safehold backup --dry-run`: what a backup of each instance would take, and whether every part of
it is reachable, found without changing anything.

It only reads: no instance lock, no pause, no restic call that writes (the repository is opened
with `cat config --no-lock`), no history, metrics or notifications. What a real run would refuse
(a missing tree, a database it cannot log in to, a wrong repository password) is a problem; what a
real run does on its own (initialise a new repository) is not.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, TypeVar

from safehold.actions.backup import (
    check_keep_days,
    check_note,
    declared_trees,
    missing_tree_hint,
    real_trees,
    refuse_own_folders,
)
from safehold.actions.common import describe, open_repository
from safehold.config import Config
from safehold.engines import engine_for
from safehold.errors import DatabaseError, SafeholdError
from safehold.files import follow_links, tree_stats
from safehold.models import Database, Instance
from safehold.output import Reporter
from safehold.repository import damage
from safehold.secrets import Secret, mask, mask_url

T = TypeVar("T")


def plan(config: Config, name: str | None, reporter: Reporter, note: str | None = None,
         keep_days: int | None = None) -> list[dict[str, Any]]:
    """The plan of one instance or all; `note` and `keep_days` are checked as a backup checks them.

    A repository shared by several instances is opened once.
    """
    note = check_note(note)
    check_keep_days(keep_days)
    opened: dict[str, dict[str, Any]] = {}
    return [plan_instance(config, instance, reporter, note, keep_days, opened) for instance in config.select(name)]


def plan_instance(config: Config, name: str, reporter: Reporter, note: str | None = None,
                  keep_days: int | None = None, opened: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """What a backup of instance `name` would take; `problems` lists what would make it fail.

    `opened` holds the repositories looked at already (by name), so a shared one is opened once.
    """
    instance_config = config.instance(name)
    problems: list[str] = []
    result: dict[str, Any] = {"instance": name, "app": instance_config.app, "app_version": None,
                              "schema_version": None, "note": note, "keep_days": keep_days, "databases": [],
                              "trees": [], "exclude": [], "quiesce": [], "keys": [], "warnings": [],
                              "repositories": [], "problems": problems}
    reporter.step(f"dry run of {name}: nothing is changed")
    secrets: list[str] = []
    try:
        instance, profile, _ = describe(config, name)
    except SafeholdError as exc:  # a moved app root: the repositories are still worth a look
        problems.append(exc.line())
    else:
        secrets = [db.connection.password.reveal() for db in instance.databases if db.connection.password]
        result.update(app=instance.app, app_version=instance.app_version, schema_version=instance.schema_version,
                      warnings=list(instance.warnings))
        result["databases"] = [_database(db, reporter, problems) for db in instance.databases]
        result["trees"], result["exclude"] = _trees(config, instance, result["warnings"], problems)
        steps: list[str] = _guarded(lambda: profile.quiesce_plan(instance, instance_config, config.state_dir),
                                    problems, [])
        result["quiesce"] = steps
        keys: dict[str, Secret] = _guarded(lambda: profile.keys(instance, config.state_dir), problems, {})
        result["keys"] = sorted(keys)
        # A backup runs without an escrowed key (or with one that no longer opens the app's data) and warns:
        # its points would not bring the app's encrypted secrets back. The dry run proves the key the same way.
        key_problems: list[str] = _guarded(lambda: profile.verify_keys(instance, keys), problems, [])
        result["warnings"] += key_problems
    opened = {} if opened is None else opened
    for repo_name in instance_config.repositories:
        if repo_name not in opened:
            opened[repo_name] = _repository(config, repo_name, reporter)
        entry = opened[repo_name]
        result["repositories"].append(entry)
        if entry["problem"]:
            problems.append(entry["problem"])
    # Belt and braces: no error text a server or tool wrote may carry a database password out.
    result["problems"] = [mask(line, secrets) for line in problems]
    result["warnings"] = [mask(line, secrets) for line in result["warnings"]]
    return result


def _guarded(read: Callable[[], T], problems: list[str], default: T) -> T:
    """What `read` finds, or `default` with its error as a problem (an app config that cannot be parsed)."""
    try:
        return read()
    except SafeholdError as exc:
        problems.append(exc.line())
        return default


def _database(db: Database, reporter: Reporter, problems: list[str]) -> dict[str, Any]:
    """Engine, name, server and what the engine's `inspect` finds; a database it cannot read is a problem."""
    entry: dict[str, Any] = {"engine": db.connection.engine, "name": db.name, "server": db.connection.describe(),
                             "tables": None, "rows": None, "server_version": None, "problem": None}
    engine = engine_for(db.connection.engine)
    reporter.step(f"inspecting {db.connection.engine} database {db.name}")
    try:
        # inspect() finds no tables in a database that is not there; a backup would fail on it.
        if not engine.exists(db, db.name):
            raise DatabaseError(f"database {db.name!r} does not exist on {db.connection.describe()}",
                                "check the database name")
        report = engine.inspect(db, db.name)
        engine.check_dump(db)
    except SafeholdError as exc:
        entry["problem"] = f"database {db.name}: {exc.line()}"
        problems.append(entry["problem"])
        return entry
    entry.update(tables=len(report.tables), rows=sum(t.rows for t in report.tables.values()),
                 server_version=report.server_version, objects=report.objects)
    return entry


def _trees(config: Config, instance: Instance, warnings: list[str],
           problems: list[str]) -> tuple[list[dict[str, Any]], list[str]]:
    """Each tree (present ones as a backup would save them, with files and bytes before excludes, then the
    missing ones), and the exclude patterns a backup would give restic."""
    present, followed = real_trees(instance)
    warnings.extend(followed)
    trees: list[dict[str, Any]] = []
    for real, kind, link in present:
        entry: dict[str, Any] = {"path": str(real), "kind": kind, "link": str(link) if link else None,
                                 "exists": True, "files": None, "bytes": None, "problem": None}
        try:
            entry["files"], entry["bytes"] = tree_stats(real)
        except OSError as exc:  # a backup fails on a file it cannot read
            entry["problem"] = f"cannot read {exc.filename or real}: {exc.strerror or exc}"
            problems.append(entry["problem"])
        trees.append(entry)
    for path, kind in declared_trees(instance):
        if not os.path.lexists(path):
            entry = {"path": str(path), "kind": kind, "link": None, "exists": False, "files": None, "bytes": None,
                     "problem": f"{path} does not exist, so a backup would make no point — "
                                f"{missing_tree_hint(instance)}"}
            problems.append(entry["problem"])
            trees.append(entry)
    _guarded(lambda: refuse_own_folders(config, instance), problems, None)
    excludes = follow_links(instance.exclude, {link: real for real, _, link in present if link is not None})
    return trees, excludes


def _repository(config: Config, name: str, reporter: Reporter) -> dict[str, Any]:
    """Whether repository `name` opens as a backup would find it, never writing to it: state `ready`, `new` (a
    backup would initialise it) or `problem`."""
    entry: dict[str, Any] = {"name": name, "url": mask_url(config.repositories[name].url), "state": "problem",
                             "problem": None}
    reporter.step(f"opening repository {name} (read only)")
    try:
        repo = open_repository(config, name)
        damage.refuse_unsafe(config.state_dir, name)  # a backup refuses it for the same reason
        entry["state"] = "ready" if repo.probe() else "new"
    except SafeholdError as exc:
        entry["problem"] = exc.line()
    return entry
