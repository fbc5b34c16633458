"""Trees that hold safehold's own repository, trees that are missing (an unmounted share), and a restore
in place that fails part-way."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from safehold.actions.points import list_points
from safehold.config import load
from tests.conftest import run_cli
from tests.integration.unattended import make_instance


def _points(config: Path) -> list[str]:
    return [str(p["run_id"]) for p in list_points(load(config), "app")]


def test_a_repository_inside_a_saved_tree_is_refused_and_never_replaced(tmp_path: Path,
                                                                       repo: dict[str, str]) -> None:
    config = make_instance(tmp_path, repo)
    assert run_cli("backup", "app", config=config).returncode == 0
    files = tmp_path / "app" / "files"
    inside = files / "backups"
    shutil.move(repo["url"], inside)
    config.write_text(config.read_text().replace(f'url = "{repo["url"]}"', f'url = "{inside}"'))
    before = _points(config)

    backup = run_cli("backup", "app", config=config)
    assert backup.returncode == 2, backup.stderr
    assert f"repository main ({inside}) lies inside {files}: every point would hold it" in backup.stderr
    # The point made before holds the tree; swapping it in place would drop the live repository.
    restore = run_cli("restore", "app", "latest", "--force", config=config)
    assert restore.returncode != 0
    assert "restoring that tree in place would replace it" in restore.stderr and "--files-to" in restore.stderr
    assert _points(config) == before
    elsewhere = run_cli("restore", "app", "latest", "--only", "files", "--files-to", str(tmp_path / "copy"),
                        config=config)
    assert elsewhere.returncode == 0, elsewhere.stderr
    assert (tmp_path / "copy" / str(files).lstrip("/") / "upload.txt").read_text() == "attachment\n"


def test_a_missing_tree_fails_the_run_and_makes_no_point(tmp_path: Path, repo: dict[str, str]) -> None:
    config = make_instance(tmp_path, repo)
    assert run_cli("backup", "app", config=config).returncode == 0
    before = _points(config)
    files = tmp_path / "app" / "files"
    shutil.rmtree(files)  # the share holding the uploads did not mount
    backup = run_cli("backup", "app", config=config)
    assert backup.returncode == 1
    errors = [line for line in backup.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"{files} does not exist, so no point was made" in errors[0], backup.stderr
    assert _points(config) == before


def test_a_restore_that_fails_part_way_names_what_is_incomplete_and_the_safety_point(
        tmp_path: Path, repo: dict[str, str], mount_point: Callable[[str, str], Path]) -> None:
    small = mount_point("small", "size=512k")  # room for the tree, not for its restored copy beside it
    tree = small / "uploads"
    tree.mkdir()
    (tree / "scan.bin").write_bytes(os.urandom(300 << 10))
    config = make_instance(tmp_path, repo)
    config.write_text(config.read_text().replace(f'files = ["{tmp_path / "app" / "files"}"]', f'files = ["{tree}"]'))
    assert run_cli("backup", "app", config=config).returncode == 0
    restore = run_cli("restore", "app", "latest", "--force", "--json", config=config)
    assert restore.returncode == 1
    warning = [line for line in restore.stderr.splitlines() if "stopped part-way" in line]
    assert warning, restore.stderr
    safety = [str(p["run_id"]) for p in list_points(load(config), "app") if p["safety_point"]]
    assert len(safety) == 1
    assert f"database {tmp_path / 'app' / 'app.db'}" in warning[0] and str(tree) in warning[0]
    assert f"safety point {safety[0]} (safehold restore app {safety[0]} --force)" in warning[0]
    assert (tree / "scan.bin").stat().st_size == 300 << 10  # the live tree was not swapped


def test_a_restore_that_fails_before_changing_anything_says_so(tmp_path: Path, repo: dict[str, str]) -> None:
    config = make_instance(tmp_path, repo)
    assert run_cli("backup", "app", config=config).returncode == 0
    upload = tmp_path / "app" / "files" / "upload.txt"
    # The database goes first, into a folder that cannot be made (a file is in the way): nothing is written.
    restore = run_cli("restore", "app", "latest", "--to-db", str(upload / "copy.db"), "--only", "db", "--only", "files",
                      config=config)
    assert restore.returncode == 1
    assert "part-way" not in restore.stderr and "may be incomplete" not in restore.stderr, restore.stderr
    assert "the restore stopped before it changed anything" in restore.stderr
    assert upload.read_text() == "attachment\n"
    # Without --only, a database copy beside files going back in place is asked about first.
    mixed = run_cli("restore", "app", "latest", "--to-db", str(tmp_path / "copy.db"), config=config)
    assert mixed.returncode == 2 and "would still go back in place over the live ones" in mixed.stderr, mixed.stderr
    assert not (tmp_path / "copy.db").exists()


def test_one_broken_instance_does_not_leave_the_others_unprotected(tmp_path: Path, repo: dict[str, str]) -> None:
    config = make_instance(tmp_path, repo)
    # A second instance whose tree holds the repository: a config error, but only for that instance.
    config.write_text(config.read_text() + f'\n[instances.broken]\nrepositories = ["main"]\nfiles = ["{tmp_path}"]\n')
    backup = run_cli("backup", "--json", config=config)
    assert backup.returncode == 3, backup.stderr
    results = {r["instance"]: r for r in json.loads(backup.stdout)}
    assert results["app"]["result"] == "ok"
    assert results["broken"]["result"] == "failed" and "lies inside" in results["broken"]["error"]
    assert len(_points(config)) == 1
    alone = run_cli("backup", "broken", config=config)
    assert alone.returncode == 2 and "lies inside" in alone.stderr
