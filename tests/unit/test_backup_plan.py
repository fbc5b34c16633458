"""`backup --dry-run` without services: the plan of an SQLite + files instance, the quiesce steps it lists
without running them, the read-only repository probe, and how the plan is printed."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from safehold import config as config_module
from safehold.actions import backup_plan
from safehold.apps import idoit, itop
from safehold.apps.common import command_plan
from safehold.cli.points import _render_plan
from safehold.config import InstanceConfig
from safehold.errors import RepositoryError, SafeholdError
from safehold.models import Instance
from safehold.output import Silent
from safehold.repository import restic
from safehold.repository.restic import Repository
from safehold.secrets import Secret
from tests.conftest import private_file, write_config

NO_REPOSITORY = ("Fatal: unable to open config file: stat /srv/repo/config: no such file or directory\n"
                 "Is there a repository at the following location?\n/srv/repo\n")


def instance_config(**quiesce: object) -> InstanceConfig:
    return InstanceConfig(repositories=["main"], files=["/srv/app"], quiesce=quiesce)


def test_the_commands_listed_are_those_a_backup_would_run() -> None:
    assert command_plan(instance_config()) == []
    assert command_plan(instance_config(stop=[["systemctl", "stop", "apache2"]], start=[["systemctl", "start",
                                                                                          "apache2"]])) == [
        "run systemctl stop apache2", "afterwards run systemctl start apache2"]
    # As stop_commands: nothing stopped, nothing to start again.
    assert command_plan(instance_config(start=[["systemctl", "start", "apache2"]])) == []
    assert command_plan(instance_config(stop=[["x"]], start=[["y"]], enabled=False)) == []


def test_app_profiles_name_their_pause_without_making_it(tmp_path: Path) -> None:
    itop_instance = Instance(name="itop", app="itop", root=tmp_path)
    with pytest.raises(SafeholdError, match="no approot.inc.php"):  # a root without iTop's code: said, not planned
        itop.quiesce_plan(itop_instance, instance_config(), tmp_path)
    (tmp_path / "approot.inc.php").touch()
    (tmp_path / itop.CONFIG).parent.mkdir(parents=True)
    (tmp_path / itop.CONFIG).touch()
    flag = tmp_path / "data" / ".readonly"
    assert itop.quiesce_plan(itop_instance, instance_config(), tmp_path)[0].startswith(
        f"switch iTop to read-only mode (create {flag})")
    assert not flag.parent.exists()
    flag.parent.mkdir()
    flag.touch()
    assert itop.quiesce_plan(itop_instance, instance_config(), tmp_path)[0].startswith("iTop is read-only already")
    idoit_instance = Instance(name="cmdb", app="idoit", root=tmp_path)
    assert idoit.quiesce_plan(idoit_instance, instance_config(), tmp_path)[0].startswith(
        "none: no quiesce commands configured")
    assert idoit.quiesce_plan(idoit_instance, instance_config(stop=[["a"]]), tmp_path) == ["run a"]


@pytest.fixture
def sqlite_app(tmp_path: Path) -> Path:
    """An instance with an SQLite database (2 rows), a files tree behind a symlink, a missing tree and a
    quiesce command that would leave a mark."""
    real = tmp_path / "srv" / "app-1.2"
    (real / "uploads").mkdir(parents=True)
    (real / "uploads" / "a.txt").write_text("abc")
    (tmp_path / "app").symlink_to(real)
    with sqlite3.connect(real / "app.sqlite") as conn:
        conn.executescript("CREATE TABLE notes(id INTEGER PRIMARY KEY, body TEXT); INSERT INTO notes(body) "
                           "VALUES ('a'), ('b');")
    password = private_file(tmp_path / "secrets" / "repo.pass", "pw")
    return write_config(tmp_path, {"url": str(tmp_path / "repo"), "password_file": str(password)}, f"""
