"""The recovery kit: written once, 0600, secret; following only its steps, in an empty folder with no
safehold config, brings the instance back after its files and database are gone."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from safehold import __version__
from tests.conftest import run_cli, sql
from tests.integration.appkit import safehold_on_path
from tests.integration.offhost_servers import make_tree, password_file, read_tree, start_sshd, write_config


def test_kit_alone_restores_the_instance(tmp_path: Path, new_db: Callable[[str], str],
                                         request: pytest.FixtureRequest) -> None:
    app = tmp_path / "srv" / "app"
    files = make_tree(app)
    db = new_db("t_offhost")
    sql(["CREATE TABLE clients (id INT PRIMARY KEY, name VARCHAR(50))",
         "INSERT INTO clients VALUES (1, 'ACME'), (2, 'Globex')"], db)
    password = password_file(tmp_path)
    # The repository is off-host (SFTP): the kit must carry the SSH key and the pinned host key too.
    sshd = start_sshd()
    request.addfinalizer(lambda: (sshd.stop(), shutil.rmtree(sshd.folder, ignore_errors=True)))
    user_key = tmp_path / "ssh" / "id_ed25519"
    user_key.parent.mkdir()
    shutil.copy(sshd.user_key, user_key)
    repo = {"url": f"sftp://root@127.0.0.1:{sshd.port}/{sshd.area('kit')}/repo", "password": f"file:{password}",
            "ssh_key": str(user_key)}
    config = write_config(tmp_path / "safehold.toml", {"main": repo},
                          {"app": {"repositories": ["main"], "files": [str(app)],
                                   "databases": [{"engine": "mariadb", "user": "root", "names": [db]}]}})
    assert run_cli("repo", "trust", "main", "--yes", config=config).returncode == 0
    escrow = tmp_path / "state" / "keys"
    escrow.mkdir(parents=True)
    (escrow / "app.json").write_text(json.dumps({"itflow_master_key": "k3y-escrowed-value"}))
    assert run_cli("backup", "app", config=config).returncode == 0

    kit = tmp_path / "kit.html"
    made = run_cli("key", "kit", "--output", str(kit), config=config)
    assert made.returncode == 0, made.stderr
    assert kit.stat().st_mode & 0o777 == 0o600
    page = kit.read_text()
    assert "SECRET" in page and password.read_text() in page and "k3y-escrowed-value" in page
    assert user_key.read_text().strip() in page and sshd.known_hosts_line().split()[2] in page
    again = run_cli("key", "kit", "--output", str(kit), config=config)
    assert again.returncode == 1 and "written once" in again.stderr

    # Disaster: the application's files, the database and safehold's config and state are gone.
    shutil.rmtree(app)
    sql(f"DROP DATABASE `{db}`")
    config.unlink()
    shutil.rmtree(tmp_path / "state")
    password.unlink()
    shutil.rmtree(user_key.parent)

    steps = [html.unescape(s) for s in re.findall(r"<pre class='step'>(.*?)</pre>", page, re.S)]
    assert steps
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    bin_dir = safehold_on_path(tmp_path / "bin")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAFEHOLD_")}
    env.update(HOME=str(fresh), PATH=f"{bin_dir}:{env['PATH']}")
    env.pop("PYTHONPATH", None)
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", "\n".join(steps)], cwd=fresh, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert read_tree(app) == files
    escrowed = fresh / "safehold-recovery" / "state" / "keys" / "app.json"
    assert json.loads(escrowed.read_text()) == {"itflow_master_key": "k3y-escrowed-value"}
    assert escrowed.stat().st_mode & 0o777 == 0o600
    assert sql("SELECT id, name FROM clients ORDER BY id", db) == [(1, "ACME"), (2, "Globex")]

    # The kit installs safehold from the wheel kept with it (safehold is not installed by name from PyPI)
    # and names the Debian packages, the database's client included.
    install = "\n".join(html.unescape(s) for s in re.findall(r"<pre class='install'>(.*?)</pre>", page, re.S))
    assert "pip install safehold" not in install
    assert "apt-get install -y restic openssh-client tar zstd mariadb-client" in install
    assert f"/opt/safehold/bin/pip install /PATH/TO/safehold-{__version__}-py3-none-any.whl" in install
    assert "python3 -m pip wheel --no-deps" in page

    # Without safehold: the steps that only write files, then the kit's lines for the repository, open
    # the SFTP repository with plain restic (with the kit's SSH key and pinned host key).
    manual = [html.unescape(s) for s in re.findall(r"<pre class='manual'>(.*?)</pre>", page, re.S)]
    bare = tmp_path / "bare"
    bare.mkdir()
    by_hand = [*(step for step in steps if not step.startswith("safehold ")), manual[0],
               "restic snapshots --tag instance=app",
               "restic dump --tag instance=app,part=manifest latest /safehold/manifest.json > manifest.json"]
    env.update(HOME=str(bare), PATH=env["PATH"].removeprefix(f"{bin_dir}:"))
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", "\n".join(by_hand)],
                          cwd=bare, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    manifest = json.loads((bare / "safehold-recovery" / "manifest.json").read_text())
    assert manifest["instance"] == "app" and manifest["databases"][0]["name"] == db
