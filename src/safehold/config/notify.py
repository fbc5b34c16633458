"""[notify] and [export]: where failures are announced, how portable exports are encrypted."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from safehold.config.base import Model, SecretRef, check_secret


class ItopTicketConfig(Model):
    """Open an iTop ticket through its REST/JSON API (`core/create`) when a run fails."""

    url: str = Field(description="iTop root, e.g. https://itop.example/ (webservices/rest.php is appended)")
    user: str
    password: SecretRef
    ticket_class: Literal["Incident", "UserRequest"] = "UserRequest"
    org_id: str | int = Field(description="organization key or OQL, e.g. \"SELECT Organization WHERE name='IT'\"")
    caller_id: str | int | None = None
    fields: dict[str, str | int] = Field(default_factory=dict, description="extra ticket fields (impact, urgency...)")
    api_version: str = "1.3"

    _secret_password = field_validator("password")(check_secret)


class ItflowTicketConfig(Model):
    """Open an ITFlow ticket through its API (`/api/v1/tickets/create.php`) when a run fails."""

    url: str = Field(description="ITFlow root, e.g. https://itflow.example/")
    api_key: SecretRef
    client_id: int = 0
    contact_id: int = 0
    priority: Literal["Low", "Medium", "High", "Urgent"] = "High"

    _secret_key = field_validator("api_key")(check_secret)


class NotifyConfig(Model):
    """Where failures (and optionally successes) are announced."""

    urls: list[SecretRef | str] = Field(default_factory=list, description="apprise URLs or secret refs to them")
    on_success: bool = False
    on_recovery: bool = True
    itop: ItopTicketConfig | None = None
    itflow: ItflowTicketConfig | None = None


class ExportConfig(Model):
    """Encryption for portable exports (`.age`)."""

    recipients: list[str] = Field(default_factory=list, description="age public keys (age1...)")
    passphrase: SecretRef | None = None
    identity: SecretRef | None = Field(default=None, description="age identity file for --from-file")

    _secret_passphrase = field_validator("passphrase", "identity")(check_secret)

