"""The console's shared parts: config, accounts, jobs, the data adapter and the page templates, and the
helpers every route uses (render a page, check a name or run id from the path, start a job)."""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.templating import Jinja2Templates

from safehold.config import Config
from safehold.web import data as data_module
from safehold.web.auth import Auth
from safehold.web.jobs import Busy, Job, JobRunner
from safehold.web.store import Session, Store

LOG = logging.getLogger(__name__)
HERE = Path(__file__).parent
# Checked with fullmatch: `$` also matches before a final newline, which would let "latest\n" through.
RUN = re.compile(r"latest|[0-9A-Za-z][0-9A-Za-z-]{3,63}")


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


def _size(value: float | None) -> str:
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


class ConsoleBase:
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

