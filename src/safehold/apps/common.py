"""Pieces every profile shares: turning config into typed databases, running quiesce commands, finding the
app's config file, excluding what the app regenerates, owners."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from safehold import runner
from safehold.apps.dbhost import mariadb_endpoint, postgres_endpoint
from safehold.apps.quiesce import Pause, paused, resumer
from safehold.config import DatabaseConfig, InstanceConfig
from safehold.errors import ConfigError, SafeholdError
from safehold.models import Connection, Database, Instance
from safehold.output import Reporter
from safehold.secrets import Secret, resolve

# How each server engine reads a configured host (a socket when the app's client would use one).
ENDPOINTS = {"mariadb": mariadb_endpoint, "postgres": postgres_endpoint}


def server_connection(engine: str, host: str, port: int | None, socket: str | None, user: str | None,
                      password: Secret | None, path: Path | None = None) -> Connection:
    """A connection to a configured server, reached as the app's client would (PHP's `localhost` is the
    MariaDB socket, libpq's empty host or `/dir` a socket directory; see dbhost)."""
    if engine in ENDPOINTS:
        where = ENDPOINTS[engine](host, port, socket)
        host, port, socket = where.host, where.port, where.socket
    return Connection(engine=engine, host=host, port=port, socket=socket, user=user, password=password, path=path)


def databases_from_config(name: str, items: list[DatabaseConfig]) -> list[Database]:
    """Typed databases from [[instances.NAME.databases]] entries, secrets resolved."""
    result: list[Database] = []
    for index, item in enumerate(items):
        password = resolve(item.password, f"instances.{name}.databases.{index}.password") if item.password else None
        conn = server_connection(item.engine, item.host, item.port, item.socket, item.user, password,
                                 Path(item.path) if item.path else None)
        if item.engine == "sqlite":
            result.append(Database(conn, str(item.path), method=item.method))
            continue
        for db_name in item.names:
            result.append(Database(conn, db_name, table_prefix=item.table_prefix, method=item.method,
                                   workers=item.workers))
    return result


def base_instance(name: str, config: InstanceConfig, app: str, databases: Sequence[Database] = (),
                  files: Sequence[Path] = (), config_files: Sequence[Path] = ()) -> Instance:
    """An Instance of the app's own `databases`, `files` and `config_files` (what its config names: they come
    first), then what the config declares for any app (extra databases and files, excludes, owner)."""
    return Instance(
        name=name,
        app=app,
        root=Path(config.root) if config.root else None,
        databases=[*databases, *databases_from_config(name, config.databases)],
        files=[*files, *(Path(p) for p in config.files)],
        config_files=[*config_files, *(Path(p) for p in config.config_files)],
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


def stop_commands(pause: Pause, config: InstanceConfig, reporter: Reporter) -> None:
    """Run the configured stop commands; the start commands are recorded first so they always run."""
    if not config.quiesce.enabled or not config.quiesce.stop:
        return
    pause.record("commands", start=config.quiesce.start)
    pause.methods("commands")
    run_commands(config.quiesce.stop, "quiesce", reporter)


def command_plan(config: InstanceConfig) -> list[str]:
    """The stop and start commands a backup would run, as `backup --dry-run` lists them (stop_commands' rule)."""
    if not config.quiesce.enabled or not config.quiesce.stop:
        return []
    return ([f"run {' '.join(argv)}" for argv in config.quiesce.stop]
            + [f"afterwards run {' '.join(argv)}" for argv in config.quiesce.start])


@resumer("commands", describe=lambda step: "stopped by the quiesce commands (start: "
                                          f"{'; '.join(' '.join(argv) for argv in step['start']) or 'none'})")
def _start_commands(step: dict[str, Any], reporter: Reporter) -> None:
    run_commands(step["start"], "resume", reporter)


@contextlib.contextmanager
def command_quiesce(instance: Instance, config: InstanceConfig, reporter: Reporter,
                    state_dir: Path) -> Iterator[dict[str, object]]:
    """Run the configured stop commands, yield the window, and always run the start commands afterwards."""
    with paused(state_dir, instance.name, instance.app, reporter) as pause:
        stop_commands(pause, config, reporter)
        yield pause.window


class AppConfigMissing(ConfigError):
    """The application's own config file is missing (wrong root, or the install is gone).

    `restore` catches it and brings the file back from the point first, so an instance whose
    folder was lost can be restored with nothing but safehold.toml.
    """

    def __init__(self, message: str, hint: str, path: Path) -> None:
        super().__init__(message, hint)
        self.path = path


def app_config_file(config: InstanceConfig, app: str, locate: str | Callable[[Path], Path],
                    what: str = "config file", folder: str = "install folder") -> tuple[Path, Path]:
    """The install root and the app's config file (`locate`: its path under the root, or how the app finds
    it from the root); AppConfigMissing when either is absent, naming the file as `what` and the root as
    the app's `folder`."""
    root = Path(config.root or "")
    path = root / locate if isinstance(locate, str) else locate(root)
    if not root.is_dir():
        raise AppConfigMissing(f"{app} root {root} does not exist",
                               "fix root in safehold.toml, or restore the instance from a point", path)
    if not path.is_file():
        raise AppConfigMissing(f"{app} {what} {path} does not exist",
                               f"is {root} the {app} {folder}? fix root in safehold.toml", path)
    return root, path


def contents_pattern(folder: str) -> str:
    """The exclude pattern for everything inside a folder the app's config names. PHP resolves `..`
    when it opens the folder (`__DIR__ . '/../backups'`); restic matches patterns against clean paths."""
    return str(Path(os.path.normpath(folder)) / "*")


# Files that keep a web server from listing, serving or running a folder's contents. They stay in
# every point even when the folder's contents are left out as regenerable.
GUARD_FILES = (".htaccess", "index.php", "index.html", "web.config")


def guarded_contents(folder: str | Path) -> list[str]:
    """Exclude patterns for everything inside a folder the app regenerates except its guard files
    (restic re-includes them with `!` patterns, evaluated in order)."""
    pattern = contents_pattern(str(folder))
    return [pattern, *(f"!{Path(pattern).parent / name}" for name in GUARD_FILES)]


def empty_but_guards(folder: Path) -> None:
    """Delete what a folder the app regenerates holds, except its guard files; the folder itself stays
    (its mode, owner and its parent's times come from the point). A missing folder is left missing."""
    for entry in folder.iterdir() if folder.is_dir() else ():
        if entry.name in GUARD_FILES:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def owner_text(path: Path) -> str:
    """`uid:gid` of a path (what `chown` takes)."""
    info = path.stat()
    return f"{info.st_uid}:{info.st_gid}"


def chown_tree(path: Path, owner: str) -> None:
    """Give a file or folder tree to `user:group` (names or numeric ids); symlinks themselves."""
    import grp
    import pwd

    user, _, group = owner.partition(":")
    uid = int(user) if user.isdigit() else pwd.getpwnam(user).pw_uid
    gid = -1 if not group else int(group) if group.isdigit() else grp.getgrnam(group).gr_gid
    os.lchown(path, uid, gid)
    if path.is_dir() and not path.is_symlink():
        for folder, dirs, files in os.walk(path):
            for name in dirs + files:
                os.lchown(os.path.join(folder, name), uid, gid)


def database_named(instance: Instance, name: str) -> Database:
    """The instance's first database under another name (a drill's scratch copy), prefix kept."""
    first = instance.databases[0]
    return Database(first.connection, name, table_prefix=first.table_prefix)
