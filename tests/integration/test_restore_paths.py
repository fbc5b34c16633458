"""Getting one deleted file back without restoring the whole instance: `safehold ls` finds it by the path it
had on the host, `safehold restore --path` brings only it back (in place or under --files-to), and a file on
the host that would be overwritten is replaced only with --force, after a safety point of it."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import SRC, run_cli, write_config
from tests.integration.appkit import kill_group, start_cli, wait_for
from tests.integration.test_core_roundtrip import tree_state
from tests.integration.unattended import make_instance

DELETED = "nested/deeper/Rechnung Nr. 5 – ünïcødé.pdf"


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


def build_uploads(uploads: Path) -> None:
    (uploads / "nested" / "deeper").mkdir(parents=True)
    deleted = uploads / DELETED
    deleted.write_bytes(os.urandom(30000))
    deleted.chmod(0o640)
    os.chown(deleted, 4242, 4343)
    os.utime(deleted, (1_600_000_000, 1_600_000_000))
    (uploads / "nested" / "deeper" / "file with spaces.txt").write_text("spaces\n")
    (uploads / "nested" / "sibling.txt").write_text("sibling as backed up\n")
    (uploads / "clients" / "5").mkdir(parents=True)
    (uploads / "clients" / "5" / "contract.pdf").write_text("client 5\n")
    (uploads / "clients" / "55").mkdir()
    (uploads / "clients" / "55" / "contract.pdf").write_text("client 55\n")
    (uploads / "globs").mkdir()
    for name in ("report[1].txt", "report1.txt", "*", "a?b", "two\nlines"):
        (uploads / "globs" / name).write_text(f"{name}\n")


@pytest.fixture
def app(tmp_path: Path, repo: dict[str, str]) -> dict[str, Path]:
    """A generic instance: a SQLite database, an uploads tree (nested folders, odd names) and a config file,
    with a first recovery point of it."""
    root = tmp_path / "app"
    (root / "app.ini").parent.mkdir(parents=True)
    (root / "app.ini").write_text("[app]\nname = demo\n")
    config = make_instance(tmp_path, repo, instance=f'config_files = ["{root / "app.ini"}"]')
    build_uploads(root / "files")
    backup = run_cli("backup", "app", config=config)
    assert backup.returncode == 0, backup.stderr
    return {"root": root, "uploads": root / "files", "config": config}


def files_state(root: Path) -> dict[str, tuple]:
    """tree_state without the folders: a folder files were put back into shows that in its own mtime."""
    return {path: facts for path, facts in tree_state(root).items() if not stat.S_ISDIR(facts[0])}


def _restore(app: dict[str, Path], *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli("restore", "app", *args, config=app["config"])


def _points(app: dict[str, Path]) -> list[dict[str, object]]:
    return json.loads(run_cli("list", "app", "--json", config=app["config"]).stdout)


def test_a_deleted_file_is_listed_and_comes_back_in_place_alone(app: dict[str, Path]) -> None:
    uploads, config = app["uploads"], app["config"]
    before = tree_state(uploads)
    deleted = uploads / DELETED
    deleted.unlink()
    # What happened on the host since the point stays as it is.
    (uploads / "nested" / "sibling.txt").write_text("changed after the backup\n")
    (uploads / "nested" / "deeper" / "new since.txt").write_text("new\n")
    db = sqlite3.connect(app["root"] / "app.db")
    db.execute("INSERT INTO t (v) VALUES ('after the backup')")
    db.commit()
    db.close()

    listed = run_cli("ls", "app", "latest", str(deleted.parent), config=config)
    assert listed.returncode == 0, listed.stderr
    row = next(line for line in listed.stdout.splitlines() if line.endswith(str(deleted)))
    assert row.split()[:3] == ["-rw-r-----", "file", "30000"], row
    entries = json.loads(run_cli("ls", "app", str(deleted.parent), "--json", config=config).stdout)["entries"]
    found = next(e for e in entries if e["path"] == str(deleted))
    assert (found["type"], found["size"], found["mode"], found["uid"]) == ("file", 30000, "0640", 4242)
    assert found["mtime"].startswith("2020-09-13T12:26:40")

    result = _restore(app, "--path", str(deleted), "--json")
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout)
    assert outcome["restored"] == {"files": 1, "bytes": 30000, "unchanged": 0}
    assert outcome["plan"]["databases"] == [] and "safety_point" not in outcome
    after = tree_state(uploads)
    assert after[DELETED] == before[DELETED]  # content, mode, owner and mtime
    assert (uploads / "nested" / "sibling.txt").read_text() == "changed after the backup\n"
    assert (uploads / "nested" / "deeper" / "new since.txt").read_text() == "new\n"
    assert set(after) == set(before) | {"nested/deeper/new since.txt"}  # no staging folder left behind
    rows = sqlite3.connect(app["root"] / "app.db").execute("SELECT count(*) FROM t").fetchone()
    assert rows == (201,)  # --path never touches a database


def test_files_to_puts_only_that_path_under_the_folder(app: dict[str, Path], tmp_path: Path) -> None:
    uploads = app["uploads"]
    before = tree_state(uploads)
    target = tmp_path / "copy"
    result = _restore(app, "--path", str(uploads / DELETED), "--files-to", str(target), "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["restored"] == {"files": 1, "bytes": 30000}
    copied = [p for p in target.rglob("*") if not p.is_dir()]
    assert copied == [target / str(uploads / DELETED).lstrip("/")]
    assert copied[0].read_bytes() == (uploads / DELETED).read_bytes()
    assert tree_state(uploads) == before


def test_a_folder_comes_back_merged_with_what_is_there_now(app: dict[str, Path]) -> None:
    uploads = app["uploads"]
    before = tree_state(uploads)
    nested = uploads / "nested"
    (nested / "deeper" / "file with spaces.txt").unlink()
    (uploads / DELETED).unlink()
    (nested / "deeper").rmdir()
    (nested / "uploaded today.txt").write_text("keep me\n")

    plan = _restore(app, "--path", f"{nested}/", "--dry-run", "--json")
    assert plan.returncode == 0, plan.stderr
    actions = {item["path"]: item["action"] for item in json.loads(plan.stdout)["plan"]["selection"]["items"]}
    assert actions == {str(nested): "same", str(nested / "sibling.txt"): "same", str(nested / "deeper"): "restore",
                       str(nested / "deeper" / "file with spaces.txt"): "restore", str(uploads / DELETED): "restore"}
    assert not (nested / "deeper").exists()

    result = _restore(app, "--path", str(nested), "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["restored"] == {"files": 2, "bytes": 30007, "unchanged": 1}
    after = tree_state(uploads)
    assert (nested / "uploaded today.txt").read_text() == "keep me\n"
    assert after.pop("nested/uploaded today.txt") and after.pop("nested")[:3] == before.pop("nested")[:3]
    assert after == before  # the folder that came back as a whole has its mtime too


def test_a_path_selects_itself_not_names_that_start_alike_or_match_as_a_pattern(app: dict[str, Path],
                                                                               tmp_path: Path) -> None:
    uploads = app["uploads"]
    listed = json.loads(run_cli("ls", "app", "latest", str(uploads / "clients" / "5"), "--recursive", "--json",
                                config=app["config"]).stdout)
    assert [e["path"] for e in listed["entries"]] == [str(uploads / "clients" / "5" / "contract.pdf")]

    def restored(path: Path, target: Path) -> list[str]:
        result = _restore(app, "--path", str(path), "--files-to", str(target))
        assert result.returncode == 0, result.stderr
        return sorted(str(p.relative_to(target / str(uploads).lstrip("/")))
                      for p in target.rglob("*") if not p.is_dir())

    assert restored(uploads / "clients" / "5", tmp_path / "c5") == ["clients/5/contract.pdf"]
    assert restored(uploads / "globs" / "report[1].txt", tmp_path / "brackets") == ["globs/report[1].txt"]
    assert restored(uploads / "globs" / "*", tmp_path / "star") == ["globs/*"]
    assert restored(uploads / "globs" / "a?b", tmp_path / "question") == ["globs/a?b"]


def test_a_path_outside_the_trees_or_not_in_the_point_is_one_line_and_exit_2(app: dict[str, Path]) -> None:
    uploads, config = app["uploads"], app["config"]
    (uploads / DELETED).unlink()
    before = tree_state(uploads)
    cases = {
        str(uploads / "nested" / "never-there.pdf"): "is not in point",
        str(app["root"] / "elsewhere"): "is not in the file trees or config files of point",
        "nested/deeper": "is not an absolute path",
        f"{uploads}/nested/../../app.db": "contains '..'",
    }
    for path, message in cases.items():
        for result in (_restore(app, "--path", path), run_cli("ls", "app", "latest", path, config=config)):
            assert result.returncode == 2, (path, result.stderr)
            assert message in one_line_error(result)
    # One missing path among good ones: nothing at all is restored.
    mixed = _restore(app, "--path", str(uploads / DELETED), "--path", str(uploads / "nested" / "never-there.pdf"))
    assert mixed.returncode == 2 and "nothing was restored" in one_line_error(mixed)
    conflict = _restore(app, "--path", str(uploads / DELETED), "--only", "db")
    assert conflict.returncode == 2 and "does not go with --only db" in one_line_error(conflict)
    assert tree_state(uploads) == before


def test_a_changed_file_is_replaced_only_with_force_after_a_safety_point(app: dict[str, Path]) -> None:
    uploads, config = app["uploads"], app["config"]
    before = files_state(uploads)
    changed = uploads / "clients" / "5" / "contract.pdf"
    changed.write_text("edited on the host\n")

    refused = _restore(app, "--path", str(changed))
    assert refused.returncode == 1
    assert "1 file(s) on the host differ from the point and would be overwritten" in one_line_error(refused)
    assert changed.read_text() == "edited on the host\n"
    assert not [p for p in _points(app) if p["safety_point"]]

    forced = _restore(app, "--path", str(uploads / "clients"), "--force", "--json")
    assert forced.returncode == 0, forced.stderr
    outcome = json.loads(forced.stdout)
    assert outcome["restored"] == {"files": 1, "bytes": 9, "unchanged": 1}
    assert files_state(uploads) == before
    safety = [p for p in _points(app) if p["safety_point"]]
    assert [p["run_id"] for p in safety] == [outcome["safety_point"]]
    # The safety point holds the edited file, so the forced restore can be undone.
    saved = run_cli("ls", "app", outcome["safety_point"], str(changed), "--json", config=config)
    assert json.loads(saved.stdout)["entries"][0]["size"] == len("edited on the host\n")


def test_files_to_the_root_is_a_restore_in_place_with_its_checks(app: dict[str, Path]) -> None:
    # `--files-to /` or a path that leads there (`/srv/..`) puts files back in place: a file changed on the
    # host is refused without --force, as in place, instead of overwritten with no safety point, or skipped.
    changed = app["uploads"] / "clients" / "5" / "contract.pdf"
    changed.write_text("edited on the host\n")
    for target in ("/", "/..", f"{app['uploads']}/../../../.." + "/.." * len(app["uploads"].parts)):
        refused = _restore(app, "--path", str(changed), "--files-to", target)
        assert refused.returncode == 1, (target, refused.stderr)
        assert "differ from the point and would be overwritten" in one_line_error(refused)
        assert changed.read_text() == "edited on the host\n"
    plan = json.loads(_restore(app, "--path", str(changed), "--files-to", "/..", "--dry-run", "--json").stdout)
    assert plan["plan"]["files_into"] == "/" and plan["plan"]["selection"]["conflicts"] == [str(changed)]
    forced = _restore(app, "--path", str(changed), "--files-to", "/..", "--force", "--json")
    assert forced.returncode == 0, forced.stderr
    assert json.loads(forced.stdout)["safety_point"] and changed.read_text() == "client 5\n"


def test_a_name_with_a_newline_is_one_line_of_the_plan(app: dict[str, Path]) -> None:
    odd = app["uploads"] / "globs" / "two\nlines"
    odd.unlink()
    plan = _restore(app, "--path", str(odd), "--dry-run")
    assert plan.returncode == 0, plan.stderr
    escaped = str(odd).replace("\n", "\\x0a")
    assert f"  files {escaped} → /" in plan.stdout.splitlines()
    assert f"  restore  {escaped}" in plan.stdout.splitlines()


def test_a_killed_restore_leaves_no_folder_in_the_live_tree_past_the_next_restore(app: dict[str, Path]) -> None:
    deleted = app["uploads"] / DELETED
    deleted.unlink()
    staged = lambda: list(deleted.parent.glob(".safehold-restore-*"))  # noqa: E731
    child = start_cli("restore", "app", "--path", str(deleted), config=app["config"])
    try:
        wait_for(lambda: bool(staged()), every=0.005)  # it lives as long as restic restores one small file
    finally:
        kill_group(child)  # SIGKILL: the OOM killer, a power cut
    assert staged()  # nothing runs after SIGKILL; the next backup would keep it
    again = _restore(app, "--path", str(deleted))
    assert again.returncode == 0, again.stderr
    assert "left behind by a safehold run that was killed" in again.stderr
    assert staged() == [] and deleted.stat().st_size == 30000


def test_a_listing_piped_into_head_ends_quietly(app: dict[str, Path]) -> None:
    for json_out in ([], ["--json"]):
        argv = [sys.executable, "-m", "safehold", "ls", "app", "-r", *json_out, "--config", str(app["config"])]
        child = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                 env={**os.environ, "PYTHONPATH": str(SRC)})
        assert child.stdout is not None and child.stderr is not None
        child.stdout.close()  # `safehold ls app -r | head`: the reader has what it wanted
        stderr = child.stderr.read()
        # As `ls | head`: SIGPIPE's exit code and no "error: Broken pipe — check that path".
        assert child.wait(timeout=120) == 128 + signal.SIGPIPE and stderr == "", stderr


def test_a_symlinked_root_is_found_by_the_path_the_admin_knows(tmp_path: Path, repo: dict[str, str]) -> None:
    real = tmp_path / "srv" / "uploads-2026"
    build_uploads(real)
    link = tmp_path / "uploads"
    link.symlink_to(real)
    config = write_config(tmp_path, repo, f'[instances.app]\nrepositories = ["main"]\nfiles = ["{link}"]\n')
    assert run_cli("backup", "app", config=config).returncode == 0
    (real / DELETED).unlink()

    listed = json.loads(run_cli("ls", "app", str(link / "nested" / "deeper"), "--json", config=config).stdout)
    assert listed["stored_path"] == str(real / "nested" / "deeper")
    assert str(real / DELETED) in [e["path"] for e in listed["entries"]]
    result = run_cli("restore", "app", "--path", str(link / DELETED), config=config)
    assert result.returncode == 0, result.stderr
    assert (real / DELETED).stat().st_size == 30000 and link.is_symlink()


def test_a_folder_turned_into_a_symlink_is_never_written_through(app: dict[str, Path], tmp_path: Path) -> None:
    uploads = app["uploads"]
    outside = tmp_path / "outside"
    outside.mkdir()
    for child in (uploads / "clients" / "5").iterdir():
        child.unlink()
    (uploads / "clients" / "5").rmdir()
    (uploads / "clients" / "5").symlink_to(outside)  # what a compromised web application could do
    for force in ([], ["--force"]):
        result = _restore(app, "--path", str(uploads / "clients" / "5" / "contract.pdf"), *force)
        assert result.returncode == 1
        assert f"{uploads / 'clients' / '5'} is no longer a folder on the host" in one_line_error(result)
    assert list(outside.iterdir()) == []
