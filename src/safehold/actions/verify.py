"""`safehold verify`: the repository is intact and every point holds every part its manifest lists."""

from __future__ import annotations

from safehold.actions.common import Point, open_repository, points
from safehold.config import Config
from safehold.errors import SafeholdError
from safehold.output import Reporter
from safehold.repository.restic import Repository


def _present(snapshot: str | None, snapshot_ids: set[str]) -> bool:
    # restic 0.14 reports short ids after a backup, newer versions full ones.
    return bool(snapshot) and any(full.startswith(snapshot) for full in snapshot_ids)


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
    for snap, what in ((m.files_snapshot, "files"), (m.keys_snapshot, "keys")):
        if snap and not _present(snap, snapshot_ids):
            problems.append(f"{m.run_id}: snapshot of {what} is missing")
    if _present(m.files_snapshot, snapshot_ids):
        stored = {n["path"] for n in repo.walk(m.files_snapshot)}
        for tree in m.trees:
            if tree.root not in stored:
                problems.append(f"{m.run_id}: {tree.kind} {tree.root} is missing")
    return problems


def verify(config: Config, run: str | None, read_data: bool, reporter: Reporter,
           name: str | None = None) -> dict[str, object]:
    """restic check (optionally reading all data), then every (or one) point's parts."""
    results: dict[str, object] = {}
    problems: list[str] = []
    seen: set[str] = set()
    for instance_name, instance in config.select(name).items():
        for repo_name in instance.repositories:
            repo = open_repository(config, repo_name)
            if repo_name not in seen:
                seen.add(repo_name)
                reporter.step(f"checking repository {repo_name}{' (reading all data)' if read_data else ''}")
                try:
                    repo.check(read_data)
                except SafeholdError as exc:
                    # With its hint: a damaged repository needs the repair steps, not only the diagnosis.
                    named = f"repository {repo_name}" in exc.message
                    problems.append(exc.line() if named else f"repository {repo_name}: {exc.line()}")
                    continue
            snapshot_ids = {s["id"] for s in repo.snapshots([f"instance={instance_name}"])}
            selected = [p for p in points(config, repo, instance_name)
                        if run is None or p.run_id.startswith(run)]
            for point in selected:
                reporter.step(f"checking point {point.run_id} of {instance_name} in {repo_name}")
                problems += verify_point(repo, point, snapshot_ids)
            results[f"{instance_name}@{repo_name}"] = len(selected)
    if run is not None and not any(results.values()):
        raise SafeholdError(f"no point {run!r} found", "see `safehold list`")
    return {"points_checked": results, "problems": problems, "ok": not problems}
