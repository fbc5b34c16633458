"""Off-host pieces that need no server: sftp URLs and the ssh command, error lines, TOML, hostile members."""

from __future__ import annotations

import html
import io
import os
import re
import subprocess
import tarfile
import tomllib
from pathlib import Path

import pytest

from safehold.actions.common import open_repository
from safehold.actions.import_file import Damaged, _check_member
from safehold.actions.kit import WHEEL, render, toml_value
from safehold.agestream import CHUNK, AgeError, Decryptor, Encryptor
from safehold.config import parse
from safehold.errors import ConfigError
from safehold.repository.restic import explain, source_errors, unreadable_files
from safehold.repository.ssh import sftp_command
from safehold.secrets import Secret
from safehold.sftp_url import parse_sftp


def test_parse_sftp_forms() -> None:
    short = parse_sftp("sftp:backup@nas.example:/srv/safehold")
    assert short is not None and (short.user, short.host, short.port, short.path) == (
        "backup", "nas.example", 22, "/srv/safehold")
    full = parse_sftp("sftp://backup@10.0.0.5:2222//srv/safehold")
    assert full is not None and (full.user, full.host, full.port, full.path) == ("backup", "10.0.0.5", 2222,
                                                                              "/srv/safehold")
    assert full.known_hosts_name == "[10.0.0.5]:2222" and short.known_hosts_name == "nas.example"
    assert parse_sftp("/srv/repo") is None and parse_sftp("s3:https://s3.example/bucket") is None
    with pytest.raises(ConfigError):
        parse_sftp("sftp:nohostpath")


@pytest.mark.parametrize("url", ["sftp:nas.example:/srv/safehold", "sftp://nas.example:2222//srv/safehold",
                                 "sftp://@nas.example//srv/safehold"])
def test_sftp_url_without_user_is_a_config_error(url: str) -> None:
    # ssh runs without ~/.ssh/config: it would log in as whoever runs safehold (root at night, someone
    # else restoring by hand), so the URL names the user.
    with pytest.raises(ConfigError, match="names no user") as raised:
        parse_sftp(url)
    assert "sftp:USER@" in raised.value.hint


def _config(tmp_path: Path, repo_extra: str) -> object:
    key = tmp_path / "id_ed25519"
    key.write_text("not really a key")
    key.chmod(0o600)
    text = f"""
[settings]
state_dir = "{tmp_path / 'state'}"
[repositories.off]
url = "sftp://backup@127.0.0.1:2222//srv/repo"
password = "env:REPO_PASS"
ssh_key = "{key}"
{repo_extra}
[instances.app]
repositories = ["off"]
files = ["/srv/app"]
"""
    return parse(text, tmp_path / "safehold.toml")


def test_sftp_command_is_strict_and_secret_free(tmp_path: Path) -> None:
    config = _config(tmp_path, 'known_hosts = "[127.0.0.1]:2222 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExample"')
    command = sftp_command(config, "off")  # type: ignore[arg-type]
    assert command is not None
    for part in ("StrictHostKeyChecking=yes", "UpdateHostKeys=no", "BatchMode=yes", "-p 2222", "-l backup", "-s sftp",
                 "IdentitiesOnly=yes",
                 f"UserKnownHostsFile={tmp_path / 'state' / 'ssh' / 'off.known_hosts'}"):
        assert part in command
    known = tmp_path / "state" / "ssh" / "off.known_hosts"
    assert known.stat().st_mode & 0o777 == 0o600 and "ssh-ed25519" in known.read_text()


def test_configured_known_hosts_is_written_only_when_it_changes(tmp_path: Path) -> None:
    # Every restic call opens the repository: the pinned file stays as it is (same inode, never a moment
    # without it) unless the config's lines or its 0600 mode differ.
    line = "[127.0.0.1]:2222 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExample"
    config = _config(tmp_path, f'known_hosts = "{line}"')
    known = tmp_path / "state" / "ssh" / "off.known_hosts"
    sftp_command(config, "off")  # type: ignore[arg-type]
    first = known.stat()
    sftp_command(config, "off")  # type: ignore[arg-type]
    assert (known.stat().st_ino, known.stat().st_mtime_ns) == (first.st_ino, first.st_mtime_ns)
    known.chmod(0o644)
    sftp_command(config, "off")  # type: ignore[arg-type]
    assert known.stat().st_mode & 0o777 == 0o600 and known.read_text() == line + "\n"
    other = line.replace("Example", "Rotated")
    sftp_command(_config(tmp_path, f'known_hosts = "{other}"'), "off")  # type: ignore[arg-type]
    assert known.read_text() == other + "\n" and known.stat().st_mode & 0o777 == 0o600


