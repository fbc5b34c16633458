"""Scheduled verify (`schedule.verify`, `verify --scheduled`): a real restic repository checked reading
a share of its data, recorded in the history, seen by check and metrics, run by the scheduler."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from safehold import metrics
from safehold.config import load
from safehold.history import History
from safehold.output import Silent
from safehold.scheduler import Scheduler
from tests.conftest import run_cli
from tests.integration.test_ops_scheduler import Clock, set_schedule, wait_idle
from tests.integration.unattended import make_instance


def flip_a_byte_in_the_biggest_pack(repo: dict[str, str]) -> None:
    """Bit rot in stored data: only a check that reads the data sees it."""
    pack = max((p for p in (Path(repo["url"]) / "data").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    data = bytearray(pack.read_bytes())
    data[len(data) // 2] ^= 0xFF
    pack.chmod(0o600)
    pack.write_bytes(bytes(data))


def test_scheduled_verify_reads_the_configured_share_records_and_is_checked(tmp_path: Path,
                                                                            repo: dict[str, str]) -> None:
    config = make_instance(tmp_path, repo, rows=3000)
    set_schedule(config, '{ cron = "0 2 * * *", verify = "0 5 * * sun", verify_read_data = "none" }')
    assert run_cli("backup", "app", config=config).returncode == 0
    state = load(config).state_dir
    history = History(state)

    ok = run_cli("verify", "--instance", "app", "--scheduled", config=config)
    assert ok.returncode == 0 and "verify ok" in ok.stdout, ok.stdout + ok.stderr
    [run] = history.runs("app", "verify")
    assert run.result == "ok" and run.details["read_data"] == "none"

    flip_a_byte_in_the_biggest_pack(repo)
    # Reading none of the data, the structure check cannot see rot inside a pack.
    assert run_cli("verify", "--instance", "app", "--scheduled", config=config).returncode == 0

    set_schedule(config, '{ cron = "0 2 * * *", verify = "0 5 * * sun", verify_read_data = "100%" }')
    found = run_cli("verify", "--instance", "app", "--scheduled", config=config)
    assert found.returncode == 1, found.stdout + found.stderr
    assert "(reading 100% of the data)" in found.stderr
    assert "repository main is damaged: stored data does not match its checksum" in found.stdout
    latest = history.runs("app", "verify")[0]
    assert latest.result == "failed" and "does not match its checksum" in (latest.error or "")
    listed = json.loads(run_cli("history", "app", "--kind", "verify", "--json", config=config).stdout)
    assert [r["result"] for r in listed] == ["failed", "ok", "ok"]

    checked = run_cli("check", "app", config=config)
    assert checked.returncode == 2
    assert "verify: last verify" in checked.stdout and "does not match its checksum" in checked.stdout
    assert "repository-damage: repository main is damaged" in checked.stdout
    text = metrics.render(load(config))
    assert 'safehold_last_run_success{instance="app",kind="verify"} 0.0' in text


def test_verify_scheduled_needs_one_instance(tmp_path: Path, repo: dict[str, str]) -> None:
    config = make_instance(tmp_path, repo)
    for args in (["--scheduled"], ["--scheduled", "--instance", "app", "--read-data"], ["latest", "--scheduled"]):
        proc = run_cli("verify", *args, config=config)
        assert proc.returncode == 2 and "--scheduled verifies one instance as its schedule does" in proc.stderr, args
        assert proc.stderr.count("\n") == 1


def test_the_scheduler_runs_verify_at_its_time(tmp_path: Path, repo: dict[str, str]) -> None:
    config = make_instance(tmp_path, repo)
    set_schedule(config, '{ cron = "0 2 * * *", verify = "30 4 * * *", verify_read_data = "5%" }')
    assert run_cli("backup", "app", config=config).returncode == 0
    clock = Clock(datetime(2026, 1, 10, 4, 29, 59, tzinfo=UTC))
    scheduler = Scheduler(config, Silent(), clock=clock, workers=1)
    try:
        assert scheduler.tick() == []
        clock.now += timedelta(seconds=1)
        assert scheduler.tick() == [("app", "verify")]
        wait_idle(scheduler)
    finally:
        scheduler.pool.shutdown(wait=True)
    [run] = History(load(config).state_dir).runs("app", "verify")
    assert run.result == "ok" and run.details["read_data"] == "5%"


def test_a_timer_without_home_still_gives_restic_a_cache(tmp_path: Path, repo: dict[str, str]) -> None:
    # A systemd service without User= has no $HOME: restic then warns and reads every index and tree
    # from the storage on each run. safehold hands it a cache in the state folder instead.
    import os
    import subprocess
    import sys

    from tests.conftest import SRC

    config = make_instance(tmp_path, repo)
    bare = {"PATH": os.environ["PATH"], "PYTHONPATH": str(SRC), "LANG": "C.UTF-8",
            "TESTS_REAL_RESTIC": os.environ["TESTS_REAL_RESTIC"]}
    proc = subprocess.run([sys.executable, "-m", "safehold", "backup", "app", "--config", str(config)],
                          capture_output=True, text=True, env=bare, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "unable to open cache" not in proc.stderr
    cache = load(config).state_dir / "restic-cache"
    assert any(cache.rglob("*")), "restic wrote no cache"


def test_instances_sharing_a_repository_check_it_once_a_round(tmp_path: Path, repo: dict[str, str]) -> None:
    # An MSP's instances share one repository and one verify schedule: one restic check a round, not one
    # per instance; a verify reading more, the console's Verify and a verify after damage check for themselves.
    import os
    import subprocess
    import sys

    from safehold.actions.verify import verify_instance
    from tests.conftest import SRC

    other = tmp_path / "other"
    other.mkdir()
    (other / "a.txt").write_text("a")
    daily = '{{ cron = "0 2 * * *", verify = "0 5 * * *", verify_read_data = "{}" }}'
    section = f'[instances.other]\napp = "generic"\nrepositories = ["main"]\nfiles = ["{other}"]\nschedule = '
    config = make_instance(tmp_path, repo, instance=f"schedule = {daily.format('5%')}",
                           top=section + daily.format("5%"))
    assert run_cli("backup", config=config).returncode == 0
    procs = [subprocess.Popen([sys.executable, "-m", "safehold", "verify", "--instance", name, "--scheduled",
                               "--config", str(config)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(SRC)}) for name in ("app", "other")]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    took = [name for name, (out, _) in zip(("app", "other"), outputs, strict=True) if "not checked again" in out]
    assert len(took) == 1, outputs
    checker = "other" if took == ["app"] else "app"
    history = History(load(config).state_dir)
    shared = history.runs(took[0], "verify")[0].details["shared_checks"]
    assert shared["main"].startswith(f"repository main was found sound by the verify of {checker} at ")
    assert shared["main"].endswith("(reading 5% of the data)")
    assert history.runs(checker, "verify")[0].details["shared_checks"] == {}
    page = tmp_path / "report.html"
    assert run_cli("report", took[0], "--html", str(page), config=config).returncode == 0
    assert f"found sound by the verify of {checker} at " in page.read_text()

    assert verify_instance(load(config), took[0], Silent(), scheduled=False)["shared_checks"] == {}
    # A verify that reads more than the shared check did checks for itself (and is then shared the other way).
    config.write_text(config.read_text().replace(section + daily.format("5%"), section + daily.format("all")))
    assert "not checked again" not in run_cli("verify", "--instance", "other", "--scheduled", config=config).stdout
    taken = run_cli("verify", "--instance", "app", "--scheduled", config=config)
    assert "found sound by the verify of other" in taken.stdout and "(reading all of the data)" in taken.stdout

    flip_a_byte_in_the_biggest_pack(repo)
    assert run_cli("verify", "--instance", "other", "--scheduled", config=config).returncode == 1
    # Damage is never shared as soundness: the next verify of the round checks for itself.
    after = run_cli("verify", "--instance", "app", "--scheduled", config=config)
    assert "not checked again" not in after.stdout, after.stdout
