"""End to end through the CLI: one point holding two MariaDB databases (parallel method), restored byte-identical."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import mariadb_dump, run_cli, sql
from tests.integration import sakila_like

PREFIX = "t_mariadb"


def test_two_databases_in_one_point_round_trip(tmp_path: Path, new_db, repo) -> None:  # noqa: ANN001
    first, second = new_db(PREFIX), new_db(PREFIX)
    sql(sakila_like.statements(scale=1), first)
    sql(["CREATE TABLE notes (id INT PRIMARY KEY, body TEXT, FULLTEXT KEY (body))",
         "INSERT INTO notes VALUES (1, 'hello\\tworld'), (2, NULL)"], second)
    config = tmp_path / "safehold.toml"
    config.write_text(f"""
[settings]
state_dir = "{tmp_path / 'state'}"

[repositories.local]
url = "{repo['url']}"
password = "file:{repo['password_file']}"

[instances.shop]
app = "generic"
repositories = ["local"]

[[instances.shop.databases]]
engine = "mariadb"
host = "127.0.0.1"
port = 3306
user = "root"
names = ["{first}", "{second}"]
workers = 2
""")
    before = {name: mariadb_dump(name) for name in (first, second)}
    backup = run_cli("backup", "shop", "--json", config=config)
    assert backup.returncode == 0, backup.stderr
    shown = run_cli("show", "latest", "--json", config=config)
    assert shown.returncode == 0, shown.stderr
    manifest = json.loads(shown.stdout)
    manifest = manifest.get("manifest", manifest)
    methods = {d["name"]: d["method"] for d in manifest["databases"]}
    assert methods == {first: "parallel", second: "parallel"}
    rental = next(d for d in manifest["databases"] if d["name"] == first)["tables"]["rental"]
    assert rental["rows"] > 0 and rental["checksum"].startswith("crc32:")
    for name in (first, second):
        sql(f"DROP DATABASE `{name}`")
    restored = run_cli("restore", "shop", "latest", "--json", config=config)
    assert restored.returncode == 0, restored.stderr
    result = json.loads(restored.stdout)
    assert all(row["ok"] for row in result["comparison"]), result["comparison"]
    assert {name: mariadb_dump(name) for name in (first, second)} == before
