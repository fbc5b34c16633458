"""Paths of `safehold ls` and `restore --path`: what is refused, how a path is found in a point, and how a
file on the host is compared with the point's."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from safehold.actions.browse import clean_path, locate, locate_all, within
from safehold.actions.common import Point
from safehold.actions.restore import make_plan
from safehold.errors import EXIT_USAGE, ConfigError, RestoreRefused
from safehold.files import live_state, node_filemode, node_permissions, not_a_folder_on_the_way
from safehold.models import Instance
from safehold.repository.manifest import Manifest, TreeEntry
from safehold.repository.restic import literal_pattern


def _point(*trees: TreeEntry) -> Point:
    manifest = Manifest(run_id="r1", instance="app", app="generic", host="h", safehold_version="0",
                        started=datetime.now(UTC), trees=list(trees), files_snapshot="abc")
    return Point(manifest, snapshot="def", repository="main")


UPLOADS = TreeEntry(root="/srv/itflow-26/uploads", link="/var/www/itflow/uploads")
CONFIG = TreeEntry(root="/etc/itflow/config.php", kind="config")


@pytest.mark.parametrize(("given", "clean"), [
    ("/var/www/itflow/uploads/", "/var/www/itflow/uploads"),
    ("//var//www/./itflow", "/var/www/itflow"),
    ("/", "/"),
    ("/uploads/Invoice [1] *.pdf", "/uploads/Invoice [1] *.pdf"),  # glob characters are characters of a name
    ("/uploads/...hidden", "/uploads/...hidden"),
])
def test_paths_are_normalised_without_changing_what_they_name(given: str, clean: str) -> None:
    assert clean_path(given) == clean


@pytest.mark.parametrize(("given", "reason"), [
    ("uploads/clients/5", "not an absolute path"),
    ("./uploads", "not an absolute path"),
    ("", "not an absolute path"),
    ("/var/www/itflow/uploads/../../../etc/shadow", "contains '..'"),
    ("/uploads/..", "contains '..'"),
    ("/uploads/a\0b", "NUL character"),
])
def test_hostile_paths_are_refused_as_usage_errors(given: str, reason: str) -> None:
    with pytest.raises(ConfigError, match=reason) as caught:
        clean_path(given)
    assert caught.value.exit_code == EXIT_USAGE


def test_within_compares_whole_names() -> None:
    assert within("/a/b", "/a/b") and within("/a/b/c", "/a/b") and within("/a/b", "/")
    assert not within("/a/bc", "/a/b") and not within("/a", "/a/b")


def test_restic_patterns_are_escaped_so_a_path_matches_only_itself() -> None:
    assert literal_pattern("/a/b") == "/a/b"
    assert literal_pattern("/up/Invoice [1] *?.pdf") == r"/up/Invoice \[1\] \*\?.pdf"
    assert literal_pattern("/up/back\\slash") == "/up/back\\\\slash"


def test_a_path_through_a_symlinked_root_is_found_where_the_point_stores_it() -> None:
    point = _point(UPLOADS, CONFIG)
    found = locate(point, "/var/www/itflow/uploads/clients/5/")
    assert (found.given, found.stored, found.tree) == ("/var/www/itflow/uploads/clients/5",
                                                       "/srv/itflow-26/uploads/clients/5", UPLOADS)
    assert locate(point, "/srv/itflow-26/uploads").stored == "/srv/itflow-26/uploads"
    assert locate(point, "/etc/itflow/config.php").tree == CONFIG


@pytest.mark.parametrize("outside", ["/var/www/itflow/uploads-old/x", "/etc/itflow", "/etc/itflow/config.php.bak"])
def test_a_path_outside_every_tree_names_the_trees(outside: str) -> None:
    with pytest.raises(ConfigError, match="not in the file trees or config files of point r1") as caught:
        locate(_point(UPLOADS, CONFIG), outside)
    assert "/var/www/itflow/uploads (= /srv/itflow-26/uploads)" in caught.value.message
    assert caught.value.exit_code == EXIT_USAGE


def test_a_path_inside_another_selected_one_comes_back_with_it() -> None:
    point = _point(UPLOADS, CONFIG)
    chosen = locate_all(point, ["/var/www/itflow/uploads/a/b", "/srv/itflow-26/uploads/a", "/var/www/itflow/uploads/a",
                                "/srv/itflow-26/uploads/ab"], {"files"})
    assert [c.stored for c in chosen] == ["/srv/itflow-26/uploads/a", "/srv/itflow-26/uploads/ab"]
    with pytest.raises(ConfigError, match="which --only leaves out"):
        locate_all(point, ["/etc/itflow/config.php"], {"files"})


@pytest.mark.parametrize(("only", "to_db", "message"), [
    (["db"], [], "does not go with --only db"),
    (["files", "db"], [], "does not go with --only db"),
    ([], ["copy"], "--to-db does not go with --path"),
])
def test_path_with_database_options_is_a_usage_error(only: list[str], to_db: list[str], message: str) -> None:
    instance = Instance(name="app", app="generic", root=None)
    with pytest.raises(ConfigError, match=message) as caught:
        make_plan(None, instance, _point(UPLOADS), only, to_db, None, paths=["/var/www/itflow/uploads/x"])  # type: ignore[arg-type]
    assert caught.value.exit_code == EXIT_USAGE


def test_a_path_restore_plans_no_database_and_only_the_path() -> None:
    instance = Instance(name="app", app="generic", root=None, files=[Path("/srv/itflow-26/uploads")])
    plan = make_plan(None, instance, _point(UPLOADS, CONFIG), [], [], None,  # type: ignore[arg-type]
                     paths=["/var/www/itflow/uploads/x.pdf"])
    assert plan.databases == [] and plan.includes == ["/srv/itflow-26/uploads/x.pdf"]


def test_a_path_of_a_tree_the_instance_no_longer_declares_goes_back_only_elsewhere() -> None:
    instance = Instance(name="app", app="generic", root=None, files=[Path("/srv/other")])
    with pytest.raises(RestoreRefused, match="/srv/itflow-26/uploads/x.pdf of point r1 lies outside every tree"):
        make_plan(None, instance, _point(UPLOADS, CONFIG), [], [], None,  # type: ignore[arg-type]
                  paths=["/var/www/itflow/uploads/x.pdf"])
    plan = make_plan(None, instance, _point(UPLOADS, CONFIG), [], [], Path("/tmp/elsewhere"),  # type: ignore[arg-type]
                     paths=["/var/www/itflow/uploads/x.pdf"])
    assert plan.includes == ["/srv/itflow-26/uploads/x.pdf"]


def test_go_file_modes_become_unix_permissions() -> None:
    setuid_file = {"type": "file", "mode": (1 << 23) | 0o755}
    sticky_dir = {"type": "dir", "mode": (1 << 31) | (1 << 20) | 0o777}
    assert node_permissions(setuid_file) == 0o4755 and node_filemode(setuid_file) == "-rwsr-xr-x"
    assert node_permissions(sticky_dir) == 0o1777 and node_filemode(sticky_dir) == "drwxrwxrwt"
    assert node_filemode({"type": "symlink", "mode": (1 << 27) | 0o777}) == "lrwxrwxrwx"


def _node(on_disk: Path, **changes: object) -> dict[str, object]:
    """restic's listing node for a file as it is now, with `changes`."""
    info = os.lstat(on_disk)
    seconds, nanos = divmod(info.st_mtime_ns, 1_000_000_000)
    mtime = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{nanos:09d}Z"
    kind = "dir" if on_disk.is_dir() else "file"
    return {"path": str(on_disk), "type": kind, "size": info.st_size, "mode": info.st_mode & 0o777,
            "uid": info.st_uid, "gid": info.st_gid, "mtime": mtime, **changes}


