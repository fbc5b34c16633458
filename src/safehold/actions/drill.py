"""`safehold drill`: prove that a recovery point restores, and measure how long that takes.

A drill restores a point into scratch space — databases on the same server named
`safehold_drill_<instance>_<hash>_<run time>_<random>`, SQLite files and file trees in a temporary folder of
the same name — and compares what came back with what the point's manifest says: per-table rows
and checksums, schema object counts, file counts, bytes and a sample of file hashes, escrowed keys
and the application's own checks. Every difference is one named problem. Scratch space is always
removed, and leftovers of a killed drill (recognised by the name) are removed at the next start.
The live databases and files are never written: every target name is checked against the scratch
pattern before anything is created or dropped.

Restore time is measured per phase (fetch from the repository, database load, indexes, files):
the phases run one after the other, so their sum is the recovery time objective as measured.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import re
import secrets
import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

from safehold.actions.common import Point, describe, find_point, open_repository
from safehold.actions.restore import DatabaseStep, Plan, compare, load_database, make_plan, self_reference
from safehold.actions.tracked import tracked
from safehold.config import Config, InstanceConfig
from safehold.engines import engine_for
from safehold.errors import ConfigError, SafeholdError
from safehold.files import file_sha256, tree_stats
from safehold.history import History
from safehold.lock import instance_lock
from safehold.models import Connection, Database, DatabaseReport, Instance
from safehold.output import Reporter
from safehold.repository.manifest import KEYS_PATH, DatabaseEntry, TreeEntry, now
from safehold.repository.restic import Repository
from safehold.secrets import Secret, resolve
from safehold.tempdirs import remove_tree

PREFIX = "safehold_drill_"
COPY_BUFFER = 1 << 20


# -- scratch names ------------------------------------------------------------------------------

def _instance_tag(instance: str) -> str:
    # Instance names may hold '.' and '-'; keep names portable and short (64-char MariaDB limit).
    # The hash of the full name keeps "shop-db" and "shop_db", or two names alike in their first
    # characters, apart: a drill must never take another instance's scratch space for a leftover.
    readable = re.sub(r"[^A-Za-z0-9]", "_", instance)[:12]
    return f"{readable}_{hashlib.sha256(instance.encode()).hexdigest()[:6]}"


def scratch_stem(instance: str, run_id: str) -> str:
    """A fresh scratch name: prefix, instance, the point's run time and a random part."""
    run_short = re.sub(r"[^0-9T]", "", run_id.split("-")[0])[:15]
    return f"{PREFIX}{_instance_tag(instance)}_{run_short}_{secrets.token_hex(3)}"


def _scratch_pattern(instance: str) -> re.Pattern[str]:
    # Exact shape, so instance "a" never matches the scratch space of instance "a_b".
    return re.compile(rf"^{re.escape(PREFIX + _instance_tag(instance))}_[0-9T]{{1,15}}_[0-9a-f]{{6}}(_\d+)?$")


def is_scratch(instance: str, name: str) -> bool:
    """True when `name` (database name or folder name) is scratch space of a drill of `instance`."""
    return bool(_scratch_pattern(instance).match(name))


def _scratch_root() -> Path:
    return Path(tempfile.gettempdir())


def clean_leftovers(instance: Instance, server: Connection | None, reporter: Reporter) -> list[str]:
    """Remove scratch databases and folders an earlier (killed) drill of this instance left behind."""
    removed: list[str] = []
    for folder in _scratch_root().glob(f"{PREFIX}{_instance_tag(instance.name)}_*"):
        if is_scratch(instance.name, folder.name) and folder.is_dir() and not folder.is_symlink():
            remove_tree(folder)
            removed.append(str(folder))
    seen: set[object] = set()
    servers = [Database(server, "")] if server is not None else []
    for db in [*instance.databases, *servers]:
        if db.connection in seen:
            continue
        seen.add(db.connection)
        engine = engine_for(db.connection.engine)
        try:
            names = engine.names(db, f"{PREFIX}{_instance_tag(instance.name)}_")
            for name in names:
                if is_scratch(instance.name, name):
                    engine.drop(Database(db.connection, name), name)
                    removed.append(name)
        except SafeholdError as exc:
            reporter.warn(f"could not look for leftover scratch databases on {db.connection.describe()}: "
                          f"{exc.message}")
    for item in removed:
        reporter.step(f"removed leftover scratch space {item} of an earlier drill")
    return removed


