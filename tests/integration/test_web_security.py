"""Security of the web console, through Starlette's TestClient against real MariaDB and restic."""

from __future__ import annotations

import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from safehold import config as config_module
from safehold.actions.backup import backup_instance
from safehold.history import History
from safehold.lock import instance_lock
from safehold.output import Silent
from safehold.web.app import create_app
from safehold.web.store import Store
from tests.integration import webenv

OPERATOR, VIEWER = ("ops", "ops-password-1"), ("view", "view-password-1")
POSTS = ["/logout", "/instances/alpha/backup", "/instances/alpha/verify", "/instances/alpha/drill",
         "/instances/alpha/restore", "/instances/alpha/points/latest/export"]


@pytest.fixture
def env(tmp_path: Path, new_db, repo, monkeypatch: pytest.MonkeyPatch) -> webenv.WebEnv:
    built = webenv.build(tmp_path, new_db, repo)
    for key, value in built.env.items():
        monkeypatch.setenv(key, value)
    return built


@pytest.fixture
def app(env: webenv.WebEnv):
    config = config_module.load(env.config)
    store = Store(config.state_dir)
    store.add_user(OPERATOR[0], "operator", OPERATOR[1])
    store.add_user(VIEWER[0], "viewer", VIEWER[1])
    backup_instance(config, "alpha", Silent())
    return create_app(config, store)


def client(app, address: str = "10.0.0.1", scheme: str = "http") -> TestClient:
    """A browser at `address`; the console allows only known names in Host (localhost here)."""
    return TestClient(app, base_url=f"{scheme}://localhost", follow_redirects=False, client=(address, 5000))


def login(c: TestClient, user: tuple[str, str]) -> str:
    """Log in through the form; returns the session's CSRF token."""
    page = c.get("/login")
    token = re.search(r'name="csrf" value="([^"]+)"', page.text)[1]
    response = c.post("/login", data={"csrf": token, "username": user[0], "password": user[1], "next": "/"})
    assert response.status_code == 303, response.text
    return csrf_of(c)


def csrf_of(c: TestClient) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', c.get("/").text)[1]


def wait_job(c: TestClient, location: str, seconds: float = 180) -> dict:
    # A backup takes ~2 s alone; while other tests load big tables, its global read lock waits for them.
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        status = c.get(location + "/status").json()
        if status["done"]:
            return status
        time.sleep(0.1)
    raise AssertionError(f"job did not finish in {seconds} s")


def test_state_changing_routes_need_session_then_csrf(app) -> None:
    anonymous = client(app)
    for path in POSTS:
        assert anonymous.post(path, data={"run": "latest", "parts": "db", "confirm": "alpha"}).status_code == 401, path
    assert anonymous.get("/").status_code == 303  # pages send you to the login form
    assert anonymous.get("/jobs/20260101T000000Z-abcd/status").status_code == 303

    operator = client(app)
    token = login(operator, OPERATOR)
    for path in POSTS:
        data = {"run": "latest", "parts": "db", "confirm": "alpha"}
        assert operator.post(path, data=data).status_code == 403, path
        assert operator.post(path, data={**data, "csrf": "forged" + token}).status_code == 403, path
    # the login form itself needs its double-submit token
    fresh = client(app)
    assert fresh.post("/login", data={"username": OPERATOR[0], "password": OPERATOR[1]}).status_code == 403
    assert not operator.get("/runs").text.count("/jobs/2"), "no job may have started"


def test_viewer_cannot_back_up_restore_or_verify(app) -> None:
    viewer = client(app)
    token = login(viewer, VIEWER)
    for path in ("/instances/alpha/backup", "/instances/alpha/verify", "/instances/alpha/restore",
                 "/instances/alpha/drill", "/instances/alpha/points/latest/export"):
        response = viewer.post(path, data={"csrf": token, "run": "latest", "parts": "db", "confirm": "alpha"})
        assert response.status_code == 403, path
    assert viewer.get("/instances/alpha/restore").status_code == 403
    assert viewer.get("/instances/alpha/restore/plan?run=latest&parts=db").status_code == 403
    page = viewer.get("/instances/alpha").text
    assert "Backup now" not in page and "alpha" in page
    assert app.state.console.jobs.history() == []


