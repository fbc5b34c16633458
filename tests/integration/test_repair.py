"""A pack file lost from a real restic repository: verify says how to repair, backups wait for the
repair, `verify --repair` rebuilds the index and names the damaged point, and the next point is whole."""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path

import pytest

from safehold import config as config_module
from safehold.actions.common import open_repository
from safehold.repository import damage
from safehold.repository.restic import RepositoryDamaged
from tests.conftest import files_instances, run_cli, write_config
from tests.integration.test_core_errors import FILES_ONLY, one_line_error

REPAIR = "safehold verify --repair"


@pytest.fixture
def files_instance(tmp_path: Path, repo: dict[str, str]) -> Path:
    files = tmp_path / "files"
    files.mkdir()
    (files / "a.txt").write_text("important\n")
    (files / "big.bin").write_bytes(os.urandom(1 << 20))
    return write_config(tmp_path, repo, FILES_ONLY.format(files=files))


def run_ids(config: Path) -> list[str]:
    listed = run_cli("list", "--json", config=config)
    assert listed.returncode == 0, listed.stderr
    return [row["run_id"] for row in json.loads(listed.stdout)]


def packs(repo: dict[str, str]) -> list[Path]:
    return [p for p in (Path(repo["url"]) / "data").rglob("*") if p.is_file()]


def test_lost_pack_is_repaired_and_the_next_point_is_whole(files_instance: Path, repo: dict[str, str]) -> None:
    assert run_cli("backup", config=files_instance).returncode == 0
    [old] = run_ids(files_instance)
    # The pack of big.bin's data (a lost tree pack makes restic retry every tree for minutes).
    max(packs(repo), key=lambda p: p.stat().st_size).unlink()

    found = run_cli("verify", config=files_instance)
    assert found.returncode == 1, found.stderr
    assert "problem: repository main is damaged: data its snapshots need is missing" in found.stdout
    assert f"run `{REPAIR}`" in found.stdout
    check = run_cli("check", config=files_instance)
    assert check.returncode == 2 and "repository-damage: repository main is damaged" in check.stdout, check.stdout

    # The index still lists the lost data: a backup would reuse it, so none is made.
    refused = run_cli("backup", config=files_instance)
    assert refused.returncode == 1
    assert one_line_error(refused).endswith(f"nothing was stored — run `{REPAIR}` first")
    assert run_ids(files_instance) == [old]

    # The source changes too, so the next backup cannot make the old point whole again.
    (files_instance.parent / "files" / "big.bin").write_bytes(os.urandom(1 << 20))
    repaired = run_cli("verify", "--repair", config=files_instance)
    assert repaired.returncode == 1, repaired.stderr
    said = repaired.stdout + repaired.stderr
    assert f"problem: repository main: point {old} of app lost data; it is kept" in repaired.stdout, said
    [forget] = [line.strip() for line in repaired.stdout.splitlines() if "forget" in line]
    assert forget == f"safehold forget app {old}"  # the instance's only repository: no --repository
    assert repo["password"] not in said

    new = run_cli("backup", config=files_instance)
    assert new.returncode == 0, new.stderr
    [latest, _] = run_ids(files_instance)
    # Only the old point lost data: a repair now names it alone.
    again = run_cli("verify", "--repair", "--json", config=files_instance)
    assert again.returncode == 1
    [row] = json.loads(again.stdout)["repositories"]
    assert [p["run_id"] for p in row["damaged"]] == [old] and row["forget"] == [forget]
    assert run_cli("verify", "--read-data", config=files_instance).returncode == 1

    # The line runs as printed (with --yes: no terminal here); then every stored byte checks out and
    # the new point restores.
    removed = run_cli(*shlex.split(forget)[1:], "--yes", config=files_instance)
    assert removed.returncode == 0, removed.stderr
    whole = run_cli("verify", "--read-data", config=files_instance)
    assert whole.returncode == 0 and "verify ok" in whole.stdout, whole.stdout + whole.stderr
    assert run_ids(files_instance) == [latest]
    assert "repository-damage" not in run_cli("check", config=files_instance).stdout
    drill = run_cli("drill", "--json", config=files_instance)
    assert drill.returncode == 0, drill.stdout + drill.stderr
    assert json.loads(drill.stdout)[0]["run_id"] == latest


def test_verify_repair_of_a_sound_repository_changes_nothing(files_instance: Path) -> None:
    assert run_cli("backup", config=files_instance).returncode == 0
    result = run_cli("verify", "app", "--repair", config=files_instance)
    assert result.returncode == 0, result.stderr
    assert "main: sound" in result.stdout and "rebuilding" not in result.stderr
    refused = run_cli("verify", "20261126", "--repair", config=files_instance)
    assert refused.returncode == 2 and "no instance '20261126'" in one_line_error(refused)


def test_a_copy_into_a_repository_that_lost_data_waits_for_its_repair(tmp_path: Path, repo: dict[str, str]) -> None:
    files = tmp_path / "files"
    files.mkdir()
    (files / "a.txt").write_text("important\n")
    path = write_config(tmp_path, repo, files_instances(files, (tmp_path / "copy", repo["password_file"]),
                                                        app=["main", "copy"]))
    config = config_module.load(path)
    lost = RepositoryDamaged("repository copy is damaged: data its snapshots need is missing", "", unsafe=True)
    damage.record(config.state_dir, "copy", lost, read_data=False)
    result = run_cli("backup", config=path)
    assert result.returncode == 3, result.stderr  # partial: the point is in main
    assert "copy to copy failed: repository copy is damaged" in result.stderr
    assert f"run `{REPAIR}` first" in result.stderr
    assert not (tmp_path / "copy").exists()


def tree_packs(config: config_module.Config) -> list[str]:
    """Pack files that hold only trees (restic keeps trees and data in separate packs)."""
    repo = open_repository(config, "main")
    found = []
    for index in repo.run("list", "index").decode().split():
        for pack in repo.run_json("cat", "index", index)["packs"]:
            if all(blob["type"] == "tree" for blob in pack["blobs"]):
                found.append(pack["id"])
    return found


def test_a_point_whose_trees_were_lost_is_no_parent_for_the_next_backup(files_instance: Path,
                                                                         repo: dict[str, str]) -> None:
    # restic 0.14 fails a backup whose parent snapshot's tree is lost ("tree … is not known", exit 3), so
    # while damaged points remain, file backups read every file instead of trusting a parent.
    assert run_cli("backup", config=files_instance).returncode == 0
    [old] = run_ids(files_instance)
    config = config_module.load(files_instance)
    for pack in tree_packs(config):
        (Path(repo["url"]) / "data" / pack[:2] / pack).unlink()
    # What verify records (its restic check retries each lost tree for minutes, so it is not run here).
    damage.record(config.state_dir, "main", RepositoryDamaged("repository main is damaged", "", True), False)
    repaired = run_cli("verify", "--repair", "--json", config=files_instance)
    assert repaired.returncode == 1, repaired.stderr
    [row] = json.loads(repaired.stdout)["repositories"]
    assert row["repaired"] and [p["run_id"] for p in row["damaged"]] == [old]
    new = run_cli("backup", config=files_instance)
    assert new.returncode == 0, new.stderr
    drill = run_cli("drill", "--json", config=files_instance)
    assert drill.returncode == 0, drill.stdout + drill.stderr
