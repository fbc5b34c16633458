"""The config decides where a restore writes, never the point: a corpus of hostile exports and points,
built from real ones, each refused in place with one line while the scratch area and every database
stay exactly as they were."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from safehold import signing
from tests.conftest import run_cli, sql
from tests.integration.hostile import (
    MANIFEST,
    Members,
    add_file,
    area_state,
    edit_manifest,
    read_export,
    signature_of,
    write_export,
)
from tests.integration.offhost_servers import make_tree, password_file, write_config


@dataclass
class Scene:
    config: Path
    area: Path  # the scratch area: the declared tree, its parent, undeclared targets
    tree: Path  # the one tree the instance declares
    db: str  # the database it declares
    victim_db: str  # a database it does not
    export: Path  # a real export of its latest point
    repo: Path
    password: Path

    def state(self) -> str:
        return area_state(self.area, [self.db, self.victim_db])

    @property
    def state_dir(self) -> Path:
        return self.config.parent / "state"


@pytest.fixture
def scene(tmp_path: Path, new_db: Callable[[str], str]) -> Scene:
    area = tmp_path / "scratch"
    tree = area / "app" / "files"
    make_tree(tree)
    (area / "app" / "beside.txt").write_text("the parent's own file, never saved\n")
    (area / "other").mkdir()
    (area / "other" / "keep.txt").write_text("another app's folder\n")
    (area / "victim.txt").write_text("a file outside every tree\n")
    db, victim = new_db("t_sec"), new_db("t_sec_victim")
    sql(["CREATE TABLE tickets (id INT PRIMARY KEY, subject VARCHAR(100))",
         "INSERT INTO tickets VALUES (1, 'printer'), (2, 'vpn')"], db)
    sql(["CREATE TABLE other (id INT PRIMARY KEY)", "INSERT INTO other VALUES (7)"], victim)
    password = password_file(tmp_path)
    config = write_config(tmp_path / "safehold.toml",
                          {"local": {"url": str(tmp_path / "repo"), "password": f"file:{password}"}},
                          {"app": {"repositories": ["local"], "files": [str(tree)],
                                   "databases": [{"engine": "mariadb", "user": "root", "names": [db]}]}})
    assert (made := run_cli("backup", "app", config=config)).returncode == 0, made.stderr
    export = tmp_path / "real.tar.zst"
    assert (made := run_cli("export", "latest", str(export), config=config)).returncode == 0, made.stderr
    return Scene(config, area, tree, db, victim, export, tmp_path / "repo", password)


def _trees(change: Callable[[list[dict]], None]) -> Callable[[dict], None]:
    return lambda manifest: change(manifest["trees"])


def _cases(s: Scene) -> dict[str, tuple[Callable[[dict], None], str]]:
    """Each hostile manifest edit, with what its one refusal line must name."""
    def extra(trees: list[dict]) -> None:
        trees.append({**trees[0], "root": str(s.area / "other")})

    def undeclared_db(manifest: dict) -> None:
        manifest["databases"][0]["name"] = s.victim_db

    def enormous(manifest: dict) -> None:
        manifest["trees"][0]["samples"] = {f"f{i:07d}": "0" * 64 for i in range(260_000)}

    return {
        "extra tree root": (_trees(extra), f"holds the tree {s.area / 'other'}, which instance 'app' does not declare"),
        "root moved to its parent": (_trees(lambda t: t[0].update(root=str(s.area / "app"))),
                                     f"holds the tree {s.area / 'app'}, which"),
        "root moved to /": (_trees(lambda t: t[0].update(root="/")), "holds the tree /, which"),
        "undeclared database": (undeclared_db, f"holds the database {s.victim_db} (mariadb), which instance"),
        "file outside every tree": (_trees(lambda t: t.append({**t[0], "root": str(s.area / "victim.txt"),
                                                               "kind": "config"})),
                                    f"holds the tree {s.area / 'victim.txt'}, which"),
        "duplicated roots": (_trees(lambda t: t.append(dict(t[0]))), f"names the tree {s.tree} twice"),
        "enormous manifest": (enormous, "larger than any safehold writes"),
    }


# The part each case's hostile entry belongs to: asked for alone, it is refused as well.
PART = {"extra tree root": "files", "root moved to its parent": "files", "root moved to /": "files",
        "undeclared database": "db", "file outside every tree": "config", "duplicated roots": "files",
        "enormous manifest": "db"}
CASES = ["extra tree root", "root moved to its parent", "root moved to /", "undeclared database",
         "file outside every tree", "duplicated roots", "enormous manifest"]


def assert_refused(result: subprocess.CompletedProcess[str], expected: str) -> None:
    """Non-zero exit and exactly one error line, naming what was refused."""
    assert result.returncode != 0, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and expected in errors[0], result.stderr


def hostile_export(s: Scene, case: str, out: Path, sign: Callable[[bytes], bytes] | None | str = "trusted") -> Path:
    """The real export with the case's manifest edit (and, for an extra root, its files), repacked and, by
    default, signed with the installation's own key: a trusted host's export crafted to harm, which only
    the target rule stops."""
    change, _ = _cases(s)[case]
    members: Members = edit_manifest(read_export(s.export), change)
    if case == "extra tree root":
        members = add_file(members, f"files{s.area / 'other' / 'keep.txt'}", b"the attacker's version\n")
    return write_export(out, members, (lambda sums: signing.sign(s.state_dir, sums)) if sign == "trusted"
                        else sign)  # type: ignore[arg-type]


@pytest.mark.parametrize("case", CASES)
def test_a_hostile_export_is_refused_in_place_and_changes_nothing(scene: Scene, tmp_path: Path, case: str) -> None:
    hostile = hostile_export(scene, case, tmp_path / "hostile.tar.zst")
    before = scene.state()
    for only in ((), ("--only", PART[case])):
        result = run_cli("restore", "app", "--from-file", str(hostile), "--force", *only, config=scene.config)
        assert_refused(result, _cases(scene)[case][1])
        assert scene.state() == before, f"{case}: the refused restore changed the scratch area or a database"
    assert not list(scene.area.rglob(".safehold-*")), "a staging folder was left behind"


SIGNATURE_CASES = {
    "valid signature over a different manifest": "signature does not match its content",
    "untrusted signer": "a key this installation does not trust",
    "unsigned": "the export is not signed",
    "truncated signature": "signature is damaged or truncated",
}


@pytest.mark.parametrize("case", list(SIGNATURE_CASES))
def test_an_export_without_a_trusted_signature_is_refused_before_it_is_read(scene: Scene, tmp_path: Path,
                                                                            case: str) -> None:
    original = signature_of(read_export(scene.export))
    sign = {
        "valid signature over a different manifest": lambda sums: original,
        "untrusted signer": lambda sums: signing.sign(tmp_path / "another-installation", sums),
        "unsigned": None,
        "truncated signature": lambda sums: signing.sign(scene.state_dir, sums)[:120],
    }[case]
    hostile = hostile_export(scene, "extra tree root", tmp_path / "hostile.tar.zst", sign)
    before = scene.state()
    for where in ((), ("--files-to", str(tmp_path / "elsewhere"), "--to-db", f"{scene.db}_never")):
        result = run_cli("restore", "app", "--from-file", str(hostile), "--force", *where, config=scene.config)
        assert_refused(result, SIGNATURE_CASES[case])
        assert "nothing was restored" in result.stderr
        assert scene.state() == before
        assert not (tmp_path / "elsewhere").exists()
    assert not sql(f"SHOW DATABASES LIKE '{scene.db}_never'")


def test_allow_unsigned_still_writes_only_where_the_config_says(scene: Scene, tmp_path: Path) -> None:
    hostile = hostile_export(scene, "extra tree root", tmp_path / "hostile.tar.zst", None)
    before = scene.state()
    result = run_cli("restore", "app", "--from-file", str(hostile), "--force", "--allow-unsigned",
                     config=scene.config)
    assert_refused(result, _cases(scene)["extra tree root"][1])
    assert scene.state() == before


def test_a_hostile_export_still_restores_elsewhere(scene: Scene, tmp_path: Path, new_db: Callable[[str], str]) -> None:
    # The parts a point names outside the instance are data all the same: they can be looked at elsewhere.
    hostile = hostile_export(scene, "extra tree root", tmp_path / "hostile.tar.zst")
    before = scene.state()
    elsewhere = tmp_path / "elsewhere"
    copy = f"{scene.db}_copy"
    new_db.created.append(copy)  # type: ignore[attr-defined]
    done = run_cli("restore", "app", "--from-file", str(hostile), "--files-to", str(elsewhere), "--to-db", copy,
                   config=scene.config)
    assert done.returncode == 0, done.stderr
    assert (elsewhere / str(scene.area / "other" / "keep.txt").lstrip("/")).read_text() == "the attacker's version\n"
    assert sql("SELECT COUNT(*) FROM tickets", copy) == [(2,)]
    assert scene.state() == before


def test_the_real_export_restores_in_place(scene: Scene) -> None:
    # The corpus's control: unedited, the same export does go back in place.
    (scene.tree / "index.php").write_text("damaged\n")
    sql("DELETE FROM tickets", scene.db)
    done = run_cli("restore", "app", "--from-file", str(scene.export), "--force", config=scene.config)
    assert done.returncode == 0, done.stderr
    assert (scene.tree / "index.php").read_text() != "damaged\n"
    assert sql("SELECT COUNT(*) FROM tickets", scene.db) == [(2,)]


def _store_manifest(s: Scene, manifest: dict) -> str:
    """A crafted manifest stored in the repository as a newer point of the instance (restic's own CLI)."""
    run = "29991231T000000Z-beef"
    manifest["run_id"] = run
    subprocess.run(["restic", "-r", str(s.repo), "--password-file", str(s.password), "backup", "--stdin",
                    "--stdin-filename", "/safehold/manifest.json", "--tag", "safehold", "--tag", "instance=app",
                    "--tag", f"run={run}", "--tag", "part=manifest"],
                   input=json.dumps(manifest).encode(), check=True, capture_output=True)
    return run


@pytest.mark.parametrize("case", ["extra tree root", "root moved to its parent", "undeclared database",
                                  "duplicated roots"])
def test_a_hostile_point_in_the_repository_is_refused_in_place(scene: Scene, case: str) -> None:
    manifest = json.loads(next(data for info, data in read_export(scene.export) if info.name == MANIFEST))
    _cases(scene)[case][0](manifest)
    run = _store_manifest(scene, manifest)
    before = scene.state()
    result = run_cli("restore", "app", run, "--force", config=scene.config)
    assert_refused(result, _cases(scene)[case][1])
    assert scene.state() == before
    assert not [p for p in os.listdir(scene.area / "app") if p.startswith(".")]
