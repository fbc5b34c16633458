"""Failure and recovery messages reach a real SMTP sink (aiosmtpd) and an HTTP receiver without any
secret inside; iTop- and ITFlow-compatible REST endpoints get exactly one ticket per outage.

The endpoints below accept the request shapes the apps document and safehold relies on:
- iTop REST/JSON: POST webservices/rest.php?version=1.3, form fields auth_user, auth_pwd, json_data
  with operation core/create, class, output_fields and fields; answers code 0 and objects
  {"Class::key": {"code": 0, "key", "fields"}}.
- ITFlow API v1: POST api/v1/tickets/create.php with a JSON body holding api_key, ticket_subject,
  ticket_details, ticket_priority, client_id; answers {"success": "True", "data": [{"insert_id"}]}.
- On recovery, iTop core/update with key (an OQL query on the ref) and fields.public_log.add_item;
  ITFlow api/v1/tickets/resolve.php with api_key and ticket_id, answering {"success": "True",
  "count": 1}, or "False" when the ticket was resolved already (its update_output.php).
"""

from __future__ import annotations

import email
import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
from aiosmtpd.controller import Controller

from safehold.actions.backup import backup_instance
from safehold.config import load
from safehold.errors import SafeholdError
from safehold.history import History
from safehold.output import Silent
from tests.conftest import private_file, run_cli
from tests.integration.unattended import make_instance

ITOP_PASSWORD = "itop-Secret-4711"
ITFLOW_KEY = "itflowKeyAbCdEf0123456789"


class Mailbox:
    """aiosmtpd handler keeping each message's subject and plain-text body."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, str]] = []

    async def handle_DATA(self, server, session, envelope) -> str:  # noqa: ANN001 - aiosmtpd's hook signature
        message = email.message_from_bytes(envelope.content)
        body = "".join(part.get_payload(decode=True).decode() for part in message.walk()
                       if part.get_content_type() == "text/plain")
        self.messages.append((str(message["Subject"]), body))
        return "250 OK"


class Receiver(BaseHTTPRequestHandler):
    """Webhook sink plus iTop and ITFlow ticket endpoints."""

    hooks: list[dict] = []
    itop: list[dict] = []
    itflow: list[dict] = []
    updates: list[dict] = []

    def log_message(self, *args: object) -> None:
        return

    def _answer(self, status: int, payload: dict) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        url = urlparse(self.path)
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if url.path == "/hook":
            self.hooks.append(json.loads(body))
            self._answer(200, {})
        elif url.path == "/itop/webservices/rest.php":
            form = {k: v[0] for k, v in parse_qs(body.decode()).items()}
            if parse_qs(url.query).get("version") != ["1.3"] or form.get("auth_user") != "safehold" \
                    or form.get("auth_pwd") != ITOP_PASSWORD:
                self._answer(200, {"code": 1, "message": "Error: Invalid login"})
                return
            request = json.loads(form["json_data"])
            if request["operation"] == "core/update":
                assert request["class"] == "UserRequest" and request["key"].startswith("SELECT UserRequest WHERE ref")
                assert request["fields"]["public_log"]["add_item"]["message"]
                self.updates.append(request)
                self._answer(200, {"code": 0, "message": None, "objects": {"UserRequest::1": {
                    "code": 0, "message": "updated", "class": "UserRequest", "key": "1", "fields": {"id": "1"}}}})
                return
            assert request["operation"] == "core/create" and request["class"] == "UserRequest"
            assert {"org_id", "title", "description"} <= set(request["fields"])
            self.itop.append(request)
            key = str(len(self.itop))
            self._answer(200, {"code": 0, "message": None, "objects": {f"UserRequest::{key}": {
                "code": 0, "message": "created", "class": "UserRequest", "key": key,
                "fields": {"id": key, "ref": f"R-{int(key):06d}"}}}})
        elif url.path == "/itflow/api/v1/tickets/create.php":
            request = json.loads(body)
            if request.get("api_key") != ITFLOW_KEY:
                self._answer(401, {"success": "False", "message": "API Key authentication failure or expired."})
                return
            assert request["ticket_subject"] and request["ticket_priority"] in ("Low", "Medium", "High", "Urgent")
            self.itflow.append(request)
            self._answer(200, {"success": "True", "count": "1", "data": [{"insert_id": 100 + len(self.itflow)}]})
        elif url.path == "/itflow/api/v1/tickets/resolve.php":
            request = json.loads(body)
            if request.get("api_key") != ITFLOW_KEY:
                self._answer(401, {"success": "False", "message": "API Key authentication failure or expired."})
                return
            first = not any(u.get("ticket_id") == request["ticket_id"] for u in self.updates)
            self.updates.append(request)
            self._answer(200, {"success": "True", "count": 1} if first else {"success": "False", "message": "..."})
        else:
            self._answer(404, {})


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def services() -> Iterator[tuple[Mailbox, type[Receiver], int, int]]:
    mailbox = Mailbox()
    smtp_port = free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=smtp_port)
    controller.start()
    Receiver.hooks, Receiver.itop, Receiver.itflow, Receiver.updates = [], [], [], []
    http = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=http.serve_forever, daemon=True)
    thread.start()
    yield mailbox, Receiver, smtp_port, http.server_address[1]
    http.shutdown()
    controller.stop()


def test_failure_recovery_messages_and_one_ticket_per_outage(tmp_path: Path, repo: dict[str, str],
                                                              services) -> None:  # noqa: ANN001
    mailbox, receiver, smtp_port, http_port = services
    itop_pass = private_file(tmp_path / "secrets" / "itop.pass", ITOP_PASSWORD)
    itflow_key = private_file(tmp_path / "secrets" / "itflow.key", ITFLOW_KEY)
    base = f"http://127.0.0.1:{http_port}"
    config = make_instance(tmp_path, repo, top=f"""
