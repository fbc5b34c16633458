"""Routes of the admin console. Pages render on the server; JavaScript only polls running jobs."""

from __future__ import annotations

import contextlib
import logging
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from safehold.actions.backup import backup_instance, check_note
from safehold.actions.points import show_point
from safehold.actions.restore import PARTS, restore
from safehold.actions.verify import verify_instance
from safehold.config import Config, host_pattern, parse_listen
from safehold.errors import SafeholdError
from safehold.web import data as data_module
from safehold.web.auth import (
    LOGIN_CSRF_COOKIE,
    SESSION_COOKIE,
    Auth,
    ProxyAuthGate,
    set_login_cookie,
    set_session_cookie,
)
from safehold.web.auth import login_token as new_login_token
from safehold.web.jobs import Busy, Job, JobRunner
from safehold.web.store import NAME_MAX, Session, Store

LOG = logging.getLogger(__name__)
HERE = Path(__file__).parent
# Checked with fullmatch: `$` also matches before a final newline, which would let "latest\n" through.
RUN = re.compile(r"latest|[0-9A-Za-z][0-9A-Za-z-]{3,63}")
# Names a browser on this host may use for the console; others come from web.allowed_hosts.
LOCAL_HOSTS = ("localhost", "127.0.0.1", "[::1]")
# Where a login may lead: a path of this site with its query (`+` is a space in form-encoded queries).
SAFE_NEXT = re.compile(r"/[A-Za-z0-9/_.\-?=&%+]*")
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def safe_next(target: object) -> str:
    """`target` when it is a path of this site, else `/`: `//host` and `https://host` lead elsewhere."""
    text = str(target or "/")
    return text if SAFE_NEXT.fullmatch(text) and not text.startswith("//") else "/"


def _age(when: datetime | float | None) -> str:
    """`3 min ago`, `5 h ago`, `2 d ago`."""
    if when is None:
        return "never"
    if isinstance(when, int | float):
        when = datetime.fromtimestamp(when, UTC)
    seconds = (datetime.now(UTC) - when).total_seconds()
    for limit, unit, size in ((120, "s", 1), (7200, "min", 60), (172800, "h", 3600)):
        if seconds < limit:
            return f"{seconds / size:.0f} {unit} ago"
    return f"{seconds / 86400:.0f} d ago"


def _size(value: int | None) -> str:
    if value is None:
        return ""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return ""


def _time(when: datetime | float | None) -> str:
    if when is None:
        return ""
    if isinstance(when, int | float):
        when = datetime.fromtimestamp(when, UTC)
    return when.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


