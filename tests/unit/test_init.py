"""`safehold init`: the config it writes loads, whatever the folder names and however --root/--repo are given."""

from __future__ import annotations

from pathlib import Path

import pytest

from safehold import config as config_module
from safehold.actions.init import write_example
from safehold.errors import ConfigError


def itflow_root(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.php").write_text("<?php\n$dbhost = 'localhost';\n$database = 'itflow';\n")
    return folder


def test_missing_root_is_said_to_be_missing(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"--root /nonexistent/itflow does not exist"):
        write_example(tmp_path / "s.toml", "itflow", Path("/nonexistent/itflow"), None, False)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="is not a folder"):
        write_example(tmp_path / "s.toml", "itflow", tmp_path / "file", None, False)
    with pytest.raises(ConfigError, match="does not look like an ITFlow install"):
        write_example(tmp_path / "s.toml", "itflow", tmp_path, None, False)
    assert not (tmp_path / "s.toml").exists()


def test_relative_root_and_repo_become_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = itflow_root(tmp_path / "www" / "itflow")
    monkeypatch.chdir(tmp_path)
    write_example(Path("s.toml"), "itflow", Path("www/itflow"), "backups/repo", False)
    config = config_module.load(tmp_path / "s.toml")
    assert config.instance("itflow").root == str(root)
    assert config.repositories["main"].url == str(tmp_path / "backups" / "repo")
    write_example(Path("s.toml"), "itflow", Path("www/itflow"), "local:repo", True)
    assert config_module.load(tmp_path / "s.toml").repositories["main"].url == f"local:{tmp_path / 'repo'}"
    write_example(Path("s.toml"), "itflow", Path("www/itflow"), "sftp:u@h:rel/repo", True)
    assert config_module.load(tmp_path / "s.toml").repositories["main"].url == "sftp:u@h:rel/repo"


@pytest.mark.parametrize("name", ['we"ird', "back\\slash", "tab\tand\x7fdel", "quote'and # hash", "ünï"])
def test_paths_are_written_as_valid_toml_strings(tmp_path: Path, name: str) -> None:
    root = itflow_root(tmp_path / name / "itflow")
    repo = str(tmp_path / name / "repo")
    out = tmp_path / "s.toml"
    write_example(out, "itflow", root, repo, False)
    config = config_module.load(out)
    assert config.instance("itflow").root == str(root)
    assert config.repositories["main"].url == repo


def test_password_file_is_made_beside_the_config_and_then_kept(tmp_path: Path) -> None:
    from safehold.secrets import resolve

    folder = tmp_path / "etc"
    folder.mkdir()
    root = itflow_root(tmp_path / "itflow")
    made = write_example(folder / "safehold.toml", "itflow", root, str(tmp_path / "repo"), False)
    password = folder / "repo.pass"
    assert made["password_file"] == str(password) and made["password_file_created"] is True
    assert password.stat().st_mode & 0o777 == 0o600 and len(password.read_text().strip()) >= 40
    config = config_module.load(folder / "safehold.toml")
    assert config.repositories["main"].password == f"file:{password}"
    first = resolve(config.repositories["main"].password, "repositories.main.password").reveal()
    # Writing the config again (--force) never replaces a password: it may already guard a repository.
    again = write_example(folder / "safehold.toml", "itflow", root, str(tmp_path / "repo"), True)
    assert again["password_file_created"] is False
    assert resolve(f"file:{password}", "x").reveal() == first


def idoit_root(folder: Path) -> Path:
    (folder / "src").mkdir(parents=True)
    (folder / "src" / "config.inc.php").write_text("<?php\n$g_db_system = ['host' => 'localhost'];\n")
    return folder


def test_idoit_gets_the_quiesce_steps_its_guide_asks_for_as_found_on_the_host(tmp_path: Path) -> None:
    root, host = idoit_root(tmp_path / "var" / "www" / "i-doit"), tmp_path / "host"
    for unit in ("apache2", "php8.2-fpm", "cron", "mariadb"):
        (host / "lib" / "systemd" / "system").mkdir(parents=True, exist_ok=True)
        (host / "lib" / "systemd" / "system" / f"{unit}.service").write_text("[Service]\n")
    (host / "etc" / "cron.d").mkdir(parents=True)
    (host / "etc" / "cron.d" / "i-doit").write_text(
        "# i-doit jobs\nMAILTO=root\n"
        f"*/30 * * * * www-data /usr/bin/php {root}/console.php search-index --user admin --password admin\n")
    (host / "etc" / "cron.d" / "e2scrub_all").write_text("30 3 * * 0 root test -e /run/systemd/system\n")
    out = tmp_path / "s.toml"
    write_example(out, "idoit", root, None, False, host=host)
    quiesce = config_module.load(out).instance("idoit").quiesce
    assert quiesce.stop == [["systemctl", "stop", "apache2"], ["systemctl", "stop", "php8.2-fpm"],
                            ["systemctl", "stop", "cron"]]
    assert quiesce.start == list(reversed([["systemctl", "start", "apache2"], ["systemctl", "start", "php8.2-fpm"],
                                           ["systemctl", "start", "cron"]]))
    text = out.read_text()
    assert f"web server: {host}/lib/systemd/system/apache2.service" in text
    assert f"i-doit's cron jobs ({host}/etc/cron.d/i-doit:3)" in text

    # A host with a web server binary but no systemd, and no i-doit cron job: the SysV service; nothing for cron.
    bare = tmp_path / "bare"
    (bare / "usr" / "sbin").mkdir(parents=True)
    (bare / "usr" / "sbin" / "nginx").write_text("")
    write_example(out, "idoit", root, None, True, host=bare)
    quiesce = config_module.load(out).instance("idoit").quiesce
    assert quiesce.stop == [["service", "nginx", "stop"]] and quiesce.start == [["service", "nginx", "start"]]

    # Nothing found: the proposal stays a comment (and every backup warns that nothing was paused).
    write_example(out, "idoit", root, None, True, host=tmp_path / "empty")
    assert config_module.load(out).instance("idoit").quiesce.stop == []
    assert "# Nothing was found on this host" in out.read_text()
