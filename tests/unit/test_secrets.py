"""Secret references and the Secret type."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from safehold.errors import ConfigError, SafeholdError
from safehold.runner import ProcessFailed, run, scrub
from safehold.secrets import Secret, appears_in, mask, resolve, secret_files, write_private
from safehold.tempdirs import private_dir


def test_env_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SH_TEST_SECRET", "s3cret")
    secret = resolve("env:SH_TEST_SECRET", "x")
    assert secret.reveal() == "s3cret"
    assert "s3cret" not in repr(secret) and "s3cret" not in str(secret) and "s3cret" not in f"{secret}"


def test_missing_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SH_NOPE", raising=False)
    with pytest.raises(ConfigError, match="SH_NOPE is not set"):
        resolve("env:SH_NOPE", "x")


def test_file_reference_must_be_private(tmp_path: Path) -> None:
    path = tmp_path / "pw"
    path.write_text("value\n")
    path.chmod(0o640)
    with pytest.raises(ConfigError, match="chmod 600"):
        resolve(f"file:{path}", "x")
    path.chmod(0o600)
    assert resolve(f"file:{path}", "x").reveal() == "value"


@pytest.mark.parametrize("mode", [0o700, 0o755])
def test_a_folder_is_not_a_secret_file(tmp_path: Path, mode: int) -> None:
    folder = tmp_path / "secrets"
    folder.mkdir(mode=mode)
    folder.chmod(mode)
    with pytest.raises(ConfigError) as caught:
        resolve(f"file:{folder}", "repositories.main.password")
    assert caught.value.exit_code == 2
    assert f"secret file {folder} is a folder, not a file" in caught.value.message
    assert "chmod" not in caught.value.hint


def test_a_binary_secret_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "pw"
    path.write_bytes(b"\xff\xfe\x00binary")
    path.chmod(0o600)
    with pytest.raises(ConfigError, match="is not UTF-8 text"):
        resolve(f"file:{path}", "x")


def test_a_secret_file_of_another_user_is_a_config_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "pw"
    path.write_text("value\n")
    path.chmod(0o600)

    def not_mine(self: Path, *args: object, **kwargs: object) -> str:  # root reads anything: fake a 0600 of root
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_text", not_mine)
    with pytest.raises(ConfigError, match="is not readable by this user"):
        resolve(f"file:{path}", "x")


def test_plain_value_refused() -> None:
    with pytest.raises(ConfigError, match="references"):
        resolve("hunter2", "x")


def test_write_private_and_secret_files(tmp_path: Path) -> None:
    write_private(tmp_path / "a" / "b", "x")
    assert (tmp_path / "a" / "b").stat().st_mode & 0o777 == 0o600
    with secret_files(pw=Secret("abc")) as files:
        assert files["pw"].read_text() == "abc\n"
        assert files["pw"].stat().st_mode & 0o777 == 0o600
        assert str(files["pw"]).startswith("/dev/fd/")  # in memory: nothing on disk to leak
        child = run(["cat", str(files["pw"])])
        assert child == b"abc\n"
        path = files["pw"]
    assert not path.exists()


def test_runner_scrubs_secrets_from_errors() -> None:
    secret = Secret("tops3cret")
    assert scrub("password tops3cret rejected", [secret]) == "password *** rejected"
    with pytest.raises(ProcessFailed) as info:
        run(["sh", "-c", 'echo "bad $X" >&2; exit 3'], env={"X": "tops3cret"}, secrets=[secret])
    assert info.value.returncode == 3
    assert "tops3cret" not in str(info.value) and "***" in info.value.stderr


def test_runner_refuses_secret_in_argv() -> None:
    with pytest.raises(SafeholdError, match="secret file:/etc/pw also appears in its command line") as info:
        run(["echo", "--password=tops3cret"], secrets=[Secret("tops3cret", "file:/etc/pw")])
    assert "tops3cret" not in str(info.value) + info.value.hint


def test_short_secrets_match_whole_words_only() -> None:
    # A repository password "x" must not make /tmp/exp/repo a "secret in argv", nor mangle every x.
    short = Secret("x")
    assert run(["echo", "/tmp/exp/repo"], secrets=[short]) == b"/tmp/exp/repo\n"
    assert scrub("expected x at /tmp/x/box, got x1", [short]) == "expected *** at /tmp/***/box, got x1"
    assert appears_in("root", "user root denied") and not appears_in("root", "/srv/rootfs")
    assert appears_in("tops3cret", "Xtops3cretX")  # long enough to be masked wherever it shows
    assert mask("pw=ab1, ab12", ["ab1"]) == "pw=***, ab12"
    assert mask("nothing", [""]) == "nothing"


def test_missing_program() -> None:
    with pytest.raises(ProcessFailed) as info:
        run(["safehold-no-such-tool"])
    assert info.value.returncode == 127
    assert os.environ  # environment untouched


def test_private_dirs_of_dead_processes_are_removed(tmp_path: Path) -> None:
    dead = subprocess.run(["sh", "-c", "echo $$"], capture_output=True, text=True).stdout.strip()
    orphan = tmp_path / f"safehold-x-{dead}-abc"
    mine = tmp_path / f"safehold-x-{os.getpid()}-def"
    foreign = tmp_path / "safehold-x-notapid"
    for folder in (orphan, mine, foreign):
        folder.mkdir()
        (folder / "chunk").write_bytes(b"x")
    made = private_dir("safehold-x-", tmp_path)
    assert made.name.startswith(f"safehold-x-{os.getpid()}-") and made.stat().st_mode & 0o777 == 0o700
    assert not orphan.exists() and mine.exists() and foreign.exists()


def test_a_signal_while_a_private_dir_is_made_cannot_leave_it_behind(tmp_path: Path) -> None:
    # The SIGTERM lands inside mkdtemp, just after the folder exists: the raise must wait until the
    # folder is recorded, and the way out must remove it.
    child = textwrap.dedent(f"""
        import os, signal, sys, tempfile
        sys.path.insert(0, {str(Path(__file__).parents[2] / "src")!r})
        from safehold import tempdirs

        def stop(signum, frame):
            raise SystemExit(143)

        signal.signal(signal.SIGTERM, stop)
        real = tempfile.mkdtemp

        def mkdtemp(**kwargs):
            path = real(**kwargs)
            print(path, flush=True)
            os.kill(os.getpid(), signal.SIGTERM)
            return path

        tempfile.mkdtemp = mkdtemp
        tempdirs.private_dir("safehold-sig-", {str(tmp_path)!r})
        print("not stopped", flush=True)
    """)
    done = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=30)
    made = Path(done.stdout.splitlines()[0])
    assert done.returncode == 143 and "not stopped" not in done.stdout, done.stderr
    assert made.parent == tmp_path and not made.exists()
