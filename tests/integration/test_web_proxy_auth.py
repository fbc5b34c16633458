"""`web.proxy_auth_header` names a user only on requests from `web.trusted_proxies`: `safehold serve` on
127.0.0.1, the reverse proxy at 127.0.0.2, and a local process at 127.0.0.1 sending the same header."""

from __future__ import annotations

import os
import re

import httpx

from tests.conftest import SRC, run_cli
from tests.integration.test_web_serve import free_port, serving, write_config

GETS = ["/", "/login", "/runs", "/metrics", "/audit", "/settings", "/instances/site",
        "/instances/site/restore", "/instances/site/restore/plan", "/instances/site/points/latest/manifest",
        "/jobs/20260101T000000Z-abcd", "/jobs/20260101T000000Z-abcd/status", "/static/style.css"]
POSTS = ["/login", "/logout", "/instances/site/backup", "/instances/site/verify", "/instances/site/drill",
         "/instances/site/restore", "/instances/site/points/latest/export"]


def _from(address: str, url: str) -> httpx.Client:
    """A client whose connections come from `address` (any 127.0.0.0/8 address is this host)."""
    return httpx.Client(base_url=url, transport=httpx.HTTPTransport(local_address=address), follow_redirects=False)


def test_the_proxy_header_counts_only_from_a_trusted_proxy(tmp_path, repo) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    config = write_config(tmp_path, repo, f'[web]\nlisten = "127.0.0.1:{port}"\nproxy_auth_header = "X-Remote-User"\n'
                                          'trusted_proxies = ["127.0.0.2"]\n')
    env = {**os.environ, "PYTHONPATH": str(SRC), "PW": "a-long-password"}
    assert run_cli("user", "add", "op", "--role", "operator", "--password-ref", "env:PW", config=config,
                   env=env).returncode == 0
    header = {"X-Remote-User": "op"}
    with serving(config, env, url), _from("127.0.0.2", url) as proxy, _from("127.0.0.1", url) as local:
        page = proxy.get("/", headers=header)
        assert page.status_code == 200 and "op (operator)" in page.text
        token = re.search(r'name="csrf" value="([^"]+)"', page.text)[1]
        started = proxy.post("/instances/site/backup", data={"csrf": token}, headers=header)
        assert started.status_code == 303, started.text  # the operator the proxy vouches for starts jobs

        for path in GETS:
            assert local.get(path, headers=header).status_code in (401, 403), path
        for path in POSTS:
            assert local.post(path, data={"csrf": token}, headers=header).status_code in (401, 403), path
        # Without the header, the same address is an ordinary (logged-out) browser.
        assert local.get("/login").status_code == 200
        assert local.get("/").status_code == 303


def test_a_proxy_header_without_trusted_proxies_is_a_config_error(tmp_path, repo) -> None:
    config = write_config(tmp_path, repo, '[web]\nproxy_auth_header = "X-Remote-User"\n')
    result = run_cli("serve", config=config)
    assert result.returncode == 2, result.stderr
    assert "proxy_auth_header is set but trusted_proxies is empty" in result.stderr
