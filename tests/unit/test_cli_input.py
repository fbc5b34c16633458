"""Arguments a user can get wrong end in one clear line and exit 2, before any work or prompt."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from safehold.history import History
from tests.conftest import SRC, private_file, run_cli, write_config

FILES_ONLY = """
[instances.app]
repositories = ["main"]
files = ["{files}"]
"""


def files_config(tmp_path: Path, body: str = FILES_ONLY) -> Path:
    """A config with instance `app` (generic, files only); nothing is created in its repository."""
    password = private_file(tmp_path / "secrets" / "repo.pass", "pw")
    repo = {"url": str(tmp_path / "repo"), "password_file": str(password)}
    (tmp_path / "files").mkdir(exist_ok=True)
    return write_config(tmp_path, repo, body.format(files=tmp_path / "files"))


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    return lines[0]


def test_history_limit_must_be_at_least_one(tmp_path: Path) -> None:
    config = files_config(tmp_path)
    history = History(tmp_path / "state")
    for _ in range(3):
        history.record_end(history.record_start("app", "backup"), "ok")
    for limit in ("0", "-3"):
        result = run_cli("history", "--limit", limit, config=config)
        assert result.returncode == 2, result.stdout + result.stderr
        assert "--limit" in result.stderr and "no runs recorded yet" not in result.stdout
    listed = json.loads(run_cli("history", "--limit", "2", "--json", config=config).stdout)
    assert len(listed) == 2


def test_history_kind_must_be_a_kind_of_run(tmp_path: Path) -> None:
    config = files_config(tmp_path)
    history = History(tmp_path / "state")
    history.record_end(history.record_start("app", "backup"), "ok")
    history.record_end(history.record_start("app", "drill"), "ok")
    typo = run_cli("history", "--kind", "backupp", config=config)
    assert typo.returncode == 2 and "'backupp' is not one of" in typo.stderr
    listed = json.loads(run_cli("history", "--kind", "drill", "--json", config=config).stdout)
    assert [row["kind"] for row in listed] == ["drill"]


def test_history_of_an_unknown_instance_says_so(tmp_path: Path) -> None:
    result = run_cli("history", "nosuch", config=files_config(tmp_path))
    assert result.returncode == 2
    line = one_line_error(result)
    assert "no instance 'nosuch'" in line and "known instances: app" in line


def test_key_escrow_refuses_an_app_without_escrow_before_asking_a_password(tmp_path: Path) -> None:
    result = run_cli("key", "escrow", "app", config=files_config(tmp_path), input="secret\n")
    assert result.returncode == 2
    assert "password" not in result.stdout.lower()
    assert "instance app is generic: a generic instance has no application keys" in one_line_error(result)
    idoit = files_config(tmp_path / "idoit", '[instances.cmdb]\napp = "idoit"\nroot = "{files}"\n'
                                             'repositories = ["main"]')
    result = run_cli("key", "escrow", "cmdb", config=idoit, input="secret\n")
    line = one_line_error(result)
    assert result.returncode == 2 and "password" not in result.stdout.lower()
    assert "instance cmdb is idoit: only ITFlow has a master key to escrow" in line
    assert "i-doit's $g_crypto_hash is saved from its config file with every point" in line
    assert "`safehold key verify cmdb latest`" in line
    unknown = run_cli("key", "escrow", "nosuch", config=files_config(tmp_path), input="secret\n")
    assert unknown.returncode == 2 and "password" not in unknown.stdout.lower()
    assert "no instance 'nosuch'" in one_line_error(unknown)


def test_key_verify_refuses_an_app_without_keys(tmp_path: Path) -> None:
    # A generic instance has no application keys: its points hold none, and `key escrow`, which the
    # old "holds no keys" line advised, refuses such an instance. Refused like escrow, before the repository.
    config = files_config(tmp_path)
    for args in (["app"], ["app", "latest"]):
        result = run_cli("key", "verify", *args, config=config)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        line = one_line_error(result)
        assert "instance app is generic: a generic instance has no application keys to escrow or verify" in line
        assert "key escrow" not in line and "keys ok" not in result.stdout


def test_a_prompt_left_unanswered_is_one_line_not_an_internal_error(tmp_path: Path) -> None:
    result = run_cli("user", "add", "bob", "--role", "viewer", config=files_config(tmp_path), input="")
    assert result.returncode == 2
    line = one_line_error(result)
    assert "no answer" in line and "--password-ref" in line and "internal error" not in line


def test_restore_from_file_refuses_a_run_id_it_would_ignore(tmp_path: Path) -> None:
    config = files_config(tmp_path)
    export = tmp_path / "app.tar.zst"
    export.write_bytes(b"not read: the arguments are refused first")
    result = run_cli("restore", "app", "20261125T2330", "--from-file", str(export), config=config)
    assert result.returncode == 2
    line = one_line_error(result)
    assert "--from-file restores the point inside the file" in line and "20261125T2330" in line
    other = run_cli("restore", "app", "--repository", "offsite", "--from-file", str(export), config=config)
    assert other.returncode == 2 and "--repository" in one_line_error(other)
    # "latest" (the default, or said out loud) is what --from-file does anyway: the file is read.
    latest = run_cli("restore", "app", "latest", "--from-file", str(tmp_path / "missing.tar.zst"), config=config)
    assert "missing.tar.zst does not exist" in one_line_error(latest)


def test_restore_from_a_folder_says_it_is_a_folder(tmp_path: Path) -> None:
    config = files_config(tmp_path)
    folder = tmp_path / "exports"
    folder.mkdir()
    result = run_cli("restore", "app", "--from-file", str(folder), config=config)
    assert result.returncode == 2
    line = one_line_error(result)
    assert f"{folder} is a folder, not an export file" in line and "does not exist" not in line
    missing = run_cli("restore", "app", "--from-file", str(tmp_path / "nope.tar.zst"), config=config)
    assert missing.returncode == 2 and "does not exist" in one_line_error(missing)


def test_export_refuses_a_name_that_is_not_tar_zst(tmp_path: Path) -> None:
    config = files_config(tmp_path)
    for name in ("x.zip", "x.tar", "x.age", "x.tar.zst.gpg"):
        result = run_cli("export", "latest", str(tmp_path / name), config=config)
        assert result.returncode == 2, result.stderr
        line = one_line_error(result)
        assert f"{name}: " in line and "NAME.tar.zst or NAME.tar.zst.age" in line
        assert not (tmp_path / name).exists()
    for name in ("x.tar.zst", "x.tar.zst.age"):  # accepted: refused later only because there is no point yet
        assert "NAME.tar.zst" not in one_line_error(run_cli("export", "latest", str(tmp_path / name), config=config))


def test_usage_mistakes_are_one_line_not_a_box(tmp_path: Path) -> None:
    config = files_config(tmp_path)
    for argv, said in ((["backup", "app", "--bogus"], "No such option: --bogus"),
                       (["forget"], "Missing argument"),
                       (["nosuchcommand"], "No such command 'nosuchcommand'")):
        result = run_cli(*argv, config=config)
        assert result.returncode == 2, result.stderr
        line = one_line_error(result)
        assert said in line and "--help`" in line and "╭" not in result.stderr, result.stderr
        assert result.stdout == ""


def test_usage_mistake_with_json_is_one_json_object(tmp_path: Path) -> None:
    result = run_cli("list", "--json", "--bogus", config=files_config(tmp_path))
    assert result.returncode == 2
    answer = json.loads(result.stdout)
    assert answer["ok"] is False and "--bogus" in answer["error"] and "safehold list --help" in answer["hint"]


def test_help_still_exits_zero(tmp_path: Path) -> None:
    result = run_cli("list", "--help", config=files_config(tmp_path))
    assert result.returncode == 0 and "Recovery points" in result.stdout


def test_a_reader_that_goes_away_is_no_crash(tmp_path: Path) -> None:
    history = History(tmp_path / "state")
    for _ in range(200):
        history.record_end(history.record_start("app", "backup"), "ok")
    argv = [sys.executable, "-m", "safehold", "history", "--json", "--limit", "200",
            "--config", str(files_config(tmp_path))]
    child = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             env={**os.environ, "PYTHONPATH": str(SRC)})
    assert child.stdout is not None and child.stderr is not None
    child.stdout.close()  # `safehold history --json | head -1`: the pipe closes before the output is written
    stderr = child.stderr.read().decode()
    assert child.wait(timeout=60) != 0 and "Traceback" not in stderr, stderr


def test_restore_without_instance_takes_the_only_one(tmp_path: Path) -> None:
    config = files_config(tmp_path)
    lone = run_cli("restore", "latest", "--dry-run", config=config)
    # It got as far as the repository (none exists here): 'latest' was taken as the run of instance app.
    assert "repository main does not exist" in one_line_error(lone), lone.stderr
    two = files_config(tmp_path / "two", FILES_ONLY + FILES_ONLY.replace("[instances.app]", "[instances.crm]"))
    ambiguous = run_cli("restore", "latest", "--dry-run", config=two)
    assert ambiguous.returncode == 2 and "no instance 'latest'" in one_line_error(ambiguous)
    # No argument at all, as the help says the instance may be left out: the only one, else name it.
    bare = run_cli("restore", "--dry-run", config=config)
    assert "repository main does not exist" in one_line_error(bare), bare.stderr
    unnamed = run_cli("restore", "--dry-run", config=two)
    assert unnamed.returncode == 2 and "configures 2 instances" in one_line_error(unnamed)
    assert "app, crm" in one_line_error(unnamed)


def test_latest_without_an_instance_is_refused_when_several_are_configured(tmp_path: Path) -> None:
    # `latest` is one point per instance: without --instance it was the first configured instance's,
    # so `export latest` could hand over another application's data than the admin meant.
    two = files_config(tmp_path, FILES_ONLY + FILES_ONLY.replace("[instances.app]", "[instances.crm]"))
    target = tmp_path / "out.tar.zst"
    option, drill = "add --instance NAME", "safehold drill INSTANCE --run RUN"
    for args, hint in ((["show", "latest"], option), (["export", "latest", str(target)], option),
                       (["verify", "latest"], option), (["drill", "--run", "latest"], drill)):
        result = run_cli(*args, config=two)
        line = one_line_error(result)
        assert result.returncode == 2, (args, result.stderr)
        assert "(app, crm)" in line and hint in line, (args, line)
    assert not target.exists()
    # With an instance named, or only one configured, the search goes on (to the missing repository here).
    one = files_config(tmp_path / "one")
    for args, config in ((["show", "latest", "--instance", "crm"], two), (["show", "latest"], one)):
        assert "repository main does not exist" in one_line_error(run_cli(*args, config=config))


def test_an_option_without_its_value_names_the_commands_help(tmp_path: Path) -> None:
    result = run_cli("backup", "app", "--keep-days", env={"SAFEHOLD_CONFIG": str(files_config(tmp_path))})
    assert result.returncode == 2
    line = one_line_error(result)
    assert "'--keep-days' requires an argument" in line and "safehold backup --help`" in line, line
