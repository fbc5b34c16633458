"""What several actions need: open repositories, describe instances, find recovery points."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safehold.apps import profile_for
from safehold.apps.contract import AppProfile
from safehold.config import Config, InstanceConfig
from safehold.errors import (
    AmbiguousPoint,
    ConfigError,
    NoPoints,
    PartialFailure,
    RepositoryError,
    SafeholdError,
    UnknownPoint,
)
from safehold.lock import instance_lock
from safehold.models import Instance
from safehold.output import Reporter
from safehold.repository.manifest import MANIFEST_PATH, Manifest, new_run_id
from safehold.repository.restic import Repository
from safehold.repository.ssh import remote_entries, restic_options, ssh_log_file
from safehold.secrets import resolve, write_private
from safehold.sftp_url import parse_sftp


def open_repository(config: Config, name: str) -> Repository:
    """A configured repository with its secrets resolved."""
    repo = config.repositories[name]
    password = resolve(repo.password, f"repositories.{name}.password")
    env = {key: resolve(ref, f"repositories.{name}.env.{key}") for key, ref in repo.env.items()}
    return Repository(name=name, url=repo.url, password=password, env=env,
                      extra_args=restic_options(config, name) + repo.rate_limits(), ssh_log=ssh_log_file(config, name),
                      known_file=config.state_dir / "repositories" / f"{name}.url",
                      lock_file=config.state_dir / "repositories" / f"{name}.lock",
                      lock_wait=config.settings.repository_wait_seconds,
                      cache_dir=config.state_dir / "restic-cache",
                      remote_entries=(lambda: remote_entries(config, name)) if parse_sftp(repo.url) else None)


@contextlib.contextmanager
def repository_locks(config: Config, repo_names: Iterable[str], what: str, reporter: Reporter) -> Iterator[list[str]]:
    """Hold the lock of every instance that uses one of `repo_names`, as prune does for its own:
    no backup writes there meanwhile. Yields those instances' names."""
    names = set(repo_names)
    users = sorted(instance for instance, settings in config.instances.items() if names & set(settings.repositories))
    run_id = new_run_id()
    with contextlib.ExitStack() as locks:
        for instance in users:
            locks.enter_context(lock_instance(config, instance, what, reporter, run_id))
        yield users


def lock_instance(config: Config, name: str, what: str, reporter: Reporter,
                  run_id: str | None = None) -> contextlib.AbstractContextManager[None]:
    """The lock of instance `name` for a run of `what` that makes no point (prune, repair, forget),
    waiting for a busy one as long as settings.lock_wait_seconds says."""
    return instance_lock(config.state_dir, name, run_id or new_run_id(), what, reporter,
                         config.settings.lock_wait_seconds)


def describe(config: Config, name: str) -> tuple[Instance, AppProfile, InstanceConfig]:
    """The live instance as its profile sees it, the profile module and the instance config."""
    instance_config = config.instance(name)
    profile = profile_for(instance_config.app)
    return profile.describe(name, instance_config), profile, instance_config


@dataclass
class Point:
    """A complete recovery point: its manifest and the snapshot that holds the manifest."""

    manifest: Manifest
    snapshot: str
    repository: str

    @property
    def run_id(self) -> str:
        return self.manifest.run_id


def tag_value(snapshot: dict[str, Any], key: str) -> str | None:
    """The value of a snapshot's `key=value` tag (safehold tags its snapshots `instance=` and `run=`)."""
    for tag in snapshot.get("tags") or []:
        if isinstance(tag, str) and tag.startswith(f"{key}="):
            return tag[len(key) + 1:]
    return None


def _cache_dir(config: Config, repo: Repository) -> Path:
    return config.state_dir / "manifests" / repo.name


def remember_manifest(config: Config, repo: Repository, snapshot_id: str, data: bytes) -> None:
    """Keep a manifest read from `repo` (snapshot ids are content hashes, so it never changes)."""
    write_private(_cache_dir(config, repo) / f"{snapshot_id}.json", data)


def points(config: Config, repo: Repository, instance: str | None = None,
           listing: list[dict[str, Any]] | None = None) -> list[Point]:
    """Complete points in a repository (those whose manifest was written), newest first.

    `listing` is the instance's snapshot listing when the caller just made one. Manifests are
    immutable per snapshot id, so they are cached in the state directory.
    """
    every = listing if listing is not None else repo.snapshots([f"instance={instance}"] if instance else [])
    # A point copied from another repository keeps its manifest, whose snapshot ids are the
    # source's; restic records those as `original`, so they are mapped to this repository's ids.
    # restic 0.14's backup summary gives short ids, so both forms are mapped.
    local_id = {key: snap["id"] for snap in every if snap.get("original")
                for key in (snap["original"], snap["original"][:8])}
    cache = _cache_dir(config, repo)
    result: list[Point] = []
    for snap in every:
        if "part=manifest" not in (snap.get("tags") or []):
            continue
        manifest = _manifest(config, repo, cache / f"{snap['id']}.json", snap)
        for db in manifest.databases:
            db.snapshot = local_id.get(db.snapshot, db.snapshot)
        if manifest.files_snapshot:
            manifest.files_snapshot = local_id.get(manifest.files_snapshot, manifest.files_snapshot)
        if manifest.keys_snapshot:
            manifest.keys_snapshot = local_id.get(manifest.keys_snapshot, manifest.keys_snapshot)
        if manifest.accounts_snapshot:
            manifest.accounts_snapshot = local_id.get(manifest.accounts_snapshot, manifest.accounts_snapshot)
        result.append(Point(manifest, snap["id"], repo.name))
    result.sort(key=lambda p: p.manifest.started, reverse=True)
    return result


