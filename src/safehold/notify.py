"""Tell people when a run fails, when it recovers, and (optionally) when it succeeds.

Messages go through apprise (mail, Slack/Teams/Matrix, ntfy, webhooks...). An incident ticket can
also be opened in the application itself:

- iTop, REST/JSON API (docs: "iTop REST/JSON services"): POST {url}/webservices/rest.php?version=1.3,
  form fields `auth_user`, `auth_pwd` and `json_data` = {"operation": "core/create", "class":
  "UserRequest"|"Incident", "comment", "output_fields", "fields": {"org_id", "caller_id", "title",
  "description", ...}}. The answer is {"code": 0, "objects": {"UserRequest::12": {"code": 0,
  "key": "12", "fields": {"ref": "R-000012"}}}}; a non-zero code carries "message".
- ITFlow API v1 (api/v1/tickets/create.php): POST a JSON body {"api_key", "ticket_subject",
  "ticket_details", "ticket_priority", "client_id", "ticket_contact_id"}; the answer is
  {"success": "True", "data": [{"insert_id": N}]} or {"success": "False", "message": ...}.

One outage opens one ticket per system: the open ticket is kept in the history database until a run
of that instance succeeds again. Messages never carry secrets: the error lines are secret-free by
design and every configured secret value is masked again here as a second line of defence.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from typing import Any

from safehold.config import Config, ItflowTicketConfig, ItopTicketConfig
from safehold.errors import SafeholdError
from safehold.history import History, Run
from safehold.output import Reporter
from safehold.secrets import mask, resolve

TIMEOUT_SECONDS = 20
TICKET_KINDS = ("backup", "drill")  # a failed prune or restore is announced, but is no outage of the backups


class NotifyError(SafeholdError):
    """A notification or ticket could not be delivered."""


def _age(when: datetime) -> str:
    hours = (datetime.now(UTC) - when).total_seconds() / 3600
    return f"{hours:.1f} h" if hours < 48 else f"{hours / 24:.1f} days"


def _by_hand(run: Run) -> str:
    """The command that repeats a run ("verify app" would name a point, not the instance)."""
    return f"safehold verify --instance {run.instance}" if run.kind == "verify" else \
        f"safehold {run.kind} {run.instance}"


def compose(history: History, run: Run, event: str) -> tuple[str, str]:
    """Title and body for an event (failure, recovery, success) of a run."""
    host = socket.gethostname()
    what = f"{run.kind} of {run.instance}"
    if event == "failure":
        title = f"safehold: {what} FAILED on {host}"
        good = history.last_success(run.instance, run.kind)
        last = f"last good {run.kind}: {good.started:%Y-%m-%d %H:%M} UTC ({_age(good.started)} ago)" if good else \
            f"there is no good {run.kind} of {run.instance} yet"
        lines = [f"The {what} on {host} failed at {run.started:%Y-%m-%d %H:%M} UTC.",
                 f"Reason: {run.error or 'unknown'}", last,
                 f"Next step: fix the reason above, then run `{_by_hand(run)}` by hand; "
                 f"`safehold history {run.instance}` and `safehold check {run.instance}` show the state."]
    else:
        verb = "works again" if event == "recovery" else "succeeded"
        title = f"safehold: {what} {verb} on {host}"
        size = f", {run.bytes_added / 1e6:.1f} MB added" if run.bytes_added is not None else ""
        lines = [f"The {what} on {host} {verb} at {run.started:%Y-%m-%d %H:%M} UTC "
                 f"({run.duration or 0:.0f} s{size}).",
                 "Next step: none." + (" Open incident tickets for this outage can be closed." if event == "recovery"
                                       else "")]
    return title, "\n".join(lines)


def _secret_values(config: Config) -> list[str]:
    """Every secret the config can resolve, to mask them in anything sent out."""
    refs = [r.password for r in config.repositories.values()] + \
        [ref for r in config.repositories.values() for ref in r.env.values()] + \
        [d.password for i in config.instances.values() for d in i.databases if d.password]
    refs += [t.password for t in [config.notify.itop] if t] + [t.api_key for t in [config.notify.itflow] if t]
    values = []
    for ref in refs:
        try:
            values.append(resolve(ref, "secret").reveal())
        except SafeholdError:
            continue
    return values


def notify_urls(config: Config) -> tuple[list[tuple[int, str]], list[str]]:
    """notify.urls with their references resolved, each with its index; and one line for each that does
    not resolve (naming notify.urls.N and why, never a value), so one bad reference silences no other."""
    urls: list[tuple[int, str]] = []
    problems: list[str] = []
    for index, url in enumerate(config.notify.urls):
        if url.startswith(("env:", "file:")):
            try:
                url = resolve(url, f"notify.urls.{index}").reveal()
            except SafeholdError as exc:
                problems.append(exc.line())
                continue
        urls.append((index, url))
    return urls, problems


def send(config: Config, title: str, body: str, kind: str = "failure") -> list[str]:
    """Send one message to every apprise URL that resolves; returns a line for each URL that did not get it."""
    import apprise

    urls, problems = notify_urls(config)
    if not urls:
        return problems
    secrets = _secret_values(config)
    notify_type = {"failure": apprise.NotifyType.FAILURE, "recovery": apprise.NotifyType.SUCCESS,
                   "success": apprise.NotifyType.SUCCESS}[kind]
    for index, url in urls:
        target = apprise.Apprise()  # one per URL: a refusal names its URL, and stops no other
        if not target.add(url):
            problems.append(f"notify.urls.{index} is not an apprise URL apprise understands — see "
                            "https://github.com/caronc/apprise/wiki for the URL formats")
        elif not target.notify(title=mask(title, secrets), body=mask(body, secrets), notify_type=notify_type):
            problems.append(f"notify.urls.{index}: the message was refused or the target could not be reached")
    return sorted(problems)


def _post(url: str, what: str, **kwargs: Any) -> dict[str, Any]:
    # Imported here, not at the top: every command would pay for it at start (see safehold.cli).
    import requests

    try:
        response = requests.post(url, timeout=TIMEOUT_SECONDS, **kwargs)
        response.raise_for_status()
        return response.json()
    except requests.HTTPError as exc:
        assert exc.response is not None  # raise_for_status always attaches the response it judged
        raise NotifyError(f"{what}: {url} answered HTTP {exc.response.status_code}",
                          "check the URL and the API credentials") from None
    except requests.RequestException as exc:
        raise NotifyError(f"{what}: cannot reach {url} ({type(exc).__name__})", "check the URL and the network") \
            from None
    except ValueError:
        raise NotifyError(f"{what}: {url} did not answer JSON", "is this the API endpoint?") from None


def _itop(settings: ItopTicketConfig, request: dict[str, Any], what: str) -> dict[str, Any]:
    """One iTop REST/JSON call; returns the first object of a successful answer."""
    answer = _post(f"{settings.url.rstrip('/')}/webservices/rest.php", "iTop ticket",
                   params={"version": settings.api_version},
                   data={"auth_user": settings.user, "auth_pwd": resolve(settings.password, "notify.itop.password")
                         .reveal(), "json_data": json.dumps(request)})
    if answer.get("code") != 0 or not answer.get("objects"):
        raise NotifyError(f"iTop refused to {what}: {answer.get('message') or answer.get('code')}",
                          "check notify.itop (user rights, org_id, class)")
    return next(iter(answer["objects"].values()))


def open_itop_ticket(settings: ItopTicketConfig, title: str, body: str) -> str:
    """Create an iTop UserRequest/Incident with core/create; returns its ref (or key)."""
    fields: dict[str, Any] = {"org_id": settings.org_id, "title": title, "description": body.replace("\n", "<br>"),
                              **settings.fields}
    if settings.caller_id is not None:
        fields["caller_id"] = settings.caller_id
    created = _itop(settings, {"operation": "core/create", "comment": "safehold: backup failure",
                               "class": settings.ticket_class, "output_fields": "id, ref", "fields": fields},
                    "open the ticket")
    return str((created.get("fields") or {}).get("ref") or created.get("key"))


def note_itop_recovery(settings: ItopTicketConfig, ticket: str, body: str) -> None:
    """Add the recovery message to the ticket's public log (core/update); resolving it stays with the team,
    whose iTop may require fields (solution, resolution code) only they can fill in."""
    key: str | int = int(ticket) if ticket.isdigit() else \
        f"SELECT {settings.ticket_class} WHERE ref = '{ticket.replace(chr(39), '')}'"
    _itop(settings, {"operation": "core/update", "comment": "safehold: backups work again",
                     "class": settings.ticket_class, "key": key, "output_fields": "id",
                     "fields": {"public_log": {"add_item": {"message": body.replace("\n", "<br>"), "format": "html"}}}},
          f"update ticket {ticket}")


def _itflow(settings: ItflowTicketConfig, endpoint: str, payload: dict[str, Any]) -> dict[str, Any]:
    payload = {"api_key": resolve(settings.api_key, "notify.itflow.api_key").reveal(), **payload}
    return _post(f"{settings.url.rstrip('/')}/api/v1/tickets/{endpoint}", "ITFlow ticket", json=payload)


def open_itflow_ticket(settings: ItflowTicketConfig, title: str, body: str) -> str:
    """Create an ITFlow ticket through api/v1/tickets/create.php; returns its id."""
    answer = _itflow(settings, "create.php", {
        "ticket_subject": title, "ticket_details": body.replace("\n", "<br>"), "ticket_priority": settings.priority,
        "client_id": settings.client_id, "ticket_contact_id": settings.contact_id})
    if str(answer.get("success")).lower() != "true" or not answer.get("data"):
        raise NotifyError(f"ITFlow refused the ticket: {answer.get('message', 'no reason given')}",
                          "check notify.itflow (API key, client_id)")
    return str(answer["data"][0]["insert_id"])


def resolve_itflow_ticket(settings: ItflowTicketConfig, ticket: str) -> bool:
    """Resolve the ticket through api/v1/tickets/resolve.php; False when ITFlow changed nothing (someone
    resolved or deleted it already)."""
    answer = _itflow(settings, "resolve.php", {"ticket_id": int(ticket)})
    return str(answer.get("success")).lower() == "true"


def _close_in_systems(config: Config, closed: list[tuple[str, str]], body: str, reporter: Reporter) -> list[str]:
    """Tell each ticket system its ticket's outage is over; a system that cannot be reached is a warning."""
    done = []
    for system, ticket in closed:
        try:
            if system == "itop" and config.notify.itop is not None:
                note_itop_recovery(config.notify.itop, ticket, body)
                reporter.step(f"added the recovery to itop ticket {ticket}")
            elif system == "itflow" and config.notify.itflow is not None:
                changed = resolve_itflow_ticket(config.notify.itflow, ticket)
                reporter.step(f"resolved itflow ticket {ticket}" if changed
                              else f"itflow ticket {ticket} was resolved already")
            else:
                continue
        except SafeholdError as exc:
            reporter.warn(f"could not update the {system} ticket {ticket}: {exc.line()}")
            continue
        done.append(f"{system}:{ticket}")
    return done


