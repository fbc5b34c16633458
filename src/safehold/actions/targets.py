"""Where an in-place restore may write: what the instance declares now, never what a point names.

Points and exports travel (mailed, copied between hosts, kept on USB disks), and a manifest is data
anyone holding one can edit. So the trees and databases a restore replaces in place are taken from
the live instance description (the config, or the profile reading the app's config now), and a
point only chooses which of those it holds. Anything else it names is refused in place, with one
line naming it; it can still be restored elsewhere (`--files-to`, `--to-db`).

The safety point taken before an in-place restore saves every declared tree and each database the
restore overwrites, so a restore confined here cannot replace anything its safety point did not save.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from safehold.actions.backup import declared_trees
from safehold.errors import RestoreRefused
from safehold.files import real_path
from safehold.models import Instance
from safehold.repository.manifest import DatabaseEntry, Manifest

ELSEWHERE = "restore it elsewhere with --files-to DIR (and --to-db NEW for databases); nothing was changed"


def owned_roots(instance: Instance) -> list[Path]:
    """The real paths of the trees and config files the instance declares now (where a backup reads them)."""
    return [Path(os.path.normpath(real_path(path, kind))) for path, kind in declared_trees(instance)]


def _inside(path: Path, roots: Iterable[Path]) -> bool:
    return any(path == root or path.is_relative_to(root) for root in roots)


def in_place_trees(instance: Instance, manifest: Manifest, kinds: set[str]) -> list[str]:
    """The trees of the point (of `kinds`) going back in place: exactly the instance's own roots it holds.

    Refuses, naming it, a root the instance does not declare (another folder, a parent of a declared
    root, `/`), a root named twice, or a root that is not a clean absolute path.
    """
    owned = owned_roots(instance)
    seen: set[str] = set()
    for tree in manifest.trees:
        if tree.root in seen:
            raise RestoreRefused(f"point {manifest.run_id} names the tree {tree.root} twice: it is not a point "
                                 f"safehold made", ELSEWHERE)
        seen.add(tree.root)
        if tree.kind not in kinds:
            continue
        root = Path(tree.root)
        if not root.is_absolute() or os.path.normpath(tree.root) != tree.root or root not in owned:
            raise RestoreRefused(f"point {manifest.run_id} holds the tree {tree.root}, which instance "
                                 f"{instance.name!r} does not declare: it is never restored in place", ELSEWHERE)
    # Built from the instance's side: only its own roots can be replaced, whatever the point says.
    held = {tree.root for tree in manifest.trees if tree.kind in kinds}
    return [str(root) for root in dict.fromkeys(owned) if str(root) in held]


def check_in_place_paths(instance: Instance, manifest: Manifest, paths: list[str]) -> None:
    """`restore --path` in place: each path must lie inside a tree the instance declares."""
    owned = owned_roots(instance)
    for path in paths:
        if not _inside(Path(os.path.normpath(path)), owned):
            raise RestoreRefused(f"{path} of point {manifest.run_id} lies outside every tree instance "
                                 f"{instance.name!r} declares: it is never restored in place", ELSEWHERE)


def owns_database(instance: Instance, entry: DatabaseEntry, target: str) -> bool:
    """Whether the instance declares `target` as one of its databases of the entry's engine, with the same
    table prefix (iTop shares a database: the prefix decides which tables are emptied)."""
    return any(db.connection.engine == entry.engine and target == str(db.connection.path or db.name)
               and db.table_prefix == entry.table_prefix for db in instance.databases)


def check_in_place_database(instance: Instance, manifest: Manifest, entry: DatabaseEntry) -> None:
    """A database going back under its own name must be one the instance declares now."""
    if not owns_database(instance, entry, entry.name):
        raise RestoreRefused(f"point {manifest.run_id} holds the database {entry.name} ({entry.engine}), which "
                             f"instance {instance.name!r} does not declare: it is never restored in place",
                             f"restore it elsewhere with --to-db {entry.name}=NEWNAME, or over that database on "
                             f"purpose with --to-db {entry.name}={entry.name} (as a safety point of a --to-db restore "
                             "is put back); nothing was changed")
