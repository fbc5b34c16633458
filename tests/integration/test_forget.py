"""`safehold forget INSTANCE RUN...` on real restic repositories: a point goes whole from every
repository of the instance and its space is freed; the newest point, an unconfirmed removal and a
typo remove nothing; the leftovers of a run that never wrote its manifest go the same way."""

from __future__ import annotations

import json
import os
import pty
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from safehold import config as config_module
from safehold.actions.common import open_repository
from safehold.history import History
from tests.conftest import SRC, files_instances, private_file, run_cli, write_config
from tests.integration.test_core_errors import one_line_error

REPOSITORIES = ("main", "copy")


def two_copies(folder: Path) -> Path:
    """Instance `app` (files only) backed up into `main` and copied into `copy`, all inside `folder`."""
    files = folder / "files"
    files.mkdir()
    (files / "a.txt").write_text("important\n")
    password = private_file(folder / "secrets" / "repo.pass", secrets.token_urlsafe(24))
    return write_config(folder, {"url": str(folder / "main"), "password_file": str(password)},
                        files_instances(files, (folder / "copy", str(password)), app=list(REPOSITORIES)))


def backup(config: Path) -> None:
    """One point whose 1 MiB of data no other point shares, so removing it frees space."""
    (config.parent / "files" / "big.bin").write_bytes(os.urandom(1 << 20))
    made = run_cli("backup", config=config)
    assert made.returncode == 0, made.stderr


def listed(config: Path) -> dict[str, list[str]]:
    """Run ids per repository, newest first."""
    result = run_cli("list", "--json", config=config)
    assert result.returncode == 0, result.stderr
    rows: dict[str, list[str]] = {name: [] for name in REPOSITORIES}
    for row in json.loads(result.stdout):
        rows[row["repository"]].append(row["run_id"])
    return rows


def snapshots_of(config: Path, repository: str, run: str) -> list[dict[str, object]]:
    return open_repository(config_module.load(config), repository).snapshots(["instance=app", f"run={run}"])


def stored_bytes(config: Path, repository: str) -> int:
    return open_repository(config_module.load(config), repository).raw_size()


@pytest.fixture(scope="module")
def made_once(tmp_path_factory: pytest.TempPathFactory, restic: str) -> tuple[Path, list[str]]:
    """Three points in both repositories, made once for the module (each test works on a copy)."""
    config = two_copies(tmp_path_factory.mktemp("three-points"))
    for _ in range(3):
        backup(config)
    runs = listed(config)
    assert len(runs["main"]) == 3 and runs["copy"] == runs["main"]
    return config, runs["main"]


@pytest.fixture
def three_points(made_once: tuple[Path, list[str]], tmp_path: Path) -> tuple[Path, list[str]]:
    """This test's own copy of the repositories, state and config (the config names the copy's paths)."""
    original, runs = made_once
    folder = tmp_path / "three-points"
    shutil.copytree(original.parent, folder, symlinks=True)
    config = folder / original.name
    config.write_text(config.read_text().replace(str(original.parent), str(folder)))
    return config, runs


def test_the_middle_point_goes_from_every_repository_and_its_space_is_freed(three_points: tuple[Path, list[str]]
                                                                           ) -> None:
    config, (newest, middle, oldest) = three_points
    before = {name: stored_bytes(config, name) for name in REPOSITORIES}
    assert all(snapshots_of(config, name, middle) for name in REPOSITORIES)

    dry = run_cli("forget", "app", middle[:18], "--dry-run", config=config)
    assert dry.returncode == 0, dry.stderr
    assert f"would remove 1 run(s):\n  {middle}" in dry.stdout and "point in main, copy" in dry.stdout, dry.stdout
    assert "dry run: nothing was changed" in dry.stdout
    assert listed(config)["main"] == [newest, middle, oldest]

    gone = run_cli("forget", "app", middle[:18], "--yes", "--json", config=config)
    assert gone.returncode == 0, gone.stderr
    [row] = json.loads(gone.stdout)["removed"]
    assert row["run_id"] == middle and row["repositories"] == ["main", "copy"] and row["kind"] == "point"
    assert "may take a while" in gone.stderr
    assert listed(config) == {"main": [newest, oldest], "copy": [newest, oldest]}
    for name in REPOSITORIES:
        assert snapshots_of(config, name, middle) == []
        assert stored_bytes(config, name) < before[name] - (1 << 19)  # prune freed its unique data
    verified = run_cli("verify", "--read-data", config=config)
    assert verified.returncode == 0 and "verify ok" in verified.stdout, verified.stdout + verified.stderr

    [record] = History(config_module.load(config).state_dir).runs("app", "prune")
    assert record.result == "ok" and record.details["removed"] == [middle]
    assert record.details["command"] == "forget" and record.details["repositories"] == {"main": [middle],
                                                                                         "copy": [middle]}


