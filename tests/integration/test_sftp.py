"""SFTP repositories against a real sshd: the normal cycle, host-key pinning, each failure as one line,
and two repositories (local + SFTP) with the SFTP server killed in the middle of the copy."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from safehold.actions.replicate import copy_status
from safehold.config import load as load_config
from tests.conftest import SRC, run_cli
from tests.integration.offhost_servers import (
    Sshd,
    free_port,
    keygen,
    make_tree,
    password_file,
    read_tree,
    restore_first_then_prune,
    start_sshd,
    write_config,
)


@pytest.fixture(scope="module")
def sshd(restic: str) -> Iterator[Sshd]:
    server = start_sshd()
    yield server
    server.stop()
    shutil.rmtree(server.folder, ignore_errors=True)


def _setup(tmp_path: Path, sshd: Sshd, *, user: str = "root", area: Path | None = None,
           **repo: object) -> tuple[Path, Path, Path]:
    """Config with one sftp repository and a file-tree instance; returns (config, app dir, password)."""
    app = tmp_path / "app"
    make_tree(app)
    password = password_file(tmp_path)
    area = area or sshd.area(tmp_path.name)
    settings: dict[str, object] = {"url": f"sftp://{user}@127.0.0.1:{sshd.port}/{area}/repo",
                                   "password": f"file:{password}", "ssh_key": str(sshd.user_key), **repo}
    config = write_config(tmp_path / "safehold.toml", {"offsite": settings},
                          {"app": {"repositories": ["offsite"], "files": [str(app)]}})
    return config, app, password


def _one_line_error(result: subprocess.CompletedProcess[str], expected: str, password: Path) -> None:
    assert result.returncode not in (0, 3), result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and expected in errors[0], result.stderr
    assert "Traceback" not in result.stderr
    assert password.read_text() not in result.stdout + result.stderr


def test_sftp_trust_backup_list_restore_prune(tmp_path: Path, sshd: Sshd) -> None:
    config, app, password = _setup(tmp_path, sshd)
    # No pinned key yet: refused with the command that fixes it.
    unpinned = run_cli("backup", "app", config=config)
    _one_line_error(unpinned, "not pinned", password)
    trusted = run_cli("repo", "trust", "offsite", "--yes", "--json", config=config)
    assert trusted.returncode == 0, trusted.stderr
    info = json.loads(trusted.stdout)
    assert info["fingerprints"][0].startswith("SHA256:") and info["changed"]
    known_hosts = Path(info["known_hosts"])
    assert known_hosts.stat().st_mode & 0o777 == 0o600
    pinned = known_hosts.read_text()
    # A different key later is refused until a human says --replace.
    other = keygen(tmp_path / "other_host")
    known_hosts.write_text(f"[127.0.0.1]:{sshd.port} " + " ".join(Path(f"{other}.pub").read_text().split()[:2]))
    changed = run_cli("repo", "trust", "offsite", "--yes", config=config)
    assert changed.returncode == 1 and "differs from the pinned one" in changed.stderr
    assert run_cli("repo", "trust", "offsite", "--yes", "--replace", config=config).returncode == 0
    assert known_hosts.read_text() == pinned

    first = run_cli("backup", "app", "--json", config=config)
    assert first.returncode == 0, first.stderr
    assert "read back" in first.stderr
    (app / "index.php").write_text("changed")
    second = run_cli("backup", "app", config=config)
    assert second.returncode == 0, second.stderr

    listed = run_cli("list", "app", "--json", config=config)
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert len(rows) == 2 and {r["repository"] for r in rows} == {"offsite"}
    assert "on this host" not in listed.stderr

    restore_first_then_prune(tmp_path, config, app, json.loads(first.stdout)[0]["run_id"])
    assert len(json.loads(run_cli("list", "app", "--json", config=config).stdout)) == 1


def test_sftp_failures_are_one_clear_line(tmp_path: Path, sshd: Sshd) -> None:
    other_key = keygen(tmp_path / "other_key")
    other_host = keygen(tmp_path / "other_host")
    fake_host_line = f"[127.0.0.1]:{sshd.port} " + " ".join(Path(f"{other_host}.pub").read_text().split()[:2])
    denied = sshd.folder / "srv" / f"{tmp_path.name}-root-only"
    denied.mkdir(mode=0o755)
    cases = {
        "wrong key": ({"ssh_key": str(other_key), "known_hosts": sshd.known_hosts_line()}, {}, "SSH login refused"),
        "wrong host key": ({"known_hosts": fake_host_line}, {}, "SSH host key CHANGED"),
        "unreachable port": ({"known_hosts": sshd.known_hosts_line()}, {"port": free_port()}, "connection refused"),
        "permission denied": ({"known_hosts": sshd.known_hosts_line()}, {"user": "nobody", "area": denied},
                              "permission denied"),
    }
    for label, (repo, where, expected) in cases.items():
        folder = tmp_path / label.replace(" ", "-")
        folder.mkdir()
        config, _, password = _setup(folder, sshd, user=str(where.get("user", "root")),
                                     area=where.get("area"), **repo)  # type: ignore[arg-type]
        if "port" in where:
            text = config.read_text().replace(f":{sshd.port}/", f":{where['port']}/")
            config.write_text(text)
        result = run_cli("backup", "app", config=config)
        _one_line_error(result, expected, password)


def _packs(repo: Path) -> int:
    return sum(1 for p in (repo / "data").rglob("*") if p.is_file())


def _kill_during_copy(config: Path, sshd: Sshd, repo: Path) -> subprocess.CompletedProcess[str]:
    """Run a backup and kill the SSH server once the copy has uploaded its first new pack file."""
    argv = [sys.executable, "-m", "safehold", "backup", "app", "--json", "--config", str(config)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(SRC)})
    assert proc.stderr is not None and proc.stdout is not None
    stderr: list[str] = []
    before = _packs(repo)
    for line in proc.stderr:
        stderr.append(line)
        if "copying" in line and sshd.proc is not None:
            deadline = time.monotonic() + 60
            while _packs(repo) == before and time.monotonic() < deadline and proc.poll() is None:
                time.sleep(0.02)
            uploading = _packs(repo) > before
            sshd.stop()
            stderr.append(f"test: killed sshd {'while' if uploading else 'before'} the copy uploaded data\n")
    stdout = proc.stdout.read()
    proc.wait()
    return subprocess.CompletedProcess(argv, proc.returncode, stdout, "".join(stderr))


def test_two_repositories_copy_killed_then_completed(tmp_path: Path, sshd: Sshd) -> None:
    app = tmp_path / "app"
    make_tree(app)
    password = password_file(tmp_path)
    area = sshd.area(tmp_path.name)
    repos = {"local": {"url": str(tmp_path / "local-repo"), "password": f"file:{password}"},
             "offsite": {"url": f"sftp://root@127.0.0.1:{sshd.port}/{area}/repo",
                         "password": f"file:{password_file(tmp_path, 'offsite.pass')}",
                         "ssh_key": str(sshd.user_key), "known_hosts": sshd.known_hosts_line()}}
    config = write_config(tmp_path / "safehold.toml", repos,
                          {"app": {"repositories": ["local", "offsite"], "files": [str(app)]}})
    try:
        # Initialise the copy target first so the kill lands in the copy itself.
        first = run_cli("backup", "app", "--json", config=config)
        assert first.returncode == 0, first.stderr
        (app / "big.bin").write_bytes(os.urandom(32 << 20))  # new, incompressible: the copy takes a moment
        killed = _kill_during_copy(config, sshd, area / "repo")
        assert killed.returncode == 3, killed.stderr
        assert "killed sshd while the copy uploaded data" in killed.stderr
        result = json.loads(killed.stdout)[0]
        assert result["result"] == "partial" and "offsite" in result["error"]
        assert result["copies"]["local"] == "ok" and result["copies"]["offsite"] != "ok"
        checked = run_cli("check", "app", "--json", config=config)  # monitoring names the missing copy
        assert checked.returncode == 1 and "copy to offsite failed" in checked.stdout, checked.stdout
        listed = run_cli("list", "app", "--json", config=config)  # the copy server is down: local still listed
        assert listed.returncode == 0 and "connection refused" in listed.stderr, listed.stderr
        assert {r["repository"] for r in json.loads(listed.stdout)} == {"local"}
        status = {row["repository"]: row for row in copy_status(load_config(config), "app")}
        assert result["run_id"] in status["offsite"]["missing"] and "connection refused" in status["offsite"]["error"]
        shown = run_cli("show", result["run_id"], "--json", config=config)
        assert shown.returncode == 0 and json.loads(shown.stdout)["repository"] == "local", shown.stderr
    finally:
        if sshd.proc is None:
            sshd.start()
    again = run_cli("backup", "app", "--json", config=config)
    assert again.returncode == 0, again.stderr
    listed = json.loads(run_cli("list", "app", "--json", config=config).stdout)
    offsite = {r["run_id"] for r in listed if r["repository"] == "offsite"}
    local = {r["run_id"] for r in listed if r["repository"] == "local"}
    assert offsite == local and result["run_id"] in offsite and len(offsite) == 3
    # What the dashboard shows per repository: nothing missing any more.
    status = copy_status(load_config(config), "app")
    assert [(row["repository"], row["missing"], row["error"]) for row in status] == [
        ("local", [], None), ("offsite", [], None)]
    restored = run_cli("restore", "app", result["run_id"], "--repository", "offsite", "--files-to",
                       str(tmp_path / "from-offsite"), config=config)
    assert restored.returncode == 0, restored.stderr
    assert read_tree(tmp_path / "from-offsite" / str(app).lstrip("/")) == read_tree(app)


def _tree_state(root: Path) -> dict[str, tuple[int, int]]:
    """Every path under `root` with its size and mtime (nothing when it does not exist)."""
    return {str(p.relative_to(root)): (p.lstat().st_size, p.lstat().st_mtime_ns)
            for p in sorted(root.rglob("*"))} if root.exists() else {}


def _dry_run_problem(config: Path, expected: str, secrets: list[str]) -> None:
    """`backup --dry-run` names the repository's problem in one line and exits 1, with no secret shown."""
    result = run_cli("backup", "app", "--dry-run", config=config)
    assert result.returncode == 1, result.stdout + result.stderr
    problems = [line.strip() for line in result.stdout.splitlines() if line.strip().startswith("problem:")]
    assert len(problems) == 1 and expected in problems[0], result.stdout
    assert "Traceback" not in result.stderr
    assert not any(secret in result.stdout + result.stderr for secret in secrets)


