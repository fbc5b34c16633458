"""actions.last_trees: an unchanged run reuses the last point's tree records only when restic compared with
exactly that point's snapshot and found every root, as saved then, unchanged."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from safehold.actions.last_trees import LastTrees, keep_trees, last_trees, unchanged_trees
from safehold.repository.manifest import Manifest, TreeEntry
from safehold.repository.restic import Repository, Summary
from safehold.secrets import Secret

FILES = TreeEntry(root="/srv/app", kind="files", files=3, bytes=30, samples={"a": "00"})
CONFIG = TreeEntry(root="/etc/app.ini", kind="config", files=1, bytes=5)
LAST = LastTrees("parentid", [FILES, CONFIG])
PRESENT = [(Path("/srv/app"), "files", None), (Path("/etc/app.ini"), "config", None)]


def summary(parent: str | None = "parentid", unchanged: tuple[str, ...] = ("/srv/app", "/etc/app.ini")) -> Summary:
    return Summary("newid", parent=parent, unchanged=frozenset(unchanged))


def test_every_root_unchanged_since_that_parent_reuses_its_records() -> None:
    reused = unchanged_trees(LAST, summary(), PRESENT)
    assert reused == [FILES, CONFIG]
    assert reused is not None and reused[0] is not FILES  # a copy: the new manifest owns it


def test_anything_else_lists_the_snapshot() -> None:
    assert unchanged_trees(None, summary(), PRESENT) is None
    assert unchanged_trees(LAST, summary(parent=None), PRESENT) is None  # no parent given (damaged repository)
    assert unchanged_trees(LAST, summary(parent="other"), PRESENT) is None
    assert unchanged_trees(LAST, summary(unchanged=("/srv/app",)), PRESENT) is None  # the config file changed
    assert unchanged_trees(LAST, summary(), PRESENT[:1]) is None  # a root fewer
    assert unchanged_trees(LAST, summary(), [*PRESENT, (Path("/var/x"), "files", None)]) is None  # a root more
    assert unchanged_trees(LAST, summary(), [(Path("/srv/app"), "config", None), PRESENT[1]]) is None  # other kind
    linked = [(Path("/srv/app"), "files", Path("/var/www/app")), PRESENT[1]]
    assert unchanged_trees(LAST, summary(), linked) is None  # reached through a link now


def test_the_record_belongs_to_the_repository_at_that_url(tmp_path: Path) -> None:
    repo = Repository("main", str(tmp_path / "repo"), Secret("x", "password"))
    manifest = Manifest(run_id="r", instance="app", app="generic", host="h", safehold_version="0",
                        started=datetime.now(UTC), files_snapshot="abcd1234", trees=[FILES])
    keep_trees(tmp_path, repo, manifest, [{"id": "abcd1234" + "f" * 56}, {"id": "0" * 64}])
    assert last_trees(tmp_path, repo, "app") == LastTrees("abcd1234" + "f" * 56, [FILES])
    assert (tmp_path / "trees" / "main" / "app.json").stat().st_mode & 0o777 == 0o600
    assert last_trees(tmp_path, Repository("main", str(tmp_path / "moved"), Secret("x", "password")), "app") is None
    assert last_trees(tmp_path, repo, "other") is None
    (tmp_path / "trees" / "main" / "app.json").write_text("{not json")
    assert last_trees(tmp_path, repo, "app") is None
    manifest.files_snapshot, manifest.trees = None, []  # a point without trees: nothing to compare with
    keep_trees(tmp_path, repo, manifest, [])
    assert not (tmp_path / "trees" / "main" / "app.json").exists()
