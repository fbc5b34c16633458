"""`safehold ls` and the paths of `safehold restore --path`: a point's files, found by the path they had
on the host.

A path is taken literally: `*`, `?` and `[` are characters of a name (restic's patterns are escaped,
see `literal_pattern`), so a path never selects more than itself and what lies in it. Relative paths
and `..` are refused rather than resolved: what they mean depends on the current folder and on
symlinks that may have changed since the point. A path through a tree root that was a symlink when
the point was made is found under the real folder the point stores (`Manifest.stored_path`).
"""

from __future__ import annotations

import itertools
import os
import posixpath
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from safehold.actions.common import Point, open_point
from safehold.config import Config
from safehold.errors import ConfigError, SafeholdError
from safehold.files import COUNTED, live_state, node_filemode, node_permissions, not_a_folder_on_the_way
from safehold.repository.manifest import TreeEntry
from safehold.repository.restic import Repository

PATH_HINT = "give the absolute path the file had on the host, e.g. /var/www/itflow/uploads/clients/5"
# What a restore in place does with each file, by how the host's file compares with the point's.
ACTIONS = {"missing": "restore", "differs": "replace", "same": "same"}


def clean_path(text: str) -> str:
    """A path from the command line, checked and normalised (repeated `/`, `.` and a trailing `/` dropped).

    Raises ConfigError (exit 2) for a relative path, `..` or a NUL character.
    """
    if "\0" in text:
        raise ConfigError("the path contains a NUL character", PATH_HINT)
    if not text.startswith("/"):
        raise ConfigError(f"{text!r} is not an absolute path", PATH_HINT)
    parts = text.split("/")
    if ".." in parts:
        raise ConfigError(f"{text!r} contains '..'", PATH_HINT + ", without '..'")
    return "/" + "/".join(part for part in parts if part not in ("", "."))


def within(path: str, root: str) -> bool:
    """True when `path` is `root` or lies in it, by whole names (/a/bc is not in /a/b)."""
    return path == root or path.startswith(root.rstrip("/") + "/")


@dataclass(frozen=True)
class Located:
    """A path from the command line found in a point: as given, where the point stores it, and its tree."""

    given: str
    stored: str
    tree: TreeEntry


def _tree_names(point: Point) -> str:
    trees = point.manifest.trees
    return ", ".join(f"{t.link} (= {t.root})" if t.link else t.root for t in trees) or "none"


def locate(point: Point, text: str) -> Located:
    """Find a host path in a point's file trees and config files; ConfigError (exit 2) when it is in none."""
    given = clean_path(text)
    stored = point.manifest.stored_path(given)
    tree = next((t for t in point.manifest.trees if within(stored, t.root)), None)
    if tree is None:
        raise ConfigError(f"{given} is not in the file trees or config files of point {point.run_id}: "
                          f"{_tree_names(point)}", f"`safehold ls {point.manifest.instance} {point.run_id}` "
                                                   "lists them")
    return Located(given, stored, tree)


def entry(node: dict[str, Any]) -> dict[str, object]:
    """One file or folder of a listing, from a node of restic's."""
    kind = node.get("type")
    return {"path": node["path"], "type": kind, "size": int(node.get("size") or 0) if kind == "file" else None,
            "mode": f"{node_permissions(node):04o}", "permissions": node_filemode(node),
            "mtime": node.get("mtime"), "uid": node.get("uid"), "gid": node.get("gid")}


@dataclass
class Listing:
    """What `safehold ls` shows: which point and path (`head`), then the entries, streamed from restic."""

    head: dict[str, object]
    entries: Iterator[dict[str, object]]


def list_files(config: Config, name: str, run: str, path: str | None, recursive: bool,
               repository: str | None = None) -> Listing:
    """The files and folders of a point under `path` (default: its trees), one level unless `recursive`.

    Errors (no such point, a path outside the trees or not in the point) are raised here, before the
    first entry, so nothing is printed before them.
    """
    repo, point = open_point(config, name, run, repository)
    head: dict[str, object] = {"instance": name, "run_id": point.run_id, "repository": repo.name, "path": path,
                               "recursive": recursive}
    snapshot = point.manifest.files_snapshot or ""
    if path is None:
        roots = [t.root for t in point.manifest.trees]
        nodes = repo.walk(snapshot, roots, recursive) if roots else iter(())
        return Listing(head, (entry(n) for n in nodes if recursive or n["path"] in roots))
    located = locate(point, path)
    head.update(path=located.given, stored_path=located.stored)
    nodes = repo.walk(snapshot, [located.stored], recursive)
    first = next(nodes, None)  # the path itself, listed before what lies in it
    if first is None or not within(first["path"], located.stored):
        nodes.close()
        raise _not_in_point([located], point)
    folder = first["path"] == located.stored and first.get("type") == "dir"
    return Listing(head, (entry(n) for n in itertools.chain([first], nodes)
                          if not (folder and n["path"] == located.stored)))


