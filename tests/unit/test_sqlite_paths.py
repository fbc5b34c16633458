"""SQLite databases are files: a path that is a folder is named as such, not as missing."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from safehold.engines import sqlite
from safehold.errors import DatabaseError
from safehold.models import Connection, Database
from safehold.output import Silent


def _db(path: Path) -> Database:
    return Database(Connection(engine="sqlite", path=path), str(path))


def test_a_folder_as_the_database_is_named_a_folder(tmp_path: Path) -> None:
    folder = tmp_path / "app-data"
    folder.mkdir()
    with pytest.raises(DatabaseError) as backup:
        sqlite.dump(_db(folder), io.BytesIO(), Silent())
    assert f"SQLite database {folder} is a folder, not a database file" in backup.value.message
    with pytest.raises(DatabaseError, match="is a folder, not a database file"):  # a restore target
        sqlite.is_empty(_db(folder), str(folder))


def test_a_missing_database_still_says_so(tmp_path: Path) -> None:
    with pytest.raises(DatabaseError, match="does not exist"):
        sqlite.dump(_db(tmp_path / "gone.sqlite"), io.BytesIO(), Silent())
