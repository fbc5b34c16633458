"""The scratch space of a drill: its names (never a live one), the servers its databases go on, and
its removal, leftovers of a killed drill included.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import re
import secrets
import tempfile
from pathlib import Path

from safehold.actions.restore_plan import DatabaseStep
from safehold.apps.common import server_connection
from safehold.config import InstanceConfig
from safehold.engines import engine_for, scratch
from safehold.engines.contract import Engine
from safehold.errors import SafeholdError
from safehold.models import Connection, Database, Instance
from safehold.output import Reporter
from safehold.repository.manifest import DatabaseEntry
from safehold.secrets import resolve
from safehold.tempdirs import remove_tree

PREFIX = "safehold_drill_"  # the default of settings.drill_prefix
Privates = dict[Connection, scratch.Server]  # the private servers of one drill, by how they are reached


def _instance_tag(instance: str) -> str:
    # Instance names may hold '.' and '-'; keep names portable and short (64-char MariaDB limit).
    # The hash of the full name keeps "shop-db" and "shop_db", or two names alike in their first
    # characters, apart: a drill must never take another instance's scratch space for a leftover.
    readable = re.sub(r"[^A-Za-z0-9]", "_", instance)[:12]
    return f"{readable}_{hashlib.sha256(instance.encode()).hexdigest()[:6]}"


def scratch_stem(instance: str, run_id: str, prefix: str = PREFIX) -> str:
    """A fresh scratch name: prefix, instance, the point's run time and a random part."""
    run_short = re.sub(r"[^0-9T]", "", run_id.split("-")[0])[:15]
    return f"{prefix}{_instance_tag(instance)}_{run_short}_{secrets.token_hex(3)}"


def _scratch_pattern(instance: str, prefix: str) -> re.Pattern[str]:
    # Exact shape, so instance "a" never matches the scratch space of instance "a_b". The suffix is a
    # second database's number or a private server's folder (`_mariadb`, `_postgres`).
    return re.compile(rf"^{re.escape(prefix + _instance_tag(instance))}_[0-9T]{{1,15}}_[0-9a-f]{{6}}(_\d+|_[a-z]+)?$")


def is_scratch(instance: str, name: str, prefix: str = PREFIX) -> bool:
    """True when `name` (database name or folder name) is scratch space of a drill of `instance`."""
    return bool(_scratch_pattern(instance, prefix).match(name))


def scratch_root() -> Path:
    return Path(tempfile.gettempdir())


def clean_leftover_folders(instance: str, prefix: str, reporter: Reporter) -> list[str]:
    """Remove the scratch folders (and private servers still running in them) of a killed drill of `instance`."""
    removed: list[str] = []
    for root in scratch.roots():
        for folder in root.glob(f"{prefix}{_instance_tag(instance)}_*"):
            if is_scratch(instance, folder.name, prefix) and folder.is_dir() and not folder.is_symlink():
                for pid in scratch.kill_servers_in(folder):
                    removed.append(f"process {pid}")
                remove_tree(folder)
                removed.append(str(folder))
    for item in removed:
        reporter.step(f"removed leftover {item} of an earlier drill")
    return removed


def clean_leftover_databases(instance: str, prefix: str, servers: list[Connection], reporter: Reporter) -> list[str]:
    """Drop the scratch databases a killed drill of `instance` left on shared servers (live or drill_server)."""
    removed: list[str] = []
    for server in dict.fromkeys(servers):
        engine = engine_for(server.engine)
        try:
            for name in engine.names(Database(server, ""), f"{prefix}{_instance_tag(instance)}_"):
                if is_scratch(instance, name, prefix):
                    engine.drop(Database(server, name), name)
                    removed.append(name)
        except SafeholdError as exc:
            reporter.warn(f"could not look for leftover scratch databases on {server.describe()}: {exc.message}")
    for item in removed:
        reporter.step(f"removed leftover scratch database {item} of an earlier drill")
    return removed


