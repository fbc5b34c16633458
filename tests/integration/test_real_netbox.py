"""A real NetBox 4.6.8 (../shared/apps), restored from nothing with one `safehold restore`.

NetBox runs from its own sources with the cached venv (Python 3.12, `pip install -r
requirements.txt`), on the local PostgreSQL with a database and login role of its own, a private
redis-server and `manage.py runserver`. Data is made through its REST API with a v2 token (which
only works with the same API_TOKEN_PEPPERS). Then the database, its role and the whole install are
deleted; one restore must bring back the role, the database, the code, configuration.py and the
media, so that the same token authenticates and the objects and the image attachment (byte for
byte) come back through the API.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import struct
import subprocess
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import need, run_cli, write_config
from tests.integration import netbox_real
from tests.integration.netbox_real import free_port, psql, redis_server, unpack, write_configuration

ADMIN_PASSWORD = "Safehold-test-pw-2026"


def _png(width: int = 3, height: int = 2) -> bytes:
    """A small valid PNG (NetBox reads the image's size with Pillow)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    rows = b"".join(b"\x00" + b"".join(bytes([(x * 80) % 256, (y * 120) % 256, 7]) for x in range(width))
                    for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def netbox_cache() -> netbox_real.Cache:
    need(netbox_real.TARBALL.is_file(), f"the NetBox source {netbox_real.TARBALL} is missing (../shared/apps)")
    need(netbox_real.PYTHON.exists(), f"NetBox 4.6 needs Python 3.12, and {netbox_real.PYTHON} is absent")
    need(shutil.which("redis-server") is not None, "redis-server (Debian package redis-server) is not installed")
    ready = subprocess.run(["pg_isready", "-h", "127.0.0.1", "-q"], check=False).returncode == 0
    need(ready, "PostgreSQL on 127.0.0.1:5432 is not running")
    return netbox_real.ensure_cache()


class Api:
    """NetBox's REST API with one v2 token."""

    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.token = ""

    def call(self, method: str, path: str, body: dict[str, object] | None = None,
             files: tuple[str, str, bytes] | None = None) -> tuple[int, object]:
        headers = {"Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        data = None
        if files is not None:
            boundary = secrets.token_hex(8)
            parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
                     for k, v in (body or {}).items()]
            field, name, content = files
            parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{name}"\r\n'
                         f"Content-Type: image/png\r\n\r\n".encode() + content + b"\r\n")
            data = b"".join(parts) + f"--{boundary}--\r\n".encode()
            headers["Content-Type"] = f"multipart/form-data; boundary={boundary}"
        elif body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(self.base + path, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=60) as answer:
                raw = answer.read()
                kind = answer.headers.get("Content-Type", "")
                return answer.status, json.loads(raw) if "json" in kind else raw
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def post(self, path: str, body: dict[str, object]) -> dict[str, object]:
        status, answer = self.call("POST", path, body)
        assert status == 201, (path, status, answer)
        assert isinstance(answer, dict)
        return answer


