"""The file trees of an instance's last point, kept on this host so that an unchanged run need not list them.

A point records each saved tree's files, bytes and sample hashes as `restic ls` of its files snapshot
gives them (the drill compares a restore with exactly that). Listing costs a restic process (the
repository key's derivation, the index, every node of the tree read back): on a small instance about
as long as the backup itself. So once a point is read back, its files snapshot and tree records are
kept in the state dir; the next run names that snapshot as restic's parent, and when restic reports
every saved root unchanged (a root's node equal to the parent's, and with it the content hash of the
whole tree under it), the new snapshot's trees are the parent's, and so are their records. Anything
else — a change anywhere under a root, other roots, a damaged repository (every file is read again),
a parent forgotten since, a record of another repository of that name — lists the new snapshot.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from safehold.repository.manifest import Manifest, TreeEntry
from safehold.repository.restic import Repository, Summary
from safehold.secrets import write_private


@dataclass
class LastTrees:
    """The files snapshot of the instance's last point in a repository, and its tree records."""

    snapshot: str
    trees: list[TreeEntry]


def _record(state_dir: Path, repo: Repository, instance: str) -> Path:
    return state_dir / "trees" / repo.name / f"{instance}.json"


def _repository_id(repo: Repository) -> str:
    # A hash, not the URL (it may carry credentials): a repository of that name at another URL is another one.
    return hashlib.sha256(repo.url.encode()).hexdigest()


def last_trees(state_dir: Path, repo: Repository, instance: str) -> LastTrees | None:
    """The trees kept after the instance's last point in `repo` (None: none kept, or unreadable)."""
    try:
        data = json.loads(_record(state_dir, repo, instance).read_text())
        if data["repository"] != _repository_id(repo):
            return None
        return LastTrees(str(data["snapshot"]), [TreeEntry.model_validate(tree) for tree in data["trees"]])
    except (OSError, ValueError, KeyError, TypeError, ValidationError):
        return None


def keep_trees(state_dir: Path, repo: Repository, manifest: Manifest, listing: Sequence[dict[str, Any]]) -> None:
    """Keep the trees of a point just read back from `repo` (`listing`: the snapshots it listed)."""
    path = _record(state_dir, repo, manifest.instance)
    if not manifest.files_snapshot:
        path.unlink(missing_ok=True)
        return
    # The full id, as the listing has it (restic 0.14's backup summary gives a short one, which may stop being unique).
    snapshot = next((s["id"] for s in listing if s["id"].startswith(manifest.files_snapshot)), manifest.files_snapshot)
    write_private(path, json.dumps({"repository": _repository_id(repo), "snapshot": snapshot,
                                    "trees": [tree.model_dump(mode="json") for tree in manifest.trees]}))


def unchanged_trees(last: LastTrees | None, summary: Summary,
                    present: Sequence[tuple[Path, str, Path | None]]) -> list[TreeEntry] | None:
    """The last point's records of the `present` trees ((real path, kind, followed link) each) when restic
    compared this backup with that point's snapshot and found every one of them unchanged; else None."""
    if last is None or summary.parent != last.snapshot:
        return None
    kept = {tree.root: tree for tree in last.trees}
    if len(kept) != len(present) or len(last.trees) != len(present):
        return None
    result: list[TreeEntry] = []
    for real, kind, link in present:
        tree = kept.get(str(real))
        if tree is None or (tree.kind, tree.link) != (kind, str(link) if link else None) \
                or str(real) not in summary.unchanged:
            return None
        result.append(tree.model_copy(deep=True))
    return result
