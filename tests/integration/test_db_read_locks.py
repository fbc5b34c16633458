"""Consistent without RELOAD: an app's own user (LOCK TABLES, no RELOAD) reads MyISAM/Aria tables under
`LOCK TABLES … READ`, and the manifest says how each table was read."""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import database_config, mariadb_dump, private_file, run_cli, sql
from tests.integration.appkit import ok

APP_PRIVILEGES = "SELECT, INSERT, UPDATE, DELETE, CREATE, DROP, INDEX, ALTER, SHOW VIEW, TRIGGER, EVENT"


@pytest.fixture
def mixed_db(mariadb: dict[str, object], new_db: Callable[[str], str]) -> str:
    """InnoDB, MyISAM and Aria tables, as i-doit's tenants have (isys_catg_images_list is MyISAM)."""
    database = new_db("t_lock")
    sql(["CREATE TABLE objects (id INT PRIMARY KEY, title VARCHAR(40)) ENGINE=InnoDB",
         "CREATE TABLE images (id INT PRIMARY KEY, data BLOB) ENGINE=MyISAM",
         "CREATE TABLE cache (k VARCHAR(20) PRIMARY KEY, v TEXT) ENGINE=Aria",
         "INSERT INTO objects VALUES (1, 'server'), (2, 'switch')",
         "INSERT INTO images VALUES (1, X'89504E47'), (2, X'FFD8FF')",
         "INSERT INTO cache VALUES ('a', 'x')"], database)
    return database


@pytest.fixture
def app_user(mixed_db: str) -> Iterator[Callable[[str], dict[str, str]]]:
    """Factory: a 'user'@'localhost' with the app's privileges on the database (plus `extra`), never RELOAD."""
    made: list[str] = []

    def make(extra: str = "") -> dict[str, str]:
        user, password = f"t_lock_{secrets.token_hex(3)}", secrets.token_hex(10)
        sql([f"CREATE USER '{user}'@'localhost' IDENTIFIED BY '{password}'",
             f"GRANT {APP_PRIVILEGES}{extra} ON `{mixed_db}`.* TO '{user}'@'localhost'"])
        made.append(user)
        return {"user": user, "password": password}

    yield make
    for user in made:
        sql(f"DROP USER IF EXISTS '{user}'@'localhost'")


def _backup(tmp_path: Path, repo: dict[str, str], database: str, account: dict[str, str]) -> tuple[dict, str]:
    secret = private_file(tmp_path / "secrets" / "db.pass", account["password"])
    config = database_config(tmp_path, repo, "app", "mariadb", account["user"], database,
                             f'host = "localhost"\npassword = "file:{secret}"')
    done = ok(run_cli("backup", "app", config=config))
    manifest = json.loads(ok(run_cli("show", "latest", "--json", config=config)).stdout)
    sql(f"DROP DATABASE `{database}`")
    ok(run_cli("restore", "app", "latest", config=config))
    return manifest, done.stderr


def test_lock_tables_without_reload(mixed_db: str, app_user: Callable[[str], dict[str, str]], tmp_path: Path,
                                    repo: dict[str, str]) -> None:
    before = mariadb_dump(mixed_db)
    manifest, said = _backup(tmp_path, repo, mixed_db, app_user(", LOCK TABLES"))
    entry = manifest["databases"][0]
    assert {name: table["read"] for name, table in entry["tables"].items()} == \
        {"objects": "snapshot", "images": "locked", "cache": "locked"}
    assert any("LOCK TABLES … READ" in note for note in entry["notes"])
    assert not any("without a lock" in w for w in manifest["warnings"]) and "without a lock" not in said
    assert mariadb_dump(mixed_db) == before


def test_no_lock_privilege_reads_unlocked_and_warns(mixed_db: str, app_user: Callable[[str], dict[str, str]],
                                                    tmp_path: Path, repo: dict[str, str]) -> None:
    before = mariadb_dump(mixed_db)
    manifest, said = _backup(tmp_path, repo, mixed_db, app_user())
    tables = manifest["databases"][0]["tables"]
    assert (tables["objects"]["read"], tables["images"]["read"], tables["cache"]["read"]) == \
        ("snapshot", "unlocked", "unlocked")
    warning = next(w for w in manifest["warnings"] if "without a lock" in w)
    assert "cache, images" in warning and "grant the backup user LOCK TABLES" in warning
    assert "without a lock" in said
    assert mariadb_dump(mixed_db) == before
