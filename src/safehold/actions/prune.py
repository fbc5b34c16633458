"""`safehold prune`: apply each instance's retention in each of its repositories."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TypedDict

from safehold.actions.common import Point, each_instance, lock_instance, open_repository, points, tag_value
from safehold.config import Config, RetentionConfig
from safehold.errors import PartialFailure, SafeholdError
from safehold.history import History, Run
from safehold.lifecycle import RunRecord, tracked
from safehold.output import Reporter
from safehold.repository.manifest import now
from safehold.repository.restic import Repository, snapshot_time
from safehold.retention import reasons

# Leftovers of a run with no manifest are removed only once no run could still be writing them.
ORPHAN_AGE = timedelta(hours=24)


class Pruned(TypedDict):
    """What retention kept and removed (or, in a dry run, would remove) in one repository."""

    repository: str
    keep: list[str]  # run ids, newest first
    why: dict[str, list[str]]  # run id kept → the rules that keep it
    remove: list[str]
    incomplete_removed: list[str]  # leftovers of runs that never wrote a manifest
    dry_run: bool


def keep_reasons(complete: Sequence[Point], policy: RetentionConfig, at: datetime) -> dict[str, list[str]]:
    """For each point of `complete` (newest first) that `policy` keeps at time `at`, why it is kept."""
    # Safety points hold the data a restore replaced (sometimes only its databases or its
    # config): they are kept for a time of their own and never take a regular point's slot.
    regular = [p for p in complete if not p.manifest.safety_point]
    why = reasons([(p.run_id, p.manifest.started) for p in regular], policy)
    safety_age = timedelta(days=policy.safety_days)
    for point in complete:
        if point.manifest.safety_point and at - point.manifest.started <= safety_age:
            why.setdefault(point.run_id, []).append(f"safety point, kept {safety_age.days} days")
        # A point made with --keep-days still counts as a regular point for the rules above (it
        # may be the newest, a `last` or a daily one): its date only adds a reason to keep it, so
        # the rules keep the same points whether or not an admin asked to keep one longer.
        if point.manifest.keep_until is not None and at < point.manifest.keep_until:
            why.setdefault(point.run_id, []).append(f"kept until {point.manifest.keep_until:%Y-%m-%d} (--keep-days)")
    if complete and not regular:  # never prune an instance down to nothing
        why.setdefault(complete[0].run_id, []).append("newest")
    return why


def prune_instance(config: Config, name: str, reporter: Reporter, dry_run: bool = False) -> list[Pruned]:
    """Forget points the policy does not keep (and leftovers of failed runs), then free space.

    A real prune is recorded in the run history; a dry run changes nothing and is not.
    """
    if dry_run:
        return _prune(config, name, reporter, dry_run)
    with tracked(config, name, "prune", reporter) as record:
        results = _prune(config, name, reporter, dry_run)
        record.details = {"removed": sorted({run for row in results for run in row["remove"]}),
                          "points": {row["repository"]: len(row["keep"]) for row in results}}
    return results


def _prune(config: Config, name: str, reporter: Reporter, dry_run: bool) -> list[Pruned]:
    """Apply retention in each repository of instance `name`.

    A repository that cannot be pruned (a copy's server down) does not stop the others: a bucket
    after it would keep every point until it came back. The run then ends partial, naming it.
    """
    instance = config.instance(name)
    results: list[Pruned] = []
    failures: list[tuple[str, SafeholdError]] = []
    with lock_instance(config, name, "prune", reporter):
        for repo_name in instance.repositories:
            try:
                results.append(_prune_repository(config, name, repo_name, reporter, dry_run))
            except SafeholdError as exc:
                failures.append((repo_name, exc))
    if failures and not results:
        raise failures[0][1]
    if failures:
        done = ", ".join(str(row["repository"]) for row in results)
        raise PartialFailure(f"retention of {name} not applied in " + "; ".join(
            f"{repo_name}: {exc.message}" for repo_name, exc in failures) +
            f" ({'looked at' if dry_run else 'applied'} in {done})", "the next prune applies it there")
    return results


def _prune_repository(config: Config, name: str, repo_name: str, reporter: Reporter,
                      dry_run: bool) -> Pruned:
    """Apply instance `name`'s retention in one repository; returns what it keeps and removes."""
    instance = config.instance(name)
    repo = open_repository(config, repo_name)
    complete = points(config, repo, name)
    why = keep_reasons(complete, instance.retention, now())
    kept = set(why)
    drop_runs = {p.run_id for p in complete} - kept
    complete_runs = {p.run_id for p in complete}
    forget: list[str] = []
    orphans: set[str] = set()
    for snap in repo.snapshots([f"instance={name}"]):
        run = tag_value(snap, "run")
        if run in drop_runs:
            forget.append(snap["id"])
        elif run not in complete_runs and run is not None and now() - snapshot_time(snap) > ORPHAN_AGE:
            forget.append(snap["id"])
            orphans.add(run)
    if forget and not dry_run:
        remove_snapshots(repo, forget, f"{len(drop_runs)} point(s) of {name}", reporter)
    return {"repository": repo_name, "keep": sorted(kept, reverse=True), "why": why,
            "remove": sorted(drop_runs, reverse=True), "incomplete_removed": sorted(orphans), "dry_run": dry_run}


def remove_snapshots(repo: Repository, snapshot_ids: list[str], what: str, reporter: Reporter) -> None:
    """Forget snapshots, then free the space only they used (`what` names them for the progress lines)."""
    reporter.step(f"{repo.name}: removing {what}")
    repo.forget(snapshot_ids)
    # restic prune reads the index and repacks what is partly used: minutes on a large repository.
    reporter.step(f"{repo.name}: freeing the space they used (restic prune; this may take a while)")
    repo.prune()


def prune(config: Config, name: str | None, reporter: Reporter, dry_run: bool = False) -> list[dict[str, object]]:
    """Prune one instance or all; with all, one that fails does not stop the others (see each_instance)."""
    return each_instance(config, name, lambda instance_name: [
        {"instance": instance_name, "result": "ok", **row}
        for row in prune_instance(config, instance_name, reporter, dry_run)])


def retention_after_backup(config: Config, history: History, run: Run, record: RunRecord,
                           reporter: Reporter) -> None:
    """Retention after a backup that stored its point (the lifecycle's `after_stored` step of a backup).

    One listing per repository decides whether anything must go; a full prune (which also lists
    leftovers of failed runs and repacks) runs only then, so a normal night costs one restic call.
    """
    instance = config.instance(run.instance)
    if not instance.retention.after_backup:
        return
    counts: dict[str, int] = {}
    for repo_name in instance.repositories:
        try:
            complete = points(config, open_repository(config, repo_name), run.instance,
                              record.listings.get(repo_name))
        except SafeholdError:
            if run.result != "partial":
                raise
            continue  # the copy this run could not reach: the prune below names it if others need one
        counts[repo_name] = len(complete)
        if len(keep_reasons(complete, instance.retention, now())) < len(complete):
            rows = prune_instance(config, run.instance, reporter)
            counts = {row["repository"]: len(row["keep"]) for row in rows}
            break
    history.add_details(run.id, {"points": counts})
