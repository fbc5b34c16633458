"""Pieces every profile shares: turning config into typed databases, running quiesce commands."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from safehold import runner
from safehold.config import DatabaseConfig, InstanceConfig
from safehold.errors import SafeholdError
from safehold.models import Connection, Database, Instance
from safehold.output import Reporter
from safehold.secrets import resolve


def databases_from_config(name: str, items: list[DatabaseConfig]) -> list[Database]:
    """Typed databases from [[instances.NAME.databases]] entries, secrets resolved."""
    result: list[Database] = []
    for index, item in enumerate(items):
        password = resolve(item.password, f"instances.{name}.databases.{index}.password") if item.password else None
        conn = Connection(engine=item.engine, host=item.host, port=item.port, socket=item.socket,
                          user=item.user, password=password, path=Path(item.path) if item.path else None)
        if item.engine == "sqlite":
            result.append(Database(conn, str(item.path), method=item.method))
            continue
        for db_name in item.names:
            result.append(Database(conn, db_name, table_prefix=item.table_prefix, method=item.method,
                                   workers=item.workers))
    return result


def base_instance(name: str, config: InstanceConfig, app: str) -> Instance:
    """An Instance with what the config declares for any app (extra files, excludes, owner)."""
    return Instance(
        name=name,
        app=app,
        root=Path(config.root) if config.root else None,
        databases=databases_from_config(name, config.databases),
        files=[Path(p) for p in config.files],
        config_files=[Path(p) for p in config.config_files],
        exclude=list(config.exclude),
        owner=config.owner,
    )


def run_commands(commands: list[list[str]], what: str, reporter: Reporter) -> None:
    """Run quiesce/resume commands in order (argv lists, no shell); the first failure raises."""
    for argv in commands:
        reporter.step(f"{what}: {' '.join(argv)}")
        try:
            runner.run(argv, what=argv[0])
        except runner.ProcessFailed as exc:
            raise SafeholdError(f"{what} command {' '.join(argv)!r} failed: {exc.stderr.strip()[-200:]}",
                                "fix the command in [instances.*.quiesce]") from None


@contextlib.contextmanager
def command_quiesce(config: InstanceConfig, reporter: Reporter) -> Iterator[dict[str, object]]:
    """Run the configured stop commands, yield, and always run the start commands afterwards."""
    window: dict[str, object] = {"method": "commands" if config.quiesce.stop else "none"}
    if not config.quiesce.enabled or not config.quiesce.stop:
        yield window
        return
    try:
        run_commands(config.quiesce.stop, "quiesce", reporter)
        yield window
    finally:
        run_commands(config.quiesce.start, "resume", reporter)