@dataclasses.dataclass
class Scratch:
    """The scratch space of one drill: what was created, so exactly that is removed afterwards."""

    instance: str
    stem: str
    folder: Path
    databases: list[tuple[ModuleType, Database, str]] = dataclasses.field(default_factory=list)

    def target(self, entry: DatabaseEntry, index: int) -> str:
        """Where a database of the point is restored: a scratch database name or a scratch file."""
        if entry.engine == "sqlite":
            return str(self.folder / "db" / f"{entry.key}.sqlite")
        return self.stem if index == 0 else f"{self.stem}_{index}"

    def create(self, step: DatabaseStep) -> None:
        """Create one scratch database, refusing any name that is not scratch space."""
        engine = engine_for(step.entry.engine)
        inside = self.folder in Path(step.target).parents if step.entry.engine == "sqlite" else is_scratch(
            self.instance, step.target)
        if not inside:
            raise SafeholdError(f"refusing to use {step.target} as a scratch database", "this is a bug: report it")
        if step.non_empty:
            raise SafeholdError(f"scratch database {step.target} already exists", "run the drill again")
        # Registered before CREATE: a SIGTERM arriving while it runs must still have it dropped.
        self.databases.append((engine, Database(step.database.connection, step.target), step.target))
        try:
            engine.create(step.database, step.target)
        except SafeholdError as exc:
            self.databases.pop()
            reason = "access denied" if "denied" in exc.message.lower() else exc.message
            raise SafeholdError(
                f"cannot create scratch database {step.target} on {step.database.connection.describe()}: {reason}",
                f"grant CREATE, DROP ON `{PREFIX.replace('_', chr(92) + '_')}%`.* to the instance's database user",
            ) from None

    def remove(self, reporter: Reporter) -> list[str]:
        """Drop every scratch database and the folder; returns problems (never raises)."""
        problems: list[str] = []
        for engine, database, name in self.databases:
            try:
                engine.drop(database, name)
            except SafeholdError as exc:
                problems.append(f"scratch database {name} could not be dropped: {exc.message}")
        if not remove_tree(self.folder):
            problems.append(f"scratch folder {self.folder} could not be removed")
        for problem in problems:
            reporter.warn(problem)
        return problems


# -- checks -------------------------------------------------------------------------------------

@dataclasses.dataclass
class Outcome:
    """What a drill found: named checks, named problems and measured phases."""

    checks: list[dict[str, object]] = dataclasses.field(default_factory=list)
    problems: list[str] = dataclasses.field(default_factory=list)
    tables: list[dict[str, object]] = dataclasses.field(default_factory=list)
    phases: dict[str, float] = dataclasses.field(default_factory=dict)
    detail: dict[str, float] = dataclasses.field(default_factory=dict)

    def check(self, name: str, problems: list[str], detail: str) -> None:
        """Record one check; its problems join the drill's list."""
        self.checks.append({"check": name, "ok": not problems, "detail": "; ".join(problems) or detail})
        self.problems += problems

    def add_phase(self, phase: str, seconds: float) -> None:
        self.phases[phase] = round(self.phases.get(phase, 0.0) + seconds, 3)


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


