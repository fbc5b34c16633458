"""`--to-db` parsing: renames, which database a bare name means, and names no server would create."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from safehold.actions.common import Point
from safehold.actions.restore import make_plan, parse_to_db
from safehold.engines.mariadb import client
from safehold.errors import ConfigError, DatabaseError, SafeholdError
from safehold.models import Connection, Database, Instance
from safehold.repository.manifest import DatabaseEntry, Manifest


def _manifest(*databases: tuple[str, str]) -> Manifest:
    entries = [DatabaseEntry(key=name, engine=engine, name=name, method="parallel", path=f"/db/{name}",
                             snapshot="abc") for name, engine in databases]
    return Manifest(run_id="r1", instance="app", app="generic", host="h", safehold_version="0",
                    started=datetime.now(UTC), databases=entries)


def test_a_bare_name_renames_the_only_database() -> None:
    assert parse_to_db(["copy"], _manifest(("itflow", "mariadb"))) == {"itflow": "copy"}


def test_old_equals_new_per_database() -> None:
    manifest = _manifest(("idoit_system", "mariadb"), ("idoit_data", "mariadb"))
    assert parse_to_db(["idoit_data=d2"], manifest) == {"idoit_data": "d2"}
    with pytest.raises(ConfigError, match="holds 2 databases"):
        parse_to_db(["copy"], manifest)
    with pytest.raises(ConfigError, match="not in this point"):
        parse_to_db(["other=x"], manifest)


@pytest.mark.parametrize("name", ["", "x" * 64, "trailing ", "nul\0inside"])
def test_names_no_server_accepts_fail_before_any_work(name: str) -> None:
    with pytest.raises(ConfigError, match="not a usable database name") as caught:
        parse_to_db([f"itflow={name}"], _manifest(("itflow", "mariadb")))
    assert "1 to 63 characters" in caught.value.hint


def test_sqlite_targets_are_paths_and_not_limited() -> None:
    long_path = "/srv/restore/" + "d" * 80 + "/app.sqlite"
    assert parse_to_db([long_path], _manifest(("app.sqlite", "sqlite"))) == {"app.sqlite": long_path}


@pytest.mark.parametrize("values", [["idoit_system=copy", "idoit_data=copy"], ["idoit_system=idoit_data"]])
def test_two_databases_into_one_target_are_refused(values: list[str]) -> None:
    # The second would be loaded over (or into) the first; a restore in place counts as a target too.
    with pytest.raises(ConfigError, match="into one database"):
        parse_to_db(values, _manifest(("idoit_system", "mariadb"), ("idoit_data", "mariadb")))


def test_a_server_that_would_refuse_the_load_is_found_by_the_plan(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # local_infile OFF: found while loading, the live database was already dropped (and the safety
    # point's own restore would meet the same refusal).
    monkeypatch.setattr(client, "is_empty", lambda db, name: False)
    monkeypatch.setattr(client, "require_local_infile", lambda db: (_ for _ in ()).throw(
        DatabaseError("does not allow LOAD DATA LOCAL INFILE")))
    instance = Instance("app", "generic", None, databases=[Database(Connection("mariadb"), "itflow")])
    point = Point(_manifest(("itflow", "mariadb")), snapshot="s", repository="main")
    with pytest.raises(DatabaseError, match="LOCAL INFILE"):
        make_plan(None, instance, point, ["db"], [], None)  # type: ignore[arg-type]


def test_a_file_in_the_way_of_a_restore_folder_is_named(tmp_path: Path) -> None:
    from safehold.engines import sqlite
    from safehold.files import make_folder

    (tmp_path / "a.txt").write_text("a file\n")
    for folder in (tmp_path / "a.txt", tmp_path / "a.txt" / "deeper"):
        with pytest.raises(SafeholdError) as refused:
            make_folder(folder, "the restore folder", "restore somewhere writable with --files-to")
        assert refused.value.message == f"cannot create the restore folder {folder}: {tmp_path / 'a.txt'} is a " \
                                        "file, not a folder"
    with pytest.raises(SafeholdError, match="a.txt is a file, not a folder"):
        sqlite.create(None, str(tmp_path / "a.txt" / "x.db"))  # type: ignore[arg-type]
    make_folder(tmp_path / "new" / "deeper", "the restore folder", "")
    assert (tmp_path / "new" / "deeper").is_dir()
