"""`safehold verify`: the repository is intact and every point holds every part its manifest lists.

`--repair` rebuilds the index of a damaged repository (see safehold.repository.damage) and names
the points that lost data; it removes none of them, since a damaged point may still hold most of it.
"""

from __future__ import annotations

import contextlib
import shlex
from datetime import UTC, datetime
from typing import Any, TypedDict, TypeGuard

from safehold.actions.common import (
    Point,
    latest,
    open_repository,
    points,
    repository_locks,
    select_for_run,
    tag_value,
)
from safehold.config import Config
from safehold.errors import ConfigError, SafeholdError, UnknownPoint
from safehold.lifecycle import tracked
from safehold.output import Reporter
from safehold.repository import checks, damage
from safehold.repository.restic import Repository, RepositoryDamaged
from safehold.schedule import EARLY, verify_schedule


class InstanceVerified(TypedDict):
    """What `verify` found for one instance."""

    points_checked: int
    problems: list[str]  # of its repositories and points


class Verified(TypedDict):
    """What `verify` found."""

    points_checked: dict[str, int]  # instance@repository → points checked there
    problems: list[str]
    shared_checks: dict[str, str]  # repository → whose check of this round found it sound
    ok: bool
    instances: dict[str, InstanceVerified]


def _present(snapshot: str | None, snapshot_ids: set[str]) -> TypeGuard[str]:
    # restic 0.14 reports short ids after a backup, newer versions full ones.
    if not snapshot:
        return False
    return any(full.startswith(snapshot) for full in snapshot_ids)


def verify_point(repo: Repository, point: Point, snapshot_ids: set[str]) -> list[str]:
    """Problems with one point: missing snapshots, or a part's file absent from its snapshot."""
    problems: list[str] = []
    m = point.manifest
    for db in m.databases:
        if not _present(db.snapshot, snapshot_ids):
            problems.append(f"{m.run_id}: snapshot of database {db.name} is missing")
            continue
        nodes = {n["path"]: n for n in repo.walk(db.snapshot)}
        node = nodes.get(db.path)
        if node is None:
            problems.append(f"{m.run_id}: dump {db.path} is missing")
        elif db.bytes and node.get("size") != db.bytes:
            problems.append(f"{m.run_id}: dump {db.path} has {node.get('size')} bytes, manifest says {db.bytes}")
    for snap, what in ((m.files_snapshot, "files"), (m.keys_snapshot, "keys"), (m.accounts_snapshot, "accounts")):
        if snap and not _present(snap, snapshot_ids):
            problems.append(f"{m.run_id}: snapshot of {what} is missing")
    if _present(m.files_snapshot, snapshot_ids):
        stored = {n["path"] for n in repo.walk(m.files_snapshot)}
        for tree in m.trees:
            if tree.root not in stored:
                problems.append(f"{m.run_id}: {tree.kind} {tree.root} is missing")
    return problems


def verify(config: Config, run: str | None, read_data: bool, reporter: Reporter, name: str | None = None,
           subset: str | None = None, share_since: datetime | None = None) -> Verified:
    """restic check (reading all data, a `subset` of it, or none), then the parts of every point, of the
    points whose run id starts with `run`, or of the newest in each repository (`latest`).

    With `share_since` (a scheduled verify's round), a repository another instance's scheduled verify
    found sound since then, reading at least as much, is not checked again (see repository.checks).
    """
    results: dict[str, int] = {}
    problems: list[str] = []
    shared: dict[str, str] = {}
    seen: set[str] = set()
    broken: dict[str, str] = {}  # repository -> its problem, which each instance using it has too
    per_instance: dict[str, InstanceVerified] = {}
    for instance_name, instance in select_for_run(config, run, name).items():
        mine = per_instance.setdefault(instance_name, {"points_checked": 0, "problems": []})
        for repo_name in instance.repositories:
            repo = open_repository(config, repo_name)
            if repo_name not in seen:
                seen.add(repo_name)
                try:
                    found: SafeholdError | None = _check_in_round(config, repo, instance_name, read_data, reporter,
                                                                  subset, share_since, shared)
                except SafeholdError as exc:  # not damage: unreachable, wrong password...
                    found = exc
                if found is not None:
                    # With its hint: a damaged repository needs the repair steps, not only the diagnosis.
                    named = f"repository {repo_name}" in found.message
                    broken[repo_name] = found.line() if named else f"repository {repo_name}: {found.line()}"
                    problems.append(broken[repo_name])
            if repo_name in broken:
                mine["problems"].append(broken[repo_name])
                continue
            # This host's shared turn from the listing to the last point checked: a prune (another instance's
            # retention after its backup) waits, instead of forgetting a listed point while it is read.
            with repo.turn("verify", exclusive=False):
                snapshot_ids = {s["id"] for s in repo.snapshots([f"instance={instance_name}"])}
                available = points(config, repo, instance_name)
                if run == "latest":  # as show, export and restore take it, per repository (a copy may lag behind)
                    selected = [latest(available)] if available else []
                else:
                    selected = [p for p in available if run is None or p.run_id.startswith(run)]
                for point in selected:
                    reporter.step(f"checking point {point.run_id} of {instance_name} in {repo_name}")
                    found_here = verify_point(repo, point, snapshot_ids)
                    problems += found_here
                    mine["problems"] += found_here
            results[f"{instance_name}@{repo_name}"] = len(selected)
            mine["points_checked"] += len(selected)
    if run is not None and not any(results.values()):
        raise UnknownPoint(f"no point {run!r} found", "see `safehold list`")
    return {"points_checked": results, "problems": problems, "shared_checks": shared, "ok": not problems,
            "instances": per_instance}


