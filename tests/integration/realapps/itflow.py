"""ITFlow 26.08.2, installed by its own web setup (`/setup/` over HTTP against `php -S`) on the local
MariaDB with its user created only as 'user'@'localhost', and used through its agent pages.

The install (setup plus data made through the app) is built once per test run; each test gets a
clone: the same tree (`cp -a`) and the same data in a database and user of its own.
"""

from __future__ import annotations

import html
import os
import random
import re
import secrets
import subprocess
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx
import pytest

from safehold.apps import itflow as itflow_profile
from tests.conftest import sql
from tests.integration.realapps.common import (
    app_source,
    build_once,
    clone_template,
    drop_db_account,
    end_build,
    form_fields,
    local_db_account,
    php_server,
    run_folder,
    save_template,
)
from tests.integration.realapps.common import (
    tree_state as common_tree_state,
)

TARBALL = "itflow-26.08.2.tar.gz"
WEB_UID = WEB_GID = 33  # www-data: ITFlow's install guide chowns the app folder to the web server's user
ADMIN_EMAIL = "admin@example.com"
ADMIN_PASSWORD = "Correct-Horse-9-Battery"
# The folders whose contents the profile leaves out (ITFlow regenerates them); their guards are compared.
REGENERABLE = itflow_profile.REGENERABLE
FILE_BYTES = b"%PDF-1.4\n" + random.Random(20).randbytes(48 * 1024) + b"\n%%EOF\n"  # the uploaded file


@dataclass
class Facts:
    """What the data made through the app looks like, to find it again after a restore."""

    client: str
    contact: str
    contact_email: str
    credential: str
    credential_username: str
    credential_password: str
    file_name: str


@dataclass
class Install:
    """One ITFlow install of a test: its folder and its database account."""

    root: Path
    database: str
    user: str
    password: str
    facts: Facts

    @property
    def file_bytes(self) -> bytes:
        return FILE_BYTES


class Agent:
    """An agent's browser session: login, then the agent pages' forms with their csrf_token."""

    def __init__(self, url: str, database: str) -> None:
        self.http = httpx.Client(base_url=url, follow_redirects=False, timeout=60)
        self.database = database  # where the ids of what the app created are looked up

    def close(self) -> None:
        self.http.close()

    def login(self, email: str = ADMIN_EMAIL, password: str = ADMIN_PASSWORD) -> None:
        """Sign in on /login.php; ITFlow unwraps the master key with the password into the session."""
        self.http.get("/login.php")
        page = self.http.get("/login.php").text
        fields = dict(form_fields(page, "login"))
        done = self.http.post("/login.php", data={**fields, "email": email, "password": password})
        assert done.status_code == 302 and "agent/" in done.headers.get("location", ""), \
            f"ITFlow login failed: {done.status_code} {done.text[:300]}"
        assert "user_encryption_session_key" in self.http.cookies, "ITFlow did not open the credential vault"

    def modal(self, path: str) -> str:
        """An agent modal's HTML (modals answer JSON {content})."""
        answer = self.http.get(f"/agent/modals/{path}")
        assert answer.status_code == 200, f"{path}: {answer.status_code} {answer.text[:300]}"
        return str(answer.json()["content"])

    def submit(self, modal: str, button: str, values: dict[str, str], referer: str,
               files: dict[str, tuple[str, bytes, str]] | None = None) -> httpx.Response:
        """Fill the modal's form like a browser (its defaults, then `values`) and post it to agent/post.php."""
        fields = form_fields(self.modal(modal), button)
        data: dict[str, str | list[str]] = {}
        for name, value in fields:
            data[name] = values.get(name, value)
        multipart = {k: (v[0], v[1], v[2]) for k, v in (files or {}).items()}
        answer = self.http.post("/agent/post.php", data=data, files=multipart or None,
                                headers={"Referer": f"{self.http.base_url}{referer}"})
        assert answer.status_code == 302, f"{button}: {answer.status_code} {answer.text[:500]}"
        return answer

    def add_client(self, name: str, contact: str = "") -> int:
        self.submit("client/client_add.php", "add_client", {"name": name, "contact": contact}, "/agent/clients.php")
        return _id("SELECT client_id FROM clients WHERE client_name = %s", name, self)

    def add_contact(self, client_id: int, name: str, email: str) -> int:
        self.submit(f"contact/contact_add.php?client_id={client_id}", "add_contact",
                    {"name": name, "email": email}, f"/agent/contacts.php?client_id={client_id}")
        return _id("SELECT contact_id FROM contacts WHERE contact_name = %s", name, self)

    def add_credential(self, client_id: int, name: str, username: str, password: str) -> int:
        self.submit(f"credential/credential_add.php?client_id={client_id}", "add_credential",
                    {"name": name, "username": username, "password": password},
                    f"/agent/credentials.php?client_id={client_id}")
        return _id("SELECT credential_id FROM credentials WHERE credential_name = %s", name, self)

    def upload_file(self, client_id: int, name: str, content: bytes) -> int:
        self.submit(f"file/file_upload.php?client_id={client_id}", "upload_files", {"description": "contract"},
                    f"/agent/files.php?client_id={client_id}", files={"file[]": (name, content, "application/pdf")})
        return _id("SELECT file_id FROM files WHERE file_name = %s", name, self)

    def enable_cron(self) -> None:
        """Maintenance > Cron's master switch, by the link on admin/cron.php (it carries the csrf_token)."""
        link = re.search(r'href="(post\.php\?enable_cron=1&amp;csrf_token=[^"]+)"', self.page("/admin/cron.php"))
        assert link, "admin/cron.php offers no 'enable cron' link"
        answer = self.http.get(f"/admin/{html.unescape(link.group(1))}", headers={"Referer": "/admin/cron.php"})
        assert answer.status_code == 302, f"enable cron: {answer.status_code} {answer.text[:300]}"
        assert sql("SELECT config_enable_cron FROM settings WHERE company_id = 1", self.database) == [(1,)]

    def credential(self, credential_id: int) -> tuple[str, str]:
        """Username and password as ITFlow shows them in the credential's edit form (decrypted by ITFlow)."""
        fields = dict(form_fields(self.modal(f"credential/credential_edit.php?id={credential_id}"), "edit_credential"))
        return fields["username"], fields["password"]

    def download(self, file_id: int) -> bytes:
        answer = self.http.get("/agent/file.php", params={"file_id": file_id})
        assert answer.status_code == 200, f"download of file {file_id}: {answer.status_code} {answer.text[:300]}"
        return answer.content

    def page(self, path: str) -> str:
        answer = self.http.get(path)
        assert answer.status_code == 200, f"{path}: {answer.status_code} {answer.text[:300]}"
        return answer.text


