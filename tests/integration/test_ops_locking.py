"""One run per instance: concurrent backups never overlap; a SIGKILLed run does not block the next."""

from __future__ import annotations

import contextlib
import io
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from safehold.config import load
from safehold.history import History
from safehold.lock import is_locked
from safehold.output import Silent
from tests.conftest import SRC, files_instances, run_cli, sql, write_config
from tests.integration import sakila_like
from tests.integration.unattended import make_instance


def quiesce_logging(log: Path, seconds: float, until: Path | None = None) -> str:
    """The quiesce window is where the work happens: log its start and end to see any overlap. It lasts
    `seconds`, or with `until` as long as that file does not exist (at most `seconds`)."""
    wait = f"sleep {seconds}" if until is None else \
        f"i=0; while [ ! -e {until} ] && [ $i -lt {int(seconds * 10)} ]; do sleep 0.1; i=$((i+1)); done"
    return (f'quiesce = {{ stop = [["sh", "-c", "echo start >> {log}; {wait}"]], '
            f'start = [["sh", "-c", "echo end >> {log}"]] }}')


def spawn_backup(config: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "safehold", "backup", "app", "--config", str(config)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(SRC)}, start_new_session=True)


def test_second_backup_waits_and_never_overlaps(tmp_path: Path, repo: dict[str, str]) -> None:
    log = tmp_path / "window.log"
    # Long enough that the second run reaches the lock while the first holds it, however busy the machine.
    config = make_instance(tmp_path, repo, quiesce_logging(log, 5), settings="lock_wait_seconds = 120")
    first, second = spawn_backup(config), spawn_backup(config)
    outputs = [p.communicate(timeout=120) for p in (first, second)]
    assert [first.returncode, second.returncode] == [0, 0], outputs
    assert log.read_text().split() == ["start", "end", "start", "end"]
    assert any("waiting for run" in err for _, err in outputs)
    runs = History(load(config).state_dir).runs("app", "backup")
    assert [r.result for r in runs] == ["ok", "ok"]


def test_second_backup_exits_with_a_clear_reason_when_not_waiting(tmp_path: Path, repo: dict[str, str]) -> None:
    log = tmp_path / "window.log"
    release = tmp_path / "release"  # the first run holds the instance until the second has been refused
    config = make_instance(tmp_path, repo, quiesce_logging(log, 120, until=release))
    first = spawn_backup(config)
    deadline = time.monotonic() + 60
    while not log.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    second = run_cli("backup", "app", config=config)
    release.touch()
    first.communicate(timeout=120)
    assert first.returncode == 0
    assert second.returncode == 1 and "instance app is busy" in second.stderr and "lock_wait_seconds" in second.stderr
    assert log.read_text().split() == ["start", "end"]
    # The refused run is not an outage: no failed row in the history.
    assert [r.result for r in History(load(config).state_dir).runs("app")] == ["ok"]


def test_after_sigkill_the_next_backup_proceeds(tmp_path: Path, repo: dict[str, str]) -> None:
    log = tmp_path / "window.log"
    config = make_instance(tmp_path, repo, quiesce_logging(log, 60))
    state = load(config).state_dir
    victim = spawn_backup(config)
    deadline = time.monotonic() + 30
    while not log.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert is_locked(state, "app")
    os.killpg(victim.pid, signal.SIGKILL)  # the run and its quiesce child, as a crash would
    victim.wait()
    assert not is_locked(state, "app")
    fixed = config.read_text().replace("sleep 60", "sleep 0")
    config.write_text(fixed)
    proc = run_cli("backup", "app", config=config)
    assert proc.returncode == 0, proc.stderr
    runs = History(state).runs("app", "backup")
    assert [r.result for r in runs] == ["ok", "failed"]
    assert "interrupted" in runs[1].error


HOLD_REPOSITORY = """
import sys, time
from pathlib import Path
from safehold.lock import repository_lock
with repository_lock(Path(sys.argv[1]), True, "prune", 0):
    print("held", flush=True)
    while not Path(sys.argv[2]).exists():
        time.sleep(0.05)
"""


def hold_repository(lock_file: Path, release: Path) -> subprocess.Popen[str]:
    """Another safehold run pruning the repository (holding its flock exclusively) until `release` exists."""
    holder = subprocess.Popen([sys.executable, "-c", HOLD_REPOSITORY, str(lock_file), str(release)],
                              stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(SRC)})
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_a_backup_waits_while_another_run_prunes_the_repository(tmp_path: Path, repo: dict[str, str]) -> None:
    # restic fails a backup at once while another process holds its exclusive lock (prune, forget, check),
    # as happens when two instances share a repository and one prunes after its backup.
    config = make_instance(tmp_path, repo)
    state = load(config).state_dir
    release = tmp_path / "release"
    holder = hold_repository(state / "repositories" / "main.lock", release)
    backup = spawn_backup(config)
    time.sleep(3)
    assert backup.poll() is None  # waiting, not failed
    release.touch()
    out, err = backup.communicate(timeout=120)
    holder.wait(timeout=10)
    assert backup.returncode == 0, err
    assert f"repository main is busy with restic prune (pid {holder.pid}" in err and "waits for it" in err


