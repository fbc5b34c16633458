"""A repository's upload limit reaches restic: a nightly upload leaves room on the office uplink."""

from __future__ import annotations

import os
import time
from pathlib import Path

from tests.conftest import run_cli, write_config


def test_upload_limit_slows_the_upload_to_the_configured_rate(tmp_path: Path, repo: dict[str, str]) -> None:
    files = tmp_path / "files"
    files.mkdir()
    (files / "scan.bin").write_bytes(os.urandom(3 << 20))  # incompressible: 3 MiB must cross the limit
    body = f'[instances.app]\nrepositories = ["main"]\nfiles = ["{files}"]\n'
    config = write_config(tmp_path, repo, body)
    config.write_text(config.read_text().replace("[repositories.main]", "[repositories.main]\nlimit_upload = 512"))
    started = time.monotonic()
    result = run_cli("backup", "app", config=config)
    assert result.returncode == 0, result.stderr
    # 3 MiB at 512 KiB/s is 6 s; a lower bound only, so a slow machine cannot make it fail.
    assert time.monotonic() - started >= 5