def test_operator_backup_and_busy_instance(app, env: webenv.WebEnv) -> None:
    operator = client(app)
    token = login(operator, OPERATOR)
    config = app.state.console.config
    with instance_lock(config.state_dir, "alpha", "held-by-test", "backup", Silent()):
        busy = operator.post("/instances/alpha/backup", data={"csrf": token})
        assert busy.status_code == 409 and "a run is already in progress" in busy.text
        assert "a run is already in progress" in operator.get("/instances/alpha").text
    started = operator.post("/instances/alpha/backup", data={"csrf": token})
    assert started.status_code == 303
    status = wait_job(operator, started.headers["location"])
    assert status["state"] == "ok", status
    audit = operator.get("/audit").text
    assert "refused: a run is already in progress" in audit and "backup finished" in audit

    # restoring over the live database: the plan says so and the confirmation carries --force
    plan = operator.get("/instances/alpha/restore/plan?run=latest&parts=db").text
    assert "target holds data: it will be replaced" in plan and 'name="force" value="1"' in plan
    assert "safety point" in plan
    # a wrong confirmation name starts nothing
    jobs_before = len(app.state.console.jobs.history())
    wrong = operator.post("/instances/alpha/restore", data={"csrf": token, "run": "latest", "parts": "db",
                                                            "force": "1", "confirm": "ALPHA"})
    assert wrong.status_code == 400 and "type the instance name alpha" in wrong.text
    assert len(app.state.console.jobs.history()) == jobs_before


def test_backup_now_keeps_an_escaped_note_and_refuses_a_bad_one(app) -> None:
    operator = client(app)
    token = login(operator, OPERATOR)
    assert 'name="note"' in operator.get("/instances/alpha").text
    bad = operator.post("/instances/alpha/backup", data={"csrf": token, "note": "before\nafter"})
    assert bad.status_code == 400 and "the note has 2 lines" in bad.text
    assert app.state.console.jobs.history() == []  # nothing was started
    assert operator.post("/instances/alpha/backup", data={"note": "no token"}).status_code == 403

    started = operator.post("/instances/alpha/backup", data={"csrf": token, "note": " before <b>update</b> "})
    assert started.status_code == 303
    assert wait_job(operator, started.headers["location"])["state"] == "ok"
    shown = "before &lt;b&gt;update&lt;/b&gt;"  # escaped wherever it is shown
    assert shown in operator.get(started.headers["location"]).text
    assert shown in operator.get("/instances/alpha").text and "<b>update" not in operator.get("/instances/alpha").text
    run = app.state.console.jobs.history()[0].result["run_id"]
    assert shown in operator.get(f"/instances/alpha/points/{run}/manifest").text


def test_restore_files_under_needs_a_full_path(app) -> None:
    operator = client(app)
    token = login(operator, OPERATOR)
    for folder in ("restored", "../restored", "/tmp/x\0y"):
        plan = operator.get("/instances/alpha/restore/plan", params={"run": "latest", "parts": "files",
                                                                      "files_to": folder})
        assert plan.status_code == 400 and "give a full path starting with /" in plan.text, folder
        posted = operator.post("/instances/alpha/restore", data={"csrf": token, "run": "latest", "parts": "files",
                                                                 "files_to": folder, "confirm": "alpha"})
        assert posted.status_code == 400 and "give a full path starting with /" in posted.text, folder
    assert app.state.console.jobs.history() == []  # nothing was started


