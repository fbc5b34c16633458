"""The console in a real browser (Debian chromium via Playwright) against a real `safehold serve`."""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import SRC, need, run_cli, sql
from tests.integration import webenv

# The screenshots in docs/ (README, docs/web.md) are taken by this test, but only rewritten there when
# asked (SAFEHOLD_DOCS_SCREENSHOTS=1): a plain test run must not change tracked files in the checkout.
DOCS = Path(__file__).resolve().parents[2] / "docs"
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]
ADMIN = ("admin", "admin-password-" + secrets.token_hex(4))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(tmp_path: Path, new_db, repo):
    """`safehold serve` on a free port with instances alpha (one point) and beta (failing backups)."""
    need(Path(CHROMIUM).exists(), "Debian chromium is not installed (apt-get install chromium)")
    env = webenv.build(tmp_path, new_db, repo)
    extra = {**env.env, "ADMIN_PW": ADMIN[1]}
    for argv in (["user", "add", ADMIN[0], "--role", "operator", "--password-ref", "env:ADMIN_PW"],
                 ["backup", "alpha"]):
        done = run_cli(*argv, config=env.config, env=extra)
        assert done.returncode == 0, done.stderr
    port = free_port()
    log = (tmp_path / "serve.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "safehold", "serve", "--listen", f"127.0.0.1:{port}",
                             "--config", str(env.config)], stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "PYTHONPATH": str(SRC), **extra})
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "serve.log").read_text()
            time.sleep(0.2)
    yield {"url": f"http://127.0.0.1:{port}", "env": env, "new_db": new_db}
    proc.terminate()
    proc.wait(timeout=15)
    log.close()


@pytest.fixture
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        yield chromium
        chromium.close()


def log_in(page, url: str) -> None:
    page.goto(url + "/")
    assert "/login" in page.url
    page.fill("input[name=username]", ADMIN[0])
    page.fill("input[name=password]", ADMIN[1])
    page.click("button:text('Log in')")
    page.wait_for_url(url + "/")


def follow(page, target) -> None:
    """Click a link or submit button and wait for the new page: counting elements right after a bare
    click may still see the old page when the machine is busy."""
    with page.expect_navigation():
        (page.locator(target) if isinstance(target, str) else target).click()


def test_console_end_to_end(server, browser, tmp_path: Path) -> None:
    shots = DOCS if os.environ.get("SAFEHOLD_DOCS_SCREENSHOTS") == "1" else tmp_path
    url = server["url"]
    page = browser.new_page(viewport={"width": 1280, "height": 800}, accept_downloads=True)
    page.set_default_timeout(60_000)
    log_in(page, url)
    assert page.locator("table.dashboard tr.instance").count() == 2
    assert "schedule is disabled" in page.locator("tr[data-instance=beta]").inner_text()

    # Backup now, watched live until the point is complete
    follow(page, "a:text('alpha')")
    before = page.locator("tr.point").count()
    page.fill("input[name=note]", "before the update to 25.06")
    page.click("button:text('Backup now')")
    page.wait_for_url(f"{url}/jobs/*")
    page.wait_for_selector("#log span")  # live log lines arrive while the job runs
    page.wait_for_selector("#job[data-done=yes]")  # the page reloads itself when the run ends
    assert page.locator("#job-state .job-ok").count() == 1
    assert "complete" in page.inner_text("p.good")
    follow(page, "h1 a:text('alpha')")
    assert page.locator("tr.point").count() == before + 1
    assert page.locator("tr.point td.note").first.inner_text() == "before the update to 25.06"

    # Restore the newest point into a new database, through the full confirmation flow
    target = f"t_web_restored_{secrets.token_hex(3)}"
    server["new_db"].created.append(target)  # dropped by the fixture afterwards
    follow(page, page.locator("tr.point a:text('restore')").first)
    page.fill("input[name=to_db]", target)
    follow(page, "button:text('Show the plan')")
    assert target in page.locator("table.plan").inner_text()
    assert "target is empty or new" in page.inner_text("table.plan")
    page.fill("input[name=confirm]", "alpah")
    follow(page, "button:text('Restore now')")
    assert "type the instance name alpha" in page.inner_text("main")
    page.go_back()
    page.fill("input[name=confirm]", "alpha")
    page.screenshot(path=str(shots / "restore-confirm.png"), full_page=True)
    page.click("button:text('Restore now')")
    page.wait_for_selector("table.comparison", timeout=90_000)
    assert "every table matches the manifest" in page.inner_text("main")
    rows = page.locator("table.comparison tbody tr")
    assert rows.count() == 2 and page.locator("table.comparison tr.row-failed").count() == 0
    assert sql("SELECT COUNT(*) FROM items", target)[0][0] == 25

    # a portable export of the newest point, downloaded through the browser
    page.goto(url + "/instances/alpha")
    page.locator("tr.point button:text('Export')").first.click()
    page.wait_for_selector("#job[data-done=yes]")
    with page.expect_download() as download:
        page.click("a:text('Download')")
    assert Path(download.value.path()).read_bytes()[:4] == b"\x28\xb5\x2f\xfd"  # a zstd frame

    # A failing run shows in red on the dashboard (beta names a database that does not exist)
    page.goto(url + "/instances/beta")
    page.click("button:text('Backup now')")
    page.wait_for_selector("#job[data-done=yes]")
    assert page.locator("#job-state .job-failed").count() == 1
    assert webenv.MISSING_DB in page.inner_text("p.error")
    page.goto(url + "/")
    beta = page.locator("tr[data-instance=beta]")
    assert "state-row-bad" in beta.get_attribute("class")
    assert "last backup failed" in beta.inner_text()
    color = beta.locator(".badge").evaluate("e => getComputedStyle(e).backgroundColor")
    assert color == "rgb(198, 40, 40)"
    # a drill of beta fails (it has no point) and the dashboard shows it in red
    page.goto(url + "/instances/beta")
    page.click("button:text('Drill now')")
    page.wait_for_selector("#job[data-done=yes]")
    assert "Drill FAILED" in page.inner_text("main")
    page.goto(url + "/")
    beta = page.locator("tr[data-instance=beta]")
    assert "last drill failed" in beta.inner_text() and beta.locator("td .bad", has_text="FAILED").count() == 1

    page.screenshot(path=str(shots / "dashboard.png"), full_page=True)

    # Viewing works with JavaScript disabled
    context = browser.new_context(java_script_enabled=False)
    plain = context.new_page()
    log_in(plain, url)
    assert plain.locator("table.dashboard tr.instance").count() == 2
    follow(plain, "a:text('Run log')")
    follow(plain, plain.locator("table.runs a").first)
    assert plain.locator("#log span").count() > 0
    plain.goto(url + "/instances/alpha")
    assert plain.locator("tr.point").count() == before + 1
    follow(plain, plain.locator("tr.point a").first)
    assert "Manifest of" in plain.inner_text("h1")
    context.close()