def _manifest(config: Config, repo: Repository, cached: Path, snap: dict[str, Any]) -> Manifest:
    """A point's manifest from the local cache, or from the repository when not cached or damaged."""
    where = f"snapshot {snap['short_id']}"
    with contextlib.suppress(OSError, RepositoryError):
        return Manifest.from_bytes(cached.read_bytes(), where)
    # Only a copy of what the repository holds: a damaged one (a disk that filled while it was
    # written by an older safehold) is fetched again instead of blocking every listing.
    data = repo.cat_file(snap["id"], MANIFEST_PATH)
    manifest = Manifest.from_bytes(data, where)
    remember_manifest(config, repo, snap["id"], data)
    return manifest


def latest(available: list[Point]) -> Point:
    """The point `latest` names among `available` (newest first, not empty): the newest one that is
    not a safety point, since a safety point may hold only what a restore replaced."""
    normal = [p for p in available if not p.manifest.safety_point]
    return (normal or available)[0]


def find_point(config: Config, repo: Repository, instance: str, run: str) -> Point:
    """`latest` or a run id (a unique prefix is enough) of an instance."""
    available = points(config, repo, instance)
    if not available:
        raise NoPoints(f"no recovery point of {instance} in repository {repo.name}",
                       f"run `safehold backup {instance}` first")
    if run == "latest":
        return latest(available)
    matches = [p for p in available if p.run_id.startswith(run) or p.snapshot.startswith(run)]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise UnknownPoint(f"no point {run!r} of {instance} in repository {repo.name}",
                           f"see `safehold list {instance}`")
    raise AmbiguousPoint(f"{run!r} matches {len(matches)} points of {instance} in repository {repo.name} "
                         f"({', '.join(p.run_id for p in matches[:5])}{', ...' if len(matches) > 5 else ''})",
                         "give more characters of the run id")


def select_for_run(config: Config, run: str | None, instance: str | None) -> dict[str, InstanceConfig]:
    """The instances in which to look for point `run`: `instance`, or all of them.

    A run id (or a prefix of one) names one point wherever it is; `latest` names one per instance,
    so without an instance it would quietly be the first configured one's, and an export or a
    manifest of another application's data is handed over as the one asked for. With several
    instances it is refused instead.
    """
    selected = config.select(instance)
    if run == "latest" and instance is None and len(selected) > 1:
        raise ConfigError(f"`latest` names one point per instance and {len(selected)} are configured "
                          f"({', '.join(selected)})", "add --instance NAME, or give a run id")
    return selected


def search_point(config: Config, run: str, instance: str | None = None) -> tuple[Repository, Point]:
    """A point by run id (or `latest`, see select_for_run) in every repository of the instance(s);
    the first found wins.

    A repository that cannot be read is passed over while the others are searched; when the point
    is found nowhere, that repository's error is the answer (a wrong password is not "no such point").
    """
    unreadable: SafeholdError | None = None
    ambiguous: AmbiguousPoint | None = None
    for name, instance_config in select_for_run(config, run, instance).items():
        for repo_name in instance_config.repositories:
            repo = open_repository(config, repo_name)
            try:
                return repo, find_point(config, repo, name, run)
            except AmbiguousPoint as exc:  # a prefix of several run ids is no "no such point"
                ambiguous = ambiguous or exc
            except (UnknownPoint, NoPoints):
                continue
            except SafeholdError as exc:
                unreadable = unreadable or exc
    raise ambiguous or unreadable or UnknownPoint(f"no point {run!r} found", "see `safehold list` for run ids")


def repositories_of(config: Config, name: str, repository: str | None = None) -> list[str]:
    """The repositories of instance `name`, or only `repository`, which must be one of them."""
    configured = config.instance(name).repositories
    if repository is None:
        return list(configured)
    if repository not in configured:
        raise ConfigError(f"instance {name} does not use repository {repository}", f"use one of {configured}")
    return [repository]


def open_point(config: Config, name: str, run: str, repository: str | None = None) -> tuple[Repository, Point]:
    """The repository (`repository`, else the instance's first) and its point `run` of instance `name`."""
    repo = open_repository(config, repositories_of(config, name, repository)[0])
    return repo, find_point(config, repo, name, run)


def each_instance(config: Config, name: str | None,
                  action: Callable[[str], list[dict[str, object]]]) -> list[dict[str, object]]:
    """The rows `action` returns for instance `name`, or for every instance when `name` is None.

    With several, one instance's failure (a moved app root, its NAS down) must not leave the others
    undone: it becomes a row {"instance", "result": "failed" or "partial", "error"} and the others run.
    A single named instance's error is raised as it is.
    """
    selected = config.select(name)
    rows: list[dict[str, object]] = []
    for instance_name in selected:
        try:
            rows += action(instance_name)
        except SafeholdError as exc:
            if len(selected) == 1:
                raise
            rows.append({"instance": instance_name, "result": "partial" if isinstance(exc, PartialFailure) else
                         "failed", "error": exc.line()})
    return rows


def dumps(result: object) -> str:
    """JSON for --json output (datetimes and paths as strings)."""
    return json.dumps(result, indent=2, default=str)
