"""`safehold serve` with TLS, and `safehold user add`, run the way an administrator runs them."""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from safehold.web.store import Store
from tests.conftest import SRC, run_cli


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_config(tmp_path: Path, repo: dict[str, str], web: str = "") -> Path:
    files = tmp_path / "files"
    files.mkdir(exist_ok=True)
    config = tmp_path / "safehold.toml"
    config.write_text(f'''
[settings]
state_dir = "{tmp_path / 'state'}"
[repositories.local]
url = "{repo['url']}"
password = "file:{repo['password_file']}"
[instances.site]
repositories = ["local"]
files = ["{files}"]
{web}
''')
    return config


@contextlib.contextmanager
def serving(config: Path, env: dict[str, str], url: str) -> Iterator[httpx.Client]:
    """`safehold serve` running on `config`, and a client of it once it answers."""
    proc = subprocess.Popen([sys.executable, "-m", "safehold", "serve", "--config", str(config)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        with httpx.Client(base_url=url, verify=False) as client:
            deadline = time.monotonic() + 90  # the whole suite on two cores: starting can take a while
            while True:
                try:
                    client.get("/login")
                    break
                except httpx.TransportError:
                    assert proc.poll() is None and time.monotonic() < deadline
                    time.sleep(0.2)
            yield client
    finally:
        proc.terminate()
        proc.wait(timeout=15)


def test_user_add_prompts_and_refuses_bad_input(tmp_path: Path, repo) -> None:
    config = write_config(tmp_path, repo)
    added = run_cli("user", "add", "alice", "--role", "operator", config=config,
                    input="a-long-password\na-long-password\n")
    assert added.returncode == 0, added.stderr
    assert "a-long-password" not in added.stdout + added.stderr
    again = run_cli("user", "add", "alice", "--role", "viewer", config=config, input="other-password\n" * 2)
    assert again.returncode == 2 and "already exists" in again.stderr and "--replace" in again.stderr
    short = run_cli("user", "add", "bob", "--role", "viewer", config=config, input="short\nshort\n")
    assert short.returncode == 2 and "shorter than" in short.stderr
    role = run_cli("user", "add", "carol", "--role", "admin", config=config, input="a-long-password\n" * 2)
    assert role.returncode == 2 and "viewer or operator" in role.stderr
    database = tmp_path / "state" / "web.sqlite"
    assert database.stat().st_mode & 0o077 == 0 and b"a-long-password" not in database.read_bytes()


def test_user_list_and_remove_end_the_account_and_its_sessions(tmp_path: Path, repo) -> None:
    config = write_config(tmp_path, repo)
    env = {**os.environ, "PYTHONPATH": str(SRC), "PW": "a-long-password"}
    for name, role in (("alice", "operator"), ("bob", "viewer")):
        assert run_cli("user", "add", name, "--role", role, "--password-ref", "env:PW", config=config,
                       env=env).returncode == 0
    store = Store(tmp_path / "state")
    token = store.open_session("bob")
    listed = run_cli("user", "list", "--json", config=config)
    assert json.loads(listed.stdout) == [{"name": "alice", "role": "operator"}, {"name": "bob", "role": "viewer"}]
    removed = run_cli("user", "remove", "bob", config=config)
    assert removed.returncode == 0 and "bob removed" in removed.stdout, removed.stderr
    assert store.session(token) is None and not store.check_password("bob", "a-long-password")
    assert [u["name"] for u in store.users()] == ["alice"]
    again = run_cli("user", "remove", "bob", config=config)
    assert again.returncode == 2 and "user bob does not exist" in again.stderr
    assert [(row["action"], row["target"]) for row in store.audit_rows()][:2] == [("user remove", "bob"),
                                                                                  ("user add", "bob")]


def test_serve_with_tls_sets_secure_cookies(tmp_path: Path, repo) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=127.0.0.1"], check=True, capture_output=True)
    port = free_port()
    config = write_config(tmp_path, repo, f'[web]\nlisten = "127.0.0.1:{port}"\ntls_cert = "{cert}"\n'
                                          f'tls_key = "{key}"\n')
    env = {**os.environ, "PYTHONPATH": str(SRC), "PW": "tls-password-1"}
    assert run_cli("user", "add", "alice", "--role", "viewer", "--password-ref", "env:PW", config=config,
                   env=env).returncode == 0
    bad = run_cli("serve", "--listen", "nowhere", config=config)
    assert bad.returncode == 2 and "HOST:PORT" in bad.stderr
    with serving(config, env, f"https://127.0.0.1:{port}") as client:
        page = client.get("/login")
        assert page.status_code == 200
        token = re.search(r'name="csrf" value="([^"]+)"', page.text)[1]
        response = client.post("/login", data={"csrf": token, "username": "alice", "password": "tls-password-1"})
        cookie = [v for k, v in response.headers.multi_items() if k == "set-cookie" and "safehold_session" in v]
        assert response.status_code == 303 and "Secure" in cookie[0] and "HttpOnly" in cookie[0]
        assert "SameSite=strict" in cookie[0] or "samesite=strict" in cookie[0].lower()
        assert "site" in client.get("/").text


def test_serve_ignores_forwarded_headers_unless_a_proxy_is_trusted(tmp_path: Path, repo) -> None:
    # Any local process reaches the console from 127.0.0.1, as a proxy on this host would.
    port = free_port()
    config = write_config(tmp_path, repo, f'[web]\nlisten = "127.0.0.1:{port}"\n')
    env = {**os.environ, "PYTHONPATH": str(SRC), "PW": "a-long-password"}
    assert run_cli("user", "add", "alice", "--role", "viewer", "--password-ref", "env:PW", config=config,
                   env=env).returncode == 0
    with serving(config, env, f"http://127.0.0.1:{port}") as client:
        token = re.search(r'name="csrf" value="([^"]+)"', client.get("/login").text)[1]
        response = client.post("/login", data={"csrf": token, "username": "alice", "password": "a-long-password"},
                               headers={"X-Forwarded-Proto": "https"})
        cookie = [v for k, v in response.headers.multi_items() if k == "set-cookie" and "safehold_session" in v]
        assert response.status_code == 303 and "Secure" not in cookie[0]
        token = re.search(r'name="csrf" value="([^"]+)"', client.get("/login").text)[1]
        codes = [client.post("/login", data={"csrf": token, "username": f"guess{i}", "password": "x" * 10},
                             headers={"X-Forwarded-For": f"203.0.113.{i}"}).status_code for i in range(6)]
        assert codes == [401] * 5 + [429]
    logins = [row for row in Store(tmp_path / "state").audit_rows() if row["action"] == "login"]
    assert len(logins) == 7 and {row["address"] for row in logins} == {"127.0.0.1"}
