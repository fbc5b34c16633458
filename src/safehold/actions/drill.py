"""`safehold drill`: prove that a recovery point restores, and measure how long that takes.

A drill restores a point into scratch space — databases named
`safehold_drill_<instance>_<hash>_<run time>_<random>` (the prefix is `settings.drill_prefix`) on a
private throwaway server started from this host's binaries (engines/scratch.py), else on the
configured `drill_server`, else on the live server; SQLite files and file trees in a temporary
folder of the same name — and compares what came back with what the point's manifest says:
per-table rows and checksums, schema object counts, file counts, bytes and a sample of file hashes,
escrowed keys and the application's own checks. Every difference is one named problem. Scratch
space (and the private server) is always removed, and leftovers of a killed drill (recognised by
the name, a server by its folder on its command line) are removed at the next start. The live
databases and files are never written: every target name is checked against the scratch pattern
before anything is created or dropped.

Restore time is measured per phase (fetch from the repository, database load, indexes, files):
the phases run one after the other, so their sum is the recovery time objective as measured. A
drill that did not restore every part (databases, files, keys) measured no recovery and reports no
RTO, saying which part is missing.
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

from safehold.actions.common import Point, describe, find_point, open_repository
from safehold.actions.restore_database import compare, load_database, self_reference
from safehold.actions.restore_plan import DatabaseStep, Plan, make_plan
from safehold.apps.common import server_connection
from safehold.apps.contract import AppProfile
from safehold.config import Config, InstanceConfig
from safehold.engines import engine_for, scratch
from safehold.engines.contract import Engine
from safehold.errors import ConfigError, SafeholdError
from safehold.files import file_sha256, tree_stats
from safehold.history import History
from safehold.lifecycle import tracked
from safehold.lock import instance_lock
from safehold.models import Connection, Database, DatabaseReport, Instance
from safehold.output import Reporter
from safehold.repository.manifest import KEYS_PATH, DatabaseEntry, TreeEntry, now
from safehold.repository.restic import Repository
from safehold.secrets import Secret, resolve
from safehold.tempdirs import remove_tree

PREFIX = "safehold_drill_"  # the default of settings.drill_prefix
COPY_BUFFER = 1 << 20
Privates = dict[Connection, scratch.Server]  # the private servers of one drill, by how they are reached


# -- scratch names ------------------------------------------------------------------------------

def _instance_tag(instance: str) -> str:
    # Instance names may hold '.' and '-'; keep names portable and short (64-char MariaDB limit).
    # The hash of the full name keeps "shop-db" and "shop_db", or two names alike in their first
    # characters, apart: a drill must never take another instance's scratch space for a leftover.
    readable = re.sub(r"[^A-Za-z0-9]", "_", instance)[:12]
    return f"{readable}_{hashlib.sha256(instance.encode()).hexdigest()[:6]}"


def scratch_stem(instance: str, run_id: str, prefix: str = PREFIX) -> str:
    """A fresh scratch name: prefix, instance, the point's run time and a random part."""
    run_short = re.sub(r"[^0-9T]", "", run_id.split("-")[0])[:15]
    return f"{prefix}{_instance_tag(instance)}_{run_short}_{secrets.token_hex(3)}"


def _scratch_pattern(instance: str, prefix: str) -> re.Pattern[str]:
    # Exact shape, so instance "a" never matches the scratch space of instance "a_b". The suffix is a
    # second database's number or a private server's folder (`_mariadb`, `_postgres`).
    return re.compile(rf"^{re.escape(prefix + _instance_tag(instance))}_[0-9T]{{1,15}}_[0-9a-f]{{6}}(_\d+|_[a-z]+)?$")


def is_scratch(instance: str, name: str, prefix: str = PREFIX) -> bool:
    """True when `name` (database name or folder name) is scratch space of a drill of `instance`."""
    return bool(_scratch_pattern(instance, prefix).match(name))


def _scratch_root() -> Path:
    return Path(tempfile.gettempdir())


def clean_leftover_folders(instance: str, prefix: str, reporter: Reporter) -> list[str]:
    """Remove the scratch folders (and private servers still running in them) of a killed drill of `instance`."""
    removed: list[str] = []
    for root in scratch.roots():
        for folder in root.glob(f"{prefix}{_instance_tag(instance)}_*"):
            if is_scratch(instance, folder.name, prefix) and folder.is_dir() and not folder.is_symlink():
                for pid in scratch.kill_servers_in(folder):
                    removed.append(f"process {pid}")
                remove_tree(folder)
                removed.append(str(folder))
    for item in removed:
        reporter.step(f"removed leftover {item} of an earlier drill")
    return removed


