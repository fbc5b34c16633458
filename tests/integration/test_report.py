"""`safehold report`: the numbers on the page are the repository's and the drill log's, and it renders in Chromium."""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import sqlite3
import tempfile
from html.parser import HTMLParser
from pathlib import Path

import pytest

from safehold import config as config_module
from safehold.actions import drill as drill_action
from safehold.actions.backup import backup_instance
from safehold.actions.common import open_repository, points
from safehold.actions.points import list_points
from safehold.history import History
from safehold.output import Silent
from tests.conftest import private_file, run_cli
from tests.integration.appkit import kill_group, start_cli, wait_for
from tests.integration.unattended import make_instance

DOCS = Path(__file__).resolve().parents[2] / "docs"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]


class Fields(HTMLParser):
    """Text of every element carrying data-field (keyed by data-field and data-repo/data-phase)."""

    def __init__(self) -> None:
        super().__init__()
        self.values: dict[str, str] = {}
        self.attrs: dict[str, dict[str, str | None]] = {}
        self.circles: dict[str, int] = {}
        self._open: list[str] = []
        self._chart = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "svg":
            self._chart = found.get("data-chart") or ""
        if tag == "circle":
            self.circles[self._chart] = self.circles.get(self._chart, 0) + 1
        if "data-field" in found:
            key = "/".join(v for v in (found["data-field"], found.get("data-repo"), found.get("data-phase")) if v)
            self.values[key] = ""
            self.attrs[key] = found
            self._open.append(key)
        elif self._open:
            self._open.append("")

    def handle_endtag(self, tag: str) -> None:
        if self._open and tag not in ("circle",):
            self._open.pop()

    def handle_data(self, data: str) -> None:
        for key in self._open:
            if key:
                self.values[key] = " ".join((self.values[key] + " " + data).split())


@pytest.fixture(scope="module")
def reported(tmp_path_factory: pytest.TempPathFactory, restic: str) -> dict[str, object]:
    """An instance with three points, one killed run, one failed and one passed drill; its report."""
    root = tmp_path_factory.mktemp("report")
    password = private_file(root / "secrets" / "repo.pass", secrets.token_urlsafe(24))
    lite = root / "app" / "data.sqlite"
    (root / "app" / "uploads").mkdir(parents=True)
    instance = f"crm{secrets.token_hex(3)}"
    config_path = root / "safehold.toml"
    config_path.write_text(f'''[settings]
state_dir = "{root / 'state'}"
[repositories.offsite]
url = "{root / 'repo'}"
password = "file:{password}"
[instances.{instance}]
repositories = ["offsite"]
files = ["{root / 'app' / 'uploads'}"]
[[instances.{instance}.databases]]
engine = "sqlite"
path = "{lite}"
''')
    config = config_module.load(config_path)
    with sqlite3.connect(lite) as conn:
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT)")
    conn.close()
    for night in range(3):  # growing data, so the size chart has a slope
        with sqlite3.connect(lite) as conn:
            conn.executemany("INSERT INTO t (body) VALUES (?)", [("x" * 500,)] * (200 * (night + 1)))
        conn.close()
        (root / "app" / "uploads" / f"scan{night}.pdf").write_bytes(os.urandom(20000 * (night + 1)))
        backup_instance(config, instance, Silent())
    repo = open_repository(config, "offsite")
    killed = "20261120T010000Z-dead"
    repo.run("backup", "--stdin", "--stdin-filename", "/safehold/db/sqlite-data.sqlite.sqlite", "--time",
             "2026-11-20 01:00:00", "--tag", f"safehold,instance={instance},run={killed},part=db:sqlite-data",
             input=b"half a dump")
    old_tmp = tempfile.tempdir
    tempfile.tempdir = str(root)
    try:
        oldest = points(config, repo, instance)[-1]
        repo.run("forget", oldest.manifest.databases[0].snapshot)  # its database is gone: a failed drill
        drill_action.drill(config, instance, Silent(), oldest.run_id)
        drill_action.drill(config, instance, Silent())
    finally:
        tempfile.tempdir = old_tmp
    html = root / "report.html"
    res = run_cli("report", instance, "--html", str(html), "--json", config=config_path)
    assert res.returncode == 0, res.stderr
    return {"config": config, "instance": instance, "html": html, "data": json.loads(res.stdout),
            "killed": killed, "drills": drill_action.load(config, instance)}


