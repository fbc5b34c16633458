"""iTop 3.2.0, installed by its own unattended installer (`setup/unattended-install/`, table prefix
`it_`, sample data) on the local MariaDB with its user created only as 'user'@'localhost', and used
through its REST API (`webservices/rest.php`, version 1.3).

The install (setup plus data made through REST) is built once per test run; each test gets a clone:
the same tree (`cp -a`) and the same data in a database and user of its own.
"""

from __future__ import annotations

import base64
import json
import os
import random
import subprocess
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from safehold.apps import itop as itop_profile
from tests.conftest import sql
from tests.integration.realapps.common import (
    app_source,
    build_once,
    clone_template,
    drop_db_account,
    end_build,
    local_db_account,
    php_server,
    run_folder,
    save_template,
)
from tests.integration.realapps.common import (
    tree_state as common_tree_state,
)

TARBALL = "itop-3.2.0.tar.gz"
PREFIX = "it_"
WEB_UID = WEB_GID = 33  # www-data: iTop's install guide gives conf/, data/, env-production/ and log/ to it
ADMIN = "admin"
ADMIN_PASSWORD = "Correct-Horse-9-Battery"
REST_PROFILE = "REST Services User"  # webservices/rest.php refuses users without it (secure_rest_services)
# What the profile leaves out (contents only; each folder's guard files stay).
DISPOSABLE = itop_profile.DISPOSABLE_FOLDERS
ATTACHMENT = b"\x89PNG\r\n\x1a\n" + random.Random(32).randbytes(40 * 1024)  # a ticket's attached file
PARAMS = """<?xml version="1.0" encoding="UTF-8"?>
<installation>
  <mode>install</mode>
  <preinstall></preinstall>
  <source_dir>datamodels/2.x/</source_dir>
  <datamodel_version>3.2.0</datamodel_version>
  <previous_configuration_file></previous_configuration_file>
  <extensions_dir>extensions</extensions_dir>
  <target_env>production</target_env>
  <workspace_dir></workspace_dir>
  <database>
    <server>localhost</server>
    <user>{user}</user>
    <pwd>{password}</pwd>
    <name>{database}</name>
    <db_tls_enabled></db_tls_enabled>
    <db_tls_ca></db_tls_ca>
    <prefix>{prefix}</prefix>
  </database>
  <url>http://127.0.0.1/</url>
  <graphviz_path>/usr/bin/dot</graphviz_path>
  <admin_account>
    <user>{admin}</user>
    <pwd>{admin_password}</pwd>
    <language>EN US</language>
  </admin_account>
  <language>EN US</language>
  <selected_modules type="array"></selected_modules>
  <selected_extensions type="array"></selected_extensions>
  <sample_data>1</sample_data>
  <old_addon></old_addon>
  <options type="array"/>
  <mysql_bindir></mysql_bindir>
</installation>
"""


@dataclass
class Facts:
    """What was made through REST, to find it again after a restore."""

    organization: str
    organization_id: int
    person: str
    person_id: int
    ticket: str
    ticket_id: int
    attachment_id: int
    attachment_name: str


@dataclass
class Install:
    """One iTop install of a test: its folder and its database account."""

    root: Path
    database: str
    user: str
    password: str
    facts: Facts
    timings: dict[str, float]


class Rest:
    """iTop's REST/JSON API as the admin (webservices/rest.php, version 1.3)."""

    def __init__(self, url: str, user: str = ADMIN, password: str = ADMIN_PASSWORD) -> None:
        self.http = httpx.Client(base_url=url, timeout=120)
        self.user, self.password = user, password

    def call(self, operation: str, **fields: Any) -> dict[str, Any]:
        """One operation; iTop's own error (code != 0) fails the test with its message."""
        response = self.http.post("/webservices/rest.php", params={"version": "1.3"}, data={
            "auth_user": self.user, "auth_pwd": self.password,
            "json_data": json.dumps({"operation": operation, **fields})})
        assert response.status_code == 200, f"{operation}: HTTP {response.status_code} {response.text[:400]}"
        body = response.json()
        assert body.get("code") == 0, f"{operation}: {body}"
        return body

    def create(self, cls: str, fields: dict[str, Any]) -> int:
        """core/create; the new object's id."""
        objects = self.call("core/create", **{"class": cls}, fields=fields, output_fields="id",
                            comment="safehold test")["objects"]
        (created,) = objects.values()
        assert created["code"] == 0, created
        return int(created["key"])

    def get(self, cls: str, key: int, fields: str) -> dict[str, Any] | None:
        """core/get of one object; its fields, or None when iTop has no such object."""
        objects = self.call("core/get", **{"class": cls}, key=key, output_fields=fields).get("objects") or {}
        return next(iter(objects.values()))["fields"] if objects else None

    def login(self) -> bool:
        """core/check_credentials: does iTop accept the admin's login and password?"""
        return bool(self.call("core/check_credentials", user=self.user, password=self.password)["authorized"])

    def close(self) -> None:
        self.http.close()


def grant_rest_profile(database: str) -> None:
    """Give the admin iTop's "REST Services User" profile (iTop's docs: a profile of the user, here its row)."""
    sql(f"INSERT INTO `{PREFIX}priv_urp_userprofile` (userid, profileid, description) SELECT u.id, p.id, "
        f"'REST for the tests' FROM `{PREFIX}priv_user` u, `{PREFIX}priv_urp_profiles` p "
        f"WHERE u.login = '{ADMIN}' AND p.name = '{REST_PROFILE}'", database)


