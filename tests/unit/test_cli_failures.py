"""How the CLI ends a run that failed: one line and the documented exit code, never a bare traceback."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import sqlite3
import stat
from pathlib import Path

import pytest
import typer

from safehold.cli import common
from safehold.errors import ConfigError, RepositoryError
from safehold.history import History
from safehold.output import Reporter
from safehold.web.store import Store
from tests.conftest import run_cli, write_config


def _outcome(action, capsys: pytest.CaptureFixture[str], json_out: bool = False) -> tuple[int, str]:  # noqa: ANN001
    with pytest.raises(typer.Exit) as info:
        common.run_action(json_out, action, lambda result: None)
    captured = capsys.readouterr()
    return info.value.exit_code, captured.err + captured.out


def test_a_bug_is_one_line_with_the_traceback_kept_in_a_private_file(capsys: pytest.CaptureFixture[str]) -> None:
    def buggy(reporter: object) -> None:
        raise ValueError("unexpected shape")

    code, text = _outcome(buggy, capsys)
    assert code == 1
    assert "internal error (ValueError: unexpected shape)" in text and "Traceback" not in text
    kept = re.search(r"traceback in (\S+safehold-crash-\S+\.txt)", text)
    assert kept, text
    path = kept.group(1)
    try:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert "ValueError: unexpected shape" in Path(path).read_text()
    finally:
        os.unlink(path)


def test_known_failures_keep_their_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    def bad_config(reporter: object) -> None:
        raise ConfigError("instances.app.repositories: unknown repository 'nas'", "define it under [repositories]")

    code, text = _outcome(bad_config, capsys, json_out=True)
    assert code == 2
    assert '"error": "instances.app.repositories: unknown repository \'nas\'"' in text


def test_ctrl_c_with_json_still_prints_one_json_document(capsys: pytest.CaptureFixture[str]) -> None:
    def interrupted(reporter: object) -> None:
        raise KeyboardInterrupt

    with pytest.raises(typer.Exit) as info:
        common.run_action(True, interrupted, lambda result: None)
    assert info.value.exit_code == 130
    assert json.loads(capsys.readouterr().out) == {
        "ok": False, "error": "interrupted — the last complete recovery point is untouched"}


def test_a_json_listing_cut_short_is_still_one_document_that_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    def entries():  # noqa: ANN202 - restic's listing, ending with the repository gone part-way
        yield {"path": "/srv/app/a.txt"}
        raise RepositoryError("repository unreachable", "check the network")

    with pytest.raises(typer.Exit) as info:
        common.run_action(True, lambda r: common.stream_json({"run_id": "R1"}, "entries", entries()),
                          lambda result: None, streamed=True)
    assert info.value.exit_code == 1
    document = json.loads(capsys.readouterr().out)
    assert document == {"run_id": "R1", "entries": [{"path": "/srv/app/a.txt"}], "count": 1, "ok": False,
                        "error": "repository unreachable", "hint": "check the network"}
    common.print_failure(True, "later", None)  # the next failure is a document of its own again
    assert json.loads(capsys.readouterr().out) == {"ok": False, "error": "later"}


def test_a_json_listing_ends_ok(capsys: pytest.CaptureFixture[str]) -> None:
    assert common.stream_json({"run_id": "R1"}, "entries", iter([{"path": "/a"}, {"path": "/b"}])) == 2
    assert json.loads(capsys.readouterr().out) == {"run_id": "R1", "entries": [{"path": "/a"}, {"path": "/b"}],
                                                   "count": 2, "ok": True}


# Text from users, configs, databases and child processes, which rich would read as markup or emoji codes.
ODD = "no point '[/bad]' in [repositories.*] or [export]; secret file:/tmp/audit/[old]/repo.pass :thumbs_up:"


def test_odd_text_in_a_failure_is_printed_as_is(capsys: pytest.CaptureFixture[str]) -> None:
    def odd(reporter: object) -> None:
        raise ConfigError(ODD, "check [instances.*]")

    code, text = _outcome(odd, capsys)
    assert code == 2 and "Traceback" not in text
    assert text == f"error: {ODD} — check [instances.*]\n"


def test_odd_text_in_a_table_is_printed_as_is(capsys: pytest.CaptureFixture[str]) -> None:
    common.print_table("drill [/a] point -", ["check", "detail"], [["files", "[/bad] [export] :x:"]])
    text = capsys.readouterr().out
    assert "drill [/a] point -" in text and "[/bad] [export] :x:" in text


class _Terminal(io.StringIO):
    def isatty(self) -> bool:  # so the reporter draws with rich, as on a terminal
        return True


def test_odd_text_in_progress_is_printed_as_is(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "300")  # one line per message
    stream = _Terminal()
    reporter = Reporter(stream=stream)
    assert reporter.mode == "rich"
    reporter.step(f"step {ODD}")
    reporter.warn("[/a] [instances.*]")
    reporter.advance("dump audit_[/a]", 5, 10)
    reporter.close()
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", stream.getvalue())
    assert f"step {ODD}" in text and "warning: [/a] [instances.*]" in text and "dump audit_[/a]" in text


def test_cli_shows_odd_run_ids_paths_and_errors_as_is(tmp_path: Path) -> None:
    secret = tmp_path / "[old]" / "repo.pass"
    secret.parent.mkdir()
    secret.write_text("not a real password")
    secret.chmod(0o644)
    repo = {"url": str(tmp_path / "repo"), "password_file": str(secret)}
    path = write_config(tmp_path, repo, f'[instances.app]\nrepositories = ["main"]\nfiles = ["{tmp_path}"]\n')

    def one_line_error(*args: str) -> str:
        proc = run_cli(*args, config=path)
        assert proc.returncode != 0 and proc.stdout == "", proc.stderr
        assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1, proc.stderr
        return proc.stderr

    assert "no instance '[/x]' in " in one_line_error("show", "[/bad]", "--instance", "[/x]")
    assert f"secret file {secret} is readable by others" in one_line_error("show", "[/bad]")
    if shutil.which("restic"):  # the repository is then tried: there is none, which is the answer, not "no point"
        secret.chmod(0o600)
        assert "repository main does not exist" in one_line_error("show", "[/bad]")

    history = History(tmp_path / "state")
    run = history.record_start("app", "backup")
    history.record_end(run, "failed", error="database 'audit_[/a]' does not exist — check [instances.*]")
    proc = run_cli("history", config=path)
    assert proc.returncode == 0 and "app  backup  failed" in proc.stdout, proc.stderr
    assert "database 'audit_[/a]' does not exist — check [instances.*]" in proc.stdout


def test_user_list_prints_an_odd_name_stored_earlier_on_one_line(tmp_path: Path) -> None:
    path = write_config(tmp_path, {"url": str(tmp_path / "repo"), "password_file": str(tmp_path / "pass")}, "")
    Store(tmp_path / "state").add_user("alice", "viewer", "long-enough-password")
    with sqlite3.connect(tmp_path / "state" / "web.sqlite") as db:  # as `user add` let it in before names were checked
        db.execute("UPDATE users SET name = ?", ("eve\x1b[2J\nmallory",))
    listed = run_cli("user", "list", config=path)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines() == ["eve\\x1b[2J\\x0amallory  viewer"]
