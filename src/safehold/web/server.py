"""`safehold serve`: the console under uvicorn, plus background services (the scheduler).

A service is any object with start() and stop() that runs beside the web server, such as the
scheduler. Passing the scheduler's executor as `pool` makes console jobs run in the same worker
pool as scheduled runs; both take the same instance locks, so they never overlap:

    scheduler = Scheduler(config_path, reporter, workers=2)
    serve(config, listen, services=[scheduler], pool=scheduler.pool)
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Sequence
from concurrent.futures import Executor
from typing import Protocol

import uvicorn

from safehold.config import Config, parse_listen
from safehold.errors import ConfigError, os_reason
from safehold.web.app import Console, create_app
from safehold.web.jobs import JobRunner


class Service(Protocol):
    """Something that runs beside the web server for its whole lifetime."""

    def start(self) -> None: ...

    def stop(self) -> None: ...


class ExportSweeper:
    """Deletes old console exports every `every` seconds, so they go even when no new job starts."""

    def __init__(self, console: Console, every: float = 600.0) -> None:
        self.console = console
        self.every = every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="safehold-export-sweeper", daemon=True)

    def _loop(self) -> None:
        while True:
            self.console.prune_exports()
            if self._stop.wait(self.every):
                return

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def check_listen(host: str, port: int) -> None:
    """Refuse early, in one line, an address the console cannot listen on (uvicorn would exit 3, "partial")."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {os_reason(exc)}",
                          "use an address of this host in --listen or web.listen") from None
    try:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
            probe.bind(address)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {os_reason(exc)}",
                          "another program (or another safehold serve) may use it: stop it, or choose another "
                          "address with --listen or web.listen") from None


def serve(config: Config, listen: str | None = None, services: Sequence[Service] = (),
          pool: Executor | None = None) -> None:
    """Run the console (and `services`) until interrupted; jobs run in `pool` when given."""
    host, port = parse_listen(listen or config.web.listen)
    web = config.web
    if bool(web.tls_cert) != bool(web.tls_key):
        raise ConfigError("web.tls_cert and web.tls_key go together", "set both, or neither (reverse proxy TLS)")
    check_listen(host, port)
    # X-Forwarded-* are applied by the app itself, from web.trusted_proxies only (proxy_headers=False below).
    app = create_app(config, jobs=JobRunner(config.state_dir, pool=pool), listen=listen)
    console: Console = app.state.console
    services = [*services, ExportSweeper(console)]
    for service in services:
        service.start()
    try:
        uvicorn.run(app, host=host, port=port, ssl_certfile=web.tls_cert, ssl_keyfile=web.tls_key,
                    proxy_headers=False, log_level="info", access_log=True)
    finally:
        for service in reversed(services):
            service.stop()
        console.jobs.shutdown()
