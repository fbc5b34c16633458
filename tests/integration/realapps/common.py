"""What every real-app harness needs: the app sources, a build made once per test run, PHP's
built-in web server, an HTML form read the way a browser reads it, and app DB accounts."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from safehold.apps.common import GUARD_FILES
from tests.conftest import databases_appearing, need, run_cli, sql

REPO = Path(__file__).resolve().parents[3]


def _shared_apps() -> Path:
    """../shared/apps next to the repository (CI has it too); a git worktree looks next to its main checkout."""
    here = REPO.parent / "shared" / "apps"
    dot_git = REPO / ".git"
    if here.is_dir() or not dot_git.is_file():
        return here
    common = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--path-format=absolute", "--git-common-dir"],
                            capture_output=True, text=True).stdout.strip()
    return Path(common).parent.parent / "shared" / "apps" if common else here


SHARED_APPS = _shared_apps()
SOCKET = "/run/mysqld/mysqld.sock"


def app_source(name: str) -> Path:
    """A tarball of ../shared/apps: fails under CI, skips elsewhere when it is missing."""
    path = SHARED_APPS / name
    need(path.is_file(), f"{path} is missing: the real-app tests install {name} from ../shared/apps "
                         "(see its README)")
    need(shutil.which("php") is not None, "php is not installed (scripts/setup.sh installs PHP 8.2 and extensions)")
    return path


def run_folder(factory: pytest.TempPathFactory) -> Path:
    """A folder shared by every xdist worker of this run (and only this run)."""
    base = factory.getbasetemp()
    run = os.environ.get("PYTEST_XDIST_TESTRUNUID")
    return base.parent / f"realapps-{run}" if run else base / "realapps"


def build_once(folder: Path, build: Callable[[Path], None]) -> Path:
    """`build(folder)` once per test run across workers (a file lock; `done` marks success)."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.parent / f"{folder.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (folder / "done").is_file():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            started = time.monotonic()
            build(folder)
            (folder / "done").write_text(f"{time.monotonic() - started:.1f}\n")
    return folder


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def php_server(root: Path) -> Iterator[str]:
    """`php -S 127.0.0.1:PORT -t ROOT` for the duration; yields the base URL."""
    port = free_port()
    log = root.parent / f"php-server-{port}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(["php", "-S", f"127.0.0.1:{port}", "-t", str(root)], cwd=root, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 20
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
            assert proc.poll() is None and time.monotonic() < deadline, f"php -S did not start: {log.read_text()}"
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)