def test_each_restic_call_gets_its_own_ssh_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Calls run side by side (read-back); one call's ssh errors must not land in, or wipe, another's.
    monkeypatch.setenv("REPO_PASS", "pw")
    config = _config(tmp_path, 'known_hosts = "[127.0.0.1]:2222 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExample"')
    repo = open_repository(config, "off")  # type: ignore[arg-type]
    template = str(tmp_path / "state" / "ssh" / "off.log")
    assert any(template in option for option in repo.extra_args)
    with repo._call() as first, repo._call() as second:
        logs = [first.ssh_log, second.ssh_log]
        assert logs[0] != logs[1] and all(log is not None and log.stat().st_mode & 0o777 == 0o600 for log in logs)
        for call, log in ((first, logs[0]), (second, logs[1])):
            command = " ".join(call.argv("snapshots"))
            assert f"-E {log}" in command and template not in command
        logs[0].write_text("Host key verification failed.\n")
        assert "host key" in repo._explain("Fatal: unable to open repository", first).message.lower()
        assert "host key" not in repo._explain("Fatal: unable to open repository", second).message.lower()
    assert not any(log.exists() for log in logs)


def test_source_errors_from_restic_json() -> None:
    # restic 0.14's own lines (captured from a run as a user who cannot read one file and lost another).
    stderr = ('{"message_type":"error","error":{"Op":"open","Path":"/srv/app/secret","Err":13},'
              '"during":"archival","item":"/srv/app/secret"}\n'
              '{"message_type":"error","error":{"Op":"lstat","Path":"/srv/app/tmp/sess_1","Err":2},'
              '"during":"archival","item":"/srv/app/tmp/sess_1"}\n'
              "Warning: at least one source file could not be read\n")
    errors = source_errors([], stderr)
    assert [(e.path, e.vanished) for e in errors] == [("/srv/app/secret", False), ("/srv/app/tmp/sess_1", True)]
    line = unreadable_files("files", [e for e in errors if not e.vanished]).line()
    assert line.startswith("files: 1 file(s) could not be read: /srv/app/secret (Permission denied)")
    assert "sess_1" not in line


def test_unpinned_sftp_host_is_refused(tmp_path: Path) -> None:
    config = _config(tmp_path, "")
    with pytest.raises(ConfigError, match="not pinned"):
        sftp_command(config, "off")  # type: ignore[arg-type]


@pytest.mark.parametrize(("stderr", "expected"), [
    ("subprocess ssh: Host key verification failed.\n@ WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED! @",
     "SSH host key CHANGED"),
    ("subprocess ssh: No ED25519 host key is known for [h]:22 and you have requested strict checking.",
     "not pinned"),
    ("subprocess ssh: backup@h: Permission denied (publickey).", "SSH login refused"),
    ("subprocess ssh: ssh: connect to host h port 22: Connection refused", "connection refused"),
    # ssh's own words (from its -E log); restic only says the session ended.
    ("ssh: connect to host h port 22: Connection timed out\nFatal: unable to open repository at sftp://b@h//r: "
     "unable to start the sftp session, error: EOF", "connection timed out"),
    ("Connection timed out during banner exchange\nFatal: unable to start the sftp session, error: EOF",
     "connection timed out"),
    ("Fatal: create repository at sftp:x failed: permission denied", "permission denied"),
    ("Fatal: unable to open config file: Stat: The AWS Access Key Id you provided does not exist in our records.",
     "S3 access key rejected"),
    ("Stat: The request signature we calculated does not match the signature you provided.", "S3 secret key"),
    ("Fatal: unable to open config file: Stat: The specified bucket does not exist", "bucket does not exist"),
])
def test_explain_lines(stderr: str, expected: str) -> None:
    error = explain(stderr, "off")
    assert expected in error.message and "\n" not in error.line()


def test_toml_value_round_trips() -> None:
    value = {"name": 'quote " and \\ back', "n": 3, "on": True, "list": ["a", "b"],
             "nested": {"daily": 7, "weekly": 4}, "rows": [{"engine": "mariadb", "names": ["x"]}]}
    text = "\n".join(f"{k} = {toml_value(v)}" for k, v in value.items())
    assert tomllib.loads(text) == value


