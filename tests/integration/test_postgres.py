"""PostgreSQL engine: pg_dump stream into restic and back, identical plain dumps."""

from __future__ import annotations

import json
import secrets
import subprocess
from pathlib import Path

import pytest

from tests.conftest import database_config, need, run_cli

PG = ["-h", "127.0.0.1", "-U", "postgres"]


def psql(database: str, query: str) -> str:
    return subprocess.run(["psql", *PG, "-X", "-At", "-v", "ON_ERROR_STOP=1", "-d", database, "-c", query],
                          check=True, capture_output=True, text=True).stdout


def plain_dump(database: str) -> str:
    out = subprocess.run(["pg_dump", *PG, "--no-owner", database], check=True, capture_output=True, text=True).stdout
    # Recent pg_dump releases wrap the script in \restrict with a random key on every run.
    return "\n".join(line for line in out.splitlines() if not line.startswith(("\\restrict", "\\unrestrict")))


def need_postgres() -> None:
    ready = subprocess.run(["pg_isready", "-h", "127.0.0.1", "-q"], check=False).returncode == 0
    need(ready, "PostgreSQL on 127.0.0.1:5432 is not running")


@pytest.fixture
def pg_db():
    need_postgres()
    name = f"t_core_pg_{secrets.token_hex(3)}"
    psql("postgres", f"CREATE DATABASE {name}")
    psql(name, """
        CREATE TABLE customers (id serial PRIMARY KEY, name text NOT NULL, data bytea);
        CREATE TABLE tickets (id bigserial PRIMARY KEY, customer_id int REFERENCES customers(id), body text,
                              meta jsonb, created timestamptz DEFAULT now());
        CREATE VIEW busy AS SELECT c.name, count(*) FROM tickets t JOIN customers c ON c.id = t.customer_id GROUP BY 1;
        CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN NEW.created := now(); RETURN NEW; END $$;
        CREATE TRIGGER tickets_touch BEFORE UPDATE ON tickets FOR EACH ROW EXECUTE FUNCTION touch();
        INSERT INTO customers(name, data) VALUES ('Müller ✓', '\\x00ff'), ('tab\there', NULL);
        INSERT INTO tickets(customer_id, body, meta) SELECT 1 + g % 2, repeat('x', g), jsonb_build_object('n', g)
            FROM generate_series(1, 500) g;
    """)
    yield name
    for db in (name, name + "_r"):
        psql("postgres", f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")


def test_postgres_round_trip(pg_db: str, tmp_path: Path, repo: dict[str, str]) -> None:
    config = database_config(tmp_path, repo, "pg", "postgres", "postgres", pg_db)
    before = plain_dump(pg_db)
    backup = run_cli("backup", "--json", config=config)
    assert backup.returncode == 0, backup.stdout + backup.stderr
    refused = run_cli("restore", "pg", "latest", config=config)
    assert refused.returncode == 1 and "already hold data" in refused.stderr
    restored = run_cli("restore", "pg", "latest", "--to-db", pg_db + "_r", "--json", config=config)
    assert restored.returncode == 0, restored.stdout + restored.stderr
    result = json.loads(restored.stdout)
    assert result["ok"] and {r["table"] for r in result["comparison"]} == {"public.customers", "public.tickets"}
    assert plain_dump(pg_db + "_r") == before


@pytest.mark.parametrize(("user", "name", "expected"), [
    ("nosuchuser", "postgres", "cannot log in to postgres nosuchuser@127.0.0.1:5432: the server has no such user"),
    ("postgres", "nosuchdb", "database 'nosuchdb' does not exist on postgres postgres@127.0.0.1:5432"),
])
def test_postgres_mistakes_are_one_clear_line(tmp_path: Path, repo: dict[str, str], user: str, name: str,
                                              expected: str) -> None:
    need_postgres()
    config = database_config(tmp_path, repo, "pg", "postgres", user, name)
    result = run_cli("backup", config=config)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 1 and len(errors) == 1 and expected in errors[0], result.stderr
