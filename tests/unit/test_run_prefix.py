"""A run id prefix that matches several points says so, wherever the point is searched for."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from safehold.actions import common
from safehold.config import parse
from safehold.errors import AmbiguousPoint, ConfigError, UnknownPoint
from tests.unit.test_config import BASE as CONFIG

RUNS = ["20261125T233012Z-aaaa", "20261125T233545Z-bbbb", "20261124T233001Z-cccc"]


@pytest.fixture
def config(monkeypatch: pytest.MonkeyPatch) -> object:
    monkeypatch.setattr(common, "open_repository", lambda config, name: SimpleNamespace(name=name))
    found = [common.Point(SimpleNamespace(run_id=run, safety_point=False), f"snap{i}", "main")  # type: ignore[arg-type]
             for i, run in enumerate(RUNS)]
    monkeypatch.setattr(common, "points", lambda config, repo, instance: found)
    return parse(CONFIG, Path("safehold.toml"))


def test_ambiguous_prefix_names_the_matches(config: object) -> None:
    with pytest.raises(AmbiguousPoint) as info:
        common.search_point(config, "20261125T233")  # type: ignore[arg-type]
    assert info.value.exit_code == 2
    assert "matches 2 points" in info.value.message and RUNS[0] in info.value.message
    assert "more characters" in info.value.hint


def test_unique_prefix_and_unknown_run(config: object) -> None:
    assert common.search_point(config, "20261124")[1].run_id == RUNS[2]  # type: ignore[arg-type]
    with pytest.raises(UnknownPoint, match="no point '2027' found") as info:
        common.search_point(config, "2027")  # type: ignore[arg-type]
    assert not isinstance(info.value, AmbiguousPoint)


def test_latest_needs_the_instance_when_several_are_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(common, "open_repository", lambda config, name: SimpleNamespace(name=name))
    runs = {"app": RUNS[:2], "crm": ["20261126T010000Z-dddd"]}
    monkeypatch.setattr(common, "points", lambda config, repo, instance: [
        common.Point(SimpleNamespace(run_id=run, safety_point=False), run, "main")  # type: ignore[arg-type]
        for run in runs[instance]])
    config = parse(CONFIG + '[instances.crm]\nrepositories = ["main"]\nfiles = ["/srv/crm"]\n', Path("safehold.toml"))
    with pytest.raises(ConfigError) as info:
        common.search_point(config, "latest")
    assert info.value.exit_code == 2 and "(app, crm)" in info.value.line() and "--instance" in info.value.line()
    assert common.search_point(config, "latest", "crm")[1].run_id == runs["crm"][0]
    # A run id, whole or a unique prefix, names one point whichever instance holds it.
    assert common.search_point(config, "20261126")[1].run_id == runs["crm"][0]
    assert common.search_point(config, RUNS[1])[1].run_id == RUNS[1]
