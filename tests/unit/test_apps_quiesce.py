"""Resume markers, SIGTERM while paused, host forms and ITFlow's key wrapping (no services)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from safehold.apps import itflow_crypto
from safehold.apps.common import split_host, version_mismatch
from safehold.apps.quiesce import Terminated, marker_path, paused, resume_leftovers
from safehold.output import Silent


def test_steps_are_undone_and_the_marker_removed(tmp_path: Path) -> None:
    flag = tmp_path / "flag"
    with paused(tmp_path / "state", "app", "itop", Silent()) as pause:
        pause.record("remove_file", path=str(flag))
        flag.touch()
        marker = json.loads(marker_path(tmp_path / "state", "app").read_text())
        assert marker["steps"] == [{"kind": "remove_file", "path": str(flag)}]
        assert marker_path(tmp_path / "state", "app").stat().st_mode & 0o777 == 0o600
    assert not flag.exists() and not marker_path(tmp_path / "state", "app").exists()


def test_an_exception_still_resumes(tmp_path: Path) -> None:
    flag = tmp_path / "flag"
    with pytest.raises(ZeroDivisionError), paused(tmp_path, "app", "itop", Silent()) as pause:
        pause.record("remove_file", path=str(flag))
        flag.touch()
        1 / 0  # noqa: B018
    assert not flag.exists()


def test_sigterm_while_paused_raises_and_resumes(tmp_path: Path) -> None:
    flag = tmp_path / "flag"
    previous = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Terminated, match="stopped by SIGTERM"), paused(tmp_path, "app", "itop", Silent()) as pause:
        pause.record("remove_file", path=str(flag))
        flag.touch()
        os.kill(os.getpid(), signal.SIGTERM)
        raise AssertionError("not reached")
    assert not flag.exists()
    assert signal.getsignal(signal.SIGTERM) is previous


def test_leftover_of_a_dead_run_is_resumed_live_one_is_not(tmp_path: Path) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    for name, pid in (("gone", dead.pid), ("alive", os.getpid())):
        flag = tmp_path / f"{name}.flag"
        flag.touch()
        marker = marker_path(tmp_path, name)
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(json.dumps({"instance": name, "app": "itop", "pid": pid,
                                      "steps": [{"kind": "remove_file", "path": str(flag)}]}))
    # "alive" has a live PID but no instance lock held: a reused PID, so it is resumed too.
    assert resume_leftovers(tmp_path, Silent()) == ["alive", "gone"]
    assert not (tmp_path / "gone.flag").exists() and not (tmp_path / "alive.flag").exists()


@pytest.mark.parametrize("value, expected", [
    ("localhost", ("localhost", None)), ("db:3307", ("db", 3307)), ("p:db.example:3308", ("db.example", 3308)),
    ("[::1]:3309", ("::1", 3309)), ("::1", ("::1", None)),
])
def test_split_host(value: str, expected: tuple[str, int | None]) -> None:
    assert split_host(value) == expected


def test_version_mismatch_ignores_unknown_sides() -> None:
    assert version_mismatch("X", {"app version": None}, {"app version": "1"}, "h") == []
    line = version_mismatch("X", {"app version": "2", "schema": "1"}, {"app version": "1", "schema": "1"}, "do y")
    assert line == ["X version mismatch: app version 2 here but 1 in the point — do y"]


def test_itflow_unwrap_and_credential(tmp_path: Path) -> None:
    from tests.integration.appkit import itflow_encrypt, itflow_wrap

    wrapped = itflow_wrap("Ab3_x-Yz0123Qwer", "pw")
    assert itflow_crypto.unwrap(wrapped, "pw") == "Ab3_x-Yz0123Qwer"
    assert itflow_crypto.unwrap(wrapped, "wrong") is None
    secret = itflow_encrypt("hunter2", "Ab3_x-Yz0123Qwer")
    assert itflow_crypto.decrypt_credential(secret, "Ab3_x-Yz0123Qwer") == "hunter2"
    assert itflow_crypto.decrypt_credential(secret, "Other_key_123456") is None
