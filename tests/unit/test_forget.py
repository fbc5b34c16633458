"""`safehold forget` without restic: which runs a selector names, when the newest point is hit, what
the person is shown, what is refused before anything goes, what is recorded, and the commands
`verify --repair` gives for damaged points."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from safehold.actions import forget as forget_action
from safehold.actions.common import Point
from safehold.actions.forget import Holding, Refused, describe, forget, newest_removed, resolve
from safehold.actions.verify import removal_commands
from safehold.config import load
from safehold.errors import EXIT_USAGE
from safehold.history import History
from safehold.output import Silent
from safehold.repository.manifest import Manifest
from safehold.repository.restic import Repository
from safehold.secrets import Secret
from tests.conftest import files_instances
from tests.unit.test_cli_input import files_config

T0 = datetime(2026, 11, 20, 1, 0, tzinfo=UTC)
OLD, MIDDLE, NEW, SAFETY = "20261120T010000Z-aaaa", "20261121T010000Z-bbbb", "20261122T010000Z-cccc", \
    "20261122T120000Z-dddd"
KILLED = "20261123T010000Z-eeee"
# The same password file as `main` (files_config writes it beside the files folder).
COPY_REPOSITORY = files_instances("", ("/srv/copy", "{files}/../secrets/repo.pass"))


class FakeRepository(Repository):
    """Records what would be removed instead of running restic."""

    def __init__(self, name: str) -> None:
        super().__init__(name, f"/srv/{name}", Secret("x" * 20, "file:/etc/safehold/repo.pass"))
        self.forgotten: list[str] = []
        self.pruned = 0

    def forget(self, snapshot_ids: Any) -> None:
        self.forgotten += snapshot_ids

    def prune(self) -> None:
        self.pruned += 1


def snapshot(run: str, part: str, day: int) -> dict[str, Any]:
    sid = f"{part[:2]}{run[-4:]}".encode().hex().ljust(64, "0")
    return {"id": sid, "short_id": sid[:8], "time": f"2026-11-{day:02d}T01:00:00.123456789Z",
            "tags": ["safehold", "instance=app", f"run={run}", f"part={part}"]}


def holding(name: str, runs: dict[str, int], safety: set[str] = frozenset(), complete: set[str] | None = None,
            note: str | None = None) -> Holding:
    """A repository holding each run of `runs` (run id -> day it started); those in `complete` have a manifest."""
    complete = set(runs) if complete is None else complete
    snaps = {run: [snapshot(run, "files", day)] + ([snapshot(run, "manifest", day)] if run in complete else [])
             for run, day in runs.items()}
    points = [Point(Manifest(run_id=run, instance="app", app="generic", host="h", safehold_version="0",
                             started=T0 + timedelta(days=day - 20), safety_point=run in safety, note=note),
                    snaps[run][-1]["id"], name) for run, day in runs.items() if run in complete]
    points.sort(key=lambda p: p.manifest.started, reverse=True)
    return Holding(FakeRepository(name), snaps, points)


def both() -> list[Holding]:
    # `copy` lacks the newest point (its copy failed) and holds the leftovers of a killed run.
    return [holding("main", {OLD: 20, MIDDLE: 21, NEW: 22, SAFETY: 22}, safety={SAFETY}),
            holding("copy", {OLD: 20, MIDDLE: 21, KILLED: 23}, complete={OLD, MIDDLE})]


def test_a_run_is_named_by_its_id_a_prefix_or_latest() -> None:
    holdings = both()
    assert resolve([MIDDLE], holdings, "app") == [MIDDLE]
    assert resolve(["20261121", OLD, MIDDLE], holdings, "app") == [MIDDLE, OLD]  # in order, once each
    assert resolve([KILLED[:12]], holdings, "app") == [KILLED]  # a run without a manifest too
    assert resolve(["latest"], holdings, "app") == [NEW]  # not the newer safety point
    part = holdings[0].runs[OLD][0]["id"]
    assert resolve([part[:8]], holdings, "app") == [OLD]  # a snapshot id names its run


@pytest.mark.parametrize(("selector", "says"), [
    ("20991231", "no run '20991231' of app in repositories main, copy; nothing was removed"),
    ("2026112", "'2026112' matches 5 runs of app (20261120T010000Z-aaaa, 20261121T010000Z-bbbb, "
                "20261122T010000Z-cccc, …); nothing was removed"),
])
def test_a_typo_or_an_ambiguous_prefix_is_a_usage_error(selector: str, says: str) -> None:
    with pytest.raises(Refused) as caught:
        resolve([MIDDLE, selector], both(), "app")
    assert caught.value.message == says and caught.value.exit_code == EXIT_USAGE


def test_latest_of_a_repository_without_points_names_none() -> None:
    empty = [holding("main", {KILLED: 23}, complete=set())]
    with pytest.raises(Refused, match="no run 'latest' of app in repository main"):
        resolve(["latest"], empty, "app")


def test_the_newest_regular_point_is_hit_per_repository() -> None:
    holdings = both()
    assert newest_removed(holdings, [OLD, KILLED, SAFETY]) == []
    assert newest_removed(holdings, [NEW]) == [{"repository": "main", "run_id": NEW, "newest_after": MIDDLE}]
    # MIDDLE is the newest point `copy` holds: removing it there leaves that copy a day behind.
    assert newest_removed(holdings, [MIDDLE]) == [{"repository": "copy", "run_id": MIDDLE, "newest_after": OLD}]
    assert newest_removed(holdings, [NEW, MIDDLE]) == [
        {"repository": "main", "run_id": NEW, "newest_after": OLD},
        {"repository": "copy", "run_id": MIDDLE, "newest_after": OLD}]
    assert newest_removed(holdings, [NEW, MIDDLE, OLD])[0]["newest_after"] is None


def test_what_goes_is_described_with_its_kind_note_and_repositories() -> None:
    holdings = [holding("main", {OLD: 20, SAFETY: 22}, safety={SAFETY}, note="before update"),
                holding("copy", {OLD: 20, KILLED: 23}, complete={OLD})]
    rows = {row["run_id"]: row for row in describe(holdings, [OLD, SAFETY, KILLED])}
    assert rows[OLD] == {"run_id": OLD, "repositories": ["main", "copy"], "snapshots": 4, "started": T0,
                         "kind": "point", "note": "before update", "keep_until": None}
    assert rows[SAFETY]["kind"] == "safety" and rows[SAFETY]["repositories"] == ["main"]
    assert rows[KILLED]["kind"] == "incomplete" and rows[KILLED]["note"] is None
    assert rows[KILLED]["started"] == datetime(2026, 11, 23, 1, 0, 0, 123456, tzinfo=UTC)


@pytest.fixture
def planned(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, list[Holding]]:
    """Instance `app` with repositories main and copy, listed as `both()` (no restic runs)."""
    config = files_config(tmp_path, COPY_REPOSITORY + files_instances("{files}", app=["main", "copy"]))
    holdings = both()
    monkeypatch.setattr(forget_action, "_holdings", lambda config, instance, names: [
        h for h in holdings if h.name in names])
    return load(config), holdings


def test_nothing_goes_unless_confirmed_and_a_dry_run_asks_nothing(planned: tuple[Any, list[Holding]]) -> None:
    config, holdings = planned
    asked: list[list[dict[str, Any]]] = []

    def answer(no: bool) -> Any:
        return lambda rows: asked.append(rows) is not None or not no

    with pytest.raises(Refused, match="no terminal to ask on; nothing was removed") as caught:
        forget(config, "app", [OLD], Silent())
    assert "--yes" in caught.value.hint
    with pytest.raises(Refused, match="not confirmed; nothing was removed"):
        forget(config, "app", [OLD], Silent(), confirm=answer(no=True))
    assert [row["run_id"] for row in asked[0]] == [OLD]
    dry = forget(config, "app", [OLD], Silent(), dry_run=True, confirm=answer(no=True))
    assert dry["dry_run"] and [row["run_id"] for row in dry["removed"]] == [OLD] and len(asked) == 1
    # The newest point is refused before anyone is asked.
    with pytest.raises(Refused, match=f"{NEW} is the newest point of app in repository main: removing it leaves "
                                      f"{MIDDLE} as the newest there"):
        forget(config, "app", ["latest"], Silent(), confirm=answer(no=False))
    assert len(asked) == 1
    assert all(not h.repository.forgotten and not h.repository.pruned for h in holdings)  # type: ignore[attr-defined]
    assert History(config.state_dir).runs("app") == []


def test_a_confirmed_removal_goes_from_each_repository_and_is_recorded(planned: tuple[Any, list[Holding]]) -> None:
    config, (main, copy) = planned
    result = forget(config, "app", [OLD, KILLED], Silent(), confirm=lambda rows: True)
    assert [row["run_id"] for row in result["removed"]] == [OLD, KILLED] and result["newest"] == []
    assert main.repository.forgotten == [s["id"] for s in main.runs[OLD]]  # type: ignore[attr-defined]
    assert copy.repository.forgotten == [s["id"] for s in copy.runs[OLD] + copy.runs[KILLED]]  # type: ignore[attr-defined]
    assert main.repository.pruned == copy.repository.pruned == 1  # type: ignore[attr-defined]
    [run] = History(config.state_dir).runs("app")
    assert (run.kind, run.result) == ("prune", "ok")
    assert run.details == {"command": "forget", "removed": [OLD, KILLED],
                           "repositories": {"main": [OLD], "copy": [OLD, KILLED]}}


def test_force_and_one_repository(planned: tuple[Any, list[Holding]]) -> None:
    config, (main, copy) = planned
    result = forget(config, "app", [MIDDLE], Silent(), repository="copy", force=True, yes=True)
    assert result["newest"] == [{"repository": "copy", "run_id": MIDDLE, "newest_after": OLD}]
    assert not main.repository.forgotten and copy.repository.forgotten  # type: ignore[attr-defined]
    with pytest.raises(Refused, match=f"no run {NEW!r} of app in repository copy"):
        forget(config, "app", [NEW], Silent(), repository="copy", yes=True)


def test_repair_names_damaged_points_with_safehold_forget(tmp_path: Path) -> None:
    config = load(files_config(tmp_path, COPY_REPOSITORY + files_instances("{files}", app=["main"],
                                                                           crm=["main", "copy"])))
    repo = Repository("main", "/srv/main", Secret("x" * 20, "file:/etc/safehold/repo.pass"))
    lost = {("app", OLD): ["aa"], ("app", MIDDLE): ["bb", "cc"], ("crm", OLD): ["dd"],
            ("gone", OLD): ["ee"], ("?", "?"): ["ff"]}
    assert removal_commands(config, repo, lost) == [
        f"safehold forget app {OLD} {MIDDLE}",
        f"safehold forget crm {OLD} --repository main",  # its copy in `copy` may be whole
        # An instance no longer configured (or an untagged snapshot): only restic can name it.
        "RESTIC_REPOSITORY=/srv/main RESTIC_PASSWORD_FILE=/etc/safehold/repo.pass restic forget --prune ee ff"]
    assert removal_commands(config, repo, {}) == []
