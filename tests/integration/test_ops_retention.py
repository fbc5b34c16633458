"""Retention runs only after a successful backup; `prune --dry-run` shows what would go."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from safehold.actions.backup import backup_instance
from safehold.actions.points import list_points
from safehold.config import load
from safehold.errors import SafeholdError
from safehold.history import History
from safehold.output import Silent
from tests.conftest import run_cli, write_config
from tests.integration.unattended import make_instance


def point_ids(config: Path) -> list[str]:
    return [str(p["run_id"]) for p in list_points(load(config), "app")]


def test_failed_run_prunes_nothing_and_the_next_good_one_does(tmp_path: Path, repo: dict[str, str]) -> None:
    textfile = tmp_path / "node-exporter" / "safehold.prom"
    config = make_instance(tmp_path, repo, "retention = { last = 1, after_backup = false }",
                           settings=f'metrics_textfile = "{textfile}"')
    for _ in range(2):
        backup_instance(load(config), "app", Silent())
    points = point_ids(config)
    assert len(points) == 2

    dry = run_cli("prune", "app", "--dry-run", "--json", config=config)
    row = json.loads(dry.stdout)[0]
    assert row["remove"] == [points[1]] and row["keep"] == [points[0]] and row["why"][points[0]][0] == "newest"
    assert point_ids(config) == points  # a dry run changes nothing

    # Retention on, but the run fails (its quiesce command fails): nothing may be pruned.
    text = config.read_text().replace("after_backup = false", "after_backup = true")
    config.write_text(text.replace('files = [', 'quiesce = { stop = [["false"]] }\nfiles = [', 1))
    with pytest.raises(SafeholdError, match="quiesce command 'false' failed"):
        backup_instance(load(config), "app", Silent())
    assert point_ids(config) == points
    history = History(load(config).state_dir)
    assert [(r.kind, r.result) for r in history.runs("app")] == [("backup", "failed"), ("backup", "ok"),
                                                                 ("backup", "ok")]

    config.write_text(text)
    backup_instance(load(config), "app", Silent())
    after = point_ids(config)
    assert len(after) == 1 and after[0] not in points
    kinds = [(r.kind, r.result) for r in history.runs("app")]
    assert kinds[:2] == [("prune", "ok"), ("backup", "ok")]
    assert history.runs("app", "prune")[0].details["removed"] == sorted(points)
    assert history.last_success("app").details["points"] == {"main": 1}
    # The node-exporter textfile was rewritten after the run and parses.
    samples = {(s.name, s.labels.get("kind")): s.value
               for f in text_string_to_metric_families(textfile.read_text()) for s in f.samples}
    assert samples[("safehold_last_run_success", "backup")] == 1
    assert samples[("safehold_points", None)] == 1


def test_safety_points_never_take_a_regular_points_slot(tmp_path: Path, repo: dict[str, str]) -> None:
    # A restore of the config only takes a safety point holding the config only; with last = 1 it
    # used to become "the newest" and every complete point was pruned.
    config = make_instance(tmp_path, repo, "retention = { last = 1, after_backup = false }")
    for _ in range(2):
        backup_instance(load(config), "app", Silent())
    older, newest = sorted(point_ids(config))
    restored = run_cli("restore", "app", "latest", "--only", "files", "--force", "--json", config=config)
    assert restored.returncode == 0, restored.stderr
    safety = json.loads(restored.stdout)["safety_point"]
    assert safety

    dry = json.loads(run_cli("prune", "app", "--dry-run", "--json", config=config).stdout)[0]
    assert sorted(dry["keep"]) == sorted([newest, safety]) and dry["remove"] == [older]
    assert dry["why"][newest] == ["newest", "last"]
    assert dry["why"][safety] == ["safety point, kept 14 days"]
    assert run_cli("prune", "app", config=config).returncode == 0
    assert sorted(point_ids(config)) == sorted([newest, safety])
    listed = run_cli("restore", "app", "latest", "--dry-run", "--json", config=config)
    assert json.loads(listed.stdout)["plan"]["run_id"] == newest  # `latest` is still the complete point


def test_a_noted_point_with_keep_days_outlives_the_rules(tmp_path: Path, repo: dict[str, str]) -> None:
    # The ITFlow way: an on-demand point before an update, with a note and kept 30 days.
    config = make_instance(tmp_path, repo, "retention = { last = 1, after_backup = false }")
    backup_instance(load(config), "app", Silent())
    made = run_cli("backup", "app", "--note", "before update to 25.06", "--keep-days", "30", "--json", config=config)
    assert made.returncode == 0, made.stderr
    noted = json.loads(made.stdout)[0]
    assert noted["note"] == "before update to 25.06"
    backup_instance(load(config), "app", Silent())
    oldest, kept, newest = sorted(point_ids(config))
    assert kept == noted["run_id"]

    rows = {row["run_id"]: row for row in json.loads(run_cli("list", "app", "--json", config=config).stdout)}
    assert rows[kept]["note"] == "before update to 25.06" and rows[newest]["note"] is None
    until = datetime.fromisoformat(rows[kept]["keep_until"])
    assert until - datetime.fromisoformat(rows[kept]["started"]) == timedelta(days=30)
    table = run_cli("list", "app", config=config).stdout
    assert f"{kept}: before update to 25.06; kept until {until:%Y-%m-%d}" in table, table  # never cut off
    shown = json.loads(run_cli("show", kept[:18], "--json", config=config).stdout)
    assert shown["note"] == "before update to 25.06" and datetime.fromisoformat(shown["keep_until"]) == until
    assert "before update to 25.06" in run_cli("show", kept, config=config).stdout

    reason = f"kept until {until:%Y-%m-%d} (--keep-days)"
    dry = run_cli("prune", "app", "--dry-run", config=config)
    assert f"keep {kept} ({reason})" in dry.stdout and f"would remove 1: {oldest}" in dry.stdout, dry.stdout
    assert run_cli("prune", "app", config=config).returncode == 0
    assert sorted(point_ids(config)) == [kept, newest]

    # A bad note is refused in one line before anything is made.
    for bad in ("before\nafter", "x" * 201):
        refused = run_cli("backup", "app", "--note", bad, config=config)
        assert refused.returncode == 2 and "nothing was backed up" in refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    # Retention after a backup weighs the kept point the same way: the previous newest goes, it stays.
    text = config.read_text().replace("after_backup = false", "after_backup = true")
    config.write_text(text)
    latest = backup_instance(load(config), "app", Silent())["run_id"]
    assert sorted(point_ids(config)) == [kept, latest]


def _with_copies(tmp_path: Path, repo: dict[str, str], copies: tuple[str, ...], instances: str) -> Path:
    """A config with local repositories `copies` beside `main` and `instances` (TOML; {files} is a small tree)."""
    files = tmp_path / "files"
    files.mkdir()
    (files / "a.txt").write_text("one\n")
    password = repo["password_file"]
    repositories = "".join(f'[repositories.{name}]\nurl = "{tmp_path / name}"\npassword = "file:{password}"\n'
                           for name in copies)
    return write_config(tmp_path, repo, repositories + instances.replace("{files}", str(files)))


def test_a_repository_that_cannot_be_pruned_does_not_stop_retention_in_the_others(tmp_path: Path,
                                                                                   repo: dict[str, str]) -> None:
    # An unreachable copy (NAS down) must not leave the repositories after it growing: each is pruned,
    # and the run ends partial naming the one that was not.
    config = _with_copies(tmp_path, repo, ("nas", "cloud"), """