def test_sftp_dry_run_opens_read_only_and_names_each_problem(tmp_path: Path, sshd: Sshd) -> None:
    config, _, password = _setup(tmp_path, sshd, known_hosts=sshd.known_hosts_line())
    area = sshd.folder / "srv" / tmp_path.name
    secrets = [password.read_text()]
    new = run_cli("backup", "app", "--dry-run", "--json", config=config)
    assert new.returncode == 0, new.stderr
    assert json.loads(new.stdout)[0]["repositories"][0]["state"] == "new"
    assert not (area / "repo").exists()  # a dry run never initialises

    assert run_cli("backup", "app", config=config).returncode == 0
    stored = _tree_state(area / "repo")
    ready = run_cli("backup", "app", "--dry-run", "--json", config=config)
    assert ready.returncode == 0, ready.stderr
    assert json.loads(ready.stdout)[0]["repositories"][0]["state"] == "ready"
    assert _tree_state(area / "repo") == stored  # not even a lock file came and went

    other_host = keygen(tmp_path / "other_host")
    fake_host_line = f"[127.0.0.1]:{sshd.port} " + " ".join(Path(f"{other_host}.pub").read_text().split()[:2])
    text = config.read_text()
    config.write_text(text.replace(sshd.known_hosts_line(), fake_host_line))
    _dry_run_problem(config, "repository offsite: SSH host key CHANGED", secrets)
    config.write_text(text.replace(f":{sshd.port}/", f":{free_port()}/"))
    _dry_run_problem(config, "repository offsite: connection refused", secrets)
    assert _tree_state(area / "repo") == stored