def _id(query: str, value: str, agent: Agent) -> int:
    """The id of what the app just created, by its unique name."""
    rows = sql(query.replace("%s", "'" + value.replace("'", "''") + "'"), agent.database)
    assert len(rows) == 1, f"the app did not create exactly one row for {value!r}: {rows}"
    return int(rows[0][0])


def run_setup(url: str, database: str, user: str, password: str) -> None:
    """ITFlow's web setup, step by step, as an admin fills it in."""
    with httpx.Client(base_url=url, follow_redirects=False, timeout=300) as web:
        assert web.get("/setup/").status_code == 200
        steps = [
            ("database", "add_database", {"host": "localhost", "database": database, "username": user,
                                          "password": password}, "?user"),
            ("user", "add_user", {"name": "Ada Admin", "email": ADMIN_EMAIL, "password": ADMIN_PASSWORD},
             "?company"),
            ("company", "add_company_settings", {"name": "Safehold Test MSP", "country": "Germany",
                                                 "city": "Berlin", "email": "office@example.com"}, "?localization"),
            ("localization", "add_localization_settings", {"locale": "en_US", "currency_code": "EUR",
                                                           "timezone": "Europe/Berlin"}, "?telemetry"),
            ("telemetry", "add_telemetry", {}, "../login.php"),
        ]
        for step, button, values, next_page in steps:
            page = web.get(f"/setup/?{step}").text
            data = {**dict(form_fields(page, button)), **values}
            answer = web.post(f"/setup/?{step}", data=data, files={"file": ("", b"", "application/octet-stream")}
                              if step in ("user", "company") else None)
            assert answer.status_code == 302 and answer.headers["location"] == next_page, \
                f"ITFlow setup step {step}: {answer.status_code} {answer.headers.get('location')} {answer.text[:500]}"


def allow_plain_http(root: Path) -> None:
    """`$config_https_only = FALSE`, as ITFlow's login page asks for plain-HTTP use."""
    config = root / "config.php"
    text = config.read_text()
    assert "$config_https_only = TRUE;" in text
    config.write_text(text.replace("$config_https_only = TRUE;", "$config_https_only = FALSE;"))


