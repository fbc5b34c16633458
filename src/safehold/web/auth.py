"""Who is asking: session cookies or a trusted proxy header, CSRF tokens, roles, login rate limits."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
import threading
import time
from collections import defaultdict, deque

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from safehold.web.store import SESSION_SECONDS, Session, Store

SESSION_COOKIE = "safehold_session"
LOGIN_CSRF_COOKIE = "safehold_login_csrf"
CSRF_FIELD = "csrf"
CSRF_HEADER = "x-csrf-token"
MAX_FAILURES = 5
FAILURE_WINDOW = 300.0


class RateLimiter:
    """Refuses logins for a name or an address after too many recent failures."""

    def __init__(self, max_failures: int = MAX_FAILURES, window: float = FAILURE_WINDOW) -> None:
        self.max_failures = max_failures
        self.window = window
        self._failures: dict[str, deque[float]] = defaultdict(deque)
        self._lock = threading.Lock()

    def _recent(self, key: str, now: float) -> deque[float]:
        times = self._failures[key]
        while times and now - times[0] > self.window:
            times.popleft()
        if not times:
            # Forget quiet keys so guessing many names cannot grow memory without bound.
            del self._failures[key]
            times = deque()
        return times

    def blocked(self, *keys: str) -> float:
        """Seconds until a login for these keys is accepted again (0: now)."""
        now = time.monotonic()
        with self._lock:
            return self._wait(keys, now)

    def _wait(self, keys: tuple[str, ...], now: float) -> float:
        waits = [self.window - (now - t[0]) for t in (self._recent(k, now) for k in keys)
                 if len(t) >= self.max_failures]
        return max(waits, default=0.0)

    def attempt(self, *keys: str) -> float:
        """Seconds to wait (nothing counted), or 0 and the attempt is counted as a failure of every key.

        Counted before the password is checked, in the same locked step as the check, so parallel
        guesses cannot all pass the limit while the first of them is still being hashed.
        `succeeded` takes the attempt back.
        """
        now = time.monotonic()
        with self._lock:
            # Forget every quiet key, not only these: a name or address tried once is never looked up again.
            for key in list(self._failures):
                self._recent(key, now)
            wait = self._wait(keys, now)
            if not wait:
                for key in keys:
                    self._failures[key].append(now)
        return wait

    def succeeded(self, user_key: str, address_key: str | None = None) -> None:
        """A good login clears its account's failures and takes back its own attempt from the address.

        The address keeps the failures of other names, so logging into an account of one's own does not
        reset the count of guesses at other accounts from that address.
        """
        with self._lock:
            self._failures.pop(user_key, None)
            if address_key is not None and (times := self._failures.get(address_key)):
                times.pop()


class ProxyAuthGate:
    """ASGI middleware that refuses (403) every request carrying the proxy's user header whose peer is not
    a trusted proxy.

    Outermost, so it sees the real peer before X-Forwarded-For (from a trusted proxy) replaces it: the
    header names a user only when the reverse proxy set it, never when a local process (a backed-up PHP
    app among them) or a browser sends it straight to the console. Refused rather than ignored: such a
    request is an attempt to pass as someone, and is answered as one on every route.
    """

    def __init__(self, app: ASGIApp, header: str, trusted_proxies: list[str]) -> None:
        self.app = app
        self.header = header.lower().encode("latin-1")
        self.networks = [ipaddress.ip_network(entry, strict=False) for entry in trusted_proxies]

    def trusted(self, peer: object) -> bool:
        """Whether the connection's peer ((host, port) of the ASGI scope) is one of the trusted proxies."""
        if not isinstance(peer, (tuple, list)) or not peer:
            return False
        try:
            address = ipaddress.ip_address(peer[0])
        except ValueError:  # a Unix socket or a test client's name: not an address a proxy was given as
            return False
        return any(address in network for network in self.networks)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket") and not self.trusted(scope.get("client")) and \
                any(k.lower() == self.header for k, _ in scope["headers"]):
            refusal = PlainTextResponse(f"{self.header.decode()} is accepted only from web.trusted_proxies", 403)
            await refusal(scope, receive, send)
            return
        await self.app(scope, receive, send)


class Auth:
    """Resolves the session of a request and enforces CSRF and roles."""

    def __init__(self, store: Store, proxy_header: str | None = None) -> None:
        self.store = store
        self.proxy_header = proxy_header.lower() if proxy_header else None
        self.limiter = RateLimiter()
        # Proxy-authenticated users have no server session; their CSRF token is derived from this key.
        self._key = secrets.token_bytes(32)

    def session(self, request: Request) -> Session | None:
        """The logged-in user, from the proxy header (when enabled) or the session cookie."""
        if self.proxy_header:
            name = request.headers.get(self.proxy_header)
            if name:
                role = self.store.role(name)
                if role is None:
                    raise HTTPException(403, f"the proxy says {name}, but there is no such safehold user")
                csrf = hmac.new(self._key, f"proxy:{name}".encode(), hashlib.sha256).hexdigest()
                return Session(name, role, csrf)
        token = request.cookies.get(SESSION_COOKIE)
        return self.store.session(token) if token else None

    def require(self, request: Request, role: str = "viewer") -> Session:
        """The session, or 401 (not logged in) / 403 (role too low)."""
        session = self.session(request)
        if session is None:
            raise HTTPException(401, "log in first")
        if role == "operator" and not session.operator:
            raise HTTPException(403, "this needs the operator role")
        return session

    async def require_post(self, request: Request, role: str = "viewer") -> tuple[Session, dict[str, str]]:
        """For state-changing requests: session (401), then a matching CSRF token (403), then role (403)."""
        session = self.session(request)
        if session is None:
            raise HTTPException(401, "log in first")
        form = {k: v for k, v in (await request.form()).items() if isinstance(v, str)}
        token = form.get(CSRF_FIELD) or request.headers.get(CSRF_HEADER) or ""
        if not hmac.compare_digest(token.encode(), session.csrf.encode()):
            raise HTTPException(403, "missing or wrong CSRF token: reload the page and try again")
        if role == "operator" and not session.operator:
            raise HTTPException(403, "this needs the operator role")
        return session, form


def secure(request: Request) -> bool:
    """Cookies are Secure when the browser reached us over TLS (directly or via a proxy)."""
    return request.url.scheme == "https"


def set_session_cookie(response: Response, request: Request, token: str) -> None:
    """The session cookie: HttpOnly, SameSite=Strict, Secure under TLS."""
    response.set_cookie(SESSION_COOKIE, token, max_age=SESSION_SECONDS, httponly=True, samesite="strict",
                        secure=secure(request), path="/")


def login_token(request: Request) -> str:
    """The double-submit token of the login form (there is no session yet to hold one)."""
    return request.cookies.get(LOGIN_CSRF_COOKIE) or secrets.token_urlsafe(32)


def set_login_cookie(response: Response, request: Request, token: str) -> None:
    """Store the login form's token in a cookie the form's POST must match."""
    response.set_cookie(LOGIN_CSRF_COOKIE, token, max_age=3600, httponly=True, samesite="strict",
                        secure=secure(request), path="/login")
