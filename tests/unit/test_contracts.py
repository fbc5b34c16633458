"""Every registered profile and engine module has each member of its protocol with the protocol's
parameters (mypy checks the types in CI; this says which module and member in a plain test run)."""

from __future__ import annotations

import inspect

import pytest

from safehold.apps import APPS
from safehold.apps.contract import AppProfile
from safehold.engines import ENGINES
from safehold.engines.contract import Engine


def _members(protocol: type) -> dict[str, object]:
    own = {name: value for name, value in vars(protocol).items() if not name.startswith("_")}
    for name in protocol.__annotations__:
        own.setdefault(name, None)
    return own


def _problems(module: object, protocol: type) -> list[str]:
    problems = []
    for name, member in _members(protocol).items():
        if not hasattr(module, name):
            problems.append(f"{name} is missing")
        elif callable(member):
            wanted = [p for p in inspect.signature(member).parameters if p != "self"]
            found = list(inspect.signature(getattr(module, name)).parameters)
            if found[:len(wanted)] != wanted or any(
                    inspect.signature(getattr(module, name)).parameters[p].default is inspect.Parameter.empty
                    for p in found[len(wanted):]):
                problems.append(f"{name}{tuple(found)} does not take {tuple(wanted)}")
    return problems


@pytest.mark.parametrize("name", sorted(APPS))
def test_profile_fulfils_the_contract(name: str) -> None:
    assert _problems(APPS[name], AppProfile) == []


@pytest.mark.parametrize("name", sorted(ENGINES))
def test_engine_fulfils_the_contract(name: str) -> None:
    assert _problems(ENGINES[name], Engine) == []


def test_a_profile_lacking_a_member_is_named() -> None:
    class Broken:
        APP_KEYS = ""

        @staticmethod
        def detect(path):  # noqa: ANN001, ANN205 - the wrong parameter name is the point
            return False

    problems = _problems(Broken, AppProfile)
    assert "RUNS_ON_PHP is missing" in problems and "describe is missing" in problems
    assert "detect('path',) does not take ('root',)" in problems