class Console:
    """The app's shared parts: config, accounts, jobs and the data adapter."""

    def __init__(self, config: Config, store: Store | None = None, jobs: JobRunner | None = None) -> None:
        self.config = config
        self.store = store or Store(config.state_dir)
        self.jobs = jobs or JobRunner(config.state_dir)
        self.auth = Auth(self.store, config.web.proxy_auth_header)
        self.data = data_module.Data(config, self.jobs)
        self.exports = config.state_dir / "web" / "exports"
        self.templates = Jinja2Templates(directory=str(HERE / "templates"))
        self.templates.env.filters.update(age=_age, size=_size, time=_time)
        self.jobs.on_finish.append(self._audit_finished)

    def _audit_finished(self, job: Job) -> None:
        self.store.audit(job.user, None, f"{job.kind} finished", job.instance,
                         job.state + (f": {job.error}" if job.error else ""))

    # -- helpers -------------------------------------------------------------------------------

    def render(self, request: Request, template: str, session: Session | None, status: int = 200,
               **context: Any) -> Response:
        """A page with the session in its context."""
        return self.templates.TemplateResponse(request, template, {"session": session, **context},
                                               status_code=status)

    def instance_name(self, request: Request) -> str:
        """The instance named in the path, or 404 (only configured names pass)."""
        name = request.path_params["name"]
        if name not in self.config.instances:
            raise HTTPException(404, "no such instance")
        return name

    @staticmethod
    def run_param(value: str) -> str:
        """A run id or `latest`, or 400: nothing else reaches the repository lookups."""
        if not RUN.fullmatch(value or ""):
            raise HTTPException(400, "not a run id")
        return value

    def prune_exports(self) -> None:
        """Delete old exports (on every new job, and from `safehold serve`'s sweeper when none starts)."""
        for file in data_module.prune_exports(self.exports):
            LOG.info("deleted export %s: older than %s h", file, data_module.EXPORT_KEEP_HOURS)

    def start(self, request: Request, session: Session, kind: str, name: str, action: Any,
              params: dict[str, Any] | None = None) -> Response:
        """Queue a job and go to its live page; a busy instance gets a clear 409 page."""
        self.prune_exports()
        address = request.client.host if request.client else None
        try:
            job = self.jobs.submit(kind, name, session.user, action, params)
        except Busy as exc:
            self.store.audit(session.user, address, kind, name, "refused: a run is already in progress")
            return self.render(request, "error.html", session, 409, message=exc.line())
        self.store.audit(session.user, address, kind, name, f"started job {job.id}")
        return RedirectResponse(f"/jobs/{job.id}", 303)

    # -- login ---------------------------------------------------------------------------------

    async def login_page(self, request: Request) -> Response:
        """The login form with its double-submit CSRF token."""
        token = new_login_token(request)
        response = self.render(request, "login.html", None, next=safe_next(request.query_params.get("next")),
                               login_csrf=token)
        set_login_cookie(response, request, token)
        return response

    async def login(self, request: Request) -> Response:
        """Check the password (rate-limited), open a session, audit the attempt."""
        form = await request.form()
        cookie = request.cookies.get(LOGIN_CSRF_COOKIE, "")
        if not cookie or form.get("csrf") != cookie:
            raise HTTPException(403, "missing or wrong CSRF token: reload the login page")
        # No account name is longer than NAME_MAX: a longer one is cut one character past it (so it still
        # matches none) before it becomes a rate-limit key and an audit row, or every anonymous attempt,
        # refused ones included, could write a megabyte into the audit log.
        user, password = str(form.get("username", ""))[: NAME_MAX + 1], str(form.get("password", ""))
        target = safe_next(form.get("next"))  # kept through a failed attempt
        address = request.client.host if request.client else "?"
        keys = (f"user:{user}", f"addr:{address}")
        wait = self.auth.limiter.attempt(*keys)
        if wait:
            self.store.audit(user, address, "login", "", "refused: rate limited")
            response = self.render(request, "login.html", None, 429, login_csrf=cookie, next=target,
                                   error=f"too many failed logins: try again in {wait / 60:.0f} min")
            response.headers["Retry-After"] = str(int(wait) + 1)
            return response
        if not await run_in_threadpool(self.store.check_password, user, password):
            self.store.audit(user, address, "login", "", "failed")
            return self.render(request, "login.html", None, 401, login_csrf=cookie, next=target,
                               error="wrong user name or password")
        self.auth.limiter.succeeded(*keys)
        self.store.audit(user, address, "login", "", "ok")
        response = RedirectResponse(target, 303)
        set_session_cookie(response, request, self.store.open_session(user))
        response.delete_cookie(LOGIN_CSRF_COOKIE, path="/login")
        return response

    async def logout(self, request: Request) -> Response:
        """Close the session (POST with CSRF, so another site cannot log you out)."""
        session, _ = await self.auth.require_post(request)
        self.store.close_session(request.cookies.get(SESSION_COOKIE, ""))
        self.store.audit(session.user, request.client.host if request.client else None, "logout", "", "ok")
        response = RedirectResponse("/login", 303)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    # -- pages ---------------------------------------------------------------------------------

    def dashboard(self, request: Request) -> Response:
        """Every instance with its state colour and the reasons for it."""
        session = self.auth.require(request)
        return self.render(request, "dashboard.html", session, instances=self.data.dashboard())

    def instance(self, request: Request) -> Response:
        """Points, actions and recent runs of one instance."""
        session = self.auth.require(request)
        view = self.data.instance(self.instance_name(request))
        return self.render(request, "instance.html", session, view=view,
                           jobs=self.jobs.history(view.name, limit=15), now=datetime.now(UTC))

    def manifest(self, request: Request) -> Response:
        """The manifest of one point, readable."""
        session = self.auth.require(request)
        name = self.instance_name(request)
        run = self.run_param(request.path_params["run"])
        try:
            manifest = show_point(self.config, run, name)
        except SafeholdError as exc:
            raise HTTPException(404, exc.line()) from None
        return self.render(request, "manifest.html", session, name=name, manifest=manifest)

    def runs(self, request: Request) -> Response:
        """Console jobs and, when installed, the run history."""
        session = self.auth.require(request)
        return self.render(request, "runs.html", session, jobs=self.jobs.history(),
                           history=self.data.history_runs())

    def job(self, request: Request) -> Response:
        """One run: live log and progress, then its result."""
        session = self.auth.require(request)
        job = self.jobs.get(request.path_params["job"])
        if job is None:
            raise HTTPException(404, "no such run")
        return self.render(request, "job.html", session, job=job, keep_hours=data_module.EXPORT_KEEP_HOURS)

    def job_status(self, request: Request) -> Response:
        """JSON for the live tail: new log lines since `since`, progress, state."""
        self.auth.require(request)
        job = self.jobs.get(request.path_params["job"])
        if job is None:
            raise HTTPException(404, "no such run")
        since_text = request.query_params.get("since", "0")
        since = int(since_text) if since_text.isdigit() else 0
        return JSONResponse({"state": job.state, "error": job.error, "progress": job.progress,
                             "log": job.log[since:], "next": len(job.log), "done": job.done})

    def settings(self, request: Request) -> Response:
        """The effective configuration with secrets masked, and the console users."""
        session = self.auth.require(request)
        return self.render(request, "settings.html", session, settings=data_module.settings_view(self.config),
                           source=str(self.config.source or ""), state_dir=str(self.config.state_dir),
                           users=self.store.users())

    def audit(self, request: Request) -> Response:
        """The audit log, newest first."""
        session = self.auth.require(request)
        return self.render(request, "audit.html", session, rows=self.store.audit_rows())

    # -- actions -------------------------------------------------------------------------------

    async def backup(self, request: Request) -> Response:
        """Backup now (operator), with an optional note kept in the point's manifest."""
        session, form = await self.auth.require_post(request, "operator")
        name = self.instance_name(request)
        try:  # checked before the job is queued, so a bad note starts nothing
            note = check_note(form.get("note"))
        except SafeholdError as exc:
            return self.render(request, "error.html", session, 400, message=exc.line(),
                               back=f"/instances/{quote(name)}")
        return self.start(request, session, "backup", name,
                          lambda r: backup_instance(self.config, name, r, note=note), {"note": note} if note else None)

    async def verify(self, request: Request) -> Response:
        """Verify the instance's points and repositories (operator), as its scheduled verify does:
        the same share of the data read, and the result recorded for `check`, metrics and the pages."""
        session, _ = await self.auth.require_post(request, "operator")
        name = self.instance_name(request)
        return self.start(request, session, "verify", name,
                          lambda r: verify_instance(self.config, name, r, scheduled=False))

    async def drill(self, request: Request) -> Response:
        """Drill now (operator)."""
        session, _ = await self.auth.require_post(request, "operator")
        name = self.instance_name(request)
        return self.start(request, session, "drill", name, data_module.drill_action(self.config, name))

    async def export(self, request: Request) -> Response:
        """Export one point to a portable file (operator)."""
        session, _ = await self.auth.require_post(request, "operator")
        name = self.instance_name(request)
        run = self.run_param(request.path_params["run"])
        self.exports.mkdir(parents=True, exist_ok=True, mode=0o700)
        action = data_module.export_action(self.config, name, run, self.exports)
        return self.start(request, session, "export", name, action, {"run": run})

    def download(self, request: Request) -> Response:
        """Download a finished export; only files in the exports folder are served."""
        self.auth.require(request, "operator")
        job = self.jobs.get(request.path_params["job"])
        if job is None or job.kind != "export" or job.state != "ok" or not isinstance(job.result, dict):
            raise HTTPException(404, "no finished export with this id")
        path = (self.exports / str(job.result.get("file", ""))).resolve()
        if not path.is_relative_to(self.exports.resolve()) or not path.is_file():
            raise HTTPException(404, f"the export file is gone: exports are deleted after "
                                     f"{data_module.EXPORT_KEEP_HOURS} h; export the point again")
        return FileResponse(path, filename=path.name)

    # -- restore -------------------------------------------------------------------------------

    def restore_form(self, request: Request) -> Response:
        """Step 1 of a restore: choose the point and the parts."""
        session = self.auth.require(request, "operator")
        view = self.data.instance(self.instance_name(request))
        return self.render(request, "restore.html", session, view=view, parts=PARTS,
                           chosen=request.query_params.get("run", ""))

    @staticmethod
    def restore_options(values: Any) -> dict[str, Any]:
        """Form or query values → restore() keyword arguments (validated)."""
        parts = [p for p in values.getlist("parts") if p in PARTS]
        if not parts:
            raise HTTPException(400, "choose at least one part to restore (db, files, config)")
        to_db = [v.strip() for v in str(values.get("to_db", "")).split(",") if v.strip()]
        files_to = str(values.get("files_to", "")).strip()
        # A relative folder would land under whatever folder `safehold serve` was started in (/ under
        # systemd), and a NUL byte cannot be a path at all: both are refused before anything is planned.
        if files_to and (not files_to.startswith("/") or "\0" in files_to):
            raise HTTPException(400, f"restore files under {files_to!r}: give a full path starting with /")
        return {"only": parts, "to_db": to_db, "files_to": Path(files_to) if files_to else None,
                "allow_version_change": values.get("allow_version_change") == "1"}

    def restore_plan(self, request: Request) -> Response:
        """Steps 2 and 3: the dry-run plan and the confirmation form."""
        session = self.auth.require(request, "operator")
        name = self.instance_name(request)
        run = self.run_param(request.query_params.get("run", ""))
        options = self.restore_options(request.query_params)
        try:
            result = restore(self.config, name, run, _quiet(), dry_run=True, **options)
        except SafeholdError as exc:
            return self.render(request, "error.html", session, 400, message=exc.line(),
                               back=f"/instances/{quote(name)}/restore?run={quote(run)}")
        plan = result["plan"]
        overwrite = [d["into"] for d in plan["databases"] if d["target_has_data"]]
        return self.render(request, "plan.html", session, name=name, plan=plan, options=options,
                           overwrite=overwrite, in_place=bool(plan["paths"]) and plan["files_into"] == "/")

    async def restore_start(self, request: Request) -> Response:
        """Step 4: the typed instance name must match; then the restore runs as a job."""
        session, form = await self.auth.require_post(request, "operator")
        name = self.instance_name(request)
        run = self.run_param(form.get("run", ""))
        values = await request.form()
        options = self.restore_options(values)
        if form.get("confirm", "").strip() != name:
            return self.render(request, "error.html", session, 400,
                               message=f"type the instance name {name} exactly to confirm the restore",
                               back=f"/instances/{quote(name)}/restore?run={quote(run)}")
        force = form.get("force") == "1"
        params = {"run": run, "force": force, **{k: str(v) for k, v in options.items()}}
        return self.start(request, session, "restore", name,
                          lambda r: restore(self.config, name, run, r, force=force, **options), params)

    async def metrics(self, request: Request) -> Response:
        """Prometheus scrape target. Unauthenticated like node-exporter: it holds no secret, only
        timestamps, sizes and results, and the console listens on loopback unless told otherwise."""
        from safehold import metrics

        text = await run_in_threadpool(metrics.render, self.config)
        return Response(text, media_type=metrics.CONTENT_TYPE)

    # -- errors --------------------------------------------------------------------------------

    async def http_error(self, request: Request, exc: Exception) -> Response:
        """Pages send anonymous visitors to the login form; everything else gets an error page."""
        assert isinstance(exc, HTTPException)
        if exc.status_code == 401 and request.method == "GET":
            wanted = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse(f"/login?next={quote(wanted, safe='')}", 303)
        try:
            session = self.auth.session(request)
        except HTTPException:  # an unknown proxy user: show the error without a session
            session = None
        return self.render(request, "error.html", session, exc.status_code, message=exc.detail)