[instances.app]
repositories = ["main"]
files = ["{tmp_path / 'app' / 'uploads'}", "{tmp_path / 'share'}"]
exclude = ["{tmp_path / 'app' / 'uploads' / 'tmp'}/*"]
quiesce = {{ stop = [["touch", "{tmp_path / 'stopped'}"]] }}
[[instances.app.databases]]
engine = "sqlite"
path = "{real / 'app.sqlite'}"
""")


def test_the_plan_describes_every_part_and_changes_nothing(sqlite_app: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tmp_path = sqlite_app.parent
    monkeypatch.setattr(Repository, "probe", lambda self: False)
    plans = backup_plan.plan(config_module.load(sqlite_app), None, Silent(), note="before update", keep_days=3)
    assert len(plans) == 1
    plan = plans[0]
    real = tmp_path / "srv" / "app-1.2"
    assert plan["note"] == "before update" and plan["keep_days"] == 3
    db = plan["databases"][0]
    assert (db["engine"], db["name"], db["server"], db["tables"], db["rows"], db["problem"]) == (
        "sqlite", str(real / "app.sqlite"), str(real / "app.sqlite"), 1, 2, None)
    assert plan["trees"][0] == {"path": str(real / "uploads"), "kind": "files", "link": str(tmp_path / "app" /
                                "uploads"), "exists": True, "files": 1, "bytes": 3, "problem": None}
    assert plan["trees"][1]["exists"] is False
    # Excludes written with the link's path are given to restic with the real one, as a backup does.
    assert plan["exclude"] == [f"{real / 'uploads' / 'tmp'}/*"]
    assert plan["quiesce"] == [f"run touch {tmp_path / 'stopped'}"]
    assert plan["repositories"] == [{"name": "main", "url": str(tmp_path / "repo"), "state": "new", "problem": None}]
    assert [p.split(" does not exist")[0] for p in plan["problems"]] == [str(tmp_path / "share")]
    assert any("lies behind a symlink" in w for w in plan["warnings"])
    assert not (tmp_path / "stopped").exists() and not (tmp_path / "state").exists()


def test_a_broken_instance_still_gets_its_repositories_looked_at(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    password = private_file(tmp_path / "secrets" / "repo.pass", "pw")
    config = write_config(tmp_path, {"url": str(tmp_path / "repo"), "password_file": str(password)}, f"""
[instances.itop]
app = "itop"
root = "{tmp_path / 'moved'}"
repositories = ["main"]
""")
    monkeypatch.setattr(Repository, "probe", lambda self: True)
    plan = backup_plan.plan(config_module.load(config), "itop", Silent())[0]
    assert plan["problems"] == [f"iTop root {tmp_path / 'moved'} does not exist — fix root in safehold.toml, or "
                                "restore the instance from a point"]
    assert plan["repositories"][0]["state"] == "ready"


def repository(tmp_path: Path, known: bool) -> Repository:
    repo = Repository(name="main", url=str(tmp_path / "repo"), password=Secret("pw"),
                      known_file=tmp_path / "state" / "main.url")
    if known:
        repo.known_file.parent.mkdir(parents=True)
        repo.known_file.write_text(repo._url_digest())
    return repo


def failing_restic(stderr: str, calls: list[list[str]]):  # noqa: ANN201 - a stand-in for runner.run
    def run(argv: list[str], **kwargs: object) -> bytes:
        calls.append(argv)
        raise restic.runner.ProcessFailed("restic cat", 1, stderr)
    return run


def test_the_probe_reads_without_a_lock_and_a_new_repository_is_no_problem(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[str]] = []
    monkeypatch.setattr(restic.runner, "run", failing_restic(NO_REPOSITORY, calls))
    assert repository(tmp_path, known=False).probe() is False
    assert calls[0][-3:] == ["cat", "config", "--no-lock"]


def test_the_probe_keeps_the_record_of_a_repository_that_disappeared(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(restic.runner, "run", failing_restic(NO_REPOSITORY, []))
    repo = repository(tmp_path, known=True)
    with pytest.raises(RepositoryError, match="has disappeared: earlier runs used it"):
        repo.probe()
    assert repo.known_file.is_file()  # a real backup drops it; a dry run changes nothing


def test_the_probe_refuses_what_a_first_backup_would_refuse(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(restic.runner, "run", failing_restic(NO_REPOSITORY, []))
    (tmp_path / "repo").mkdir()
    (tmp_path / "repo" / "photos").mkdir()
    with pytest.raises(RepositoryError, match="is not a restic repository but is not empty either"):
        repository(tmp_path, known=False).probe()
    monkeypatch.setattr(restic.runner, "run", failing_restic("Fatal: wrong password or no key found\n", []))
    with pytest.raises(RepositoryError, match="wrong password for repository main"):
        repository(tmp_path, known=False).probe()


def test_the_printed_plan_ends_with_its_problems_and_says_nothing_changed(capsys: pytest.CaptureFixture[str]) -> None:
    plan = {"instance": "app", "app": "generic", "app_version": None, "schema_version": None, "note": None,
            "keep_days": None, "databases": [{"engine": "mariadb", "name": "app", "server": "mariadb root@db:3306",
                                              "tables": None, "rows": None, "problem": "database app: down"}],
            "trees": [], "exclude": [], "quiesce": [], "keys": [], "warnings": [],
            "repositories": [{"name": "main", "url": "/srv/repo", "state": "ready", "problem": None}],
            "problems": ["database app: down"]}
    _render_plan([plan])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "app (generic)"
    assert "  database mariadb app on mariadb root@db:3306: not readable" in lines
    assert "  quiesce: nothing (no pause configured)" in lines
    assert "  repository main (/srv/repo): reachable and initialised" in lines
    assert lines[-2:] == ["  problem: database app: down", "dry run: nothing was changed"]
