"""Trees that hold safehold's own repository, and trees that are missing (an unmounted share)."""

from __future__ import annotations

import shutil
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
