"""Private throwaway database servers for drills: the part every engine shares.

A drill loads a point into a server of its own, started from this host's binaries in a 0700 folder,
reachable only through a Unix socket in that folder: it needs no rights on the live server and
puts no load on its buffer pool. This module owns that server's life: the account it runs as, the
folder (which the account must be able to reach, with a socket path short enough for a socket
address), starting it, waiting until it answers, stopping it, and removing what a killed drill
left (its process, found by the folder named on its command line, then the folder). Each engine's
own module (mariadb/scratch_server.py, postgres_scratch.py) says how to initialise and start it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pwd
import shutil
import signal
import stat
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from safehold import runner
from safehold.errors import SafeholdError
from safehold.models import Connection
from safehold.tempdirs import remove_tree

# A socket address holds 108 bytes; the longest socket name an engine uses is added to the folder's path.
SOCKET_ROOM = 107
START_SECONDS = 60.0
STOP_SECONDS = 30.0
# Folders tried for a server, in order: $TMPDIR (where the admin wants scratch data), then the
# world-traversable standard ones, for when $TMPDIR is a private folder the server's account cannot enter.
FALLBACK_ROOTS = ("/tmp", "/var/tmp")


@dataclass(frozen=True)
class Account:
    """The system account a private server runs as (safehold itself runs as root)."""

    name: str
    uid: int
    gid: int

    @property
    def ids(self) -> tuple[int, int]:
        return self.uid, self.gid


@dataclass
class Server:
    """A running private server: where it lives, how to reach it, and what it is."""

    engine: str
    folder: Path
    connection: Connection
    version: str
    child: runner.Child
    stop_signal: int = signal.SIGTERM
    notes: list[str] = field(default_factory=list)
    prepare: Callable[[Path], None] | None = None  # readies the server for one fetched dump before it loads
    begun: float = field(default_factory=time.monotonic)
    start_seconds: float | None = None  # from the folder's creation until it answered

    def __post_init__(self) -> None:
        wanted = Path(tempfile.gettempdir())
        if self.folder.parent != wanted:  # the loaded data is there: the admin may have sized $TMPDIR for it
            self.notes.append(f"server folder in {self.folder.parent}, not in {wanted}: its account cannot enter "
                              f"{wanted} or the socket path would be too long")

    def describe(self) -> dict[str, object]:
        """What the drill records about the server (no secrets: it has none)."""
        return {"engine": self.engine, "kind": "private", "version": self.version, "folder": str(self.folder),
                "socket": self.connection.socket, "pid": self.child.popen.pid, "notes": self.notes,
                "start_seconds": self.start_seconds}


def account(names: Sequence[str]) -> Account | None:
    """Who runs the server: None (this process's own user) unless root; as root the engine's service
    account (the first of `names` that exists), else `nobody`: a server loading a dump never runs as root."""
    if os.geteuid() != 0:
        return None
    for name in [*names, "nobody"]:
        with contextlib.suppress(KeyError):
            entry = pwd.getpwnam(name)
            return Account(name, entry.pw_uid, entry.pw_gid)
    raise SafeholdError("no account to run a private database server as (not even nobody)",
                        "create the database's service account, or set drill_server")


def binary(names: Sequence[str], folders: Sequence[str | Path]) -> Path | None:
    """The first of `names` found in `folders`, then on PATH (servers live in sbin, often not on PATH)."""
    for name in names:
        for folder in folders:
            path = Path(folder) / name
            if path.is_file() and os.access(path, os.X_OK):
                return path
        if found := shutil.which(name):
            return Path(found)
    return None


def roots() -> list[Path]:
    """Folders where private servers (and leftovers of killed drills) may be, without repeats."""
    seen: list[Path] = []
    for root in (tempfile.gettempdir(), *FALLBACK_ROOTS):
        path = Path(root)
        if path not in seen and path.is_dir():
            seen.append(path)
    return seen


def _reachable(folder: Path, owner: Account | None) -> bool:
    """True when `owner` may enter every folder down to `folder` (this process always may as itself)."""
    if owner is None:
        return True
    for part in [folder, *folder.parents]:
        try:
            info = part.stat()
        except OSError:
            return False
        mode = info.st_mode
        if not (mode & stat.S_IXOTH or (info.st_uid == owner.uid and mode & stat.S_IXUSR)
                or (info.st_gid == owner.gid and mode & stat.S_IXGRP)):
            return False
    return True


def make_folder(name: str, owner: Account | None, socket_name: str) -> Path:
    """Create the server's 0700 folder `name` in the first root the owner can reach whose path leaves
    room for the socket address; it belongs to `owner`."""
    for root in roots():
        folder = root / name
        if _reachable(root, owner) and len(str(folder / socket_name).encode()) < SOCKET_ROOM:
            folder.mkdir(mode=0o700)
            if owner is not None:
                os.chown(folder, owner.uid, owner.gid)
            return folder
    raise SafeholdError(f"no folder for a private database server: none of {', '.join(map(str, roots()))} is "
                        "reachable by its account with a path short enough for a socket",
                        "set TMPDIR to a short folder every user may enter (like /tmp), or set drill_server")


def seed(data: Path, cache: Path | None, key: str, build: Callable[[], None], owner: Account | None) -> bool:
    """Fill the new datadir `data`: a copy of the pristine one cached as `cache/key` when there is one,
    else `build()` it (initdb and the like take seconds) and keep a copy for the next drill. True when copied.

    `key` names the binaries and settings the datadir was made with, so an upgrade builds a new one;
    copies for other keys of the same engine are removed then."""
    entry = cache / key if cache is not None else None
    if entry is not None and entry.is_dir():
        shutil.copytree(entry, data, symlinks=True)
        if owner is not None:
            for path in [data, *data.rglob("*")]:
                os.lchown(path, owner.uid, owner.gid)
        return True
    build()
    if entry is not None:
        with contextlib.suppress(OSError):  # a cache that cannot be written costs time, nothing else
            entry.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            building = entry.parent / f".{key}.{os.getpid()}"
            shutil.copytree(data, building, symlinks=True)
            try:
                building.rename(entry)
            except OSError:  # another drill cached it first
                remove_tree(building)
            engine = key.partition("-")[0]
            for old in entry.parent.glob(f"{engine}-*"):
                if old != entry:
                    remove_tree(old)
    return False


def cache_key(engine: str, binaries: Sequence[Path], settings: str) -> str:
    """`engine-<hash>` of the binaries (path, size, mtime) and the settings a datadir is made with."""
    digest = hashlib.sha256(settings.encode())
    for path in binaries:
        info = path.stat()
        digest.update(f"\0{path}\0{info.st_size}\0{info.st_mtime_ns}".encode())
    return f"{engine}-{digest.hexdigest()[:16]}"


def initialise(argv: Sequence[str], what: str, hint: str, owner: Account | None = None,
               env: dict[str, str] | None = None) -> None:
    """Run the engine's tool that makes a new data folder (mariadb-install-db, initdb); its failure is
    named by the last line it printed."""
    try:
        runner.run(argv, what=what, env=env, account=owner.ids if owner else None)
    except runner.ProcessFailed as exc:
        last = exc.stderr.strip().splitlines()[-1:] or [f"exit {exc.returncode}"]
        raise SafeholdError(f"{what} failed for the private drill server: {last[0][:300]}", hint) from None


def start(argv: Sequence[str], owner: Account | None, what: str, env: dict[str, str] | None = None) -> runner.Child:
    """Start the server process in the background (its stderr kept for errors)."""
    try:
        return runner.start(argv, what=what, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            account=owner.ids if owner else None)
    except runner.ProcessFailed as exc:
        raise SafeholdError(f"cannot start {what}: {exc.stderr.strip()[-300:]}", "see the log") from None


def wait_ready(server: Server, ready: Callable[[], bool], what: str, timeout: float = START_SECONDS) -> None:
    """Wait until `ready()` is true (then note how long the start took); a server that exits or stays
    silent is one clear error."""
    child = server.child
    deadline = time.monotonic() + timeout
    delay = 0.02
    while not ready():
        if child.popen.poll() is not None:
            tail = child.stderr_text().strip().splitlines()
            raise SafeholdError(f"{what} stopped while starting (exit {child.popen.returncode})"
                                + (f": {tail[-1][:300]}" if tail else ""), "see the server's messages in the log")
        if time.monotonic() > deadline:
            stop(child, signal.SIGKILL)
            raise SafeholdError(f"{what} did not answer within {timeout:.0f} s", "is the host very busy?")
        time.sleep(delay)
        delay = min(delay * 1.5, 0.25)
    server.start_seconds = round(time.monotonic() - server.begun, 3)


def stop(child: runner.Child, signum: int) -> None:
    """Stop the server with `signum` (its fast shutdown), killing it when it takes too long."""
    if child.popen.poll() is None:
        child.popen.send_signal(signum)
        try:
            child.popen.wait(timeout=STOP_SECONDS)
        except Exception:  # noqa: BLE001 - TimeoutExpired, or a second signal: it goes anyway
            child.popen.kill()
            child.popen.wait()


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Hold SIGTERM/SIGINT while a server is stopped and removed: the drill's handler raises, and a
    second signal half-way through would leave the server running on a deleted datadir."""
    main = threading.current_thread() is threading.main_thread()
    held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT}) if main else None
    try:
        yield
    finally:
        if held is not None:
            signal.pthread_sigmask(signal.SIG_SETMASK, held)


@contextlib.contextmanager
def running(server: Server) -> Iterator[Server]:
    """Yield the started server; stop it and remove its folder afterwards, whatever happened."""
    try:
        yield server
    finally:
        with _signals_held():
            try:
                stop(server.child, server.stop_signal)
            finally:
                remove_tree(server.folder)


def discard(folder: Path) -> None:
    """Remove a server folder whose server never came up, with any process still working in it
    (an installer a signal interrupted)."""
    with _signals_held():
        kill_servers_in(folder)
        remove_tree(folder)


def _command_line(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [arg.decode(errors="replace") for arg in raw.split(b"\0") if arg]


def kill_servers_in(folder: Path) -> list[int]:
    """Kill every process whose command line names `folder` or a path in it (a killed drill's server)."""
    inside = (str(folder), str(folder) + "/")
    killed = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        if any(arg == inside[0] or inside[1] in arg for arg in _command_line(int(entry.name))):
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(entry.name), signal.SIGKILL)
                killed.append(int(entry.name))
    deadline = time.monotonic() + STOP_SECONDS
    while killed and any(runner.process_alive(pid) and _command_line(pid) for pid in killed):
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)
    return killed
