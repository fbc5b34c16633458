"""The real i-doit OPEN 1.12.4, installed by its own web installer, for the real-app tests.

Built once per test run behind a file lock in the folder every xdist worker shares (the basetemp's
parent under xdist), and reused: each worker holds a shared lease on it for its session and each test
an exclusive use lock, so the destructive tests (drop everything, restore) never overlap. The last
worker out removes the databases, the account and the folder; a worker that comes later rebuilds.

How the install goes, as an admin would do it (facts from the tarball's `setup/`):
- the tarball unpacked into a fresh folder, served by `php -S 127.0.0.1:PORT -t ROOT`;
- one POST to `index.php` (which includes `setup/install.inc.php` while `src/config.inc.php` is
  missing) with `install_step=6&install_now=1` and every field of `$g_config`, whose POST names are the
  keys with `_` for `.` (install.inc.php); DB host `localhost`, so `6_installation.inc.php` grants the
  new DB user `@'localhost'` and PHP reaches MariaDB over the Unix socket; root logs in over the socket
  to create the databases;
- a second tenant the way i-doit's admin center does it: a database loaded from
  `setup/sql/idoit_data.sql`, a grant to the same account, an `isys_mandator` row;
- `upload/files/` and `upload/images/`, which the release archive ships but a git archive cannot hold
  (empty folders), are created like the release has them (mode 775).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import secrets
import shutil
import subprocess
import tarfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx

from tests.conftest import need, sql
from tests.integration.offhost_servers import free_port, wait_port

VERSION = "1.12.4"
TARBALL_NAME = f"idoit-open-{VERSION}.tar.gz"
REPO = Path(__file__).resolve().parents[2]
PREFIX = "t_idoitreal"
ADMIN = ("admin", "admin")  # i-doit's default web login (setup/sql/idoit_data.sql)
SOCKET = "/run/mysqld/mysqld.sock"


def tarball() -> Path:
    """`../shared/apps/` beside the repository (CI); a git worktree under /work/wt/ finds it one level up."""
    for base in (REPO.parent, REPO.parent.parent):
        candidate = base / "shared" / "apps" / TARBALL_NAME
        if candidate.is_file():
            return candidate
    need(False, f"{TARBALL_NAME} is not in ../shared/apps/ beside the repository (the real i-doit the tests install)")
    raise AssertionError  # need() skipped or failed


@dataclass
class Install:
    """One i-doit install: folder, system DB, tenant DBs (ids 1, 2), the app's DB account."""

    root: str
    system: str
    tenants: list[str]
    user: str
    password: str
    install_seconds: float = 0.0
    data_seconds: float = 0.0
    objects: dict[str, int] = field(default_factory=dict)  # title -> object id (tenant 1: server, file; 2: server)

    @property
    def upload(self) -> Path:
        """The bytes uploaded to tenant 1's File object (kept beside the install to compare downloads)."""
        return Path(self.root).parent / "uploaded.bin"

    @property
    def databases(self) -> list[str]:
        return [self.system, *self.tenants]