def _drill_database(repo: Repository, step: DatabaseStep, scratch: Scratch, outcome: Outcome,
                    reporter: Reporter) -> None:
    name = f"database {step.entry.name}"
    try:
        scratch.create(step)
        t0 = time.monotonic()
        dump = _fetch(repo, step.entry, scratch.folder)
        outcome.add_phase("fetch", time.monotonic() - t0)
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
        return
    indexes = sum(v for k, v in report.phases.items() if "index" in k)
    outcome.add_phase("database load", phases[f"database {step.target}"] - indexes)
    outcome.add_phase("indexes", indexes)
    outcome.detail.update({f"{step.entry.name} {k}": v for k, v in report.phases.items()})
    rows = compare(step.entry, report.tables)
    outcome.tables += rows
    table_problems = [str(r["problem"]) for r in rows if r["problem"]]
    total = sum(int(r["restored"] or 0) for r in rows)
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


def _drill_files(repo: Repository, point: Point, plan: Plan, outcome: Outcome, reporter: Reporter) -> None:
    trees = [t for t in point.manifest.trees if t.root in plan.includes]
    if not trees:
        return
    t0 = time.monotonic()
    try:
        plan.files_target.mkdir(parents=True, exist_ok=True)
        repo.restore(point.manifest.files_snapshot or "", plan.files_target, plan.includes, reporter)
    except SafeholdError as exc:
        outcome.check("files", [f"file restore failed: {exc.message}"], "")
        return
    outcome.add_phase("files", time.monotonic() - t0)
    for tree in trees:
        restored = plan.files_target / tree.root.lstrip("/")
        outcome.check(f"{tree.kind} {tree.root}", _tree_problems(tree, restored),
                      f"{tree.files} files, {tree.bytes} bytes, {len(tree.samples)} sampled hashes match")