def test_wrong_passwords_are_rate_limited(app) -> None:
    c = client(app)
    token = re.search(r'name="csrf" value="([^"]+)"', c.get("/login").text)[1]
    for _ in range(5):
        bad = c.post("/login", data={"csrf": token, "username": OPERATOR[0], "password": "wrong-password"})
        assert bad.status_code == 401
    blocked = c.post("/login", data={"csrf": token, "username": OPERATOR[0], "password": OPERATOR[1]})
    assert blocked.status_code == 429 and "Retry-After" in blocked.headers
    assert "safehold_session" not in blocked.headers.get("set-cookie", "")
    # another address guessing the same account is blocked too
    other = client(app, "10.0.0.2")
    token = re.search(r'name="csrf" value="([^"]+)"', other.get("/login").text)[1]
    assert other.post("/login", data={"csrf": token, "username": OPERATOR[0], "password": OPERATOR[1]}
                      ).status_code == 429


def test_parallel_wrong_passwords_cannot_outrun_the_rate_limit(app) -> None:
    # Each guess is counted before its (slow) password hash is checked, so firing many at once gets
    # no more than the limit checked.
    def guess(i: int) -> int:
        c = client(app)
        token = re.search(r'name="csrf" value="([^"]+)"', c.get("/login").text)[1]
        return c.post("/login", data={"csrf": token, "username": VIEWER[0], "password": f"wrong-{i}"}).status_code

    with ThreadPoolExecutor(12) as pool:
        codes = list(pool.map(guess, range(12)))
    assert codes.count(401) == 5 and codes.count(429) == 7, codes


def test_a_good_login_does_not_reset_guessing_at_other_accounts(app) -> None:
    c = client(app)
    token = re.search(r'name="csrf" value="([^"]+)"', c.get("/login").text)[1]
    for i in range(4):  # four accounts guessed once each: no name reaches the limit on its own
        assert c.post("/login", data={"csrf": token, "username": f"guess{i}", "password": "x" * 10}
                      ).status_code == 401
    login(client(app), VIEWER)  # the attacker's own account, from the same address
    token = re.search(r'name="csrf" value="([^"]+)"', c.get("/login").text)[1]
    assert c.post("/login", data={"csrf": token, "username": "guess4", "password": "x" * 10}).status_code == 401
    refused = c.post("/login", data={"csrf": token, "username": OPERATOR[0], "password": OPERATOR[1]})
    assert refused.status_code == 429


def test_an_anonymous_login_cannot_write_megabytes_into_the_audit_log(app) -> None:
    c = client(app)
    token = re.search(r'name="csrf" value="([^"]+)"', c.get("/login").text)[1]
    for _ in range(7):  # failed ones, then rate-limited ones: each is audited
        response = c.post("/login", data={"csrf": token, "username": "A" * 500_000, "password": "x" * 10})
        assert response.status_code in (401, 429)
    rows = app.state.console.store.audit_rows()
    assert len(rows) == 7 and all(len(str(row["user"])) <= 101 for row in rows)
    assert app.state.console.store.path.stat().st_size < 200_000


def test_session_cookie_flags(app) -> None:
    plain = client(app)
    login(plain, OPERATOR)
    cookie = [h for h in plain.cookies.jar if h.name == "safehold_session"][0]
    assert cookie.has_nonstandard_attr("HttpOnly") and cookie.secure is False
    tls = client(app, scheme="https")
    page = tls.get("/login")
    token = re.search(r'name="csrf" value="([^"]+)"', page.text)[1]
    response = tls.post("/login", data={"csrf": token, "username": OPERATOR[0], "password": OPERATOR[1]})
    header = [v for k, v in response.headers.multi_items() if k == "set-cookie" and "safehold_session" in v][0]
    assert "HttpOnly" in header and "samesite=strict" in header.lower() and "Secure" in header


def session_cookie_header(c: TestClient, user: tuple[str, str], headers: dict[str, str]) -> str:
    """The Set-Cookie header of a good login sent with `headers`."""
    token = re.search(r'name="csrf" value="([^"]+)"', c.get("/login").text)[1]
    response = c.post("/login", data={"csrf": token, "username": user[0], "password": user[1]}, headers=headers)
    assert response.status_code == 303, response.text
    return [v for k, v in response.headers.multi_items() if k == "set-cookie" and "safehold_session" in v][0]


