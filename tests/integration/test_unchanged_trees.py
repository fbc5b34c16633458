"""Issue 21: an unchanged run takes its tree records from the last point instead of listing the snapshot
again (actions.last_trees), and any change, or a parent that is gone, lists as before."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest

from tests.conftest import run_cli, sql
from tests.integration.test_core_roundtrip import app_config


@pytest.fixture
def counted(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """An environment whose `restic` logs each command it runs (first argument) to a file, then runs it."""
    log = tmp_path / "restic-commands.log"
    folder = tmp_path / "counting-bin"
    folder.mkdir()
    wrapper = folder / "restic"
    wrapper.write_text(f'#!/bin/sh\necho "$1" >> {log}\nexec {shutil.which("restic")} "$@"\n')
    wrapper.chmod(0o755)
    return {"PATH": f"{folder}{os.pathsep}{os.environ['PATH']}"}, log


def _backup(config: Path, env: dict[str, str], log: Path) -> tuple[dict[str, object], list[str]]:
    """Run a backup; its manifest and the restic commands it ran."""
    log.unlink(missing_ok=True)
    result = run_cli("backup", "app", "--json", config=config, env=env)
    assert result.returncode == 0, result.stderr
    commands = log.read_text().split()
    run_id = json.loads(result.stdout)[0]["run_id"]
    shown = run_cli("show", "app", run_id, "--json", config=config)
    assert shown.returncode == 0, shown.stderr
    return json.loads(shown.stdout), commands


def _trees(manifest: dict[str, object]) -> list[dict[str, object]]:
    return manifest["trees"]  # type: ignore[return-value]


def _restic_env(repo: dict[str, str]) -> dict[str, str]:
    return {**os.environ, "RESTIC_REPOSITORY": repo["url"], "RESTIC_PASSWORD_FILE": repo["password_file"]}


def _listed(repo: dict[str, str], manifest: dict[str, object]) -> list[tuple[str, int, int]]:
    """(root, files, bytes) of each tree of a point, from `restic ls` of its files snapshot."""
    listing = subprocess.run(["restic", "ls", "--json", str(manifest["files_snapshot"])], check=True,
                             capture_output=True, env=_restic_env(repo)).stdout
    nodes = [n for n in map(json.loads, listing.splitlines()) if n.get("struct_type") == "node"]
    result = []
    for tree in _trees(manifest):
        inside = [n for n in nodes if n["type"] in ("file", "symlink")
                  and (n["path"] == tree["root"] or n["path"].startswith(str(tree["root"]) + "/"))]
        result.append((str(tree["root"]), len(inside), sum(n.get("size", 0) for n in inside if n["type"] == "file")))
    return result


def test_unchanged_trees_are_not_listed_again_and_any_change_is(tmp_path: Path, repo: dict[str, str], new_db,
                                                                counted: tuple[dict[str, str], Path]) -> None:
    env, log = counted
    db = new_db("t_points")
    sql(["CREATE TABLE t (id INT PRIMARY KEY)", "INSERT INTO t VALUES (1)"], db)
    app = tmp_path / "app"
    (app / "uploads" / "deep" / "er").mkdir(parents=True)
    for index in range(40):
        (app / "uploads" / "deep" / "er" / f"file-{index}.txt").write_text(f"content {index}\n" * index)
    (app / "uploads" / "link").symlink_to("deep")
    (app / "app.ini").write_text("[app]\n")
    sqlite3.connect(app / "app.sqlite").close()
    config = app_config(tmp_path, repo, db, app)
    first, commands = _backup(config, env, log)
    assert commands.count("ls") == 1
    # Nothing changed: restic compared with the last point's snapshot and found both roots unchanged.
    second, commands = _backup(config, env, log)
    assert "ls" not in commands, commands
    unchanged_backups = commands.count("backup")
    assert _trees(second) == _trees(first)
    assert second["files_snapshot"] != first["files_snapshot"]
    # The records kept are those of the new snapshot, as a listing of it gives them.
    assert [(t["root"], t["files"], t["bytes"]) for t in _trees(second)] == _listed(repo, second)

    # A file deep in the tree grows: listed again, and the records say so.
    with (app / "uploads" / "deep" / "er" / "file-3.txt").open("a") as grown:
        grown.write("more\n")
    third, commands = _backup(config, env, log)
    assert commands.count("ls") == 1
    uploads = {t["root"]: t for t in _trees(third)}[str(app / "uploads")]
    assert uploads["bytes"] == {t["root"]: t for t in _trees(second)}[str(app / "uploads")]["bytes"] + 5

    # The kept parent was forgotten behind safehold's back: restic picks its own and the run lists.
    record = json.loads((tmp_path / "state" / "trees" / "main" / "app.json").read_text())
    subprocess.run(["restic", "forget", record["snapshot"]], check=True, capture_output=True, env=_restic_env(repo))
    fourth, commands = _backup(config, env, log)
    assert commands.count("ls") == 1
    assert commands.count("backup") == unchanged_backups + 1  # the files once with that parent, once without
    assert _trees(fourth) == _trees(third)