def test_a_backup_that_waited_too_long_fails_clearly_and_keeps_the_last_point(tmp_path: Path,
                                                                              repo: dict[str, str]) -> None:
    config = make_instance(tmp_path, repo, settings="repository_wait_seconds = 1")
    assert run_cli("backup", "app", config=config).returncode == 0
    release = tmp_path / "release"
    holder = hold_repository(load(config).state_dir / "repositories" / "main.lock", release)
    try:
        proc = run_cli("backup", "app", config=config)
    finally:
        release.touch()
        holder.wait(timeout=10)
    assert proc.returncode == 1
    assert f"repository main is still busy with restic prune (pid {holder.pid}" in proc.stderr
    assert "after waiting 1 s" in proc.stderr and "repository_wait_seconds" in proc.stderr
    listed = run_cli("list", "--json", config=config)
    assert listed.returncode == 0 and listed.stdout.count('"run_id"') >= 1
    assert [r.result for r in History(load(config).state_dir).runs("app", "backup")] == ["failed", "ok"]


def test_instances_sharing_a_repository_back_up_prune_and_verify_at_once(tmp_path: Path,
                                                                          repo: dict[str, str]) -> None:
    # The common night: every instance scheduled at the same time, all in one repository, retention pruning
    # after each backup, a verify now and then. restic's exclusive lock (prune, check) failed whichever
    # run met it; now they take turns.
    other = tmp_path / "other"
    other.mkdir()
    (other / "blob.bin").write_bytes(os.urandom(8 << 20))
    config = make_instance(tmp_path, repo, top=f"""
[instances.other]
repositories = ["main"]
files = ["{other}"]
retention = {{ last = 1 }}
""")
    assert run_cli("backup", "other", config=config).returncode == 0
    for round_ in range(3):
        (other / f"new-{round_}.bin").write_bytes(os.urandom(2 << 20))  # something for each prune to free
        commands = [["backup", "other"], ["backup", "app"], ["verify", "--read-data"]]
        procs = [subprocess.Popen([sys.executable, "-m", "safehold", *args, "--config", str(config)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  env={**os.environ, "PYTHONPATH": str(SRC)}) for args in commands]
        outputs = [p.communicate(timeout=300) for p in procs]
        assert [p.returncode for p in procs] == [0, 0, 0], (round_, outputs)
    runs = History(load(config).state_dir).runs(kind="backup")
    assert [r.result for r in runs] == ["ok"] * 7
    assert [r.result for r in History(load(config).state_dir).runs("other", "prune")] == ["ok"] * 3


@contextlib.contextmanager
def locked_by_another_host(repo: dict[str, str]) -> Iterator[None]:
    """restic itself, outside safehold, holding its exclusive lock as a check from another host would."""
    other = subprocess.Popen(["restic", "-r", repo["url"], "--password-file", repo["password_file"], "check",
                              "--read-data"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    locks = Path(repo["url"]) / "locks"
    deadline = time.monotonic() + 30
    while not any(locks.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        yield
    finally:
        other.wait(timeout=120)
    assert other.returncode == 0


@pytest.fixture
def busy_repository(tmp_path: Path, repo: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Path:
    """A config whose repository holds enough data (400 MB) that another host's check takes seconds."""
    from safehold.repository.restic import process

    data = tmp_path / "data"
    data.mkdir()
    (data / "big.bin").write_bytes(os.urandom(400 << 20))
    config = write_config(tmp_path, repo, files_instances(data, app=["main"]))
    assert run_cli("backup", config=config).returncode == 0
    monkeypatch.setattr(process, "LOCK_RETRY_SECONDS", 1)
    return config


def test_a_command_tries_again_while_another_hosts_restic_holds_the_lock(
        busy_repository: Path, repo: dict[str, str], caplog: pytest.LogCaptureFixture) -> None:
    # Another host's run is not in this host's flock: its restic lock is met as such, and a command that
    # wrote nothing yet (listing the points here) tries again instead of failing the run.
    from safehold.actions.common import open_repository

    with locked_by_another_host(repo):
        snapshots = open_repository(load(busy_repository), "main").snapshots()
    assert snapshots
    assert "repository main is locked by another run: restic snapshots tries again every 1 s" in caplog.text


def test_a_backup_starts_its_stream_again_while_another_hosts_restic_holds_the_lock(
        busy_repository: Path, repo: dict[str, str], tmp_path: Path, new_db, caplog: pytest.LogCaptureFixture) -> None:  # noqa: ANN001
    # The dump is already running when restic meets the lock: the producer (the parallel MariaDB
    # dump) starts over, and the point holds one whole dump, not the pieces of the failed tries.
    from safehold.actions.common import open_repository
    from safehold.engines.mariadb import parallel
    from safehold.models import Connection, Database
    from safehold.output import Reporter

    name = new_db("t_lockretry")
    sql(sakila_like.statements(), name)
    db = Database(Connection("mariadb", user="root"), name, workers=2)
    repository = open_repository(load(busy_repository), "main")
    calls = []

    def produce(out) -> object:  # type: ignore[no-untyped-def]
        calls.append(1)
        return parallel.dump(db, out, Silent())

    reporter = Reporter(stream=io.StringIO())
    with locked_by_another_host(repo):
        summary, report = repository.backup_stream("/db/app.tar", ["instance=app"], produce, reporter, "db", True)
    assert len(calls) >= 2 and report.tables["rental"].rows == sql("SELECT COUNT(*) FROM rental", name)[0][0] > 0
    fresh = io.BytesIO()
    parallel.dump(db, fresh, Silent())  # the dump is deterministic: a whole one equals what was stored
    assert repository.cat_file(summary.snapshot_id, "/db/app.tar") == fresh.getvalue()
    assert "restic backup tries again every 1 s" in caplog.text
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "a.txt").write_text("a")
    with locked_by_another_host(repo):
        summary = repository.backup_paths([tree], ["instance=app"], [], reporter, "tree")
    assert summary.files_new == 1
