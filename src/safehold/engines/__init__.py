"""Database engines, one module each (mariadb/, postgres.py, sqlite.py), every one fulfilling the
`contract.Engine` protocol: dump, restore, inspect, create/drop/list databases, the pre-flight checks
of `backup --dry-run` and restore, and a private throwaway server for drills. Adding an engine is
adding one module that mypy accepts as an `Engine` and one entry in `ENGINES`.
"""

from __future__ import annotations

from safehold.engines import mariadb, postgres, sqlite
from safehold.engines.contract import Engine
from safehold.errors import ConfigError

ENGINES: dict[str, Engine] = {"mariadb": mariadb, "postgres": postgres, "sqlite": sqlite}


def engine_for(engine: str) -> Engine:
    """The engine module for a connection's engine name."""
    if engine not in ENGINES:
        raise ConfigError(f"database engine {engine!r} is not supported yet", f"use one of {sorted(ENGINES)}")
    return ENGINES[engine]