[notify]
urls = ["mailto://127.0.0.1:{smtp_port}?from=safehold@example.com&to=ops@example.com&secure=no",
        "json://127.0.0.1:{http_port}/hook"]
[notify.itop]
url = "{base}/itop/"
user = "safehold"
password = "file:{itop_pass}"
org_id = "SELECT Organization WHERE name = 'IT'"
fields = {{ urgency = 2 }}
[notify.itflow]
url = "{base}/itflow"
api_key = "file:{itflow_key}"
client_id = 5
""")
    password_file = Path(repo["password_file"])
    good_password = password_file.read_text()
    backup_instance(load(config), "app", Silent())
    assert mailbox.messages == [] and receiver.hooks == []  # success is quiet unless on_success

    wrong_password = "wrong-" + good_password
    password_file.write_text(wrong_password)
    for _ in range(2):
        with pytest.raises(SafeholdError, match="wrong password"):
            backup_instance(load(config), "app", Silent())
    assert len(receiver.itop) == 1 and len(receiver.itflow) == 1  # two failures, one outage, one ticket each
    assert len(mailbox.messages) == 2 and len(receiver.hooks) == 2
    subject, body = mailbox.messages[0]
    assert "FAILED" in subject and "Reason: wrong password for repository main" in body
    assert "Next step:" in body and "safehold backup app" in body
    assert receiver.hooks[0]["type"] == "failure" and "wrong password" in receiver.hooks[0]["message"]
    assert receiver.itop[0]["fields"]["urgency"] == 2 and "wrong password" in receiver.itop[0]["fields"]["description"]
    assert receiver.itflow[0]["client_id"] == 5 and "FAILED" in receiver.itflow[0]["ticket_subject"]
    history = History(load(config).state_dir)
    assert history.open_ticket("app", "itop:backup") == "R-000001"
    assert history.open_ticket("app", "itflow:backup") == "101"

    password_file.write_text(good_password)
    backup_instance(load(config), "app", Silent())
    assert len(mailbox.messages) == 3 and "works again" in mailbox.messages[2][0]
    assert receiver.hooks[2]["type"] == "success" and "works again" in receiver.hooks[2]["title"]
    assert history.open_ticket("app", "itop:backup") is None
    # The outage's tickets hear of the recovery: a log entry in iTop, resolved in ITFlow.
    (itop_update,) = [u for u in receiver.updates if "key" in u]
    (itflow_resolve,) = [u for u in receiver.updates if "ticket_id" in u]
    assert "R-000001" in itop_update["key"] and "works again" in itop_update["fields"]["public_log"]["add_item"][
        "message"]
    assert itflow_resolve["ticket_id"] == 101

    # A new outage after the recovery is a new incident: a new ticket.
    password_file.write_text(wrong_password)
    with pytest.raises(SafeholdError):
        backup_instance(load(config), "app", Silent())
    assert len(receiver.itop) == 2 and len(receiver.itflow) == 2
    # Someone resolved the ITFlow ticket by hand meanwhile: the recovery still completes quietly.
    receiver.updates.append({"ticket_id": 102})
    password_file.write_text(good_password)
    backup_instance(load(config), "app", Silent())
    assert [u["ticket_id"] for u in receiver.updates if "ticket_id" in u] == [101, 102, 102]
    assert history.open_ticket("app", "itflow:backup") is None

    sent = [s + b for s, b in mailbox.messages] + [json.dumps(h) for h in receiver.hooks] + \
        [r["fields"]["title"] + r["fields"]["description"] for r in receiver.itop] + \
        [r["ticket_subject"] + r["ticket_details"] for r in receiver.itflow] + \
        [json.dumps(u["fields"]) for u in receiver.updates if "fields" in u]
    for text in sent:
        for secret in (good_password, wrong_password, ITOP_PASSWORD, ITFLOW_KEY):
            assert secret not in text


def test_an_unreachable_ticket_system_does_not_hide_the_failure(tmp_path: Path, repo: dict[str, str]) -> None:
    itop_pass = private_file(tmp_path / "secrets" / "itop.pass", ITOP_PASSWORD)
    config = make_instance(tmp_path, repo, instance='quiesce = { stop = [["false"]] }', top=f"""