@contextlib.contextmanager
def running_netbox(python: Path, root: Path, port: int) -> Iterator[Api]:
    """`manage.py runserver` (no autoreload) until it answers."""
    log = (root.parent / f"runserver-{port}.log").open("ab")
    proc = subprocess.Popen([str(python), "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"],
                            cwd=root / "netbox", stdout=log, stderr=subprocess.STDOUT)
    api = Api(port)
    try:
        deadline = time.monotonic() + 180
        while True:
            with contextlib.suppress(OSError):
                status, _ = api.call("GET", "/api/status/")
                if status in (200, 403):
                    break
            assert proc.poll() is None, (root.parent / f"runserver-{port}.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "NetBox did not answer within 180 s"
            time.sleep(1)
        yield api
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        log.close()


def test_real_netbox_restored_from_nothing(netbox_cache: netbox_real.Cache, tmp_path: Path,
                                           repo: dict[str, str]) -> None:
    name = f"nb_{secrets.token_hex(4)}"
    password = secrets.token_urlsafe(16)
    psql("postgres", f"CREATE ROLE {name} LOGIN PASSWORD '{password}'")
    psql("postgres", f"CREATE DATABASE {name} OWNER {name}")
    try:
        subprocess.run(["pg_restore", "-h", "127.0.0.1", "-U", name, "--no-owner", "--no-acl", "-d", name,
                        str(netbox_cache.dump)], check=True, capture_output=True, env={**os.environ,
                                                                                          "PGPASSWORD": password})
        root = unpack(tmp_path / "opt")
        with redis_server() as redis_port:
            write_configuration(root, database=name, user=name, password=password, redis_port=redis_port,
                                secret_key=secrets.token_urlsafe(50), pepper=secrets.token_urlsafe(50))
            subprocess.run([str(netbox_cache.python), "manage.py", "createsuperuser", "--no-input",
                            "--username", "admin", "--email", "admin@example.org"], cwd=root / "netbox", check=True,
                           capture_output=True, env={**os.environ, "DJANGO_SUPERUSER_PASSWORD": ADMIN_PASSWORD})
            image = _png()
            with running_netbox(netbox_cache.python, root, free_port()) as api:
                made = api.post("/api/users/tokens/provision/", {"username": "admin", "password": ADMIN_PASSWORD,
                                                                  "version": 2})
                assert made["version"] == 2, made
                api.token = f"nbt_{made['key']}.{made['token']}"
                site = api.post("/api/dcim/sites/", {"name": "HQ", "slug": "hq"})
                maker = api.post("/api/dcim/manufacturers/", {"name": "Acme", "slug": "acme"})
                kind = api.post("/api/dcim/device-types/", {"manufacturer": maker["id"], "model": "Box 1",
                                                            "slug": "box-1"})
                role = api.post("/api/dcim/device-roles/", {"name": "Core", "slug": "core", "color": "ff0000"})
                device = api.post("/api/dcim/devices/", {"name": "sw1", "device_type": kind["id"],
                                                         "role": role["id"], "site": site["id"]})
                status, attachment = api.call("POST", "/api/extras/image-attachments/",
                                              {"object_type": "dcim.device", "object_id": device["id"],
                                               "name": "rack photo"}, files=("image", "photo.png", image))
                assert status == 201, attachment
                assert isinstance(attachment, dict)
                image_path = str(attachment["image"]).split("/media/", 1)[1]
                assert api.call("GET", f"/media/{image_path}")[1] == image

            config = write_config(tmp_path, repo, f"""
[instances.nb]
app = "netbox"
root = "{root}"
repositories = ["main"]
""")
            planned = run_cli("backup", "nb", "--dry-run", config=config)
            assert planned.returncode == 0, planned.stdout + planned.stderr
            assert str(root) in planned.stdout and name in planned.stdout, planned.stdout
            backup = run_cli("backup", "nb", config=config)
            assert backup.returncode == 0, backup.stdout + backup.stderr
            verified = run_cli("key", "verify", "nb", "latest", config=config)
            assert verified.returncode == 0, verified.stdout + verified.stderr

            # The server is lost: database, role and the whole install.
            psql("postgres", f"DROP DATABASE {name} WITH (FORCE)")
            psql("postgres", f"DROP ROLE {name}")
            shutil.rmtree(root)

            planned = run_cli("restore", "nb", "latest", "--dry-run", config=config)
            assert planned.returncode == 0, planned.stdout + planned.stderr
            assert f"would re-create first: CREATE ROLE \"{name}\"" in planned.stderr, planned.stderr
            assert f"CREATE DATABASE \"{name}\" OWNER \"{name}\"" in planned.stderr and "SCRAM" not in planned.stderr
            assert not psql("postgres", f"SELECT 1 FROM pg_roles WHERE rolname = '{name}'").strip()
            restored = run_cli("restore", "nb", "latest", config=config)
            assert restored.returncode == 0, restored.stdout + restored.stderr
            assert psql("postgres", f"SELECT rolcanlogin FROM pg_roles WHERE rolname = '{name}'").strip() == "t"

            with running_netbox(netbox_cache.python, root, free_port()) as api:
                api.token = f"nbt_{made['key']}.{made['token']}"
                status, devices = api.call("GET", "/api/dcim/devices/?name=sw1")
                assert status == 200, devices
                assert isinstance(devices, dict) and devices["count"] == 1
                assert devices["results"][0]["site"]["id"] == site["id"]
                status, attachments = api.call("GET", f"/api/extras/image-attachments/?object_id={device['id']}")
                assert status == 200 and isinstance(attachments, dict) and attachments["count"] == 1
                assert api.call("GET", f"/media/{image_path}")[1] == image
                api.token = "nbt_" + made["key"] + ".wrong"
                assert api.call("GET", "/api/dcim/devices/")[0] in (401, 403)
    finally:
        psql("postgres", f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        psql("postgres", f"DROP ROLE IF EXISTS {name}")