def test_numbers_on_the_page_match_the_data(reported: dict[str, object]) -> None:
    config, instance = reported["config"], reported["instance"]
    points = list_points(config, instance)  # type: ignore[arg-type]
    drills = reported["drills"]
    assert isinstance(drills, list) and len(drills) == 2
    last_drill = drills[-1]
    page = Fields()
    page.feed(Path(str(reported["html"])).read_text())
    fields = page.values

    assert fields["points/offsite"] == str(len(points)) == "3"
    newest = points[0]
    assert fields["last-backup-run"] == newest["run_id"]
    assert fields["last-backup-seconds"] == f"{round(newest['seconds'], 1)} s"
    assert fields["last-backup-size"] == f"{newest['bytes'] / 1e6:.1f} MB"
    assert fields["drill-result"] == "passed" and last_drill["ok"]
    assert fields["drill-run"] == last_drill["run_id"] == newest["run_id"]
    assert fields["rto"] == f"{last_drill['rto_seconds']:.1f} s"
    rpo = last_drill["rpo_seconds"]
    assert fields["rpo"] == (f"{rpo / 60:.0f} min" if rpo < 3600 else f"{rpo / 3600:.1f} h")
    for phase, seconds in last_drill["phases"].items():
        assert fields[f"phase/{phase}"] == f"{seconds:.2f} s"
    assert page.attrs["failures"]["data-count"] == "2"
    assert f"backup run {reported['killed']} did not complete" in fields["failures"]
    assert "offsite: a snapshot this point needs is not in the repository" in fields["failures"]
    assert page.circles == {"duration": 3, "size": 3}

    data = reported["data"]["instances"][0]  # --json carries the same numbers
    assert data["repositories"][0]["points"] == 3
    assert data["last_backup"]["run_id"] == newest["run_id"]
    assert [round(d["value"] * 1e6) for d in data["charts"]["size"]["dots"]] == [p["bytes"] for p in points[::-1]]


def test_report_renders_in_chromium(reported: dict[str, object], tmp_path: Path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    if not Path("/usr/bin/chromium").exists():
        pytest.skip("Debian chromium is not installed")
    shot = tmp_path / "report.png"
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 820, "height": 1100}, java_script_enabled=False)
            page.goto(Path(str(reported["html"])).as_uri())
            assert page.locator("h1").inner_text() == "Recovery report"
            assert page.locator("svg[data-chart=size] circle").count() == 3
            box = page.locator("svg[data-chart=duration]").bounding_box()
            assert box and box["width"] > 300 and box["height"] > 80
            assert re.fullmatch(r"\d+\.\d s", page.locator("[data-field=rto]").inner_text())
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20000
    if os.environ.get("SAFEHOLD_UPDATE_SCREENSHOTS"):
        DOCS.mkdir(exist_ok=True)
        shutil.copy(shot, DOCS / "report.png")


def test_failures_of_every_kind_come_from_the_run_history(tmp_path: Path, repo: dict[str, str]) -> None:
    """Two failed backups (database gone) and a drill killed with SIGKILL are all in the report."""
    config = make_instance(tmp_path, repo)
    assert run_cli("backup", "app", config=config).returncode == 0
    (tmp_path / "app" / "app.db").rename(tmp_path / "app.db.away")
    for _ in range(2):
        failed = run_cli("backup", "app", config=config)
        assert failed.returncode != 0
    history = History(config_module.load(config).state_dir)
    drill = start_cli("drill", "app", config=config)
    try:
        wait_for(lambda: bool(history.running("app")), every=0.005)  # a small drill is over in a second or two
        os.kill(drill.pid, signal.SIGKILL)
        drill.wait()
    finally:
        kill_group(drill)
    res = run_cli("report", "app", "--json", config=config)
    assert res.returncode == 0, res.stderr
    reported = json.loads(res.stdout)["instances"][0]
    failures = reported["failures"]
    assert [f["what"] for f in failures] == ["drill", "backup", "backup"], failures
    # The killed drill is the last drill: the report must not show an older passed one (or none) instead.
    assert reported["last_drill"]["ok"] is False
    assert reported["last_drill"]["problems"] == [f"interrupted: process {drill.pid} ended without recording a result"]
    assert failures[0]["message"] == f"interrupted: process {drill.pid} ended without recording a result"
    errors = [run.error for run in history.runs("app", "backup") if run.result == "failed"]
    assert len(errors) == 2 and all(errors)
    # Parts are stored side by side, so a failed database dump may leave the run's other parts behind
    # (prune removes them after 24 h); the report then says so after the error itself.
    for failure, error in zip(failures[1:], errors, strict=True):
        message = failure["message"]
        assert message == error or (message.startswith(f"{error}; backup run ")
                                    and message.endswith("(parts without a manifest in main)")), (message, error)
