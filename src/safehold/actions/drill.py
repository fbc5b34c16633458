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
import json
import signal
import threading
from collections.abc import Iterator

from safehold.actions.common import describe, find_point, open_repository
from safehold.actions.drill_checks import Outcome, drill_app, drill_database, drill_files
from safehold.actions.drill_scratch import (
    Scratch,
    choose_servers,
    clean_leftover_databases,
    clean_leftover_folders,
    is_scratch,
    on_servers,
    scratch_root,
    scratch_server,
    scratch_stem,
)
from safehold.actions.restore_plan import make_plan
from safehold.apps.contract import AppProfile
from safehold.config import Config
from safehold.errors import ConfigError, SafeholdError
from safehold.history import History
from safehold.lifecycle import tracked
from safehold.lock import instance_lock
from safehold.models import Connection, Instance
from safehold.output import Reporter
from safehold.repository.manifest import now
from safehold.repository.restic import Repository

# The CLI, the scheduler, the web console and tests import the drill's pieces from here.
__all__ = ["Outcome", "Scratch", "drill", "drill_instance", "is_scratch", "load", "scratch_stem"]


def _run_drill(config: Config, repo: Repository, instance: Instance, profile: AppProfile, run: str,
               configured: Connection | None, result: dict[str, object], outcome: Outcome,
               reporter: Reporter) -> None:
    prefix = config.settings.drill_prefix
    point = find_point(config, repo, instance.name, run)
    manifest = point.manifest
    result.update(run_id=point.run_id, point_started=manifest.started,
                  rpo_seconds=round((now() - manifest.started).total_seconds(), 1))
    stem = scratch_stem(instance.name, point.run_id, prefix)
    space = Scratch(instance.name, stem, scratch_root() / stem, prefix)
    space.folder.mkdir(mode=0o700)
    with contextlib.ExitStack() as stack:
        # Registered first, so it runs last: after the private servers are stopped and removed.
        stack.callback(lambda: outcome.problems.extend(space.remove(reporter)))
        servers, space.private, described = choose_servers(instance, manifest.databases, configured, stem,
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
        drilled = on_servers(instance, manifest.databases, servers)
        targets = {entry.name: space.target(entry, i) for i, entry in enumerate(manifest.databases)}
        plan = make_plan(config, drilled, point, [], [], space.folder / "files", targets=targets)
        where["databases"] = [s.target for s in plan.databases]
        reporter.step(f"drill of point {point.run_id} of {instance.name} into scratch space {space.stem}")
        for step in plan.databases:
            drill_database(repo, step, space, outcome, reporter)
        drill_files(repo, point, plan, outcome, reporter)
        drill_app(repo, point, drilled, profile, plan, outcome)
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


def load(config: Config, instance: str | None = None) -> list[dict[str, object]]:
    """Recorded drill results from the run history, oldest first (optionally of one instance)."""
    runs = History(config.state_dir).runs(instance, "drill", limit=10_000)
    return [run.details for run in reversed(runs) if run.details.get("instance")]