def _not_in_point(missing: list[Located], point: Point, restoring: bool = False) -> ConfigError:
    parent = posixpath.dirname(missing[0].given)
    return ConfigError(f"{', '.join(m.given for m in missing)} {'is' if len(missing) == 1 else 'are'} not in point "
                       f"{point.run_id}" + ("; nothing was restored" if restoring else ""),
                       f"`safehold ls {point.manifest.instance} {point.run_id} {parent}` shows what the point holds "
                       "there")


def locate_all(point: Point, texts: list[str], kinds: set[str]) -> list[Located]:
    """The paths of `restore --path`, found in the point; one inside another is restored with it."""
    located: dict[str, Located] = {}
    for text in texts:
        item = locate(point, text)
        if item.tree.kind not in kinds:
            raise ConfigError(f"{item.given} is in the {item.tree.kind} tree {item.tree.root}, which --only leaves "
                              "out", f"add --only {item.tree.kind}, or drop --only")
        located.setdefault(item.stored, item)
    return [item for item in located.values()
            if not any(other != item.stored and within(item.stored, other) for other in located)]


@dataclass
class Selection:
    """What `restore --path` brings back; in place, compared with what the host holds now."""

    located: list[Located]
    in_place: bool
    files: int = 0  # files (and symlinks) that come back
    bytes: int = 0
    unchanged: int = 0  # files on the host the same as in the point: left as they are
    conflicts: list[str] = field(default_factory=list)  # host paths that differ: only --force replaces them
    items: list[dict[str, object]] = field(default_factory=list)  # every path and its action (for --dry-run)

    @property
    def paths(self) -> list[str]:
        """The selected paths as the point stores them."""
        return [item.stored for item in self.located]

    def on_host(self) -> list[tuple[Path, str]]:
        """The selected paths the host holds, with the kind of their tree: what a safety point saves."""
        return [(Path(item.stored), item.tree.kind) for item in self.located if os.path.lexists(item.stored)]

    def describe(self) -> dict[str, object]:
        return {"paths": [item.given for item in self.located], "files": self.files, "bytes": self.bytes,
                "unchanged": self.unchanged, "conflicts": self.conflicts, "items": self.items}

    def compare(self, repo: Repository, point: Point, keep_items: bool) -> None:
        """Count what comes back from the point's listing of the selected paths and, in place, sort each
        file by how the host's compares: missing (restored), different (replaced with --force) or the same.

        Raises when a path is not in the point, or (in place) when the way to it now leads through a
        symlink, before anything is changed.
        """
        if self.in_place:
            self._refuse_symlinks_on_the_way()
        found: set[str] = set()
        whole: str | None = None  # a folder that comes back as a whole: what lies in it comes with it
        for node in repo.walk(point.manifest.files_snapshot or "", self.paths, recursive=True):
            path, kind = node["path"], node.get("type")
            found.update(p for p in self.paths if within(path, p))
            if not self.in_place or (whole is not None and within(path, whole)):
                action = "restore"
            else:
                action = ACTIONS[live_state(node)]
                if kind == "dir" and action != "same":
                    whole = path
            self._count(node, action)
            if keep_items:
                self.items.append({"path": path, "type": kind, "size": node.get("size"), "action": action})
        missing = [item for item in self.located if item.stored not in found]
        if missing:
            raise _not_in_point(missing, point, restoring=True)

    def _count(self, node: dict[str, Any], action: str) -> None:
        if action == "replace":
            self.conflicts.append(node["path"])
        if node.get("type") not in COUNTED:
            return
        if action == "same":
            self.unchanged += 1
        else:
            self.files += 1
            self.bytes += int(node.get("size") or 0) if node.get("type") == "file" else 0

    def _refuse_symlinks_on_the_way(self) -> None:
        for item in self.located:
            odd = not_a_folder_on_the_way(item.tree.root, item.stored)
            if odd is not None:
                raise SafeholdError(f"{odd} is no longer a folder on the host (a symlink or file where the point "
                                    f"has a folder): restoring {item.given} in place would write through it",
                                    "restore it with --files-to DIR, check it, and move it into place by hand")
