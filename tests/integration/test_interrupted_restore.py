"""An in-place restore killed (SIGKILL) at each phase is loud until it is finished: `check` is CRITICAL and
names the safety point, the dashboard (real chromium) shows it red, `backup` refuses and stores nothing,
and the finishing command that check names brings the live instance back to the point."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import SRC, mariadb_dump, need, run_cli, sql
from tests.integration.offhost_servers import make_tree, password_file, read_tree, write_config
from tests.integration.test_web_browser import ADMIN, ARGS, CHROMIUM, log_in
from tests.integration.test_web_serve import free_port, serving

ROWS = 600_000  # enough for the load and the index build to last seconds on a busy machine


def _index_build_running(db: str) -> bool:
    """The server is building a deferred secondary index of the restore (seen in its process list)."""
    rows = sql("SELECT INFO FROM information_schema.PROCESSLIST WHERE INFO LIKE 'ALTER TABLE%ADD%'")
    return any(db in (info or "") for (info,) in rows)


def _kill_at(config: Path, run: str, trigger: Callable[[list[str]], bool]) -> list[str]:
    """Start `restore app RUN --force`, SIGKILL its whole process group the moment `trigger` (given the
    stderr lines so far) holds; returns the lines it wrote."""
    proc = subprocess.Popen([sys.executable, "-m", "safehold", "restore", "app", run, "--force", "--config",
                             str(config)], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                            env={**os.environ, "PYTHONPATH": str(SRC)}, start_new_session=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stderr.readline, "")), daemon=True)  # type: ignore[union-attr]
    reader.start()
    deadline = time.monotonic() + 600
    while not trigger(list(lines)):
        assert proc.poll() is None, "the restore ended before the phase was reached:\n" + "".join(lines)
        assert time.monotonic() < deadline
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    reader.join(timeout=10)
    return lines


def _said(pattern: str) -> Callable[[list[str]], bool]:
    return lambda lines: any(re.search(pattern, line) for line in lines)


def _snapshots(repo: Path, password: Path) -> int:
    listing = subprocess.run(["restic", "-r", str(repo), "--password-file", str(password), "snapshots", "--json"],
                             check=True, capture_output=True, text=True).stdout
    return len(json.loads(listing))


def test_a_killed_in_place_restore_is_loud_until_finished(tmp_path: Path, new_db: Callable[[str], str]) -> None:
    need(Path(CHROMIUM).exists(), "Debian chromium is not installed (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    trees = [tmp_path / "app" / "files", tmp_path / "app" / "uploads"]
    for tree in trees:
        make_tree(tree)
    db = new_db("t_sec_kill")
    sql(["CREATE TABLE big (id INT PRIMARY KEY, label CHAR(32), n INT, KEY by_label (label), KEY by_n (n))",
         f"INSERT INTO big SELECT seq, MD5(seq), seq % 1000 FROM seq_1_to_{ROWS}"], db)
    password = password_file(tmp_path)
    port = free_port()
    config = write_config(tmp_path / "safehold.toml",
                          {"local": {"url": str(tmp_path / "repo"), "password": f"file:{password}"}},
                          {"app": {"repositories": ["local"], "files": [str(t) for t in trees],
                                   "databases": [{"engine": "mariadb", "user": "root", "names": [db]}]}},
                          f'\n[web]\nlisten = "127.0.0.1:{port}"\n')
    assert (made := run_cli("backup", "app", "--json", config=config)).returncode == 0, made.stderr
    run = json.loads(made.stdout)[0]["run_id"]
    point = {"db": mariadb_dump(db), **{str(t): read_tree(t) for t in trees}}

    def live() -> dict[str, object]:
        return {"db": mariadb_dump(db), **{str(t): read_tree(t) for t in trees}}

    def damage() -> None:  # the live instance differs from the point, so the restore overwrites (safety point)
        sql(["DELETE FROM big WHERE id % 3 = 0", "UPDATE big SET n = -1 WHERE id < 100"], db)
        for tree in trees:
            (tree / "index.php").write_text("changed since the point\n")

    phases = {
        "safety point": _said(r"safety point \S+ of app → repository"),
        "database load": _said(r"tables of \S+ created; loading rows"),
        "index build": lambda lines: _index_build_running(db),
        "file swap": lambda lines: sum("restoring files from local into" in line for line in lines) >= 2,
    }
    env = {**os.environ, "PYTHONPATH": str(SRC), "ADMIN_PW": ADMIN[1]}
    assert run_cli("user", "add", ADMIN[0], "--role", "operator", "--password-ref", "env:ADMIN_PW", config=config,
                   env=env).returncode == 0
    url = f"http://127.0.0.1:{port}"
    with serving(config, env, url), sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        page = browser.new_page()
        log_in(page, url)
        for phase, trigger in phases.items():
            damage()
            said = _kill_at(config, run, trigger)
            safety = re.search(r"safety point (\S+) of app", "".join(said))
            assert safety, f"{phase}: no safety point was started:\n" + "".join(said)

            checked = run_cli("check", "app", "--json", config=config)
            assert checked.returncode == 2, (phase, checked.stdout)
            (finding,) = [f for f in json.loads(checked.stdout)["instances"][0]["findings"] if f["rule"] == "restore"]
            assert finding["status"] == "CRITICAL" and safety[1] in finding["message"], (phase, finding)

            page.goto(url + "/")
            line = page.locator(".paused.bad", has_text=safety[1])
            assert line.count() == 1, (phase, page.content())
            assert page.locator(".badge.state-bad").count() == 1
            assert line.evaluate("e => getComputedStyle(e).color") == page.locator(".badge.state-bad").evaluate(
                "e => getComputedStyle(e).backgroundColor"), "the restore's line is not in the failing colour"

            stored = _snapshots(tmp_path / "repo", password)
            refused = run_cli("backup", "app", config=config)
            assert refused.returncode != 0 and "no backup made: an in-place restore" in refused.stderr, refused.stderr
            assert _snapshots(tmp_path / "repo", password) == stored, f"{phase}: the refused backup stored something"

            command = re.search(r"finish it with `([^`]+)`", finding["message"])[1]
            argv = shlex.split(command)
            assert argv[:2] == ["safehold", "restore"]
            finished = run_cli(*argv[1:])
            assert finished.returncode == 0, (phase, finished.stderr)
            assert live() == point, f"{phase}: the finished restore does not equal the point"
            after = json.loads(run_cli("check", "app", "--json", config=config).stdout)["instances"][0]
            assert not [f for f in after["findings"] if f["rule"] == "restore"], (phase, after)
            assert after["status"] != "CRITICAL", (phase, after["problems"])
        browser.close()
    assert not [p for t in trees for p in os.listdir(t.parent) if ".safehold-" in p]


def test_leftovers_of_killed_runs_go_with_the_next_run_of_the_instance(tmp_path: Path) -> None:
    tree = tmp_path / "app" / "files"
    make_tree(tree)
    config = write_config(tmp_path / "safehold.toml",
                          {"local": {"url": str(tmp_path / "repo"), "password": f"file:{password_file(tmp_path)}"}},
                          {"app": {"repositories": ["local"], "files": [str(tree)]}})
    dead = subprocess.Popen(["true"])
    dead.wait()  # a PID whose process is gone, as a killed restore's
    staging = tree.parent / f".safehold-restore-{dead.pid}-x1y2"
    (staging / "half").mkdir(parents=True)
    swapped = tree.parent / ".files.safehold-old-a1b2c3"  # a swap killed after the new tree was in place
    (swapped / "old").mkdir(parents=True)
    unpacked = tmp_path / "state" / "staging" / f".safehold-staging-{dead.pid}-z9"
    unpacked.mkdir(parents=True)
    alive = tree.parent / f".safehold-restore-{os.getpid()}-keep"  # a run still going keeps its own
    alive.mkdir()
    done = run_cli("backup", "app", config=config)
    assert done.returncode == 0, done.stderr
    assert not staging.exists() and not swapped.exists() and not unpacked.exists() and alive.exists()
    assert f"removed {staging}" in done.stderr
    alive.rmdir()
