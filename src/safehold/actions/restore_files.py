"""The files part of a restore: the target folder, the trees and single files put back, and the app's
config file that must come back from the point before the instance can be described (a restore from nothing).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import replace
from pathlib import Path

from safehold.actions.common import Point, describe
from safehold.actions.restore_plan import Plan
from safehold.apps import profile_for
from safehold.apps.common import AppConfigMissing
from safehold.apps.contract import AppProfile
from safehold.config import Config
from safehold.errors import SafeholdError
from safehold.files import make_folder, restore_in_place, restore_paths_in_place
from safehold.models import Instance
from safehold.output import Reporter
from safehold.repository.restic import PointReader
from safehold.tempdirs import private_dir


def prepare_files_target(target: Path) -> None:
    """Create the --files-to folder before anything is restored, so a bad target costs nothing."""
    make_folder(target, "the restore folder", "restore somewhere writable with --files-to")
    if not os.access(target, os.W_OK | os.X_OK):
        raise SafeholdError(f"cannot write into the restore folder {target}",
                            "restore somewhere writable with --files-to")


def holds_something(path: str) -> bool:
    """True when `path` exists on the host with something a restore in place would replace (a file, a
    link, or a folder with anything in it); an empty folder loses nothing."""
    try:
        if os.path.isdir(path) and not os.path.islink(path):
            with os.scandir(path) as entries:
                return next(entries, None) is not None
        return os.path.lexists(path)
    except OSError:
        return True  # unreadable: assume it holds something, so a safety point is attempted


def restore_files(repo: PointReader, point: Point, plan: Plan,
                   reporter: Reporter) -> dict[str, int] | None:
    """Put the plan's files back; for `--path`, returns the files and bytes that came back."""
    snapshot = point.manifest.files_snapshot or ""
    selection = plan.selection
    if plan.files_target != Path("/"):
        repo.restore(snapshot, plan.files_target, plan.includes, reporter)
        return None if selection is None else {"files": selection.files, "bytes": selection.bytes}
    if selection is None:
        restore_in_place(repo, snapshot, plan.includes, reporter)
        return None
    files, size = restore_paths_in_place(repo, snapshot, plan.includes, set(selection.conflicts), reporter)
    return {"files": files, "bytes": size, "unchanged": selection.unchanged}


def describe_live(config: Config, name: str, repo: PointReader, point: Point, reporter: Reporter,
                   dry_run: bool) -> tuple[Instance, AppProfile, Path | None]:
    """The live instance; when the app's own config file is gone (a restore from nothing), it is first
    restored from the point, and its path is returned third (None when it was there). A dry run reads
    the point's copy in a private folder instead and changes nothing."""
    try:
        instance, profile, _ = describe(config, name)
        return instance, profile, None
    except AppConfigMissing as missing:
        if not point.manifest.files_snapshot:
            raise
        if dry_run:
            return (*_described_from_point(config, name, repo, point, missing.path), missing.path)
        reporter.step(f"{missing.path} is missing: restoring it from point {point.run_id} first")
        repo.restore(point.manifest.files_snapshot, Path("/"), [point.manifest.stored_path(str(missing.path))],
                     reporter)
        if not missing.path.is_file():
            raise
        brought_back = missing.path
    instance, profile, _ = describe(config, name)
    return instance, profile, brought_back


def _described_from_point(config: Config, name: str, repo: PointReader, point: Point,
                          path: Path) -> tuple[Instance, AppProfile]:
    """The instance as its profile describes it from the point's copy of its config file `path` (under
    the configured root), read into a private folder that stands in for the root; paths said in
    the result are the real ones."""
    instance_config = config.instance(name)
    root = Path(instance_config.root or "/")
    parent = config.state_dir / "staging"
    parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    stand_in = private_dir(".safehold-plan-", parent)
    try:
        copy = stand_in / path.relative_to(root)
        copy.parent.mkdir(parents=True, exist_ok=True)
        # The config file is found among the point's trees (missing.path), so the point has a files part.
        assert point.manifest.files_snapshot is not None
        with repo.open_file(point.manifest.files_snapshot, point.manifest.stored_path(str(path))) as stream, \
                copy.open("wb") as out:
            shutil.copyfileobj(stream, out)
        profile = profile_for(instance_config.app)
        instance = profile.describe(name, instance_config.model_copy(update={"root": str(stand_in)}))
    finally:
        shutil.rmtree(stand_in, ignore_errors=True)

    def real(item: Path) -> Path:
        return root / item.relative_to(stand_in) if item.is_relative_to(stand_in) else item

    return replace(instance, root=root, files=[real(f) for f in instance.files],
                   config_files=[real(f) for f in instance.config_files]), profile