def _tickets(config: Config, history: History, run: Run, title: str, body: str,
             reporter: Reporter) -> tuple[dict[str, str], list[str]]:
    """Open a ticket in each configured system without one for this outage; returns the tickets opened
    and a line for each system that could not open one (kept for `safehold check`, like a URL that refused)."""
    opened: dict[str, str] = {}
    problems: list[str] = []
    openers: dict[str, Callable[[str, str], str]] = {}  # system → open(title, body), for each one configured
    if config.notify.itop is not None:
        openers["itop"] = partial(open_itop_ticket, config.notify.itop)
    if config.notify.itflow is not None:
        openers["itflow"] = partial(open_itflow_ticket, config.notify.itflow)
    for system, opener in openers.items():
        key = f"{system}:{run.kind}"
        existing = history.open_ticket(run.instance, key)
        if existing:
            reporter.step(f"{system} ticket {existing} is already open for this outage")
            continue
        try:
            ticket = opener(title, body)
        except SafeholdError as exc:
            reporter.warn(f"could not open the {system} ticket: {exc.line()}")
            problems.append(f"notify.{system}: could not open the ticket: {exc.line()}")
            continue
        history.add_ticket(run.instance, key, ticket, run.id)
        reporter.step(f"opened {system} ticket {ticket}")
        opened[system] = ticket
    return opened, problems