def make_data(rest: Rest) -> Facts:
    """An organisation, a person in it and a user request with an attached file, through REST."""
    org = "Safehold Test Org"
    org_id = rest.create("Organization", {"name": org})
    person_id = rest.create("Person", {"name": "Lovelace", "first_name": "Ada", "org_id": org_id,
                                       "email": "ada@example.com"})
    ticket = "Printer on fire"
    ticket_id = rest.create("UserRequest", {"org_id": org_id, "caller_id": person_id, "title": ticket,
                                            "description": "It started after the update."})
    name = "printer.png"
    attachment_id = rest.create("Attachment", {
        "item_class": "UserRequest", "item_id": ticket_id, "item_org_id": org_id,
        "contents": {"data": base64.b64encode(ATTACHMENT).decode(), "filename": name, "mimetype": "image/png"}})
    return Facts(org, org_id, "Ada Lovelace", person_id, ticket, ticket_id, attachment_id, name)


def check_through_the_app(install: Install, url: str) -> None:
    """The admin logs in; organisation, person and ticket are there; the attachment is byte-identical;
    a write succeeds."""
    rest = Rest(url)
    try:
        assert rest.login()
        facts = install.facts
        assert (rest.get("Organization", facts.organization_id, "name") or {}).get("name") == facts.organization
        person = rest.get("Person", facts.person_id, "friendlyname,org_id") or {}
        assert person.get("friendlyname") == facts.person and int(person["org_id"]) == facts.organization_id
        ticket = rest.get("UserRequest", facts.ticket_id, "title,caller_id") or {}
        assert ticket.get("title") == facts.ticket and int(ticket["caller_id"]) == facts.person_id
        attachment = rest.get("Attachment", facts.attachment_id, "item_id,contents") or {}
        assert int(attachment["item_id"]) == facts.ticket_id
        assert attachment["contents"]["filename"] == facts.attachment_name
        assert base64.b64decode(attachment["contents"]["data"]) == ATTACHMENT
        rest.create("UserRequest", {"org_id": facts.organization_id, "caller_id": facts.person_id,
                                    "title": "Written after the restore", "description": "iTop is writable."})
    finally:
        rest.close()


def install(root: Path, database: str, user: str, password: str) -> None:
    """iTop's unattended installer, with our own param file (its shipped sample leaves the database empty)."""
    params = root.parent / "itop-params.xml"
    params.write_text(PARAMS.format(user=user, password=password, database=database, prefix=PREFIX, admin=ADMIN,
                                    admin_password=ADMIN_PASSWORD))
    params.chmod(0o600)
    try:
        done = subprocess.run(["php", "setup/unattended-install/unattended-install.php",
                               "--installation_xml=datamodels/2.x/installation.xml", f"--param-file={params}"],
                              cwd=root, capture_output=True, text=True, timeout=600)
    finally:
        params.unlink()
    assert done.returncode == 0 and done.stdout.rstrip().endswith("installed!"), (
        f"iTop's unattended install failed (exit {done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-2000:]}")


def _build(folder: Path) -> None:
    """Install + data, then the tree and a dump of the database are kept; the DB and user are dropped."""
    tarball = app_source(TARBALL)
    timings: dict[str, float] = {}
    started = time.monotonic()
    subprocess.run(["tar", "-xzf", str(tarball), "-C", str(folder)], check=True)  # the archive holds itop/
    root = folder / "itop"
    timings["unpack"] = round(time.monotonic() - started, 1)
    database, user, password = local_db_account("t_itop")
    try:
        install(root, database, user, password)
        timings["install"] = round(time.monotonic() - started - timings["unpack"], 1)
        subprocess.run(["chown", "-R", f"{WEB_UID}:{WEB_GID}", str(root)], check=True)
        grant_rest_profile(database)
        with php_server(root) as url:
            rest = Rest(url)
            facts = make_data(rest)
            rest.close()
        timings["data"] = round(time.monotonic() - started - timings["install"] - timings["unpack"], 1)
        save_template(folder, database, user, password, asdict(facts), timings)
    finally:
        end_build(folder, database, user)


def template(factory: pytest.TempPathFactory) -> Path:
    """The once-per-run install (built by whichever worker asks first)."""
    return build_once(run_folder(factory) / "itop-template", _build)


def _set_setting(text: str, key: str, old: str, new: str) -> str:
    line = f"'{key}' => {_php_string(old)},"
    assert line in text, f"config-itop.php as the installer wrote it has no {line!r}"
    return text.replace(line, f"'{key}' => {_php_string(new)},")


def _php_string(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def clone(source: Path, root: Path) -> Install:
    """The template's tree at `root` and its data in a new database and 'user'@'localhost'."""
    saved, database, user, password = clone_template(source, "itop", root, "t_itop")
    config = root / itop_profile.CONFIG
    text, stat = config.read_text(), config.stat()
    for key, old, new in (("db_user", saved["user"], user), ("db_pwd", saved["password"], password),
                          ("db_name", saved["database"], database)):
        text = _set_setting(text, key, old, new)
    config.chmod(stat.st_mode | 0o200)  # the installer leaves it read-only
    config.write_text(text)
    config.chmod(stat.st_mode)
    os.utime(config, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    return Install(root, database, user, password, Facts(**saved["facts"]), saved["timings"])


def itop_install(factory: pytest.TempPathFactory, tmp_path: Path) -> Iterator[Install]:
    """A test's own iTop (generator for a fixture): dropped with its DB account afterwards."""
    made = clone(template(factory), tmp_path / "www" / "itop")
    try:
        yield made
    finally:
        drop_db_account(made.database, made.user)


def tree_state(root: Path) -> dict[str, tuple[object, ...]]:
    """common.tree_state with the folders iTop regenerates left out."""
    return common_tree_state(root, DISPOSABLE)