def test_trust_pins_the_key_again_when_the_url_names_the_host_differently(tmp_path: Path, sshd: Sshd) -> None:
    # ssh looks the key up by the URL's host name: a key pinned for 127.0.0.1 does not let it in as
    # localhost, so `trust` must not answer "already pinned" and leave the repository unusable.
    config, _, _ = _setup(tmp_path, sshd)
    assert run_cli("repo", "trust", "offsite", "--yes", config=config).returncode == 0
    config.write_text(config.read_text().replace("root@127.0.0.1:", "root@localhost:"))
    unpinned = run_cli("backup", "app", "--dry-run", config=config)
    assert unpinned.returncode == 1 and "not pinned" in unpinned.stdout, unpinned.stdout
    asked = run_cli("repo", "trust", "offsite", config=config, input="n\n")  # the new name is asked for again
    assert asked.returncode == 1 and "not accepted" in asked.stderr, asked.stdout + asked.stderr
    assert "SHA256:" in asked.stderr, asked.stderr  # without a terminal the line shows what to compare
    trusted = run_cli("repo", "trust", "offsite", "--yes", "--json", config=config)
    assert trusted.returncode == 0 and json.loads(trusted.stdout)["changed"], trusted.stdout + trusted.stderr
    assert f"[localhost]:{sshd.port} " in Path(json.loads(trusted.stdout)["known_hosts"]).read_text()
    planned = run_cli("backup", "app", "--dry-run", config=config)
    assert planned.returncode == 0, planned.stdout + planned.stderr