def event_of(run: Run, previous: Run | None) -> str:
    """failure, recovery (ok after a failed run) or success."""
    if run.result != "ok":
        return "failure"
    return "recovery" if previous is not None and previous.result != "ok" else "success"


def after_run(config: Config, history: History, run: Run, previous: Run | None, reporter: Reporter) -> dict[str, Any]:
    """Send what the run's outcome calls for; returns what was done (for the history and tests)."""
    event = event_of(run, previous)
    done: dict[str, Any] = {"event": event}
    closed = history.close_tickets(run.instance, run.kind) if event != "failure" else []
    wanted = event == "failure" or config.notify.on_success or (event == "recovery" and config.notify.on_recovery)
    if not wanted:
        # Learn of a URL reference that does not resolve now, not when the outage it should announce comes:
        # said in this run's output and kept in its details for `safehold check`.
        _, problems = notify_urls(config)
        for problem in problems:
            reporter.warn(f"a failure would not be announced to {problem}")
        if problems:
            history.add_details(run.id, {"notify_problems": problems})
    if not (closed or wanted):
        return done  # a quiet success: no message to compose, no secrets to read for masking
    title, body = compose(history, run, event)
    secrets = _secret_values(config)
    title, body = mask(title, secrets), mask(body, secrets)
    if closed:
        done["tickets_closed"] = closed
        done["tickets_updated"] = _close_in_systems(config, closed, body, reporter)
    if not wanted:
        return done
    ticket_problems: list[str] = []
    if event == "failure" and run.kind in TICKET_KINDS:
        done["tickets_opened"], ticket_problems = _tickets(config, history, run, title, body, reporter)
    problems = send(config, title, body, event)
    done["sent"] = not problems
    for problem in problems:
        reporter.warn(f"the {event} notification for {run.instance} did not reach {problem}")
    problems += ticket_problems
    if problems:
        done["not_sent"] = problems
        history.add_details(run.id, {"notify_problems": problems})
    return done