def clean_leftover_databases(instance: str, prefix: str, servers: list[Connection], reporter: Reporter) -> list[str]:
    """Drop the scratch databases a killed drill of `instance` left on shared servers (live or drill_server)."""
    removed: list[str] = []
    for server in dict.fromkeys(servers):
        engine = engine_for(server.engine)
        try:
            for name in engine.names(Database(server, ""), f"{prefix}{_instance_tag(instance)}_"):
                if is_scratch(instance, name, prefix):
                    engine.drop(Database(server, name), name)
                    removed.append(name)
        except SafeholdError as exc:
            reporter.warn(f"could not look for leftover scratch databases on {server.describe()}: {exc.message}")
    for item in removed:
        reporter.step(f"removed leftover scratch database {item} of an earlier drill")
    return removed


@dataclasses.dataclass
class Scratch:
    """The scratch space of one drill: what was created, so exactly that is removed afterwards."""

    instance: str
    stem: str
    folder: Path
    prefix: str = PREFIX
    databases: list[tuple[Engine, Database, str]] = dataclasses.field(default_factory=list)
    private: Privates = dataclasses.field(default_factory=dict)  # servers that go away with the drill

    def target(self, entry: DatabaseEntry, index: int) -> str:
        """Where a database of the point is restored: a scratch database name or a scratch file."""
        if entry.engine == "sqlite":
            return str(self.folder / "db" / f"{entry.key}.sqlite")
        return self.stem if index == 0 else f"{self.stem}_{index}"

    def create(self, step: DatabaseStep) -> None:
        """Create one scratch database, refusing any name that is not scratch space."""
        engine = engine_for(step.entry.engine)
        inside = self.folder in Path(step.target).parents if step.entry.engine == "sqlite" else is_scratch(
            self.instance, step.target, self.prefix)
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
                f"grant CREATE, DROP ON `{self.prefix.replace('_', chr(92) + '_')}%`.* to the instance's database user",
            ) from None

    def remove(self, reporter: Reporter) -> list[str]:
        """Drop every scratch database and the folder; returns problems (never raises)."""
        problems: list[str] = []
        for engine, database, name in self.databases:
            if database.connection in self.private:  # stopped and deleted whole, right after
                continue
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