class _Forms(HTMLParser):
    """Each <form>'s named fields with the values a browser would submit by default."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: list[dict[str, object]] = []
        self._select: str | None = None
        self._textarea: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.forms.append({"attrs": a, "fields": [], "submits": set()})
            return
        if not self.forms or not a.get("name"):
            if tag == "option" and self._select is not None:
                self._option(a)
            return
        form, name = self.forms[-1], a["name"]
        fields: list[list[str]] = form["fields"]  # type: ignore[assignment]
        kind = a.get("type", "text").lower()
        if tag == "button" or kind == "submit":
            form["submits"].add(name)  # type: ignore[union-attr]
        elif (tag == "input" and kind not in ("file", "checkbox", "radio")) or (kind in ("checkbox", "radio")
                                                                               and "checked" in a):
            fields.append([name, a.get("value", "on" if kind in ("checkbox", "radio") else "")])
        elif tag == "select":
            self._select = name
            fields.append([name, "", "unset"])
        elif tag == "textarea":
            self._textarea = name
            fields.append([name, ""])

    def _option(self, a: dict[str, str]) -> None:
        field = self.forms[-1]["fields"][-1]  # type: ignore[index]
        if len(field) == 3 and (field[2] == "unset" or "selected" in a):
            field[1:] = [a.get("value", ""), "selected" if "selected" in a else "first"]

    def handle_endtag(self, tag: str) -> None:
        if tag == "select":
            self._select = None
        elif tag == "textarea":
            self._textarea = None

    def handle_data(self, data: str) -> None:
        if self._textarea is not None and self.forms:
            self.forms[-1]["fields"][-1][1] += data  # type: ignore[index]


def form_fields(html: str, submit: str) -> list[tuple[str, str]]:
    """The fields of the form whose submit button is named `submit`, as a browser would post them
    (multi-selects with nothing chosen send nothing)."""
    parser = _Forms()
    parser.feed(html)
    for form in parser.forms:
        if submit in form["submits"]:  # type: ignore[operator]
            return [(f[0], f[1]) for f in form["fields"]  # type: ignore[union-attr]
                    if not (f[0].endswith("[]") and len(f) == 3 and f[2] != "selected")] + [(submit, "")]
    raise AssertionError(f"no form with a {submit!r} button in the page: {html[:400]!r}")


def local_db_account(prefix: str) -> tuple[str, str, str]:
    """A new database and a user 'USER'@'localhost' (socket only under skip-name-resolve) with a
    password, granted that database only, the way ITFlow's and iTop's install guides create them."""
    tag = secrets.token_hex(4)
    database, user, password = f"{prefix}_{tag}", f"{prefix}_{tag}", secrets.token_hex(12)
    sql([f"CREATE DATABASE `{database}` CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci",
         f"CREATE USER '{user}'@'localhost' IDENTIFIED BY '{password}'",
         f"GRANT ALL PRIVILEGES ON `{database}`.* TO '{user}'@'localhost'"])
    return database, user, password


def drop_db_account(database: str, user: str) -> None:
    sql([f"DROP DATABASE IF EXISTS `{database}`", f"DROP USER IF EXISTS '{user}'@'localhost'"])


def save_template(folder: Path, database: str, user: str, password: str, facts: dict[str, object],
                  timings: dict[str, float]) -> None:
    """Keep what a clone needs of a freshly built app: a dump of its database and the facts of its data."""
    dump = subprocess.run(["mariadb-dump", "-uroot", f"--socket={SOCKET}", "--routines", "--events", "--triggers",
                           "--hex-blob", database], check=True, capture_output=True).stdout
    (folder / "db.sql").write_bytes(dump)
    (folder / "facts.json").write_text(json.dumps({"facts": facts, "database": database, "user": user,
                                                   "password": password, "timings": timings}))


def end_build(folder: Path, database: str, user: str) -> None:
    """After a template build, kept or failed: its database account and php -S logs go."""
    drop_db_account(database, user)
    for log in folder.glob("php-server-*.log"):
        log.unlink()


def clone_template(source: Path, tree: str, root: Path, prefix: str) -> tuple[dict[str, Any], str, str, str]:
    """The template's `tree` copied to `root` and its data loaded into a new database and 'user'@'localhost';
    returns the template's saved facts and the clone's database, user and password."""
    saved = json.loads((source / "facts.json").read_text())
    root.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["cp", "-a", str(source / tree), str(root)], check=True)
    database, user, password = local_db_account(prefix)
    with (source / "db.sql").open("rb") as dump:
        subprocess.run(["mariadb", "-uroot", f"--socket={SOCKET}", database], stdin=dump, check=True)
    return saved, database, user, password


def tree_state(root: Path, skip: tuple[str, ...]) -> dict[str, tuple[object, ...]]:
    """Paths, types, modes, owners, sizes and mtimes under root (contents of `skip` folders left out,
    their guard files kept)."""
    info = root.lstat()
    state: dict[str, tuple[object, ...]] = {".": (oct(info.st_mode), info.st_uid, info.st_gid, info.st_mtime_ns)}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder) / name
            rel = str(path.relative_to(root))
            inside = next((s for s in skip if rel.startswith(s + "/")), None)
            if inside and not (name in GUARD_FILES and str(path.parent.relative_to(root)) == inside):
                continue
            info = path.lstat()
            target = os.readlink(path) if path.is_symlink() else None
            size = info.st_size if path.is_file() and not path.is_symlink() else None
            state[rel] = (oct(info.st_mode), info.st_uid, info.st_gid, size, info.st_mtime_ns, target)
    return state


def protective_files(root: Path) -> set[str]:
    """Every guard file in the tree (what keeps a web server from listing, serving or running a folder)."""
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.name in GUARD_FILES}


def processes_under(folder: Path) -> list[str]:
    """Command lines of running processes that mention `folder` (a scratch server left behind)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # not a process, or it ended meanwhile
            continue
        if str(folder) in cmdline:
            found.append(cmdline)
    return found


def drill_watching_the_server(name: str, config: Path, app_user: str, tmp_path: Path) -> set[str]:
    """`safehold drill NAME` while the app's user has rights on its own database only, with SHOW DATABASES
    polled meanwhile; asserts the drill passed and left no file or process behind, and returns the databases
    that appeared on the live server during it (other tests create some too: the caller tells the drill's)."""
    grants = " ".join(str(r[0]) for r in sql(f"SHOW GRANTS FOR '{app_user}'@'localhost'"))
    assert "ON *.*" not in grants.replace("GRANT USAGE ON *.*", "")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    with databases_appearing() as appeared:
        drill = run_cli("drill", name, config=config, env={"TMPDIR": str(scratch)})
    assert drill.returncode == 0, drill.stdout + drill.stderr
    assert list(scratch.iterdir()) == [], "the drill left files behind"
    assert not processes_under(scratch), "the drill left a process running"
    return appeared