[notify.itop]
url = "http://127.0.0.1:{free_port()}/"
user = "safehold"
password = "file:{itop_pass}"
org_id = 1
""")
    with pytest.raises(SafeholdError, match="quiesce command 'false' failed"):
        backup_instance(load(config), "app", Silent())
    history = History(load(config).state_dir)
    assert history.last_run("app").result == "failed"
    assert history.open_ticket("app", "itop:backup") is None  # retried on the next failure
    # Nobody was told (no notify.urls): `safehold check` says so, as for a URL that refused.
    assert history.last_run("app").details["notify_problems"] == [
        "notify.itop: could not open the ticket: iTop ticket: cannot reach "
        f"{load(config).notify.itop.url}webservices/rest.php (ConnectionError) — check the URL and the network"]
    checked = run_cli("check", "app", config=config)
    assert "app notify: notifications of the last run: notify.itop: could not open the ticket" in checked.stdout


def test_one_bad_url_reference_silences_no_other(tmp_path: Path, repo: dict[str, str], services,  # noqa: ANN001
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    _, receiver, _, http_port = services
    monkeypatch.delenv("AUDIT_NOPE_URL", raising=False)
    token = "hookToken-9f8e7d6c5b4a"
    shared = tmp_path / "secrets" / "shared.url"  # readable by others: refused, and its value never shown
    shared.parent.mkdir(parents=True, exist_ok=True)
    shared.write_text(f"json://127.0.0.1:{http_port}/hook?token={token}")
    shared.chmod(0o644)
    config = make_instance(tmp_path, repo, top=f"""
[notify]
urls = ["json://127.0.0.1:{http_port}/hook", "env:AUDIT_NOPE_URL", "file:{shared}"]
""")
    warnings: list[str] = []
    reporter = Silent()
    reporter.listeners.append(lambda event: event["event"] == "warning" and warnings.append(event["message"]))

    # A quiet success already says so (and keeps it for `safehold check`): before the outage, not during it.
    backup_instance(load(config), "app", reporter)
    assert receiver.hooks == []
    assert any("notify.urls.1: environment variable AUDIT_NOPE_URL is not set" in w for w in warnings), warnings
    assert any(w.startswith("a failure would not be announced to notify.urls.2") and "readable by others" in w
               for w in warnings), warnings
    checked = run_cli("check", "--json", config=config)
    notify = [f for f in json.loads(checked.stdout)["instances"][0]["findings"] if f["rule"] == "notify"]
    assert checked.returncode == 1 and notify and notify[0]["status"] == "WARNING", checked.stdout
    assert "notify.urls.1" in notify[0]["message"] and "notify.urls.2" in notify[0]["message"]

    # The failure reaches the URL that resolves; each one that does not is named, with why.
    warnings.clear()
    password_file = Path(repo["password_file"])
    password_file.write_text("wrong-" + password_file.read_text())
    with pytest.raises(SafeholdError, match="wrong password"):
        backup_instance(load(config), "app", reporter)
    assert len(receiver.hooks) == 1 and receiver.hooks[0]["type"] == "failure"
    not_reached = [w for w in warnings if w.startswith("the failure notification for app did not reach")]
    assert len(not_reached) == 2, warnings
    assert "notify.urls.1: environment variable AUDIT_NOPE_URL is not set" in not_reached[0]
    assert "notify.urls.2" in not_reached[1] and "readable by others" in not_reached[1]
    assert not any(token in w for w in warnings) and token not in checked.stdout + checked.stderr

    # Fixed: the next run records nothing, and check has nothing to say about notifications.
    monkeypatch.setenv("AUDIT_NOPE_URL", f"json://127.0.0.1:{http_port}/hook")
    shared.chmod(0o600)
    password_file.write_text(password_file.read_text().removeprefix("wrong-"))
    warnings.clear()
    backup_instance(load(config), "app", reporter)
    assert warnings == [] and len(receiver.hooks) == 4  # the recovery, to each of the three URLs
    checked = run_cli("check", "--json", config=config)
    assert not [f for f in json.loads(checked.stdout)["instances"][0]["findings"] if f["rule"] == "notify"]
