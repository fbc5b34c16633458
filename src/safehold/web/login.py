"""Logging in and out of the console: the login form with its CSRF token, the rate-limited password check,
and where a login may lead."""

from __future__ import annotations

import re

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from safehold.web.auth import LOGIN_CSRF_COOKIE, SESSION_COOKIE, set_login_cookie, set_session_cookie
from safehold.web.auth import login_token as new_login_token
from safehold.web.console import ConsoleBase
from safehold.web.store import NAME_MAX

# Where a login may lead: a path of this site with its query (`+` is a space in form-encoded queries).
SAFE_NEXT = re.compile(r"/[A-Za-z0-9/_.\-?=&%+]*")


def safe_next(target: object) -> str:
    """`target` when it is a path of this site, else `/`: `//host` and `https://host` lead elsewhere."""
    text = str(target or "/")
    return text if SAFE_NEXT.fullmatch(text) and not text.startswith("//") else "/"


class LoginPages(ConsoleBase):
    """The login form, the login and the logout."""

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