def make_data(agent: Agent) -> Facts:
    """A client, a contact, a credential (encrypted by ITFlow) and an uploaded file, through the agent pages;
    cron switched on in the admin pages."""
    facts = Facts(client="Acme Logistics", contact="Grace Hopper", contact_email="grace@acme.example",
                  credential="Core router", credential_username="netadmin",
                  credential_password="Tr0ub4dor&3-" + secrets.token_hex(4), file_name="contract.pdf")
    client = agent.add_client(facts.client)
    agent.add_contact(client, facts.contact, facts.contact_email)
    agent.add_credential(client, facts.credential, facts.credential_username, facts.credential_password)
    agent.upload_file(client, facts.file_name, FILE_BYTES)
    agent.enable_cron()  # so a backup has ITFlow's cron to pause and switch back on
    return facts


def _build(folder: Path) -> None:
    """Setup + data, then the tree and a dump of the database are kept; the DB and user are dropped."""
    tarball = app_source(TARBALL)
    root = folder / "itflow"
    root.mkdir()
    timings: dict[str, float] = {}
    started = time.monotonic()
    subprocess.run(["tar", "-xzf", str(tarball), "-C", str(root)], check=True)
    subprocess.run(["chown", "-R", f"{WEB_UID}:{WEB_GID}", str(root)], check=True)
    timings["unpack"] = time.monotonic() - started
    database, user, password = local_db_account("t_itflow")
    try:
        with php_server(root) as url:
            run_setup(url, database, user, password)
        timings["setup"] = time.monotonic() - started
        allow_plain_http(root)
        with php_server(root) as url:  # a new server: OPcache of the old one may still hold config.php
            agent = Agent(url, database)
            agent.login()
            facts = make_data(agent)
            agent.close()
        timings["data"] = time.monotonic() - started
        save_template(folder, database, user, password, asdict(facts), timings)
    finally:
        end_build(folder, database, user)


def template(factory: pytest.TempPathFactory) -> Path:
    """The once-per-run install (built by whichever worker asks first)."""
    return build_once(run_folder(factory) / "itflow-template", _build)


def _php_export(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def clone(source: Path, root: Path) -> Install:
    """The template's tree at `root` and its data in a new database and 'user'@'localhost'."""
    saved, database, user, password = clone_template(source, "itflow", root, "t_itflow")
    config = root / "config.php"
    text, stat = config.read_text(), config.stat()
    for variable, old, new in (("dbusername", saved["user"], user), ("dbpassword", saved["password"], password),
                               ("database", saved["database"], database)):
        line = f"${variable} = {_php_export(old)};"
        assert line in text, f"config.php as setup wrote it has no {line!r}"
        text = text.replace(line, f"${variable} = {_php_export(new)};")
    config.write_text(text)
    os.utime(config, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    return Install(root, database, user, password, Facts(**saved["facts"]))


def itflow_install(factory: pytest.TempPathFactory, tmp_path: Path) -> Iterator[Install]:
    """A test's own ITFlow (generator for a fixture): dropped with its DB account afterwards."""
    install = clone(template(factory), tmp_path / "www" / "itflow")
    try:
        yield install
    finally:
        drop_db_account(install.database, install.user)


def tree_state(root: Path) -> dict[str, tuple[object, ...]]:
    """common.tree_state with ITFlow's regenerable folders left out."""
    return common_tree_state(root, REGENERABLE)


def check_through_the_app(install: Install, url: str) -> None:
    """Admin logs in; client, contact, credential (decrypted by ITFlow) and file (byte-identical) are there;
    a write (another client) succeeds."""
    agent = Agent(url, install.database)
    try:
        agent.login()
        facts = install.facts
        client_id = int(sql(f"SELECT client_id FROM clients WHERE client_name = '{facts.client}'",
                            install.database)[0][0])
        assert facts.client in agent.page("/agent/clients.php")
        assert facts.contact in agent.page(f"/agent/contacts.php?client_id={client_id}")
        credential_id = int(sql(f"SELECT credential_id FROM credentials WHERE credential_name = '{facts.credential}'",
                                install.database)[0][0])
        assert agent.credential(credential_id) == (facts.credential_username, facts.credential_password)
        file_id = int(sql(f"SELECT file_id FROM files WHERE file_name = '{facts.file_name}'", install.database)[0][0])
        assert agent.download(file_id) == install.file_bytes
        agent.add_client("Written after the restore")
    finally:
        agent.close()