def _drill_database(repo: Repository, step: DatabaseStep, space: Scratch, outcome: Outcome,
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
        outcome.unrestored.append("files")
        return
    outcome.add_phase("files", time.monotonic() - t0)
    for tree in trees:
        restored = plan.files_target / tree.root.lstrip("/")
        outcome.check(f"{tree.kind} {tree.root}", _tree_problems(tree, restored),
                      f"{tree.files} files, {tree.bytes} bytes, {len(tree.samples)} sampled hashes match")


def _drill_app(repo: Repository, point: Point, instance: Instance, profile: AppProfile, plan: Plan,
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
        outcome.unrestored.append("escrowed keys")
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
    return server_connection(server.engine, server.host, server.port, server.socket, server.user, password)


def _choose_servers(instance: Instance, entries: list[DatabaseEntry], configured: Connection | None,
                    stem: str, cache: Path, stack: contextlib.ExitStack, reporter: Reporter,
                    prefix: str) -> tuple[dict[str, Connection], Privates, list[dict[str, object]]]:
    """Where each engine's scratch databases go: the configured drill_server, else a private server
    started from this host's binaries (stopped and removed when `stack` closes), else the live
    server, which then needs CREATE rights (said as a warning). Returns the servers by engine (the
    live one is left out: the plan reaches it as it is), the private ones, and what each one is, for the result."""
    chosen: dict[str, Connection] = {}
    private_servers: Privates = {}
    described: list[dict[str, object]] = []
    for entry in entries:
        if entry.engine == "sqlite" or entry.engine in {d["engine"] for d in described}:
            continue
        if configured is not None and configured.engine == entry.engine:
            chosen[entry.engine] = configured
            described.append({"engine": entry.engine, "kind": "drill_server", "where": configured.describe()})
            continue
        private = engine_for(entry.engine).private_server(f"{stem}_{entry.engine}", entry.server_version, cache)
        if private is not None:
            server = stack.enter_context(private)
            chosen[entry.engine] = server.connection
            private_servers[server.connection] = server
            described.append(server.describe())
            reporter.step(f"private {entry.engine} server {server.version} started in {server.folder} "
                          f"({server.start_seconds} s)")
            for note in server.notes:
                reporter.step(f"private {entry.engine} server: {note}")
            continue
        live = [db.connection.describe() for db in instance.databases if db.connection.engine == entry.engine]
        reporter.warn(f"no local {entry.engine} server binaries and no drill_server: the scratch databases go on the "
                      f"live server{' ' + live[0] if live else ''}, where the database user needs CREATE and DROP "
                      f"on {prefix}% (install the server package on this host to drill without those rights)")
        described.append({"engine": entry.engine, "kind": "live", "where": live[0] if live else None})
    return chosen, private_servers, described


def _on_servers(instance: Instance, entries: list[DatabaseEntry], servers: dict[str, Connection]) -> Instance:
    """The instance with its databases moved to the scratch servers (also those the point holds and the
    config no longer names: a private server needs nothing from the config)."""
    databases = [dataclasses.replace(db, connection=servers.get(db.connection.engine, db.connection))
                 for db in instance.databases]
    for entry in entries:
        if entry.engine in servers and not any(db.key == entry.key or db.name == entry.name for db in databases):
            databases.append(Database(servers[entry.engine], entry.name, table_prefix=entry.table_prefix))
    return dataclasses.replace(instance, databases=databases)


def _run_drill(config: Config, repo: Repository, instance: Instance, profile: AppProfile, run: str,
               configured: Connection | None, result: dict[str, object], outcome: Outcome,
               reporter: Reporter) -> None:
    prefix = config.settings.drill_prefix
    point = find_point(config, repo, instance.name, run)
    manifest = point.manifest
    result.update(run_id=point.run_id, point_started=manifest.started,
                  rpo_seconds=round((now() - manifest.started).total_seconds(), 1))
    stem = scratch_stem(instance.name, point.run_id, prefix)
    space = Scratch(instance.name, stem, _scratch_root() / stem, prefix)
    space.folder.mkdir(mode=0o700)
    with contextlib.ExitStack() as stack:
        # Registered first, so it runs last: after the private servers are stopped and removed.
        stack.callback(lambda: outcome.problems.extend(space.remove(reporter)))
        servers, space.private, described = _choose_servers(instance, manifest.databases, configured, stem,
                                                            config.state_dir / "drill-cache", stack, reporter, prefix)
        where: dict[str, object] = {"folder": str(space.folder), "servers": described}
        result["scratch"] = where
        shared = [*(c for c in servers.values() if c not in space.private),
                  *(db.connection for db in instance.databases if db.connection.engine not in servers
                    and db.connection.engine in {d["engine"] for d in described})]
        removed = clean_leftover_databases(instance.name, prefix, shared, reporter)
        leftovers = result.setdefault("leftovers_removed", [])
        assert isinstance(leftovers, list)
        leftovers += removed
        drilled = _on_servers(instance, manifest.databases, servers)
        targets = {entry.name: space.target(entry, i) for i, entry in enumerate(manifest.databases)}
        plan = make_plan(config, drilled, point, [], [], space.folder / "files", targets=targets)
        where["databases"] = [s.target for s in plan.databases]
        reporter.step(f"drill of point {point.run_id} of {instance.name} into scratch space {space.stem}")
        for step in plan.databases:
            _drill_database(repo, step, space, outcome, reporter)
        _drill_files(repo, point, plan, outcome, reporter)
        _drill_app(repo, point, drilled, profile, plan, outcome)
        outcome.finished = True


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
    configured = scratch_server(name, instance_config)
    prefix = config.settings.drill_prefix
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
                result["leftovers_removed"] = clean_leftover_folders(name, prefix, reporter)
                _run_drill(config, repo, instance, profile, run or "latest", configured, result, outcome, reporter)
            except (SafeholdError, DrillStopped) as exc:  # with the hint: "grant CREATE on safehold_drill_%"
                outcome.problems.append(exc.line() if isinstance(exc, SafeholdError) else exc.message)
        rto, no_rto = outcome.rto()
        result.update(finished=now(), ok=not outcome.problems, problems=outcome.problems, checks=outcome.checks,
                      phases=outcome.phases, phases_detail=outcome.detail, rto_seconds=rto, rto_missing=no_rto,
                      tables=outcome.tables)
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