class Web:
    """`php -S` serving the install, and a browser session per tenant (cookie jar, CSRF token)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Web:
        self.port = free_port()
        log = open(self.root.parent / f"php-{self.port}.log", "wb")  # noqa: SIM115 - the server keeps it
        self.proc = subprocess.Popen(["php", "-S", f"127.0.0.1:{self.port}", "-t", str(self.root)],
                                     cwd=self.root, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        wait_port(self.port)
        return self

    def stop(self) -> None:
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, 9)
            self.proc.wait()
            self.proc = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/index.php"

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=120, follow_redirects=True)


def csrf(page: str) -> str:
    found = re.search(r'name="_csrf_token" value="([^"]*)"', page)
    assert found, "no _csrf_token on the page"
    return found.group(1)


def form_action(page: str) -> str:
    found = re.search(r'<form[^>]*id="isys_form"[^>]*action="([^"]*)"', page)
    assert found, "no isys_form with an action on the page"
    return "/" + found.group(1).replace("&amp;", "&")


@contextlib.contextmanager
def login(web: Web, tenant_id: int) -> Iterator[httpx.Client]:
    """The login form (src/login.inc.php): username, password and the tenant picked in the list."""
    with web.client() as client:
        client.get("/index.php")
        page = client.post("/index.php", data={"login_username": ADMIN[0], "login_password": ADMIN[1],
                                               "login_mandant_id": str(tenant_id)})
        assert page.status_code == 200 and "logout" in page.text.lower(), f"admin login to tenant {tenant_id} failed"
        yield client


def create_object(client: httpx.Client, type_id: int, title: str) -> int:
    """The object list's "New" (navMode 1 = C__NAVMODE__NEW) makes an object in birth state and shows
    its global category; "Save" (navMode 10) with the title makes it a normal object. i-doit 1.12's
    overview template fails rendering the page after the save on PHP 8 (a 500 after the commit), so the
    object is checked by reading it back, not by that page."""
    page = client.post(f"/index.php?viewMode=1001&objTypeID={type_id}", data={"navMode": "1"})
    action = form_action(page.text)
    object_id = int(re.search(r"objID=(\d+)", action).group(1))  # type: ignore[union-attr]
    client.post(action, data={"navMode": "10", "_csrf_token": csrf(page.text), "C__CATG__GLOBAL_TITLE": title,
                              "navmode_ref": "1", "g_cat_id[]": "1"})
    assert title in object_page(client, object_id), f"object {title} was not saved"
    return object_id


def object_page(client: httpx.Client, object_id: int) -> str:
    page = client.get(f"/index.php?objID={object_id}&catgID=1")
    assert page.status_code == 200, page.status_code
    return page.text


def upload_file(client: httpx.Client, object_id: int, name: str, content: bytes) -> None:
    """A new version in the File object's "file versions" category (catsID 30, C__CATS__FILE_VERSIONS):
    isys_cmdb_dao_category_s_file_version saves C__CATS__FILE_UPLOAD into system.dir.file-upload."""
    path = f"/index.php?objID={object_id}&catsID=30&viewMode=1100&objTypeID=29"
    page = client.post(path, data={"navMode": "1"})
    client.post(form_action(page.text), data={"navMode": "10", "_csrf_token": csrf(page.text),
                                              "C__CATS__FILE_VERSION_TITLE": "v1"},
                files={"C__CATS__FILE_UPLOAD": (name, content, "application/octet-stream")})


def download_file(client: httpx.Client, object_id: int) -> bytes:
    """The download link the file-versions list shows (file_manager=get&f_id=PHYSICAL_ID)."""
    listing = client.get(f"/index.php?objID={object_id}&catsID=30&viewMode=1100&objTypeID=29").text
    link = re.search(r"file_manager=get&(?:amp;)?f_id=(\d+)", listing)
    assert link, "no download link in the file versions list"
    got = client.get(f"/index.php?objID={object_id}&file_manager=get&f_id={link.group(1)}")
    assert got.status_code == 200, got.status_code
    return got.content


def _install(shared: Path, state: Path) -> Install:
    tag = secrets.token_hex(3)
    root = shared / f"idoit-{tag}" / "i-doit"
    root.mkdir(parents=True)
    with tarfile.open(tarball()) as archive:
        for member in archive.getmembers():
            member.name = member.name.split("/", 1)[1] if "/" in member.name else ""
        archive.extractall(root, members=[m for m in archive.getmembers() if m.name], filter="tar")
    for folder in ("files", "images"):
        (root / "upload" / folder).mkdir(mode=0o775)
        (root / "upload" / folder).chmod(0o775)
    install = Install(str(root), f"{PREFIX}_sys_{tag}", [f"{PREFIX}_data_{tag}", f"{PREFIX}_data2_{tag}"],
                      f"{PREFIX}_{tag}", "pw-" + secrets.token_hex(8))
    state.write_text(json.dumps(asdict(install)))  # a failed install is removed like a whole one
    web = Web(root).start()
    started = time.monotonic()
    try:
        fields = {"install_step": "6", "install_now": "1", "config_db_host": "localhost", "config_db_port": "3306",
                  "config_db_username": install.user, "config_db_password": install.password,
                  "config_db_password2": install.password, "config_db_root_username": "root",
                  "config_db_root_password": "", "config_db_name": install.system,
                  "config_mandant_name": install.tenants[0], "config_mandant_title": "Tenant One",
                  "config_adminauth_username": "admin", "config_adminauth_password": "center-" + tag}
        with web.client() as client:
            done = client.post("/index.php", data=fields)
        assert "Installation done" in done.text, f"i-doit's installer failed: {re.findall(r'ERROR[^<]*', done.text)}"
        _second_tenant(root, install)
        install.install_seconds = round(time.monotonic() - started, 1)
        started = time.monotonic()
        _populate(web, install, tag)
        install.data_seconds = round(time.monotonic() - started, 1)
    finally:
        web.stop()
    return install


def _second_tenant(root: Path, install: Install) -> None:
    """What the admin center's "add tenant" does: the data dump into a new database, the grant, the row."""
    second = install.tenants[1]
    sql(f"CREATE DATABASE `{second}` DEFAULT CHARACTER SET utf8 COLLATE utf8_unicode_ci")
    with open(root / "setup" / "sql" / "idoit_data.sql", "rb") as dump:
        subprocess.run(["mariadb", f"--socket={SOCKET}", "-uroot", second], stdin=dump, check=True)
    sql(f"GRANT ALL ON `{second}`.* TO '{install.user}'@'localhost'")
    sql("INSERT INTO isys_mandator (isys_mandator__title, isys_mandator__description, isys_mandator__dir_cache, "
        "isys_mandator__dir_tpl, isys_mandator__db_host, isys_mandator__db_port, isys_mandator__db_name, "
        "isys_mandator__db_user, isys_mandator__db_pass, isys_mandator__sort, isys_mandator__active) "
        "SELECT 'Tenant Two', 'Tenant Two', 'cache_tenant_two', isys_mandator__dir_tpl, isys_mandator__db_host, "
        f"isys_mandator__db_port, '{second}', isys_mandator__db_user, isys_mandator__db_pass, 2, 1 "
        "FROM isys_mandator WHERE isys_mandator__id = 1", install.system)


