"""[web] and [settings]: the admin console and the process-wide settings."""

from __future__ import annotations

import ipaddress
import re

from pydantic import Field, field_validator, model_validator

from safehold.config.base import Model, check_absolute
from safehold.errors import ConfigError

# A host name as a browser sends it in Host (a reverse proxy's public name), optionally `*.` for subdomains.
HOST_NAME = re.compile(r"(\*\.)?[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*")


def host_pattern(entry: str) -> str:
    """A host name lower-cased, an IPv6 address in brackets: as they are compared with the Host header."""
    try:
        return f"[{ipaddress.IPv6Address(entry.strip('[]'))}]"
    except ValueError:
        pass
    if not HOST_NAME.fullmatch(entry):
        raise ValueError(f"{entry!r} is not a host name (give the name only, without scheme or port, "
                         f"e.g. \"backup.example.org\")")
    return entry.lower()


def parse_listen(listen: str) -> tuple[str, int]:
    """`HOST:PORT` (IPv6 as `[::1]:8750`) → host and port."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535 or not host:
        raise ConfigError(f"--listen {listen!r} is not HOST:PORT", "e.g. --listen 127.0.0.1:8750")
    return host.strip("[]"), int(port)


class WebConfig(Model):
    """Admin console served by `safehold serve`."""

    listen: str = Field(default="127.0.0.1:8750", description="HOST:PORT the console listens on (IPv6: [::1]:8750)")
    tls_cert: str | None = Field(default=None, description="PEM certificate for HTTPS, with tls_key; unset: plain "
                                                           "HTTP (TLS at a reverse proxy)",
                                 examples=["/etc/safehold/tls.crt"])
    tls_key: str | None = Field(default=None, description="PEM private key of tls_cert",
                                examples=["/etc/safehold/tls.key"])
    proxy_auth_header: str | None = Field(default=None, description="the header in which an authenticating reverse "
                                                                    "proxy names the operator (needs "
                                                                    "trusted_proxies); unset: the console's own login",
                                          examples=["X-Remote-User"])
    # Without a trusted proxy, X-Forwarded-For/-Proto are ignored: any local process could otherwise
    # pick its apparent address (past the per-address login limit, into the audit log) and scheme.
    trusted_proxies: list[str] = Field(
        default_factory=list, description="addresses or networks of reverse proxies whose X-Forwarded-For/-Proto "
                                          "count; only behind a reverse proxy", examples=[["127.0.0.1", "::1"]])
    # Requests naming any other host in Host are refused, so a page that rebinds its own DNS name to
    # 127.0.0.1 cannot reach the console (login, /metrics) from a browser on this host.
    allowed_hosts: list[str] = Field(
        default_factory=list, description="host names in the URL besides the listen address and localhost (a "
                                          "proxy's public name)", examples=[["backup.example.org"]])

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        # Normalised, because uvicorn takes "10.0.0.1/8" (host bits set) for a name that never matches.
        try:
            return [str(ipaddress.ip_network(entry, strict=False) if "/" in entry else ipaddress.ip_address(entry))
                    for entry in value]
        except ValueError as exc:
            raise ValueError(f"{exc.args[0]}: give IP addresses or networks, e.g. [\"127.0.0.1\", \"::1\", "
                             f"\"10.0.0.0/24\"]") from None

    @field_validator("allowed_hosts")
    @classmethod
    def _host_names(cls, value: list[str]) -> list[str]:
        return [host_pattern(entry) for entry in value]

    @model_validator(mode="after")
    def _proxy_header_needs_proxies(self) -> WebConfig:
        # Honoured from any address, the header would let every local process (the backed-up PHP apps
        # among them) name itself an operator.
        if self.proxy_auth_header and not self.trusted_proxies:
            raise ValueError("proxy_auth_header is set but trusted_proxies is empty: the header would be believed "
                             "from any address (give the reverse proxy's address in trusted_proxies, e.g. "
                             "[\"127.0.0.1\"], or remove proxy_auth_header)")
        return self


class Settings(Model):
    """Process-wide settings."""

    state_dir: str | None = Field(default=None, description="run history, locks and escrowed keys; unset: "
                                                            "/var/lib/safehold for root, else "
                                                            "~/.local/state/safehold", examples=["/var/lib/safehold"])
    lock_wait_seconds: int = Field(default=0, ge=0, description="seconds a second run of the same instance waits "
                                                                "for the first; 0: it exits at once")
    repository_wait_seconds: int = Field(
        default=4 * 3600, ge=0, description="seconds a restic command waits while another safehold run on this "
                                            "host prunes or checks the repository it needs (or the reverse)")
    metrics_textfile: str | None = Field(default=None, description="a Prometheus textfile rewritten after every "
                                                                   "run; unset: none",
                                         examples=["/var/lib/prometheus/node-exporter/safehold.prom"])
    drill_prefix: str = Field(
        default="safehold_drill_", pattern=r"^[a-z][a-z0-9_]{0,14}_$",
        description="how the names of a drill's scratch databases and folders begin; a drill removes only names "
                    "of exactly its shape (lowercase letters, digits and _, ending in _, at most 16 characters, "
                    "so the names fit MariaDB's 64)")

    _absolute_paths = field_validator("state_dir", "metrics_textfile")(check_absolute)