def test_the_newest_point_goes_only_with_force_and_only_where_asked(three_points: tuple[Path, list[str]]) -> None:
    config, (newest, middle, oldest) = three_points
    refused = run_cli("forget", "app", "latest", "--yes", config=config)
    assert refused.returncode == 2
    line = one_line_error(refused)
    assert f"{newest} is the newest point of app in repository main: removing it leaves {middle} as the newest" \
        in line and "unprotected" in line and "--force" in line, line
    assert listed(config)["main"] == [newest, middle, oldest]

    forced = run_cli("forget", "app", newest, "--repository", "copy", "--force", "--yes", config=config)
    assert forced.returncode == 0, forced.stderr
    assert f"newest point removed (--force): {newest} in copy; the newest there is now {middle}" in forced.stdout, \
        forced.stdout
    assert listed(config) == {"main": [newest, middle, oldest], "copy": [middle, oldest]}


def test_a_removal_nobody_confirmed_removes_nothing(three_points: tuple[Path, list[str]]) -> None:
    config, runs = three_points
    middle = runs[1]
    # No terminal (cron, a script) and no --yes: refused before anything is locked or removed.
    refused = run_cli("forget", "app", middle, config=config, input="y\n")
    assert refused.returncode == 2
    assert "no terminal to ask on" in one_line_error(refused) and "--yes" in refused.stderr
    # On a terminal the person sees what goes, and only a yes removes it.
    said_no = on_terminal(config, middle, "n\n")
    assert said_no.returncode == 2 and "not confirmed; nothing was removed" in said_no.stderr, said_no.stderr
    assert f"{middle}  " in said_no.stderr and "point in main, copy" in said_no.stderr
    assert listed(config)["main"] == runs
    said_yes = on_terminal(config, middle, "y\n")
    assert said_yes.returncode == 0, said_yes.stderr
    assert listed(config)["main"] == [runs[0], runs[2]]


def on_terminal(config: Path, run: str, answer: str) -> subprocess.CompletedProcess[str]:
    """`safehold forget app RUN` with its standard input on a terminal that types `answer`."""
    main, child = pty.openpty()
    os.write(main, answer.encode())
    try:
        return subprocess.run([sys.executable, "-m", "safehold", "forget", "app", run, "--config", str(config)],
                              stdin=child, capture_output=True, text=True, timeout=600,
                              env={**os.environ, "PYTHONPATH": str(SRC)})
    finally:
        os.close(child)
        os.close(main)


def test_a_typo_or_an_ambiguous_prefix_removes_nothing(three_points: tuple[Path, list[str]]) -> None:
    config, runs = three_points
    unknown = run_cli("forget", "app", runs[1], "20991231T000000Z-none", "--yes", config=config)
    assert unknown.returncode == 2
    assert "no run '20991231T000000Z-none' of app in repositories main, copy; nothing was removed" in \
        one_line_error(unknown)
    ambiguous = run_cli("forget", "app", runs[1][:4], "--yes", config=config)
    assert ambiguous.returncode == 2
    assert f"{runs[1][:4]!r} matches 3 runs of app" in one_line_error(ambiguous)
    elsewhere = run_cli("forget", "app", runs[1], "--repository", "nas", "--yes", config=config)
    assert elsewhere.returncode == 2 and "does not use repository nas" in one_line_error(elsewhere)
    assert listed(config)["main"] == runs


def test_the_parts_of_a_run_that_wrote_no_manifest_are_removed(three_points: tuple[Path, list[str]]) -> None:
    config, runs = three_points
    killed = "20261120T010000Z-dead"
    for name in REPOSITORIES:  # what a run killed after its database part left
        open_repository(config_module.load(config), name).run(
            "backup", "--stdin", "--stdin-filename", "/safehold/db/sqlite-data.sqlite", "--time", "2026-11-20 01:00:00",
            "--tag", f"safehold,instance=app,run={killed},part=db:sqlite-data", input=b"half a dump")

    dry = run_cli("forget", "app", killed, "--dry-run", config=config)
    assert dry.returncode == 0, dry.stderr
    assert f"  {killed}  2026-11-20 01:00 UTC  incomplete run (no manifest) in main, copy" in dry.stdout, dry.stdout
    gone = run_cli("forget", "app", killed, "--repository", "main", "--yes", config=config)
    assert gone.returncode == 0, gone.stderr
    assert snapshots_of(config, "main", killed) == [] and len(snapshots_of(config, "copy", killed)) == 1
    assert listed(config)["main"] == runs  # the points are untouched