def test_key_with_a_passphrase_is_named_unless_an_agent_holds_it(tmp_path: Path, sshd: Sshd) -> None:
    # ssh runs in batch mode: it skips a key it cannot decrypt, and the server's refusal read
    # "SSH login refused — check the user and ssh_key", with no word of the passphrase.
    key = tmp_path / "id_passphrase"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "pass", "-C", "with-passphrase", "-f", str(key)],
                   check=True)
    with (sshd.folder / "authorized_keys").open("a") as fh:
        fh.write(Path(f"{key}.pub").read_text())
    config, _, password = _setup(tmp_path, sshd, known_hosts=sshd.known_hosts_line(), ssh_key=str(key))
    no_agent = {"SSH_AUTH_SOCK": ""}
    expected = f"repositories.offsite.ssh_key {key} has a passphrase"
    _one_line_error(run_cli("backup", "app", config=config, env=no_agent), expected, password)
    dry = run_cli("backup", "app", "--dry-run", config=config, env=no_agent)
    assert dry.returncode == 1 and f"problem: {expected}" in dry.stdout, dry.stdout + dry.stderr

    # An ssh-agent holding the key (its socket in SSH_AUTH_SOCK) lets ssh use it unattended.
    socket_path = tmp_path / "agent.sock"
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(socket_path)], stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not socket_path.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        askpass = tmp_path / "askpass"
        askpass.write_text("#!/bin/sh\necho pass\n")
        askpass.chmod(0o700)
        with_agent = {"SSH_AUTH_SOCK": str(socket_path)}
        subprocess.run(["ssh-add", str(key)], check=True, capture_output=True, stdin=subprocess.DEVNULL,
                       env={**os.environ, **with_agent, "SSH_ASKPASS": str(askpass), "SSH_ASKPASS_REQUIRE": "force"})
        backed_up = run_cli("backup", "app", config=config, env=with_agent)
        assert backed_up.returncode == 0, backed_up.stderr
    finally:
        agent.kill()
        agent.wait()


def test_a_remote_folder_holding_other_files_is_not_made_a_repository(tmp_path: Path, sshd: Sshd) -> None:
    # A URL one level off (the share's root, where the repository lives under repo/) must not get a second
    # repository beside the files: refused as for a local folder and an S3 prefix, in the dry run too.
    config, _, password = _setup(tmp_path, sshd, known_hosts=sshd.known_hosts_line())
    area = sshd.folder / "srv" / tmp_path.name
    (area / "repo").mkdir()
    (area / "repo" / "invoices.pdf").write_bytes(b"%PDF")
    (area / "repo" / ".hidden").write_text("x")
    planned = run_cli("backup", "app", "--dry-run", config=config)
    assert planned.returncode == 1 and "is not a restic repository but is not empty either" in planned.stdout
    result = run_cli("backup", "app", config=config)
    _one_line_error(result, "(it holds .hidden, invoices.pdf), so no repository is created there", password)
    assert sorted(p.name for p in (area / "repo").iterdir()) == [".hidden", "invoices.pdf"]
    (area / "repo" / "invoices.pdf").unlink()
    (area / "repo" / ".hidden").unlink()
    assert run_cli("backup", "app", config=config).returncode == 0  # an empty folder is fine