@pytest.mark.parametrize(("name", "kind", "link"), [
    ("safehold-export/../evil", tarfile.REGTYPE, ""),
    ("/etc/passwd", tarfile.REGTYPE, ""),
    ("elsewhere/file", tarfile.REGTYPE, ""),
    ("safehold-export/files/dev", tarfile.CHRTYPE, ""),
    ("safehold-export/files/link", tarfile.SYMTYPE, "../../../etc"),
    ("safehold-export/files/hard", tarfile.LNKTYPE, "/etc/passwd"),
])
def test_hostile_members_are_refused(tmp_path: Path, name: str, kind: bytes, link: str) -> None:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    with pytest.raises(Damaged, match="export refused"):
        _check_member(info, tmp_path)


def test_member_under_a_symlink_is_refused(tmp_path: Path) -> None:
    (tmp_path / "safehold-export" / "files").mkdir(parents=True)
    (tmp_path / "safehold-export" / "files" / "etc").symlink_to("/etc")
    with pytest.raises(Damaged, match="through a symlink"):
        _check_member(tarfile.TarInfo("safehold-export/files/etc/passwd"), tmp_path)
    inside = tarfile.TarInfo("safehold-export/files/ok")
    inside.type, inside.linkname = tarfile.SYMTYPE, "etc/x"
    assert _check_member(inside, tmp_path) == tmp_path / "safehold-export/files/ok"