def verify_recorded(config: Config, run: str | None, read_data: bool, reporter: Reporter,
                    name: str | None = None) -> Verified:
    """`safehold verify` as the run history keeps it: verify(), recorded as one verify run of each instance
    it looked at, failed with the problems of that instance's repositories and points. A run id
    without --instance is looked for in every instance: those that do not hold it record no run."""
    setting = "all" if read_data else "none"
    with contextlib.ExitStack() as stack:
        records = {instance: stack.enter_context(tracked(config, instance, "verify", reporter,
                                                         {"read_data": setting, "run": run}))
                   for instance in select_for_run(config, run, name)}
        result = verify(config, run, read_data, reporter, name)
        for instance, record in records.items():
            mine = result["instances"].get(instance, {"points_checked": 0, "problems": []})
            if run not in (None, "latest") and not mine["points_checked"] and not mine["problems"]:
                record.discard = True  # the run id is another instance's point
                continue
            record.result = "failed" if mine["problems"] else "ok"
            record.error = mine["problems"][0] if mine["problems"] else None
            record.details = {"read_data": setting, "run": run, "points_checked": mine["points_checked"],
                              "problems": mine["problems"][:20]}
    return result


def _check_in_round(config: Config, repo: Repository, instance: str, read_data: bool, reporter: Reporter,
                    subset: str | None, since: datetime | None, shared: dict[str, str]) -> RepositoryDamaged | None:
    """_check, or (with `since`) the passed check of another instance's scheduled verify of this round,
    noted in `shared`. Decided and noted while holding the repository's turn, so instances that
    waited for each other's check see it."""
    if since is None:
        return _check(config, repo, read_data, reporter, subset)
    setting = "all" if read_data else subset or "none"
    with repo.turn("check", exclusive=True):
        taken = checks.shared_by(config.state_dir, repo.name, instance, since, setting)
        if taken is not None:
            shared[repo.name] = (f"repository {repo.name} was found sound by the verify of {taken.instance} at "
                                 f"{taken.since} (reading {taken.read_data} of the data)")
            reporter.step(f"{shared[repo.name]}: not checked again")
            return None
        started = datetime.now(UTC)
        found = _check(config, repo, read_data, reporter, subset)
        if found is None:
            checks.note_passed(config.state_dir, repo.name, instance, started, setting)
        return found


def verify_instance(config: Config, name: str, reporter: Reporter, scheduled: bool = True) -> Verified:
    """The scheduled verify of one instance (and, not `scheduled`, the console's Verify): its
    repositories checked, reading what schedule.verify_read_data says of the stored data (a random
    share each time, so over many runs all of it), and every point's parts listed. Recorded in the
    run history like a drill, so `check`, metrics and notifications see a repository that went bad
    between backups. A scheduled one takes a check another instance's scheduled verify made of a
    shared repository in the same round (since this one's due time) instead of repeating it."""
    schedule = config.instance(name).schedule
    setting = schedule.verify_read_data if schedule is not None else "none"
    subset = None if setting in ("all", "none") else setting
    rounds = verify_schedule(schedule) if scheduled else None
    due = rounds.prev_run(datetime.now(UTC)) if rounds is not None and rounds.enabled else None
    with tracked(config, name, "verify", reporter, {"read_data": setting}) as record:
        result = verify(config, None, setting == "all", reporter, name=name, subset=subset,
                        share_since=due - EARLY if due is not None else None)
        problems = list(result["problems"])
        record.result = "ok" if result["ok"] else "failed"
        record.error = problems[0] if problems else None
        record.details = {"read_data": setting, "points_checked": result["points_checked"],
                          "shared_checks": result["shared_checks"], "problems": problems[:20]}
    return result


def runs_of(snapshots: list[dict[str, Any]]) -> dict[tuple[str, str], list[str]]:
    """The short snapshot ids of each (instance, run id), oldest run first: the parts of one point."""
    runs: dict[tuple[str, str], list[str]] = {}
    for snap in snapshots:
        key = (tag_value(snap, "instance") or "?", tag_value(snap, "run") or "?")
        runs.setdefault(key, []).append(snap["short_id"])
    return dict(sorted(runs.items(), key=lambda item: item[0][1]))


