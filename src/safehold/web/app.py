"""Routes of the admin console. Pages render on the server; JavaScript only polls running jobs."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime
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
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from safehold.actions.backup import backup_instance, check_note
from safehold.actions.points import show_point
from safehold.actions.verify import verify_instance
from safehold.config import Config, host_pattern, parse_listen
from safehold.errors import SafeholdError
from safehold.web import data as data_module
from safehold.web.auth import ProxyAuthGate
from safehold.web.console import HERE
from safehold.web.jobs import JobRunner
from safehold.web.login import LoginPages
from safehold.web.restore_pages import RestorePages
from safehold.web.store import Store

# Names a browser on this host may use for the console; others come from web.allowed_hosts.
LOCAL_HOSTS = ("localhost", "127.0.0.1", "[::1]")
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


class Console(LoginPages, RestorePages):
    """The console's pages and actions; logging in is in web.login, the restore pages in web.restore_pages,
    the shared parts (config, accounts, jobs, templates) in web.console."""

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
