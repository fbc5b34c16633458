"""`safehold backup`: one consistent recovery point of an instance.

A point is a group of restic snapshots tagged with the instance and run id: one per database
stream, one for the file trees and config files, one for escrowed keys, and last the manifest.
The manifest is written only when everything else succeeded, so a point without one (a killed
or failed run) is never listed or restored, and prune removes its leftovers.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from datetime import timedelta
from pathlib import Path
from typing import IO, Any, cast

from safehold import __version__, hostinfo, restoring
from safehold.actions.accounts import Recorded, apply_defaults
from safehold.actions.accounts import record as record_accounts
from safehold.actions.common import describe, each_instance, open_repository
from safehold.actions.last_trees import LastTrees, keep_trees, last_trees, unchanged_trees
from safehold.actions.prune import retention_after_backup
from safehold.actions.replicate import host_only_warning, replicate
from safehold.apps.quiesce import resume_leftovers
from safehold.config import Config
from safehold.engines import engine_for
from safehold.errors import ConfigError, SafeholdError
from safehold.files import follow_links, own_folder_inside, real_path, remove_leftovers, sample_hashes, stored_trees
from safehold.lifecycle import tracked
from safehold.lock import instance_lock
from safehold.models import Database, DatabaseReport, Instance
from safehold.output import Reporter
from safehold.repository import damage
from safehold.repository.manifest import (
    ACCOUNTS_PATH,
    DB_DIR,
    KEYS_PATH,
    MANIFEST_PATH,
    DatabaseEntry,
    Manifest,
    TableEntry,
    TreeEntry,
    new_run_id,
    now,
)
from safehold.repository.restic import Repository
from safehold.secrets import Secret

NOTE_MAX = 200
KEEP_DAYS_MAX = 36500
NOTE_HINT = f"give one line of at most {NOTE_MAX} printable characters; nothing was backed up"


def check_note(note: str | None) -> str | None:
    """The note of a point with its outer spaces removed (a blank one is no note).

    It is shown on one line by `list`, the console and the report, so anything else is refused.
    """
    if note is None or not note.strip():
        return None
    note = note.strip()
    if len(lines := note.splitlines()) > 1:
        raise ConfigError(f"the note has {len(lines)} lines", NOTE_HINT)
    if bad := next((c for c in note if not c.isprintable()), None):
        raise ConfigError(f"the note holds an unprintable character (U+{ord(bad):04X})", NOTE_HINT)
    if len(note) > NOTE_MAX:
        raise ConfigError(f"the note has {len(note)} characters, more than {NOTE_MAX}", NOTE_HINT)
    return note


def check_keep_days(keep_days: int | None) -> None:
    """--keep-days must keep the point for at least a day, and at most KEEP_DAYS_MAX."""
    if keep_days is not None and keep_days < 1:
        raise ConfigError(f"--keep-days {keep_days} keeps the point no time",
                          "give a number of days of at least 1, or leave --keep-days out; nothing was backed up")
    # Checked here: a date beyond year 9999 would stop the backup after its work, as an internal error.
    if keep_days is not None and keep_days > KEEP_DAYS_MAX:
        raise ConfigError(f"--keep-days {keep_days} is more than {KEEP_DAYS_MAX} days (100 years)",
                          f"give at most {KEEP_DAYS_MAX}; nothing was backed up")


def _database_entry(report: DatabaseReport, path: str, snapshot: str, prefix: str | None) -> DatabaseEntry:
    return DatabaseEntry(
        key=report.key, engine=report.engine, name=report.name, method=report.method, path=path,
        snapshot=snapshot, server_version=report.server_version, bytes=report.bytes,
        tables={t: TableEntry(rows=r.rows, checksum=r.checksum, read=r.read) for t, r in report.tables.items()},
        objects=report.objects, table_prefix=prefix, notes=report.notes, self_reference=report.self_reference,
    )


def _store_databases(repo: Repository, instance: Instance, tags: list[str], manifest: Manifest,
                     reporter: Reporter) -> int:
    added = 0
    for db in instance.databases:
        engine = engine_for(db.connection.engine)
        path = f"{DB_DIR}/{db.key}{engine.suffix(db)}"
        reporter.step(f"dumping {db.connection.engine} database {db.name}")

        def produce(out: IO[bytes], db=db, engine=engine) -> DatabaseReport:
            return engine.dump(db, out, reporter)

        summary, report = repo.backup_stream(path, [*tags, f"part=db:{db.key}"], produce, reporter,
                                             f"database {db.name}", engine.compressed(db))
        manifest.databases.append(_database_entry(report, path, summary.snapshot_id, db.table_prefix))
        for warning in report.warnings:
            reporter.warn(warning)
            manifest.warnings.append(warning)
        added += summary.data_added
        reporter.step(f"database {db.name}: {len(report.tables)} tables, {report.bytes / 1e6:.1f} MB dumped, "
                      f"{summary.data_added / 1e6:.2f} MB new in repository")
    return added


def _store_keys(repo: Repository, keys: dict[str, Secret], tags: list[str], manifest: Manifest,
                reporter: Reporter) -> int:
    payload = json.dumps({k: v.reveal() for k, v in keys.items()}).encode()
    summary, _ = repo.backup_stream(KEYS_PATH, [*tags, "part=keys"], lambda out: out.write(payload), reporter, "keys")
    manifest.keys = sorted(keys)
    manifest.keys_snapshot = summary.snapshot_id
    return summary.data_added


def _store_accounts(repo: Repository, accounts: Recorded, tags: list[str], manifest: Manifest,
                    reporter: Reporter) -> int:
    payload = accounts.payload or b""
    summary, _ = repo.backup_stream(ACCOUNTS_PATH, [*tags, "part=accounts"], lambda out: out.write(payload),
                                    reporter, "database accounts")
    manifest.accounts = accounts.names
    manifest.accounts_snapshot = summary.snapshot_id
    return summary.data_added


def _store_parts(repo: Repository, instance: Instance, tags: list[str], manifest: Manifest, reporter: Reporter,
                 with_files: bool, keys: dict[str, Secret], accounts: Recorded, last: LastTrees | None) -> int:
    """Databases, file trees, keys and database accounts, each its own restic process, side by side;
    returns the bytes added.

    Each restic process spends about half a second deriving the repository key and loading the index
    before it stores anything: on a small instance that, not the data, is the run's time, so the parts
    overlap instead of queueing (restic's shared lock lets them; each fills its own manifest fields).
    The first failure is raised once every part has stopped, so no process outlives the quiesce window.
    """
    parts: list[Callable[[], int]] = [lambda: _store_databases(repo, instance, tags, manifest, reporter)]
    if with_files:
        parts.append(lambda: _store_files(repo, instance, tags, manifest, reporter, last))
    if keys:
        parts.append(lambda: _store_keys(repo, keys, tags, manifest, reporter))
    if accounts.payload is not None:
        parts.append(lambda: _store_accounts(repo, accounts, tags, manifest, reporter))
    with ThreadPoolExecutor(len(parts)) as pool:
        futures = [pool.submit(part) for part in parts]
        wait(futures)
    for future in futures:
        if (error := future.exception()) is not None:
            raise error
    return sum(future.result() for future in futures)


def declared_trees(instance: Instance) -> list[tuple[Path, str]]:
    """(path, "files" or "config") of each file tree and config file the instance declares."""
    return [(p, "files") for p in instance.files] + [(p, "config") for p in instance.config_files]


def missing_tree_hint(instance: Instance) -> str:
    """What to do about a declared tree that is not there."""
    return f"mount or restore it, or remove it from instances.{instance.name} in the config"


def real_trees(instance: Instance) -> tuple[list[tuple[Path, str, Path | None]], list[str]]:
    """(real path, kind, followed link or None) of each present tree, and one warning per followed symlink.

    restic saves a symlink as a link: a root that is a symlink to the app's folder would hold no
    file, and a restore would replace the link. So the real folder is saved (and restored) instead.
    """
    result: list[tuple[Path, str, Path | None]] = []
    warnings: list[str] = []
    followed: dict[Path, Path] = {}
    for path, kind in declared_trees(instance):
        if not os.path.lexists(path):
            continue
        real = real_path(path, kind)
        if any(r == real and k == kind for r, k, _ in result):
            continue
        if real == Path(os.path.normpath(path)):
            result.append((real, kind, None))
            continue
        result.append((real, kind, path))
        named = any(path.is_relative_to(link) and real == r / path.relative_to(link) for link, r in followed.items())
        followed[path] = real
        if not named:  # not behind a link already named (the app root's config file)
            warnings.append((f"{path} is a symlink to {real}" if path.is_symlink() else
                             f"{path} lies behind a symlink: it is {real}") +
                            "; saving the real path (a restore puts the files back there and leaves the link alone)")
    return result, warnings


def _store_files(repo: Repository, instance: Instance, tags: list[str], manifest: Manifest,
                 reporter: Reporter, last: LastTrees | None) -> int:
    """The file trees as one snapshot, and their records: from restic's listing of what it stored, or the
    last point's when restic found every tree unchanged since that point (see actions.last_trees)."""
    present, warnings = real_trees(instance)
    for line in warnings:
        reporter.warn(line)
        manifest.warnings.append(line)
    if not present:
        return 0
    reporter.step(f"saving {len(present)} file tree(s)")
    excludes = follow_links(instance.exclude, {link: real for real, _, link in present if link is not None})
    summary = repo.backup_paths([real for real, _, _ in present], [*tags, "part=files"], excludes, reporter, "files",
                                last.snapshot if last else None)
    manifest.files_snapshot = summary.snapshot_id
    if (unchanged := unchanged_trees(last, summary, present)) is not None:
        manifest.trees.extend(unchanged)
        return summary.data_added
    # Counted from restic's listing of what it stored: the drill compares the restore with exactly that.
    stored = stored_trees(repo.walk(summary.snapshot_id), {str(real) for real, _, _ in present})
    for real, kind, link in present:
        tree = stored[str(real)]
        manifest.trees.append(TreeEntry(root=str(real), kind=kind, files=tree.files, bytes=tree.bytes,
                                        samples=sample_hashes(tree), link=str(link) if link else None))
    return summary.data_added


def refuse_own_folders(config: Config, instance: Instance) -> None:
    """Refuse trees that hold safehold's own folders (a local repository, the state dir)."""
    if problem := own_folder_inside([path for path, _ in declared_trees(instance)], config.own_folders()):
        raise ConfigError(f"{problem}: every point would hold it and restoring the tree would replace it",
                          f"move it out of instances.{instance.name}'s trees (a repository best off this host)")


def _check_trees(config: Config, instance: Instance, safety_point: bool) -> None:
    """Refuse trees that hold safehold's own folders, and (except for safety points) missing trees."""
    refuse_own_folders(config, instance)
    # A safety point saves what exists; a regular point without a declared tree (an unmounted
    # share) would look complete while retention ages out the points that hold the files.
    missing = [str(path) for path, _ in declared_trees(instance) if not os.path.lexists(path)]
    if missing and not safety_point:
        raise SafeholdError(f"{', '.join(missing)} does not exist, so no point was made", missing_tree_hint(instance))


def backup_instance(config: Config, name: str, reporter: Reporter, safety_point: bool = False,
                    databases: list[Database] | None = None, with_files: bool = True, note: str | None = None,
                    keep_days: int | None = None, trees: list[tuple[Path, str]] | None = None,
                    paused: dict[str, object] | None = None, run_id: str | None = None) -> dict[str, object]:
    """Make one recovery point of instance `name` in its first repository; return a summary.

    A safety point (taken by restore before overwriting) passes `databases` (in place of the instance's)
    and `with_files`, and `trees` ((path, kind) pairs in place of the instance's trees) when only
    single paths are restored, so it saves exactly what is about to be overwritten; `paused` is the
    window of the restore's own pause when it is taken inside one (the app is not paused twice). Other runs are
    recorded in the run history (failures too) and followed by retention, notifications and metrics;
    a safety point is part of the restore that makes it, so it is not a run of its own.
    `note` (why the point was made) and `keep_days` (prune keeps it that long) are kept in the
    manifest; a bad one is refused before anything is recorded or stored. `run_id` is a safety point's
    id chosen in advance (the restore records it before the point exists).
    A regular backup of an instance whose in-place restore was interrupted is refused before anything
    is recorded or stored: it would store the half-restored state as a good point (`check` stays
    CRITICAL about the restore until it is finished or undone).
    """
    if safety_point:
        return _backup(config, name, reporter, safety_point, databases, with_files, trees=trees, paused=paused,
                       run_id=run_id)
    note = check_note(note)
    check_keep_days(keep_days)
    restoring.refuse_backup(config.state_dir, name)
    with tracked(config, name, "backup", reporter, after_stored=retention_after_backup) as record:
        result = _backup(config, name, reporter, safety_point, databases, with_files, record.listings,
                         note, keep_days)
        record.bytes_added, record.bytes_total = cast(int, result["bytes_added"]), cast(int, result["bytes_total"])
        record.details = {"run_id": result["run_id"], "repository": result["repository"],
                          "warnings": result["warnings"]}
        if result.get("result") == "partial":  # a copy is missing: `check` names it from this error
            record.result, record.error = "partial", str(result["error"])
            record.details["copies"] = result["copies"]
    return result


def _backup(config: Config, name: str, reporter: Reporter, safety_point: bool, databases: list[Database] | None,
            with_files: bool, listings: dict[str, list[dict[str, Any]]] | None = None, note: str | None = None,
            keep_days: int | None = None, trees: list[tuple[Path, str]] | None = None,
            paused: dict[str, object] | None = None, run_id: str | None = None) -> dict[str, object]:
    resume_leftovers(config.state_dir, reporter)
    instance, profile, instance_config = describe(config, name)
    if databases is not None:
        instance.databases = databases
    if trees is not None:
        # A path that is a symlink is saved as the link (as a config file is): the restore replaces the
        # link, not what it leads to, so following it would save the wrong thing.
        instance.files = [path for path, kind in trees if kind == "files" and not path.is_symlink()]
        instance.config_files = [path for path, kind in trees if kind != "files" or path.is_symlink()]
    repo = open_repository(config, instance_config.repositories[0])
    run_id = run_id or new_run_id()
    # A safety point runs inside a restore that already holds the instance lock.
    lock = contextlib.nullcontext() if safety_point else instance_lock(
        config.state_dir, name, run_id, "backup", reporter, config.settings.lock_wait_seconds)
    with lock:
        if not safety_point:  # a safety point is part of a restore, which cleaned up under the same lock
            remove_leftovers(declared_trees(instance), config.state_dir / "staging", reporter)
        result, manifest = _backup_locked(config, instance, profile, instance_config, repo, run_id, reporter,
                                          safety_point, with_files, note, keep_days, paused)
        if not safety_point:
            listings = {} if listings is None else listings
            result.update(replicate(config, name, run_id, reporter, listings, str(result["snapshot"])))
            keep_trees(config.state_dir, repo, manifest, listings[repo.name])
        return result


def _backup_locked(config, instance, profile, instance_config, repo, run_id, reporter, safety_point,
                   with_files, note, keep_days, paused=None) -> tuple[dict[str, object], Manifest]:  # noqa: ANN001
    started = time.monotonic()
    if with_files:
        _check_trees(config, instance, safety_point)
    # Under the lock, so a repair that held it has finished: see safehold.repository.damage.
    repo.read_all = damage.refuse_unsafe(config.state_dir, repo.name) is not None
    repo.ensure(reporter)
    manifest = Manifest(run_id=run_id, instance=instance.name, app=instance.app, app_version=instance.app_version,
                        schema_version=instance.schema_version, host=socket.gethostname(),
                        safehold_version=__version__, started=now(), safety_point=safety_point,
                        details=instance.details, note=note,
                        requirements=hostinfo.requirements(php=profile.RUNS_ON_PHP))
    if keep_days:
        manifest.keep_until = manifest.started + timedelta(days=keep_days)
    for warning in instance.warnings:  # what the profile left out or doubts (e.g. a dropped inactive tenant)
        reporter.warn(warning)
        manifest.warnings.append(warning)
    tags = [f"instance={instance.name}", f"run={run_id}"] + (["safety"] if safety_point else [])
    reporter.step(f"{'safety point' if safety_point else 'backup'} {run_id} of {instance.name} "
                  f"→ repository {repo.name}")
    keys = profile.keys(instance, config.state_dir)
    if hasattr(profile, "account_records"):  # kept with the keys (encrypted), but no key to list in the kit
        keys |= profile.account_records(instance)
    accounts = record_accounts(instance, instance_config, reporter,
                               postgres_roles_too=getattr(profile, "prepare_restore", None) is None)
    for warning in accounts.warnings:
        reporter.warn(warning)
        manifest.warnings.append(warning)
    pause = (contextlib.nullcontext(dict(paused)) if paused is not None
             else profile.quiesce(instance, instance_config, reporter, config.state_dir))
    with pause as window:
        window["start"] = now().isoformat()
        added = _store_parts(repo, instance, tags, manifest, reporter, with_files, keys, accounts,
                             None if safety_point else last_trees(config.state_dir, repo, instance.name))
        window["end"] = now().isoformat()
    manifest.quiesce = dict(window)
    apply_defaults(manifest.databases, accounts.defaults)
    manifest.finished = now()
    summary, _ = repo.backup_stream(MANIFEST_PATH, [*tags, "part=manifest"],
                                    lambda out: out.write(manifest.to_bytes()), reporter, "manifest")
    reporter.step(f"recovery point {run_id} complete")
    return {
        "instance": instance.name,
        "run_id": run_id,
        "repository": repo.name,
        "snapshot": summary.snapshot_id,
        "databases": [{"name": d.name, "tables": len(d.tables), "bytes": d.bytes} for d in manifest.databases],
        "files": sum(t.files for t in manifest.trees),
        "bytes_added": added + summary.data_added,
        "bytes_total": sum(d.bytes for d in manifest.databases) + sum(t.bytes for t in manifest.trees),
        "seconds": round(time.monotonic() - started, 2),
        "warnings": manifest.warnings,
        "safety_point": safety_point,
        "note": manifest.note,
        "keep_until": manifest.keep_until,
    }, manifest


def backup(config: Config, name: str | None, reporter: Reporter, note: str | None = None,
           keep_days: int | None = None) -> list[dict[str, object]]:
    """Back up one instance or all; a failed instance does not stop the others.

    `note` and `keep_days` go into every point made; a bad one fails the command before any backup.
    """
    # Checked here too: inside the loop a bad note would be one failed instance among several.
    note = check_note(note)
    check_keep_days(keep_days)

    def one(instance_name: str) -> list[dict[str, object]]:
        # Said once per backup run (not by `list`, which is read far more often than it needs telling).
        if warning := host_only_warning(config, instance_name):
            reporter.warn(warning)
        return [{"result": "ok", **backup_instance(config, instance_name, reporter, note=note, keep_days=keep_days)}]

    return each_instance(config, name, one)

