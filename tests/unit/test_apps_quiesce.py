"""Resume markers, SIGTERM while paused, host forms and ITFlow's key wrapping (no services)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from safehold.apps import itflow_crypto
from safehold.apps.common import contents_pattern
from safehold.apps.guards import version_mismatch
from safehold.apps.quiesce import Terminated, describe_step, marker_path, paused, resume_leftovers, resume_marker
from safehold.lock import instance_lock
from safehold.output import Silent
from safehold.scheduler import Scheduler
from tests.conftest import write_config


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


def _dead_pid() -> int:
    dead = subprocess.Popen(["true"])
    dead.wait()
    return dead.pid


def _leave_marker(state: Path, name: str, pid: int, steps: list[dict]) -> Path:
    marker = marker_path(state, name)
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({"instance": name, "app": "itop", "pid": pid, "since": 1_790_000_000.0,
                                  "steps": steps}))
    return marker


def test_a_leftover_is_not_resumed_while_a_run_holds_the_instance(tmp_path: Path) -> None:
    # The marker names a dead PID, but another run of the instance holds its lock (it may be pausing the
    # app right now, and replaces the marker under that lock): resuming now could undo its pause.
    flag = tmp_path / "flag"
    flag.touch()
    marker = _leave_marker(tmp_path, "app", _dead_pid(), [{"kind": "remove_file", "path": str(flag)}])
    with instance_lock(tmp_path, "app", "other", "backup", Silent()):
        assert resume_leftovers(tmp_path, Silent()) == []
        assert resume_marker(marker, tmp_path, Silent()).state == "busy"
        assert flag.exists() and marker.exists()
    assert resume_leftovers(tmp_path, Silent()) == ["app"]
    assert not flag.exists() and not marker.exists()


def test_a_failed_resume_is_carried_into_the_next_pause(tmp_path: Path) -> None:
    flag, retried = tmp_path / "flag", tmp_path / "retried"
    steps = [{"kind": "commands", "start": [["sh", "-c", f"test -e {retried} && touch {tmp_path / 'started'}"]]}]
    marker = _leave_marker(tmp_path, "app", _dead_pid(), steps)
    found = resume_marker(marker, tmp_path, Silent())
    assert found.state == "failed" and marker.exists() and "resume command" in found.problems[0]
    assert found.paused().startswith("stopped by the quiesce commands (start: sh -c test -e")
    # The next backup tries again, fails again, and keeps the step (the old code dropped it with the marker).
    with paused(tmp_path, "app", "itop", Silent()) as pause:
        kept = json.loads(marker.read_text())
        assert kept["steps"] == steps and kept["since"] == 1_790_000_000.0  # still paused since then
        pause.record("remove_file", path=str(flag), what="iTop read-only mode")
        flag.touch()
        retried.touch()  # the cause is fixed meanwhile: this run resumes both
    assert (tmp_path / "started").exists() and not flag.exists() and not marker.exists()


def test_serve_resumes_leftovers_when_its_scheduler_starts(tmp_path: Path) -> None:
    config = write_config(tmp_path, {"url": str(tmp_path / "repo"), "password_file": str(tmp_path / "p")},
                          f'[instances.app]\nrepositories = ["main"]\nfiles = ["{tmp_path}"]\n')
    flag = tmp_path / "flag"
    flag.touch()
    _leave_marker(tmp_path / "state", "app", _dead_pid(), [{"kind": "remove_file", "path": str(flag)}])
    scheduler = Scheduler(config, Silent(), jobs={})
    scheduler.start()
    scheduler.stop()
    assert not flag.exists() and not marker_path(tmp_path / "state", "app").exists()


def test_check_can_say_what_each_step_holds_paused() -> None:
    import safehold.apps  # noqa: F401 - registers every profile's resumers

    assert describe_step({"kind": "itflow_cron", "root": "/srv/itflow", "value": 1}) == \
        "ITFlow cron off (settings.config_enable_cron = 0, was 1; /srv/itflow)"
    assert describe_step({"kind": "remove_file", "path": "/srv/itop/data/.readonly",
                          "what": "iTop read-only mode (/srv/itop/data/.readonly)"}) == \
        "iTop read-only mode (/srv/itop/data/.readonly)"
    assert describe_step({"kind": "remove_file", "path": "/x"}) == "/x in place (removed on resume)"
    assert describe_step({"kind": "commands", "start": [["systemctl", "start", "apache2"]]}) == \
        "stopped by the quiesce commands (start: systemctl start apache2)"
    assert describe_step({"kind": "itflow_cron"}) == "itflow_cron"  # a damaged step still names its kind


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


def test_folders_named_by_app_configs_are_excluded_by_their_clean_path() -> None:
    """`$config_backup_path = __DIR__ . '/../backups'`: PHP opens /srv/backups, restic matches clean paths."""
    assert contents_pattern("/srv/itflow/../backups/") == "/srv/backups/*"
    assert contents_pattern("/var/backups/itflow") == "/var/backups/itflow/*"
