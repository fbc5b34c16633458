"""What a drill checks, part by part: each database, file tree, the app's versions and escrowed keys
against the point's manifest, and the phases it measured (the Outcome).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path

from safehold.actions.common import Point
from safehold.actions.drill_scratch import Scratch
from safehold.actions.restore_database import compare, load_database, self_reference
from safehold.actions.restore_plan import DatabaseStep, Plan
from safehold.apps.contract import AppProfile
from safehold.errors import SafeholdError
from safehold.files import file_sha256, tree_stats
from safehold.models import DatabaseReport, Instance
from safehold.output import Reporter
from safehold.repository.manifest import KEYS_PATH, DatabaseEntry, TreeEntry
from safehold.repository.restic import Repository
from safehold.secrets import Secret

COPY_BUFFER = 1 << 20


@dataclasses.dataclass
class Outcome:
    """What a drill found: named checks, named problems and measured phases."""

    checks: list[dict[str, object]] = dataclasses.field(default_factory=list)
    problems: list[str] = dataclasses.field(default_factory=list)
    tables: list[dict[str, object]] = dataclasses.field(default_factory=list)
    phases: dict[str, float] = dataclasses.field(default_factory=dict)
    detail: dict[str, float] = dataclasses.field(default_factory=dict)
    unrestored: list[str] = dataclasses.field(default_factory=list)  # parts that never came back
    finished: bool = False  # every step ran (a drill stopped half-way measured no recovery)

    def check(self, name: str, problems: list[str], detail: str) -> None:
        """Record one check; its problems join the drill's list."""
        self.checks.append({"check": name, "ok": not problems, "detail": "; ".join(problems) or detail})
        self.problems += problems

    def add_phase(self, phase: str, seconds: float) -> None:
        self.phases[phase] = round(self.phases.get(phase, 0.0) + seconds, 3)

    def rto(self) -> tuple[float | None, str | None]:
        """The measured recovery time, or None and why: only a drill that restored every part measured one."""
        if self.unrestored:
            return None, f"no RTO: {', '.join(self.unrestored)} not restored"
        if not self.finished:
            return None, "no RTO: the drill stopped before every part was restored"
        return round(sum(self.phases.values()), 3), None


def _objects_problems(entry: DatabaseEntry, report: DatabaseReport) -> list[str]:
    problems = []
    for kind, expected in sorted(entry.objects.items()):
        found = report.objects.get(kind, 0)
        if found != expected:
            problems.append(f"database {entry.name}: {expected} {kind} expected, {found} restored")
    return problems


def _fetch(repo: Repository, entry: DatabaseEntry, folder: Path) -> Path:
    """Copy one dump out of the repository into the scratch folder (timed as the fetch phase)."""
    path = folder / "fetch" / Path(entry.path).name
    path.parent.mkdir(parents=True, exist_ok=True)
    with repo.open_file(entry.snapshot, entry.path) as stream, path.open("wb") as sink:
        while block := stream.read(COPY_BUFFER):
            sink.write(block)
    return path


def drill_database(repo: Repository, step: DatabaseStep, space: Scratch, outcome: Outcome,
                    reporter: Reporter) -> None:
    name = f"database {step.entry.name}"
    try:
        space.create(step)
        t0 = time.monotonic()
        dump = _fetch(repo, step.entry, space.folder)
        outcome.add_phase("fetch", time.monotonic() - t0)
        if (server := space.private.get(step.database.connection)) is not None and server.prepare is not None:
            server.prepare(dump)  # what the live server has beside the dump (PostgreSQL: the roles it grants to)
        statement = self_reference(step.entry, lambda: dump.open("rb"))
        if statement:
            raise SafeholdError(f"database {step.entry.name}: not loaded into scratch space because the dump names "
                                f"the live database in `{statement}` (loading it would write there)",
                                "create triggers/routines without the database name, then back up again")
        phases: dict[str, float] = {}
        with dump.open("rb") as stream:
            report = load_database(step, stream, reporter, phases)
        dump.unlink()
    except SafeholdError as exc:  # with its hint: what to grant, what to change
        outcome.check(name, [exc.line()], "")
        outcome.unrestored.append(name)
        return
    indexes = sum(v for k, v in report.phases.items() if "index" in k)
    outcome.add_phase("database load", phases[f"database {step.target}"] - indexes)
    outcome.add_phase("indexes", indexes)
    outcome.detail.update({f"{step.entry.name} {k}": v for k, v in report.phases.items()})
    rows = compare(step.entry, report.tables)
    outcome.tables += rows
    table_problems = [str(r["problem"]) for r in rows if r["problem"]]
    total = sum(table.rows for table in report.tables.values())
    checked = sum(1 for r in rows if r["ok"] and step.entry.tables.get(str(r["table"]))
                  and step.entry.tables[str(r["table"])].checksum)
    outcome.check(f"{name} tables", table_problems,
                  f"{len(rows)} tables, {total} rows match the manifest ({checked} with checksums)")
    outcome.check(f"{name} schema objects", _objects_problems(step.entry, report),
                  ", ".join(f"{v} {k}" for k, v in sorted(report.objects.items())) or "none")