@pytest.mark.parametrize("size", [0, 1, CHUNK, CHUNK + 1, 3 * CHUNK + 17])
def test_age_passphrase_stream_interoperates_with_pyrage(size: int) -> None:
    import pyrage

    data = os.urandom(size)
    sink = io.BytesIO()
    encryptor = Encryptor(sink, Secret("correct horse"), log_n=10)
    encryptor.write(data[: size // 2])
    encryptor.write(data[size // 2:])
    encryptor.close()
    assert pyrage.passphrase.decrypt(sink.getvalue(), "correct horse") == data
    assert Decryptor(io.BufferedReader(io.BytesIO(sink.getvalue())), Secret("correct horse")).read() == data
    if size == CHUNK + 1:  # pyrage always uses age's slow work factor: once is enough
        theirs = pyrage.passphrase.encrypt(data, "correct horse")
        assert Decryptor(io.BufferedReader(io.BytesIO(theirs)), Secret("correct horse")).read() == data


def test_age_passphrase_stream_rejects_wrong_passphrase_and_damage() -> None:
    sink = io.BytesIO()
    encryptor = Encryptor(sink, Secret("pw"), log_n=10)
    encryptor.write(os.urandom(3 * CHUNK))
    encryptor.close()
    blob = sink.getvalue()
    with pytest.raises(AgeError, match="wrong passphrase"):
        Decryptor(io.BufferedReader(io.BytesIO(blob)), Secret("other"))
    for damaged in (blob[:-100], blob[:-16 - CHUNK], blob[:200] + bytes([blob[200] ^ 1]) + blob[201:]):
        with pytest.raises(AgeError):
            Decryptor(io.BufferedReader(io.BytesIO(damaged)), Secret("pw")).read()


def _url_config(tmp_path: Path, url: str, extra: str = "") -> object:
    """A config whose repository `s3` is at `url`, with instance `app` (`extra` appended)."""
    return parse(f"""
[settings]
state_dir = "{tmp_path / 'state'}"
[repositories.s3]
url = "{url}"
password = "env:REPO_PASS"
[instances.app]
repositories = ["s3"]
files = ["/srv/app"]
{extra}""", tmp_path / "safehold.toml")


@pytest.mark.parametrize("url", ["s3:https://s3.eu-central-1.amazonaws.com/company-backups/safehold",
                                 "s3:http://127.0.0.1:9000/backups", "s3:s3.amazonaws.com/backups/a/b",
                                 "s3://minio.lan/backups"])
def test_s3_urls_restic_reads(tmp_path: Path, url: str) -> None:
    _url_config(tmp_path, url)


@pytest.mark.parametrize(("url", "says"), [
    ("s3:", "names no endpoint"),
    ("s3:https://s3.example.com", "names no bucket"),
    ("s3:https://s3.example.com/", "names no bucket"),
    ("s3:https:///backups", "names no endpoint"),
    # The endpoint left out: restic would take the bucket for the host and "x" for the bucket.
    ("s3:backups/x", "'x' is not a valid S3 bucket name"),
    ("s3:https://s3.example.com/Backups_2024!", "'Backups_2024!' is not a valid S3 bucket name"),
])
def test_s3_url_without_endpoint_or_bucket_is_a_config_error(tmp_path: Path, url: str, says: str) -> None:
    # restic only fails when it opens the repository, and its "Bucket name cannot be empty" reads like a
    # repository not created yet (a dry run said "would be initialised").
    with pytest.raises(ConfigError, match=f"repositories.s3.url: .*{re.escape(says)}"):
        _url_config(tmp_path, url)


@pytest.mark.parametrize(("url", "says"), [
    ("sftp:nas.example:/srv/safehold", "names no user"),
    ("sftp://nas.example:2222//srv/safehold", "names no user"),
    ("sftp:backup@nas.example", "is not sftp:user@host:/path"),
    ("sftp://backup@:2222//srv", "has no host"),
])
def test_sftp_url_typo_is_a_config_error_at_load(tmp_path: Path, url: str, says: str) -> None:
    # Caught when the file is read (safehold list, the web console), not first when a night run opens it.
    with pytest.raises(ConfigError, match=f"safehold.toml: repositories.s3.url: repository URL .*{re.escape(says)}"):
        _url_config(tmp_path, url)


def test_sftp_url_errors_hide_a_password_and_show_the_user(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as raised:
        _url_config(tmp_path, "sftp://backup:hunter2@//srv/safehold")
    assert "hunter2" not in raised.value.line() and "sftp://backup:***@//srv/safehold" in raised.value.line()


def test_restic_failure_line_hides_a_password_in_a_quoted_url() -> None:
    error = explain("Fatal: create repository at rest:https://bob:hunter2@rest.example/r failed: teapot\n", "r")
    assert "hunter2" not in error.message and "rest:https://bob:***@rest.example/r" in error.message


@pytest.mark.parametrize(("form", "passphrase", "encrypted"), [
    (["-t", "ed25519"], "passphrase", True), (["-t", "ed25519"], "", False),
    (["-t", "rsa", "-b", "2048", "-m", "PEM"], "passphrase", True),
    (["-t", "rsa", "-b", "2048", "-m", "PEM"], "", False),
    (["-t", "rsa", "-b", "2048", "-m", "PKCS8"], "passphrase", True),
])
def test_key_with_a_passphrase_is_refused_when_the_repository_opens(tmp_path: Path, monkeypatch, form: list[str],
                                                                    passphrase: str, encrypted: bool) -> None:
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    key = tmp_path / "key"
    subprocess.run(["ssh-keygen", "-q", *form, "-N", passphrase, "-f", str(key)], check=True)
    config = _config(tmp_path, 'known_hosts = "[127.0.0.1]:2222 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExample"')
    config.repositories["off"].ssh_key = str(key)  # type: ignore[attr-defined]
    if not encrypted:
        assert sftp_command(config, "off") is not None  # type: ignore[arg-type]
        return
    with pytest.raises(ConfigError, match=f"ssh_key {key} has a passphrase") as raised:
        sftp_command(config, "off")  # type: ignore[arg-type]
    assert "ssh-agent" in raised.value.hint and "ssh-keygen -p" in raised.value.hint


def test_kit_installs_what_the_recovery_needs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # safehold comes from its source tree: the kit names the wheel to keep with it instead of a
    # `pip install safehold` by name, the Debian packages of the configured engines, and restic alone.
    monkeypatch.setenv("REPO_PASS", "pw")
    postgres = '[[instances.app.databases]]\nengine = "postgres"\nnames = ["app"]'
    page = render(_url_config(tmp_path, "/srv/repo", postgres))  # type: ignore[arg-type]
    install = "\n".join(re.findall(r"<pre class='install'>(.*?)</pre>", page, re.S))
    assert "pip install safehold" not in page and WHEEL == "safehold-0.1.0-py3-none-any.whl"
    assert "apt-get install -y restic openssh-client tar zstd postgresql-client" in install
    assert "mariadb-client" not in install.splitlines()[0]
    assert f"python3 -m venv /opt/safehold\n/opt/safehold/bin/pip install /PATH/TO/{WHEEL}" in install
    manual = [html.unescape(m) for m in re.findall(r"<pre class='manual'>(.*?)</pre>", page, re.S)]
    assert manual[0] == 'export RESTIC_REPOSITORY=/srv/repo RESTIC_PASSWORD_FILE="$KIT/repo-s3.pass"'
    assert "restic snapshots --tag instance=app" in manual[1] and "docs/export.md" in page
