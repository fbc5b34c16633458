"""Console pages from a real state directory (run history, quiesce markers), through Starlette's TestClient.

The repository does not exist: these pages must say what the history and the markers hold anyway.
"""

from __future__ import annotations

import json
import os
import re
import time
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

import pytest
from starlette.testclient import TestClient

from safehold.apps.quiesce import resume_marker
from safehold.history import History
from safehold.lock import instance_lock
from safehold.output import Silent
from safehold.web.app import create_app
from safehold.web.auth import SESSION_COOKIE
from safehold.web.data import Data
from safehold.web.jobs import Job
from safehold.web.server import ExportSweeper
from safehold.web.store import Store
from tests.unit.test_check_history_metrics import dead_pid, leave_paused, load, make_config


def logged_in(tmp_path: Path, role: str = "viewer") -> tuple[TestClient, Path]:
    """A logged-in user (named as the role) of a console for instance `app`, and the state directory."""
    config = load(make_config(tmp_path, repo_url=str(tmp_path / "no-repository")))
    store = Store(config.state_dir)
    store.add_user(role, role, f"{role}-password-1")
    client = TestClient(create_app(config, store), base_url="http://localhost", follow_redirects=False,
                        cookies={SESSION_COOKIE: store.open_session(role)})
    return client, config.state_dir


def dashboard_row(client: TestClient) -> str:
    page = client.get("/")
    assert page.status_code == 200, page.text
    return re.search(r'<tr class="instance [^"]*" data-instance="app">.*?</tr>', page.text, re.S)[0]


def test_a_killed_drill_is_the_last_drill_and_failed(tmp_path: Path) -> None:
    client, state = logged_in(tmp_path)
    history = History(state)
    passed = history.record_start("app", "drill")
    when = str(datetime.now(UTC))  # how the drill stores its times (JSON)
    history.record_end(passed, "ok", details={"instance": "app", "ok": True, "problems": [], "rto_seconds": 12.5,
                                              "started": when, "finished": when})
    assert "passed" in dashboard_row(client) and "RTO 12.5 s" in dashboard_row(client)
    # Then a drill killed with SIGKILL: its row has no end and no details, and its process is gone.
    pid = dead_pid()
    killed = history.record_start("app", "drill")
    with history._connect() as db:
        db.execute("UPDATE runs SET pid=? WHERE id=?", (pid, killed))

    row = dashboard_row(client)
    assert 'state-row-bad' in row and '<span class="bad">FAILED</span>' in row and "RTO" not in row
    assert f"last drill failed: interrupted: process {pid} ended without recording a result" in row
    page = client.get("/instances/app").text
    assert 'last drill <span class="bad">FAILED</span>' in page
    assert f"interrupted: process {pid} ended without recording a result" in page