def _drill_app(repo: Repository, point: Point, instance: Instance, profile: ModuleType, plan: Plan,
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
        return
    problems = [f"escrowed key {k} missing from the point" for k in manifest.keys if k not in stored]
    keys = {k: Secret(str(v), f"escrowed key {k}") for k, v in stored.items()}
    problems += profile.verify_keys(scratch_instance, keys, database_name)
    outcome.check("escrowed keys", problems, f"{len(keys)} key(s) present and accepted by the {manifest.app} profile")


# -- the drill ----------------------------------------------------------------------------------

def scratch_server(name: str, instance_config: InstanceConfig) -> Connection | None:
    """The configured server for scratch databases, if any (secrets resolved)."""
    server = instance_config.drill_server
    if server is None:
        return None
    password = resolve(server.password, f"instances.{name}.drill_server.password") if server.password else None
    return Connection(engine=server.engine, host=server.host, port=server.port, socket=server.socket,
                      user=server.user, password=password)


def _on_server(step: DatabaseStep, server: Connection) -> DatabaseStep:
    """A plan step moved to the scratch server (SQLite files stay in the scratch folder)."""
    if step.entry.engine != server.engine:
        return step
    database = dataclasses.replace(step.database, connection=server)
    return dataclasses.replace(step, database=database,
                               non_empty=not engine_for(server.engine).is_empty(database, step.target))


def _run_drill(config: Config, repo: Repository, instance: Instance, profile: ModuleType, run: str,
               server: Connection | None, result: dict[str, object], outcome: Outcome, reporter: Reporter) -> None:
    point = find_point(config, repo, instance.name, run)
    manifest = point.manifest
    result.update(run_id=point.run_id, point_started=manifest.started,
                  rpo_seconds=round((now() - manifest.started).total_seconds(), 1))
    stem = scratch_stem(instance.name, point.run_id)
    scratch = Scratch(instance.name, stem, _scratch_root() / stem)
    scratch.folder.mkdir(mode=0o700)
    try:
        targets = {entry.name: scratch.target(entry, i) for i, entry in enumerate(manifest.databases)}
        plan = make_plan(config, instance, point, [], [], scratch.folder / "files", targets=targets)
        if server is not None:
            plan.databases = [_on_server(step, server) for step in plan.databases]
        result["scratch"] = {"databases": [s.target for s in plan.databases], "folder": str(scratch.folder)}
        reporter.step(f"drill of point {point.run_id} of {instance.name} into scratch space {scratch.stem}")
        for step in plan.databases:
            _drill_database(repo, step, scratch, outcome, reporter)
        _drill_files(repo, point, plan, outcome, reporter)
        _drill_app(repo, point, instance, profile, plan, outcome)
    finally:
        outcome.problems += scratch.remove(reporter)


class DrillStopped(BaseException):
    """SIGTERM during a drill. Not an Exception, so no handler of a single step swallows it (or the
    drill would carry on); only drill_instance catches it, after the scratch space is removed."""

    message = "drill stopped by SIGTERM"


@contextlib.contextmanager
def _stop_on_sigterm() -> Iterator[None]:
    """Turn SIGTERM (service stop, timeout) into an error, so the scratch space is removed on the way out."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: object) -> None:
        raise DrillStopped

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def drill_instance(config: Config, name: str, reporter: Reporter, run: str | None = None) -> dict[str, object]:
    """Drill one instance (newest point, or `run`); the result is recorded and returned, pass or fail."""
    instance, profile, instance_config = describe(config, name)
    repo = open_repository(config, instance_config.repositories[0])
    server = scratch_server(name, instance_config)
    started = now()
    result: dict[str, object] = {"instance": name, "repository": repo.name, "run_id": None, "point_started": None,
                                 "rpo_seconds": None, "started": started, "leftovers_removed": []}
    outcome = Outcome()
    if run is not None:  # a run id that names no point is a typo, not a failed drill: no history, no alarm
        run = find_point(config, repo, name, run).run_id
    # Recorded in the run history like a backup, so check, metrics and notifications see drills too.
    with tracked(config, name, "drill", reporter) as record:
        # Its own lock: backups go on during a drill, but two drills of one instance would clean each other up.
        with instance_lock(config.state_dir, f"{name}@drill", started.isoformat(), "drill", reporter,
                           config.settings.lock_wait_seconds), _stop_on_sigterm():
            try:
                result["leftovers_removed"] = clean_leftovers(instance, server, reporter)
                _run_drill(config, repo, instance, profile, run or "latest", server, result, outcome, reporter)
            except (SafeholdError, DrillStopped) as exc:  # with the hint: "grant CREATE on safehold_drill_%"
                outcome.problems.append(exc.line() if isinstance(exc, SafeholdError) else exc.message)
        result.update(finished=now(), ok=not outcome.problems, problems=outcome.problems, checks=outcome.checks,
                      phases=outcome.phases, phases_detail=outcome.detail,
                      rto_seconds=round(sum(outcome.phases.values()), 3), tables=outcome.tables)
        for problem in outcome.problems:
            reporter.warn(f"drill {name}: {problem}")
        reporter.step(f"drill of {name} {'passed' if result['ok'] else 'FAILED'}")
        record.result = "ok" if result["ok"] else "failed"
        record.error = outcome.problems[0] if outcome.problems else None
        record.details = json.loads(json.dumps(result, default=str))
    return result


def drill(config: Config, name: str | None, reporter: Reporter, run: str | None = None) -> list[dict[str, object]]:
    """Drill one instance or all of them; every result is recorded in the run history."""
    selected = config.select(name)
    if run is not None and len(selected) > 1:
        raise ConfigError(f"--run needs an INSTANCE when several are configured ({', '.join(selected)})",
                          "safehold drill INSTANCE --run RUN")
    return [drill_instance(config, instance_name, reporter, run) for instance_name in selected]


# -- run history --------------------------------------------------------------------------------

def load(config: Config, instance: str | None = None) -> list[dict[str, object]]:
    """Recorded drill results from the run history, oldest first (optionally of one instance)."""
    runs = History(config.state_dir).runs(instance, "drill", limit=10_000)
    return [run.details for run in reversed(runs) if run.details.get("instance")]