def _tree_problems(tree: TreeEntry, restored: Path) -> list[str]:
    if not os.path.lexists(restored):
        return [f"{tree.kind} {tree.root} missing from the point"]
    problems = []
    count, size = tree_stats(restored)
    if count != tree.files:
        problems.append(f"{tree.kind} {tree.root}: {tree.files} files expected, {count} restored")
    if size != tree.bytes:
        problems.append(f"{tree.kind} {tree.root}: {tree.bytes} bytes expected, {size} restored")
    for rel, digest in sorted(tree.samples.items()):
        path = restored if rel == "." else restored / rel
        shown = tree.root if rel == "." else f"{tree.root.rstrip('/')}/{rel}"
        if not path.is_file():
            problems.append(f"file {shown} missing")
        elif file_sha256(path) != digest:
            problems.append(f"file {shown}: content differs from the backup (sha256)")
    return problems


def drill_files(repo: Repository, point: Point, plan: Plan, outcome: Outcome, reporter: Reporter) -> None:
    trees = [t for t in point.manifest.trees if t.root in plan.includes]
    if not trees:
        return
    t0 = time.monotonic()
    try:
        plan.files_target.mkdir(parents=True, exist_ok=True)
        repo.restore(point.manifest.files_snapshot or "", plan.files_target, plan.includes, reporter)
    except SafeholdError as exc:
        outcome.check("files", [f"file restore failed: {exc.message}"], "")
        outcome.unrestored.append("files")
        return
    outcome.add_phase("files", time.monotonic() - t0)
    for tree in trees:
        restored = plan.files_target / tree.root.lstrip("/")
        outcome.check(f"{tree.kind} {tree.root}", _tree_problems(tree, restored),
                      f"{tree.files} files, {tree.bytes} bytes, {len(tree.samples)} sampled hashes match")


def drill_app(repo: Repository, point: Point, instance: Instance, profile: AppProfile, plan: Plan,
               outcome: Outcome) -> None:
    manifest = point.manifest
    if manifest.app != "generic":
        missing = [what for what, value in (("app version", manifest.app_version),
                                             ("schema version", manifest.schema_version)) if not value]
        outcome.check("application versions", [f"{what} not recorded in the point" for what in missing],
                      f"app {manifest.app_version}, schema {manifest.schema_version}")
    scratch_instance = dataclasses.replace(instance, databases=[s.database for s in plan.databases])
    database_name = plan.databases[0].target if plan.databases else None
    reader = getattr(profile, "read_schema_version", None)
    if reader is not None and database_name and manifest.schema_version:
        problem: str | None
        try:
            found = reader(scratch_instance, database_name)
        except SafeholdError as exc:
            found, problem = None, f"schema version not readable from the restored database: {exc.message}"
        else:
            problem = None if found == manifest.schema_version else (
                f"schema version: {manifest.schema_version} expected, {found or 'nothing'} restored")
        outcome.check("schema version", [problem] if problem else [], f"{found} as recorded")
    if not manifest.keys:
        return
    try:
        stored = json.loads(repo.cat_file(manifest.keys_snapshot or "", KEYS_PATH)) if manifest.keys_snapshot else {}
    except (SafeholdError, ValueError) as exc:
        outcome.check("escrowed keys", [f"escrowed keys not readable from the point: {exc}"], "")
        outcome.unrestored.append("escrowed keys")
        return
    problems = [f"escrowed key {k} missing from the point" for k in manifest.keys if k not in stored]
    keys = {k: Secret(str(v), f"escrowed key {k}") for k, v in stored.items()}
    problems += profile.verify_keys(scratch_instance, keys, database_name)
    outcome.check("escrowed keys", problems, f"{len(keys)} key(s) present and accepted by the {manifest.app} profile")