def test_a_host_file_is_the_same_only_when_type_size_mtime_mode_and_owner_match(tmp_path: Path) -> None:
    file = tmp_path / "a.txt"
    file.write_text("same\n")
    assert live_state(_node(file)) == "same"
    assert live_state(_node(file, size=99)) == "differs"
    assert live_state(_node(file, mode=0o600)) == "differs"
    assert live_state(_node(file, uid=4242)) == "differs"
    assert live_state(_node(file, mtime="2020-01-01T00:00:00Z")) == "differs"
    assert live_state(_node(file, type="dir")) == "differs"
    assert live_state(_node(tmp_path, mtime="2020-01-01T00:00:00Z")) == "same"  # a folder merges
    assert live_state(_node(file, path=str(tmp_path / "gone"))) == "missing"
    assert live_state(_node(file, path=str(file / "below-a-file"))) == "missing"


def test_a_symlink_on_the_way_into_a_tree_is_found(tmp_path: Path) -> None:
    root = tmp_path / "uploads"
    (root / "a" / "b").mkdir(parents=True)
    assert not_a_folder_on_the_way(str(root), str(root / "a" / "b" / "c.pdf")) is None
    assert not_a_folder_on_the_way(str(root), str(root / "a" / "missing" / "c.pdf")) is None
    (tmp_path / "elsewhere").mkdir()
    (root / "a" / "b").rmdir()
    (root / "a" / "b").symlink_to(tmp_path / "elsewhere")
    assert not_a_folder_on_the_way(str(root), str(root / "a" / "b" / "c.pdf")) == root / "a" / "b"
    # The path itself is compared with the point's (a symlink there is replaced), never followed.
    assert not_a_folder_on_the_way(str(root), str(root / "a" / "b")) is None