def _quiet():  # noqa: ANN202 - a Reporter that shows nothing (dry runs in a request)
    from safehold.output import Silent

    return Silent()


async def _headers(request: Request, call_next: RequestResponseEndpoint) -> Response:
    response = await call_next(request)
    for key, value in SECURITY_HEADERS.items():
        response.headers.setdefault(key, value)
    return response


def allowed_hosts(config: Config, listen: str | None = None) -> list[str]:
    """Host header values the console answers: loopback names, the listen address, web.allowed_hosts."""
    hosts = [*LOCAL_HOSTS, *config.web.allowed_hosts]
    host, _ = parse_listen(listen or config.web.listen)
    with contextlib.suppress(ValueError):  # not a name a browser could send (then it is not needed)
        hosts.append(host_pattern(host))
    return hosts


def create_app(config: Config, store: Store | None = None, jobs: JobRunner | None = None,
               listen: str | None = None) -> Starlette:
    """The ASGI app (`listen`: the address served, default web.listen); `app.state.console` gives the
    job runner to services such as the scheduler."""
    console = Console(config, store, jobs)
    c = console
    routes = [
        Route("/", c.dashboard),
        Route("/login", c.login_page, methods=["GET"]),
        Route("/login", c.login, methods=["POST"]),
        Route("/logout", c.logout, methods=["POST"]),
        Route("/runs", c.runs),
        Route("/metrics", c.metrics),
        Route("/audit", c.audit),
        Route("/settings", c.settings),
        Route("/jobs/{job}", c.job),
        Route("/jobs/{job}/status", c.job_status),
        Route("/jobs/{job}/download", c.download),
        Route("/instances/{name}", c.instance),
        Route("/instances/{name}/backup", c.backup, methods=["POST"]),
        Route("/instances/{name}/verify", c.verify, methods=["POST"]),
        Route("/instances/{name}/drill", c.drill, methods=["POST"]),
        Route("/instances/{name}/restore", c.restore_form, methods=["GET"]),
        Route("/instances/{name}/restore", c.restore_start, methods=["POST"]),
        Route("/instances/{name}/restore/plan", c.restore_plan),
        Route("/instances/{name}/points/{run}/manifest", c.manifest),
        Route("/instances/{name}/points/{run}/export", c.export, methods=["POST"]),
        Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
    ]
    middleware = [
        # Before any route: a DNS-rebinding page (its own name resolving to 127.0.0.1) must get nothing.
        Middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts(config, listen), www_redirect=False),
        Middleware(BaseHTTPMiddleware, dispatch=_headers),
    ]
    if config.web.trusted_proxies:
        # Here rather than in uvicorn (whose default trusts 127.0.0.1): only a configured proxy may set the
        # client address and scheme that the rate limit, the audit log and the Secure cookie flag rely on.
        middleware.insert(0, Middleware(ProxyHeadersMiddleware, trusted_hosts=config.web.trusted_proxies))
    if config.web.proxy_auth_header:
        # Outside the proxy headers middleware: it judges the peer that really connected.
        middleware.insert(0, Middleware(ProxyAuthGate, header=config.web.proxy_auth_header,
                                        trusted_proxies=config.web.trusted_proxies))
    app = Starlette(routes=routes, middleware=middleware, exception_handlers={HTTPException: c.http_error})
    app.state.console = console
    return app
