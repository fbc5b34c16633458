"""`safehold verify --repair` parts that need no repository: restic's subcommand per version, which
damage makes backups unsafe, the damage record's rules, the grouping of snapshots into points and the
restic command line a person is given."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from safehold.actions.check import check
from safehold.actions.verify import runs_of
from safehold.config import parse
from safehold.errors import RepositoryError
from safehold.repository import damage
from safehold.repository.restic import Repository, RepositoryDamaged, explain, index_repair_command
from safehold.secrets import Secret
from tests.conftest import write_config
from tests.unit.test_restic_errors import PACK, READ_DATA_MISSING, restic_stderr

TREE = "cd398ed0b0617380d6ef7b7bc55380b19276437422332888443908ae42a1ead3"
# restic 0.14 check after `rebuild-index` dropped a lost pack: the index no longer knows its blobs.
AFTER_REPAIR = (f"error for tree cd398ed0:\n  tree {TREE}: file \"big.bin\" blob 0efe589376f3de1880a8d4436b1972c9"
                "466ca728f660d00ddea590dda51964ae not found in index\nFatal: repository contains errors\n")


@pytest.mark.parametrize(("version", "command"), [
    ((0, 14, 0), ["rebuild-index"]), ((0, 15, 2), ["rebuild-index"]),
    ((0, 16, 0), ["repair", "index"]), ((0, 17, 3), ["repair", "index"]), ((1, 0, 0), ["repair", "index"]),
])
def test_index_is_rebuilt_with_the_subcommand_of_the_installed_restic(version: tuple[int, int, int],
                                                                      command: list[str]) -> None:
    assert index_repair_command(version) == command


@pytest.mark.parametrize(("stderr", "unsafe"), [
    # The index lists a pack the storage lacks: a backup would reuse its blobs.
    (f"pack {PACK[:8]}: does not exist\nFatal: repository contains errors\n", True),
    (READ_DATA_MISSING, True),
    (f"Pack ID does not match, want {PACK}, got d25a6361057c079b2261f67b60e8d247d1d32e634667bb7e496d06206cb2bae8\n"
     "Fatal: repository contains errors", True),
    # After the index was rebuilt only old snapshots are damaged: backups store the data anew.
    (AFTER_REPAIR, False),
    (f"error for tree f18ba5b6:\n  id {TREE} not found in repository\nFatal: repository contains errors", False),
    # `stats --mode raw-data` of a snapshot whose data the rebuilt index lacks.
    ("blob <data/d153cd80> not found", False),
])
def test_damage_says_whether_backups_would_reuse_lost_data(stderr: str, unsafe: bool) -> None:
    error = explain(restic_stderr(stderr), "main")
    assert isinstance(error, RepositoryDamaged) and error.unsafe is unsafe, error.line()
    assert "safehold verify --repair" in error.hint


def test_other_failures_are_not_damage() -> None:
    error = explain(restic_stderr("Fatal: wrong password or no key found"), "main")
    assert not isinstance(error, RepositoryDamaged)


def damaged(unsafe: bool, message: str = "repository main is damaged") -> RepositoryDamaged:
    return RepositoryDamaged(message, "run `safehold verify --repair`", unsafe)


def test_lost_data_refuses_backups_until_a_repair(tmp_path: Path) -> None:
    assert damage.refuse_unsafe(tmp_path, "main") is None
    damage.record(tmp_path, "main", damaged(True, "repository main is damaged: data is missing"), read_data=False)
    with pytest.raises(RepositoryError) as info:
        damage.refuse_unsafe(tmp_path, "main")
    line = info.value.line()
    assert "repository main is damaged: data is missing (found by verify," in line and "nothing was stored" in line
    assert line.endswith("run `safehold verify --repair` first")
    # A verify that sees only the old points' damage (the index was rebuilt by hand, say) does not lift it.
    damage.record(tmp_path, "main", damaged(False), read_data=False)
    assert damage.recorded(tmp_path, "main").unsafe
    # A repair does, and keeps the points it found damaged; backups go on, reading every file.
    points = [{"instance": "app", "run_id": "20261126T100854Z-bf31"}]
    damage.record(tmp_path, "main", damaged(False), read_data=False, points=points, repaired=True)
    kept = damage.refuse_unsafe(tmp_path, "main")
    assert kept is not None and not kept.unsafe and kept.points == points
    # A later verify that fails the same way keeps the list; one that passes drops the record.
    damage.record(tmp_path, "main", damaged(False), read_data=False)
    assert damage.recorded(tmp_path, "main").points == points
    damage.passed(tmp_path, "main", read_data=False)
    assert damage.recorded(tmp_path, "main") is None
    assert (tmp_path / "repositories").stat().st_mode & 0o077 == 0


def test_damage_found_by_reading_data_is_cleared_only_by_reading_it(tmp_path: Path) -> None:
    damage.record(tmp_path, "main", damaged(True), read_data=True)
    damage.passed(tmp_path, "main", read_data=False)  # a plain check cannot see corrupt data
    assert damage.recorded(tmp_path, "main").unsafe
    damage.passed(tmp_path, "main", read_data=True)
    assert damage.recorded(tmp_path, "main") is None


def test_an_unreadable_record_is_none(tmp_path: Path) -> None:
    (tmp_path / "repositories").mkdir()
    (tmp_path / "repositories" / "main.damage").write_text("{not json")
    assert damage.recorded(tmp_path, "main") is None
    (tmp_path / "repositories" / "main.damage").write_text(json.dumps({"unexpected": 1}))
    assert damage.recorded(tmp_path, "main") is None


def test_check_reports_repository_damage_until_a_verify_passes(tmp_path: Path) -> None:
    path = write_config(tmp_path, {"url": str(tmp_path / "repo"), "password_file": str(tmp_path / "unused")}, f"""
