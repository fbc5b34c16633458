"""The database part of a restore: loading one database of a plan, and comparing it with the manifest.

Also the check, before anything changes, that a database restored under another name would not write
into the original one (a dump naming its own database).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import IO

from safehold.actions.restore_plan import DatabaseStep, Plan
from safehold.engines import engine_for
from safehold.errors import RestoreRefused, SafeholdError
from safehold.models import Database, DatabaseReport, TableReport
from safehold.output import Reporter
from safehold.repository.manifest import DatabaseEntry, TableEntry
from safehold.repository.restic import PointReader


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


def restore_database(repo: PointReader, step: DatabaseStep, reporter: Reporter,
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


def as_found(step: DatabaseStep) -> Database:
    """The database a step overwrites, as a backup reads it: the target (with --to-db, not the point's
    database of that name, which the restore leaves alone); an SQLite target is read from its own file."""
    connection = step.database.connection
    if connection.path is not None:
        connection = replace(connection, path=Path(step.target))
    return replace(step.database, connection=connection)
