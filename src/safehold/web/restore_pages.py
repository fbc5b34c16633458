"""The restore pages of the console: choose a point and its parts, read the dry-run plan, confirm by
typing the instance name; the restore then runs as a job."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast
from urllib.parse import quote

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from safehold.actions.restore import PARTS, restore
from safehold.errors import SafeholdError
from safehold.web.console import ConsoleBase


class RestorePages(ConsoleBase):
    """Restore in four steps: the form, the plan, the confirmation, the job."""

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
        plan = cast(dict[str, Any], result["plan"])  # Plan.describe(), with the accounts
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


def _quiet():  # noqa: ANN202 - a Reporter that shows nothing (dry runs in a request)
    from safehold.output import Silent

    return Silent()