@dataclasses.dataclass
class Scratch:
    """The scratch space of one drill: what was created, so exactly that is removed afterwards."""

    instance: str
    stem: str
    folder: Path
    prefix: str = PREFIX
    databases: list[tuple[Engine, Database, str]] = dataclasses.field(default_factory=list)
    private: Privates = dataclasses.field(default_factory=dict)  # servers that go away with the drill

    def target(self, entry: DatabaseEntry, index: int) -> str:
        """Where a database of the point is restored: a scratch database name or a scratch file."""
        if entry.engine == "sqlite":
            return str(self.folder / "db" / f"{entry.key}.sqlite")
        return self.stem if index == 0 else f"{self.stem}_{index}"

    def create(self, step: DatabaseStep) -> None:
        """Create one scratch database, refusing any name that is not scratch space."""
        engine = engine_for(step.entry.engine)
        inside = self.folder in Path(step.target).parents if step.entry.engine == "sqlite" else is_scratch(
            self.instance, step.target, self.prefix)
        if not inside:
            raise SafeholdError(f"refusing to use {step.target} as a scratch database", "this is a bug: report it")
        if step.non_empty:
            raise SafeholdError(f"scratch database {step.target} already exists", "run the drill again")
        # Registered before CREATE: a SIGTERM arriving while it runs must still have it dropped.
        self.databases.append((engine, Database(step.database.connection, step.target), step.target))
        try:
            engine.create(step.database, step.target)
        except SafeholdError as exc:
            self.databases.pop()
            reason = "access denied" if "denied" in exc.message.lower() else exc.message
            raise SafeholdError(
                f"cannot create scratch database {step.target} on {step.database.connection.describe()}: {reason}",
                f"grant CREATE, DROP ON `{self.prefix.replace('_', chr(92) + '_')}%`.* to the instance's database user",
            ) from None

    def remove(self, reporter: Reporter) -> list[str]:
        """Drop every scratch database and the folder; returns problems (never raises)."""
        problems: list[str] = []
        for engine, database, name in self.databases:
            if database.connection in self.private:  # stopped and deleted whole, right after
                continue
            try:
                engine.drop(database, name)
            except SafeholdError as exc:
                problems.append(f"scratch database {name} could not be dropped: {exc.message}")
        if not remove_tree(self.folder):
            problems.append(f"scratch folder {self.folder} could not be removed")
        for problem in problems:
            reporter.warn(problem)
        return problems


def scratch_server(name: str, instance_config: InstanceConfig) -> Connection | None:
    """The configured server for scratch databases, if any (secrets resolved)."""
    server = instance_config.drill_server
    if server is None:
        return None
    password = resolve(server.password, f"instances.{name}.drill_server.password") if server.password else None
    return server_connection(server.engine, server.host, server.port, server.socket, server.user, password)


def choose_servers(instance: Instance, entries: list[DatabaseEntry], configured: Connection | None,
                    stem: str, cache: Path, stack: contextlib.ExitStack, reporter: Reporter,
                    prefix: str) -> tuple[dict[str, Connection], Privates, list[dict[str, object]]]:
    """Where each engine's scratch databases go: the configured drill_server, else a private server
    started from this host's binaries (stopped and removed when `stack` closes), else the live
    server, which then needs CREATE rights (said as a warning). Returns the servers by engine (the
    live one is left out: the plan reaches it as it is), the private ones, and what each one is, for the result."""
    chosen: dict[str, Connection] = {}
    private_servers: Privates = {}
    described: list[dict[str, object]] = []
    for entry in entries:
        if entry.engine == "sqlite" or entry.engine in {d["engine"] for d in described}:
            continue
        if configured is not None and configured.engine == entry.engine:
            chosen[entry.engine] = configured
            described.append({"engine": entry.engine, "kind": "drill_server", "where": configured.describe()})
            continue
        private = engine_for(entry.engine).private_server(f"{stem}_{entry.engine}", entry.server_version, cache)
        if private is not None:
            server = stack.enter_context(private)
            chosen[entry.engine] = server.connection
            private_servers[server.connection] = server
            described.append(server.describe())
            reporter.step(f"private {entry.engine} server {server.version} started in {server.folder} "
                          f"({server.start_seconds} s)")
            for note in server.notes:
                reporter.step(f"private {entry.engine} server: {note}")
            continue
        live = [db.connection.describe() for db in instance.databases if db.connection.engine == entry.engine]
        reporter.warn(f"no local {entry.engine} server binaries and no drill_server: the scratch databases go on the "
                      f"live server{' ' + live[0] if live else ''}, where the database user needs CREATE and DROP "
                      f"on {prefix}% (install the server package on this host to drill without those rights)")
        described.append({"engine": entry.engine, "kind": "live", "where": live[0] if live else None})
    return chosen, private_servers, described


def on_servers(instance: Instance, entries: list[DatabaseEntry], servers: dict[str, Connection]) -> Instance:
    """The instance with its databases moved to the scratch servers (also those the point holds and the
    config no longer names: a private server needs nothing from the config)."""
    databases = [dataclasses.replace(db, connection=servers.get(db.connection.engine, db.connection))
                 for db in instance.databases]
    for entry in entries:
        if entry.engine in servers and not any(db.key == entry.key or db.name == entry.name for db in databases):
            databases.append(Database(servers[entry.engine], entry.name, table_prefix=entry.table_prefix))
    return dataclasses.replace(instance, databases=databases)