def guess_from(c: TestClient, addresses: list[str]) -> list[int]:
    """One wrong password per address in X-Forwarded-For, each for another (unknown) account."""
    token = re.search(r'name="csrf" value="([^"]+)"', c.get("/login").text)[1]
    return [c.post("/login", data={"csrf": token, "username": f"guess{i}", "password": "x" * 10},
                   headers={"X-Forwarded-For": address}).status_code for i, address in enumerate(addresses)]


def test_forwarded_headers_count_only_from_a_trusted_proxy(app, env: webenv.WebEnv) -> None:
    # A local process (a PHP app on the same host) connects from 127.0.0.1 like a proxy would.
    local = client(app, "127.0.0.1")
    spoofed = [f"203.0.113.{i}" for i in range(6)]
    assert guess_from(local, spoofed) == [401] * 5 + [429]
    assert {row["address"] for row in app.state.console.store.audit_rows()} == {"127.0.0.1"}
    https = {"X-Forwarded-Proto": "https"}
    assert "Secure" not in session_cookie_header(client(app), OPERATOR, https)

    config = config_module.load(env.config)
    config.web.trusted_proxies = ["127.0.0.1", "::1"]
    proxied_app = create_app(config, app.state.console.store)
    proxy = client(proxied_app, "127.0.0.1")
    assert guess_from(proxy, spoofed) == [401] * 6  # six clients behind the proxy, one guess each
    assert {row["address"] for row in proxied_app.state.console.store.audit_rows()[:6]} == set(spoofed)
    assert "Secure" in session_cookie_header(proxy, OPERATOR, https)
    ipv6_proxy = client(proxied_app, "::1")
    assert "Secure" in session_cookie_header(ipv6_proxy, OPERATOR, https)
    # the proxy's own address list does not extend to other hosts
    assert "Secure" not in session_cookie_header(client(proxied_app), OPERATOR, https)


def test_only_known_host_names_are_answered(app, env: webenv.WebEnv) -> None:
    # DNS rebinding: a page of evil.example re-resolves its name to 127.0.0.1; the browser still sends
    # Host: evil.example, and must not get the login form or the metrics.
    c = client(app)
    for path in ("/login", "/metrics", "/"):
        assert c.get(path, headers={"Host": "evil.example"}).status_code == 400, path
        assert c.get(path, headers={"Host": "evil.example:8750"}).status_code == 400, path
    for host in ("localhost:8750", "127.0.0.1:8750", "[::1]:8750", "LOCALHOST"):
        assert c.get("/metrics", headers={"Host": host}).status_code == 200, host

    config = config_module.load(env.config)
    config.web.allowed_hosts = ["backup.example.org"]
    named = client(create_app(config, app.state.console.store, listen="192.0.2.10:8750"))
    for host in ("backup.example.org", "Backup.Example.org:443", "192.0.2.10:8750"):
        assert named.get("/metrics", headers={"Host": host}).status_code == 200, host
    assert named.get("/metrics", headers={"Host": "evil.example"}).status_code == 400


def test_an_export_of_latest_is_named_by_its_point(app, env: webenv.WebEnv) -> None:
    operator = client(app)
    token = login(operator, OPERATOR)
    started = operator.post("/instances/alpha/points/latest/export", data={"csrf": token})
    assert started.status_code == 303, started.text
    assert wait_job(operator, started.headers["location"])["state"] == "ok"
    job = app.state.console.jobs.get(started.headers["location"].rsplit("/", 1)[1])
    run_id = job.result["run_id"]
    assert job.result["file"].startswith(f"alpha-{run_id}-") and "latest" not in job.result["file"]
    assert [p.name for p in (env.state_dir / "web" / "exports").iterdir()] == [job.result["file"]]
    page = operator.get(started.headers["location"]).text
    assert "deleted 24 h after it was made" in page
    download = operator.get(started.headers["location"] + "/download")
    assert download.status_code == 200 and job.result["file"] in download.headers["content-disposition"]


