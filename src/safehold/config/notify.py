"""[notify] and [export]: where failures are announced, how portable exports are encrypted."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from safehold.config.base import Model, SecretRef


class ItopTicketConfig(Model):
    """Open an iTop ticket through its REST/JSON API (`core/create`) when a run fails."""

    url: str = Field(description="the iTop root (webservices/rest.php is appended)",
                     examples=["https://itop.example/"])
    user: str = Field(description="an iTop account with the REST Services User profile",
                      examples=["safehold-rest"])
    password: SecretRef = Field(description="its password, as a secret reference",
                                examples=["file:/etc/safehold/itop.pass"])
    ticket_class: Literal["Incident", "UserRequest"] = Field(default="UserRequest",
                                                             description="the iTop class of the ticket")
    org_id: str | int = Field(description="the customer organization: its key or an OQL query",
                              examples=["SELECT Organization WHERE name = 'IT'"])
    caller_id: str | int | None = Field(default=None, description="the caller (a person's key or OQL); unset: "
                                                                  "none", examples=[3])
    fields: dict[str, str | int] = Field(default_factory=dict, description="extra ticket fields",
                                         examples=[{"impact": 2, "urgency": 2}])
    api_version: str = Field(default="1.3", description="the REST API version iTop is asked for")


class ItflowTicketConfig(Model):
    """Open an ITFlow ticket through its API (`/api/v1/tickets/create.php`) when a run fails."""

    url: str = Field(description="the ITFlow root (api/v1/tickets/ is appended)",
                     examples=["https://itflow.example/"])
    api_key: SecretRef = Field(description="an ITFlow API key, as a secret reference",
                               examples=["file:/etc/safehold/itflow.key"])
    client_id: int = Field(default=0, description="the client the ticket is opened for; 0: none (internal)")
    contact_id: int = Field(default=0, description="the client contact named on the ticket; 0: none")
    priority: Literal["Low", "Medium", "High", "Urgent"] = Field(default="High", description="ticket priority")


class NotifyConfig(Model):
    """Where failures (and optionally successes) are announced."""

    urls: list[SecretRef | str] = Field(
        default_factory=list, description="apprise URLs, or secret references to them (URLs often hold passwords)",
        examples=[["mailtos://user:pass@mail.example?to=ops@example.com", "env:SAFEHOLD_SLACK_URL"]])
    on_success: bool = Field(default=False, description="announce every successful run too, not only failures")
    on_recovery: bool = Field(default=True, description="announce the first success after a failure")
    itop: ItopTicketConfig | None = Field(default=None, description="open one iTop ticket per outage (REST/JSON "
                                                                    "core/create); unset: no ticket")
    itflow: ItflowTicketConfig | None = Field(default=None, description="open one ITFlow ticket per outage "
                                                                        "(API v1 tickets/create); unset: no ticket")


class ExportConfig(Model):
    """Encryption for portable exports (`.age`)."""

    recipients: list[str] = Field(default_factory=list, description="age public keys an export is encrypted to",
                                  examples=[["age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p"]])
    passphrase: SecretRef | None = Field(default=None, description="a passphrase to encrypt exports with instead "
                                                                   "of recipients, as a secret reference",
                                         examples=["file:/etc/safehold/export.pass"])
    identity: SecretRef | None = Field(default=None, description="an age identity file for reading exports "
                                                                 "(--from-file)",
                                       examples=["file:/etc/safehold/export.key"])