SERVER_TYPE, FILE_TYPE = 5, 29  # isys_obj_type: C__OBJTYPE__SERVER, C__OBJTYPE__FILE


def _populate(web: Web, install: Install, tag: str) -> None:
    """Through the web UI: a server and a File object with an uploaded file in tenant 1, a server in tenant 2."""
    install.upload.write_bytes(b"%PDF-1.4 i-doit manual " + os.urandom(6000) + bytes(range(256)))
    with login(web, 1) as client:
        install.objects[f"srv-alpha-{tag}"] = create_object(client, SERVER_TYPE, f"srv-alpha-{tag}")
        install.objects[f"manual-{tag}"] = create_object(client, FILE_TYPE, f"manual-{tag}")
        upload_file(client, install.objects[f"manual-{tag}"], "manual.pdf", install.upload.read_bytes())
        assert download_file(client, install.objects[f"manual-{tag}"]) == install.upload.read_bytes()
    with login(web, 2) as client:
        install.objects[f"srv-beta-{tag}"] = create_object(client, SERVER_TYPE, f"srv-beta-{tag}")


def healthy(install: Install) -> bool:
    """The install is whole: its folder, config and every database (a failed test may have left less)."""
    present = {name for (name,) in sql("SHOW DATABASES")}
    return (Path(install.root) / "src" / "config.inc.php").is_file() and set(install.databases) <= present


def remove(install: Install) -> None:
    """Everything an install made: its databases, its account, its folder."""
    for name in install.databases:
        sql(f"DROP DATABASE IF EXISTS `{name}`")
    sql(f"DROP USER IF EXISTS '{install.user}'@'localhost'")
    shutil.rmtree(Path(install.root).parent, ignore_errors=True)


@contextlib.contextmanager
def _locked(path: Path, mode: int) -> Iterator[None]:
    with open(path, "a") as handle:
        fcntl.flock(handle, mode)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def current(shared: Path) -> Install:
    """The run's install, whole: built (or rebuilt, when a failed test left it broken) under the build lock."""
    state = shared / "idoit-install.json"
    with _locked(shared / "idoit-install.build", fcntl.LOCK_EX):
        if state.exists():
            install = Install(**json.loads(state.read_text()))
            if healthy(install):
                return install
            remove(install)
        install = _install(shared, state)
        state.write_text(json.dumps(asdict(install)))
        return install


@contextlib.contextmanager
def lease(shared: Path) -> Iterator[None]:
    """Held for a worker's session; the last worker to leave removes the install."""
    state = shared / "idoit-install.json"
    holder = open(shared / "idoit-install.lease", "a")  # noqa: SIM115 - held for the whole session
    fcntl.flock(holder, fcntl.LOCK_SH)
    try:
        yield
    finally:
        fcntl.flock(holder, fcntl.LOCK_UN)
        with _locked(shared / "idoit-install.build", fcntl.LOCK_EX):
            try:
                fcntl.flock(holder, fcntl.LOCK_EX | fcntl.LOCK_NB)  # no other worker holds a lease
            except BlockingIOError:
                pass
            else:
                if state.exists():
                    remove(Install(**json.loads(state.read_text())))
                    state.unlink()
        holder.close()


@contextlib.contextmanager
def exclusive(shared: Path) -> Iterator[Install]:
    """One test at a time uses the install (they drop and restore all of it)."""
    with _locked(shared / "idoit-install.use", fcntl.LOCK_EX):
        yield current(shared)


def dump(database: str) -> bytes:
    """The acceptance's reference: mariadb-dump of one database, as root over the socket."""
    return subprocess.run(
        ["mariadb-dump", f"--socket={SOCKET}", "-uroot", "--skip-dump-date", "--routines", "--events", "--triggers",
         "--hex-blob", database], check=True, capture_output=True).stdout


def tree(root: Path, skip: tuple[str, ...] = ()) -> dict[str, tuple[object, ...]]:
    """Every path under root, and root itself: type, mode, owner, size, mtime, content (or link target)."""
    top = root.lstat()
    state: dict[str, tuple[object, ...]] = {".": ("dir", oct(top.st_mode), top.st_uid, top.st_gid, None,
                                                  top.st_mtime_ns)}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder) / name
            rel = str(path.relative_to(root))
            if any(rel.startswith(s + "/") for s in skip):
                continue
            info = path.lstat()
            body: object = "dir"
            if path.is_symlink():
                body = os.readlink(path)
            elif path.is_file():
                body = path.read_bytes()
            emptied = rel in skip  # an excluded folder comes back empty: its mtime is new
            # A folder's st_size is the file system's allocation for its entries, not content: files only.
            state[rel] = (body, oct(info.st_mode), info.st_uid, info.st_gid, None if body == "dir" else info.st_size,
                          None if emptied else info.st_mtime_ns)
    return state