[instances.app]
repositories = ["main", "nas", "cloud"]
files = ["{files}"]
retention = { last = 1, after_backup = false }
""")
    for _ in range(2):
        assert run_cli("backup", "app", config=config).returncode == 0
    (tmp_path / "nas" / "config").rename(tmp_path / "nas-config")  # nas unreadable for now
    result = run_cli("prune", "app", config=config)
    assert result.returncode == 3, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "retention of app not applied in nas: repository nas" in errors[0], result.stderr
    (tmp_path / "nas-config").rename(tmp_path / "nas" / "config")
    listed = json.loads(run_cli("list", "app", "--json", config=config).stdout)
    assert sorted(row["repository"] for row in listed) == ["cloud", "main", "nas", "nas"]


def test_prune_of_every_instance_goes_on_past_one_that_fails(tmp_path: Path, repo: dict[str, str]) -> None:
    # A night `safehold prune` of all instances: the first one's NAS being down must not leave the
    # others' repositories growing; the run ends partial (as `safehold backup` does) naming it.
    config = _with_copies(tmp_path, repo, ("nas",), """
[instances.first]
repositories = ["nas"]
files = ["{files}"]
retention = { last = 1, after_backup = false }
[instances.app]
repositories = ["main"]
files = ["{files}"]
retention = { last = 1, after_backup = false }
""")
    for _ in range(2):
        assert run_cli("backup", config=config).returncode == 0
    (tmp_path / "nas" / "config").rename(tmp_path / "nas-config")  # first's repository unreadable for now
    result = run_cli("prune", config=config)
    assert result.returncode == 3, result.stdout + result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: first: repository nas"), result.stderr
    assert "app@main: keep 1, removed 1" in result.stdout, result.stdout
    assert len(point_ids(config)) == 1
    # Every instance failing is a failure, not a partial run.
    (tmp_path / "repo" / "config").rename(tmp_path / "main-config")
    assert run_cli("prune", config=config).returncode == 1


def test_a_partial_run_still_applies_retention_where_the_point_is(tmp_path: Path, repo: dict[str, str]) -> None:
    # A NAS down for weeks must not fill the local disk: the run is partial (its copy missing), but the
    # point is stored, so the repositories that hold it are pruned as after a complete run.
    config = _with_copies(tmp_path, repo, ("nas",), """
[instances.app]
repositories = ["main", "nas"]
files = ["{files}"]
retention = { last = 1 }
""")
    for _ in range(2):
        assert run_cli("backup", "app", config=config).returncode == 0
    (tmp_path / "nas" / "config").rename(tmp_path / "nas-config")  # nas unreadable for now
    result = run_cli("backup", "app", config=config)
    assert result.returncode == 3, result.stderr
    assert "retention of app not applied in nas" in result.stderr
    (tmp_path / "nas-config").rename(tmp_path / "nas" / "config")
    listed = json.loads(run_cli("list", "app", "--json", config=config).stdout)
    assert sorted(row["repository"] for row in listed) == ["main", "nas"]  # main: only the new point