def repair(config: Config, name: str | None, argument: str | None, read_data: bool,
           reporter: Reporter) -> dict[str, object]:
    """Rebuild the index of each damaged repository of one instance (or all), then name the points
    that stay damaged and the commands that remove them; `ok` when every repository is sound after.

    `argument` is verify's positional one, which names the instance here (`safehold verify app
    --repair`), as `name` (--instance) does. Holds the lock of every instance that uses those
    repositories, as prune does: no backup may write while restic rebuilds the index.
    """
    if name is not None and argument is not None:
        raise ConfigError(f"--repair works on the repositories of one instance (or all): {argument!r} is one too many",
                          "give the instance alone: `safehold verify INSTANCE --repair`")
    name = name or argument
    names = sorted({repo for instance in config.select(name).values() for repo in instance.repositories})
    results: list[dict[str, object]] = []
    with repository_locks(config, names, "repair", reporter):
        for repo_name in names:
            result: dict[str, object] = {"repository": repo_name, "repaired": False, "damaged": [], "forget": [],
                                         "error": None, "ok": True}
            try:
                _repair(config, repo_name, read_data, reporter, result)
            except SafeholdError as exc:
                result.update(ok=False, error=exc.line())
            results.append(result)
    return {"repositories": results, "ok": all(r["ok"] for r in results)}


def _repair(config: Config, repo_name: str, read_data: bool, reporter: Reporter, result: dict[str, object]) -> None:
    """Check one repository; if damaged, rebuild its index, check again and fill `result` in."""
    repo = open_repository(config, repo_name)
    old = damage.recorded(config.state_dir, repo_name)
    # As thorough as the verify that found the damage: corrupt data shows only when it is read.
    thorough = read_data or (old is not None and old.read_data)
    # A recorded damage was just found by verify's restic check (minutes when trees are lost: restic
    # retries every read of a missing pack); without one, check first, so a sound repository is left alone.
    if old is None and _check(config, repo, thorough, reporter) is None:
        return
    reporter.step(f"rebuilding the index of repository {repo_name}")
    repo.repair_index()
    result["repaired"] = True
    found = _check(config, repo, thorough, reporter)
    if found is None:
        return
    result.update(ok=False, error=found.line())
    # Corrupt data that a rebuilt index still lists needs its pack files removed (the hint says how).
    lost = {} if found.unsafe else _damaged_points(repo, reporter)
    damage.record(config.state_dir, repo_name, found, thorough,
                  [{"instance": instance, "run_id": run} for instance, run in lost], repaired=True)
    result["damaged"] = [{"instance": instance, "run_id": run, "snapshots": ids}
                         for (instance, run), ids in lost.items()]
    result["forget"] = removal_commands(config, repo, lost)


def removal_commands(config: Config, repo: Repository, lost: dict[tuple[str, str], list[str]]) -> list[str]:
    """The command lines that remove the damaged points `lost` ((instance, run) -> snapshot ids) of `repo`.

    `safehold forget` for each configured instance, from this repository alone when the instance has
    copies elsewhere (they may be whole); restic's own line only for snapshots no configured instance
    owns here (an instance since removed from the config), which `safehold forget` cannot name.
    """
    runs: dict[str, list[str]] = {}
    foreign: list[str] = []
    for (instance, run), ids in lost.items():
        settings = config.instances.get(instance)
        if settings is not None and repo.name in settings.repositories and run != "?":
            runs.setdefault(instance, []).append(run)
        else:
            foreign += ids
    lines = [shlex.join(["safehold", "forget", instance, *ids,
                         *(["--repository", repo.name] if len(config.instances[instance].repositories) > 1 else [])])
             for instance, ids in runs.items()]
    if foreign:
        lines.append(repo.command_line("forget", "--prune", *foreign))
    return lines


def _check(config: Config, repo: Repository, read_data: bool, reporter: Reporter,
           subset: str | None = None) -> RepositoryDamaged | None:
    """restic check; returns the damage it found (None: sound) and keeps the repository's damage
    record, which backups and `safehold check` go by, up to date. Other failures raise.

    Damage found reading a `subset` of the data is recorded as found by reading data (only a verify
    that reads all of it clears it); a subset that reads clean clears only damage found without reading.
    """
    reading = " (reading all data)" if read_data else f" (reading {subset} of the data)" if subset else ""
    reporter.step(f"checking repository {repo.name}{reading}")
    try:
        repo.check(read_data, subset)
    except RepositoryDamaged as exc:
        damage.record(config.state_dir, repo.name, exc, read_data or subset is not None)
        checks.forget(config.state_dir, repo.name)
        return exc
    damage.passed(config.state_dir, repo.name, read_data)
    return None


def _damaged_points(repo: Repository, reporter: Reporter) -> dict[tuple[str, str], list[str]]:
    """The runs (all their snapshots) whose trees or data blobs the rebuilt index lacks."""
    runs = runs_of(repo.snapshots())
    reporter.step(f"{repo.name}: looking for the points that lost data ({len(runs)} run(s))")
    return {key: ids for key, ids in runs.items() if not repo.readable(ids)}