[instances.app]
repositories = ["main"]
files = ["{tmp_path}"]
""")
    config = parse(path.read_text(), path)

    def finding() -> dict[str, str] | None:
        found = [f for f in check(config, "app")["instances"][0]["findings"] if f["rule"] == "repository-damage"]
        return found[0] if found else None

    assert finding() is None
    damage.record(config.state_dir, "main", damaged(True, "repository main is damaged: data is missing"), False)
    unsafe = finding()
    assert unsafe["status"] == "CRITICAL" and "backups into it are refused until `safehold verify --repair`" in \
        unsafe["message"]
    damage.record(config.state_dir, "main", damaged(False), False, repaired=True,
                  points=[{"instance": "app", "run_id": "R1"}, {"instance": "other", "run_id": "R2"}])
    left = finding()
    assert left["status"] == "CRITICAL" and "1 of app: R1" in left["message"] and "R2" not in left["message"]
    damage.passed(config.state_dir, "main", read_data=False)
    assert finding() is None


def test_snapshots_are_grouped_into_the_runs_they_belong_to() -> None:
    def snap(short: str, instance: str, run: str, part: str) -> dict[str, object]:
        return {"short_id": short, "tags": ["safehold", f"instance={instance}", f"run={run}", f"part={part}"]}

    listing = [snap("aa", "app", "20261126T1000Z-b", "files"), snap("bb", "app", "20261125T1000Z-a", "files"),
               snap("cc", "app", "20261126T1000Z-b", "manifest"), snap("dd", "crm", "20261126T1000Z-b", "files")]
    assert runs_of(listing) == {("app", "20261125T1000Z-a"): ["bb"], ("app", "20261126T1000Z-b"): ["aa", "cc"],
                                ("crm", "20261126T1000Z-b"): ["dd"]}


def test_command_line_names_where_secrets_are_never_their_values(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("REPO_PW", "s3cret-password-value")
    options = ["-o", "sftp.command=ssh -F none -p 22 nas -s sftp"]
    by_env = Repository("main", "sftp:backup@nas:/srv/safe hold", Secret("s3cret-password-value", "env:REPO_PW"),
                        env={"AWS_SECRET_ACCESS_KEY": Secret("k3y-value", "file:/etc/safehold/aws key")},
                        extra_args=options)
    line = by_env.command_line("forget", "--prune", "f234d420")
    assert line == ("RESTIC_REPOSITORY='sftp:backup@nas:/srv/safe hold' RESTIC_PASSWORD_FILE=<(printenv REPO_PW) "
                    "AWS_SECRET_ACCESS_KEY=\"$(cat '/etc/safehold/aws key')\" restic -o 'sftp.command=ssh -F none -p "
                    "22 nas -s sftp' forget --prune f234d420")
    by_file = Repository("main", "rest:https://user:pw@host/repo", Secret("x" * 20, "file:/etc/safehold/repo.pass"))
    line = by_file.command_line("snapshots")
    assert line == "RESTIC_REPOSITORY='rest:https://user:***@host/repo' RESTIC_PASSWORD_FILE=/etc/safehold/repo.pass " \
        "restic snapshots"
    # bash runs it as printed: restic (here a stand-in that prints its password file) gets the password.
    plain = Repository("main", "/srv/repo", Secret("s3cret-password-value", "env:REPO_PW")).command_line()
    assert plain.endswith(" restic")
    stand_in = plain.removesuffix("restic") + "bash -c 'cat \"$RESTIC_PASSWORD_FILE\"'"
    shown = subprocess.run(["bash", "-c", stand_in], capture_output=True, text=True, check=True,
                           env={"REPO_PW": "s3cret-password-value", "PATH": os.environ["PATH"]})
    assert shown.stdout.strip() == "s3cret-password-value"