def test_secrets_never_in_any_page(app, env: webenv.WebEnv) -> None:
    operator = client(app)
    token = login(operator, OPERATOR)
    started = operator.post("/instances/beta/verify", data={"csrf": token})
    assert wait_job(operator, started.headers["location"])["state"] == "ok"
    # The console's Verify is recorded as the scheduled one is: `check` and the pages see it.
    assert History(env.state_dir).last_run("beta", "verify").result == "ok"
    assert re.search(r"last verify <span class=\"good\">passed</span>", operator.get("/instances/beta").text)
    seen: set[str] = set()
    queue = ["/", "/instances/alpha/restore/plan?run=latest&parts=db&parts=files&to_db=t_web_never_made"]
    pages = 0
    while queue:
        path = queue.pop()
        if path in seen or path.startswith(("/static", "/logout")):
            continue
        seen.add(path)
        response = operator.get(path)
        assert response.status_code in (200, 404), (path, response.status_code)
        body = response.text
        pages += 1
        for secret in env.secrets:
            assert secret not in body, f"a secret value appears in {path}"
        queue += [href.replace("&amp;", "&") for href in re.findall(r'href="(/[^"]*)"', body)]
        if "/status" not in path and path.startswith("/jobs/"):
            queue.append(path + "/status")
    assert pages >= 8 and "/settings" in seen and "env:" + webenv.ENV_SECRET in operator.get("/settings").text


def test_path_parameters_stay_inside_the_state_dir(app, env: webenv.WebEnv, tmp_path: Path) -> None:
    operator = client(app)
    login(operator, OPERATOR)
    canary = "canary-" + "x" * 12
    (env.state_dir / "web" / "jobs" / "secret.json").write_text(f'{{"canary": "{canary}"}}')
    (tmp_path / "outside.json").write_text(canary)
    for path in ("/jobs/..%2F..%2F..%2Foutside/status", "/jobs/secret/status", "/jobs/..%2Fjobs%2Fsecret",
                 "/jobs/%2e%2e%2f%2e%2e%2fweb.sqlite/download", "/static/..%2F..%2Fweb.sqlite",
                 "/static/%2e%2e/store.py", "/instances/..%2F..%2Fetc/restore",
                 "/instances/alpha/points/..%2F..%2F..%2Fetc%2Fpasswd/manifest",
                 "/instances/alpha/points/%2e%2e/manifest", "/instances/nope"):
        response = operator.get(path)
        assert response.status_code in (400, 404), (path, response.status_code)
        assert canary not in response.text and "root:x:0:0" not in response.text
        assert "CREATE TABLE" not in response.text and "argon2" not in response.text


def test_a_run_id_with_a_trailing_newline_is_not_a_run_id(app) -> None:
    operator = client(app)
    token = login(operator, OPERATOR)
    assert operator.get("/instances/alpha/points/latest%0A/manifest").status_code == 400
    assert operator.post("/instances/alpha/points/latest%0A/export", data={"csrf": token}).status_code == 400
    assert app.state.console.jobs.get("20260101T000000Z-abcd\n") is None
    assert app.state.console.jobs.history() == []  # nothing was started


def test_proxy_header_auth_is_off_by_default_and_needs_a_known_user(app, env: webenv.WebEnv) -> None:
    anonymous = client(app)
    assert anonymous.get("/", headers={"X-Remote-User": OPERATOR[0]}).status_code == 303
    config = config_module.load(env.config)
    config.web.proxy_auth_header = "X-Remote-User"
    config.web.trusted_proxies = ["10.0.0.1"]  # the test client's address: the proxy
    proxied = client(create_app(config, app.state.console.store))
    assert proxied.get("/", headers={"X-Remote-User": "stranger"}).status_code == 403
    page = proxied.get("/instances/alpha", headers={"X-Remote-User": VIEWER[0]})
    assert page.status_code == 200 and "view (viewer)" in page.text
    token = re.search(r'name="csrf" value="([^"]+)"', page.text)[1]
    headers = {"X-Remote-User": VIEWER[0]}
    assert proxied.post("/instances/alpha/backup", data={"csrf": token}, headers=headers).status_code == 403
    assert proxied.post("/logout", data={}, headers=headers).status_code == 403