def test_an_app_a_killed_run_left_paused_is_shown_and_not_resumed_by_a_page_view(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A fresh point, so that the instance is only "at risk" (amber) until the paused app makes it "failing".
    point = {"run_id": "20261203T070000Z-ab12", "started": datetime.now(UTC), "repository": "main", "bytes": 1,
             "seconds": 1.0, "databases": 0, "files": 1, "safety_point": False}
    monkeypatch.setattr(Data, "points", lambda self, name: [point])
    client, state = logged_in(tmp_path)
    assert "state-row-warn" in dashboard_row(client)
    flag = tmp_path / "itop" / "data" / ".readonly"
    flag.parent.mkdir(parents=True)
    flag.touch()
    pid = dead_pid()
    marker = leave_paused(state, pid, [{"kind": "remove_file", "path": str(flag),
                                        "what": f"iTop read-only mode ({flag})"}])
    left = f"iTop read-only mode ({flag}) — left paused since 2026-12-03 07:00 UTC by run pid {pid}, which was " \
        "killed or could not resume it"
    line = f'<div class="paused bad">{left}; `safehold serve` resumes it within 5 min, any backup or ' \
        "`safehold check app` at once</div>"
    assert line in dashboard_row(client) and "state-row-bad" in dashboard_row(client)
    page = client.get("/instances/app").text
    assert line in page and "state-bad" in page
    assert flag.exists() and marker.exists()  # looked at only: a viewer's page view starts nothing

    # `safehold serve` tried, and resuming failed: the page says why (kept in the marker), not "resumes it".
    leave_paused(state, pid, [{"kind": "commands", "start": [["false"]]}])
    assert resume_marker(marker, state, Silent()).state == "failed"
    row = dashboard_row(client)
    assert "resuming failed: resume command &#39;false&#39; failed" in row and "within 5 min" not in row

    # A run of the instance holds it: a leftover of a dead run waits for it; the live run's own pause is no line.
    with instance_lock(state, "app", "r1", "backup", Silent()):
        assert "resumed once that run ends" in dashboard_row(client)
        marker.write_text(json.dumps({**json.loads(marker.read_text()), "pid": os.getpid()}))
        assert 'class="paused' not in dashboard_row(client)


def test_only_operators_are_offered_the_download_of_an_export(tmp_path: Path) -> None:
    viewer, state = logged_in(tmp_path)
    operator, _ = logged_in(tmp_path, "operator")
    job = Job("20260101T000000Z-abcd", "export", "app", "operator", state="ok", finished=1e9,
              result={"run_id": "20251231T230000Z-0a1b", "file": "app-20251231T230000Z-0a1b-c0ffee.tar.zst"})
    (state / "web" / "jobs" / f"{job.id}.json").write_text(json.dumps(job.to_dict()))
    (state / "web" / "exports").mkdir()
    (state / "web" / "exports" / job.result["file"]).write_bytes(b"export")
    link = f'href="/jobs/{job.id}/download"'
    assert link in operator.get(f"/jobs/{job.id}").text
    assert operator.get(f"/jobs/{job.id}/download").content == b"export"
    page = viewer.get(f"/jobs/{job.id}")
    assert page.status_code == 200 and link not in page.text and job.result["file"] in page.text
    assert viewer.get(f"/jobs/{job.id}/download").status_code == 403


def test_exports_older_than_a_day_are_deleted_when_a_job_starts_and_by_the_sweeper(tmp_path: Path) -> None:
    operator, state = logged_in(tmp_path, "operator")
    exports = state / "web" / "exports"
    exports.mkdir()
    day_old = time.time() - 24 * 3600 - 60
    old, partial, fresh = (exports / name for name in ("app-20250101T000000Z-0a1b-c0ffee.tar.zst",
                                                       ".app-latest-beef00.tar.zst.partial",
                                                       "app-20250102T000000Z-0a1b-c0ffee.tar.zst"))
    for path in (old, partial, fresh):
        path.write_bytes(b"rows of the application's database")
    for path in (old, partial):
        os.utime(path, (day_old, day_old))
    token = re.search(r'name="csrf" value="([^"]+)"', operator.get("/instances/app").text)[1]
    started = operator.post("/instances/app/verify", data={"csrf": token})
    assert started.status_code == 303, started.text
    assert sorted(exports.iterdir()) == [fresh]

    # `safehold serve` also sweeps while no job starts
    os.utime(fresh, (day_old, day_old))
    sweeper = ExportSweeper(operator.app.state.console, every=60)
    sweeper.start()
    sweeper.stop()
    assert list(exports.iterdir()) == []


def test_login_keeps_the_page_asked_for_with_its_query_through_a_failed_attempt(tmp_path: Path) -> None:
    logged_in(tmp_path, "operator")  # the account
    _, state = logged_in(tmp_path)
    anonymous = TestClient(create_app(load(tmp_path / "safehold.toml"), Store(state)), base_url="http://localhost",
                           follow_redirects=False)
    wanted = "/instances/app/restore/plan?run=latest&parts=db&to_db=a%2C+b"
    sent = anonymous.get(wanted)
    assert sent.status_code == 303 and sent.headers["location"] == "/login?next=" + quote(wanted, safe="")
    page = anonymous.get(sent.headers["location"]).text
    next_field = re.search(r'name="next" value="([^"]+)"', page)[1].replace("&amp;", "&")
    assert next_field == wanted
    token = re.search(r'name="csrf" value="([^"]+)"', page)[1]
    failed = anonymous.post("/login", data={"csrf": token, "username": "operator", "password": "wrong-password",
                                            "next": wanted})
    assert failed.status_code == 401
    assert re.search(r'name="next" value="([^"]+)"', failed.text)[1].replace("&amp;", "&") == wanted
    good = anonymous.post("/login", data={"csrf": token, "username": "operator", "password": "operator-password-1",
                                          "next": wanted})
    assert good.status_code == 303 and good.headers["location"] == wanted

    # only paths of this site, on the form and after a failure as after a good login
    for elsewhere in ("//evil.example/x", "https://evil.example/", "/\\evil.example", "javascript:alert(1)"):
        page = anonymous.get("/login", params={"next": elsewhere}).text
        assert 'name="next" value="/"' in page, elsewhere
        token = re.search(r'name="csrf" value="([^"]+)"', page)[1]
        failed = anonymous.post("/login", data={"csrf": token, "username": "operator", "password": "wrong-pw",
                                                "next": elsewhere})
        assert 'name="next" value="/"' in failed.text, elsewhere


def test_a_failed_scheduled_verify_is_red_and_the_next_one_is_shown(tmp_path: Path) -> None:
    config = load(make_config(tmp_path, 'schedule = { cron = "0 2 * * *", verify = "0 5 * * sun" }',
                              repo_url=str(tmp_path / "no-repository")))
    store = Store(config.state_dir)
    store.add_user("viewer", "viewer", "viewer-password-1")
    client = TestClient(create_app(config, store), base_url="http://localhost", follow_redirects=False,
                        cookies={SESSION_COOKIE: store.open_session("viewer")})
    assert "next verify" in dashboard_row(client)
    history = History(config.state_dir)
    run = history.record_start("app", "verify")
    history.record_end(run, "failed", error="repository main is damaged: stored data does not match its checksum",
                       details={"problems": ["repository main is damaged: stored data does not match its checksum"]})
    row = dashboard_row(client)
    assert "state-row-bad" in row
    assert "last verify failed: repository main is damaged: stored data does not match" in row
    assert 'last verify <span class="bad">FAILED</span>' in client.get("/instances/app").text
