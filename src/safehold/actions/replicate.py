"""Copies of recovery points in every repository of an instance, and proof that they are readable.

A run writes its point to the instance's first repository. This module then reads the point back
from there (manifest and top-level tree, a cheap check that catches a broken upload in the same
run) and copies every point the other repositories lack with `restic copy`: part snapshots first,
manifests last, so a copy cut off half-way never shows up as a point. A run is complete only when
every repository holds its point; otherwise it is partial, and the next run copies what is missing.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from safehold.actions.common import open_repository, points, remember_manifest
from safehold.config import Config
from safehold.errors import RepositoryError, SafeholdError
from safehold.output import Reporter
from safehold.repository import damage
from safehold.repository.manifest import MANIFEST_PATH
from safehold.repository.restic import Repository


def read_back(config: Config, repo: Repository, instance: str, run_ids: list[str],
              manifest_snapshot: str | None = None) -> list[dict[str, Any]]:
    """Read points back from the repository: each manifest, parsed, and each part's snapshot listed.

    Returns the instance's snapshot listing, which retention reuses (each restic call costs the
    repository key's derivation, about half a second). When the new manifest's snapshot id is
    known, the manifest is read while the listing runs, instead of after it.
    """
    with ThreadPoolExecutor(1) as pool:
        fetched = pool.submit(repo.cat_file, manifest_snapshot, MANIFEST_PATH) if manifest_snapshot else None
        listing = repo.snapshots([f"instance={instance}"])
        if fetched is not None:
            data = fetched.result()
            # restic 0.14's backup summary gives a short id; the cache is keyed by the full one.
            for snap in listing:
                if snap["id"].startswith(manifest_snapshot):
                    remember_manifest(config, repo, snap["id"], data)
    listed = {p.run_id: p for p in points(config, repo, instance, listing)}
    present = [snap["id"] for snap in listing]
    for run_id in run_ids:
        point = listed.get(run_id)
        if point is None:
            raise RepositoryError(f"point {run_id} is not listed in repository {repo.name} after upload",
                                  "the upload was lost: check the repository, then run the backup again")
        # A new snapshot id is never in the manifest cache, so points() just read and parsed the remote
        # copy: the manifest's tree and content came back from the repository.
        for snapshot in point.manifest.snapshot_ids():
            if not any(sid.startswith(snapshot) for sid in present):
                raise RepositoryError(f"point {run_id} in {repo.name}: part snapshot {snapshot[:8]} is missing",
                                      "the upload is damaged: run `safehold verify`, then back up again")
    return listing


def _copy_missing(config: Config, source: Repository, dest: Repository, instance: str,
                  reporter: Reporter) -> list[str]:
    """Copy the points `dest` lacks; returns their run ids (oldest first)."""
    damage.refuse_unsafe(config.state_dir, dest.name)  # restic copy deduplicates too
    dest.ensure_copy_of(source, reporter)
    have = {p.run_id for p in points(config, dest, instance)}
    missing = sorted((p for p in points(config, source, instance) if p.run_id not in have),
                     key=lambda p: p.manifest.started)
    if not missing:
        return []
    reporter.step(f"copying {len(missing)} point(s) of {instance} from {source.name} to {dest.name}")
    dest.copy_from(source, [sid for p in missing for sid in p.manifest.snapshot_ids()])
    dest.copy_from(source, [p.snapshot for p in missing])
    copied = [p.run_id for p in missing]
    read_back(config, dest, instance, copied)
    return copied


def replicate(config: Config, name: str, run_id: str, reporter: Reporter,
              listings: dict[str, list[dict[str, Any]]] | None = None,
              manifest_snapshot: str | None = None) -> dict[str, object]:
    """Read back run `run_id` (manifest in snapshot `manifest_snapshot`, when known) from the first
    repository and bring every other one up to date.

    Returns `result` ("ok" or "partial"), `copies` per repository, and `error` when partial; the
    first repository's snapshot listing goes into `listings` when given.
    """
    names = config.instance(name).repositories
    source = open_repository(config, names[0])
    listing = read_back(config, source, name, [run_id], manifest_snapshot)
    if listings is not None:
        listings[source.name] = listing
    reporter.step(f"point {run_id} read back from {source.name}")
    copies: dict[str, object] = {source.name: "ok"}
    failures: list[str] = []
    for repo_name in names[1:]:
        try:
            dest = open_repository(config, repo_name)
            copied = _copy_missing(config, source, dest, name, reporter)
            copies[repo_name] = "ok"
            if copied:
                reporter.step(f"{repo_name}: {len(copied)} point(s) copied and read back")
        except SafeholdError as exc:
            copies[repo_name] = exc.line()
            failures.append(f"copy to {repo_name} failed: {exc.message}")
            reporter.warn(f"copy to {repo_name} failed: {exc.line()}; the next run copies the missing points")
    result: dict[str, object] = {"result": "partial" if failures else "ok", "copies": copies}
    if failures:
        result["error"] = f"point {run_id} stored in {source.name}, but " + "; ".join(failures)
    return result


def copy_status(config: Config, name: str) -> list[dict[str, object]]:
    """Per repository of an instance: which points of the first repository it lacks (for check/dashboard)."""
    names = config.instance(name).repositories
    source = open_repository(config, names[0])
    wanted = {p.run_id for p in points(config, source, name) if not p.manifest.safety_point}
    rows: list[dict[str, object]] = [{"repository": names[0], "missing": [], "error": None}]
    for repo_name in names[1:]:
        try:
            have = {p.run_id for p in points(config, open_repository(config, repo_name), name)}
            rows.append({"repository": repo_name, "missing": sorted(wanted - have), "error": None})
        except SafeholdError as exc:
            rows.append({"repository": repo_name, "missing": sorted(wanted), "error": exc.line()})
    return rows


def host_only_warning(config: Config, name: str) -> str | None:
    """A warning when every repository of the instance is on this host (a local path)."""
    repos = config.instance(name).repositories
    if not any(config.repositories[r].is_remote() for r in repos):
        return (f"{name}: every repository ({', '.join(repos)}) is on this host; a lost or encrypted disk takes "
                f"the backups with it — add an sftp: or s3: repository")
    return None
