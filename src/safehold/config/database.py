"""The database logins of an instance: its own databases, an admin login for restores, a drill server."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from safehold.config.base import Model, SecretRef, check_absolute, check_secret


class DatabaseConfig(Model):
    """A database the instance owns (generic profile) or an override for a profile's database."""

    engine: Literal["mariadb", "postgres", "sqlite"]
    host: str = "127.0.0.1"
    port: int | None = Field(default=None, ge=1, le=65535)
    socket: str | None = None
    user: str | None = None
    password: SecretRef | None = None
    names: list[str] = Field(default_factory=list)
    path: str | None = Field(default=None, description="SQLite database file")
    method: Literal["auto", "parallel", "mariadb-dump"] = "auto"
    table_prefix: str | None = None
    workers: int | None = Field(default=None, ge=1, le=64)

    _secret_password = field_validator("password")(check_secret)
    _absolute_path = field_validator("path")(check_absolute)

    @field_validator("names")
    @classmethod
    def _names_once(cls, value: list[str]) -> list[str]:
        if twice := sorted({n for n in value if value.count(n) > 1}):
            raise ValueError(f"lists {', '.join(twice)} more than once")
        return value

    @model_validator(mode="after")
    def _shape(self) -> DatabaseConfig:
        if self.engine == "sqlite" and not self.path:
            raise ValueError("an sqlite database needs path = \"/path/to/file.db\"")
        if self.engine != "sqlite" and not self.names:
            raise ValueError(f"a {self.engine} database needs names = [\"dbname\", ...]")
        return self



class ScratchServerConfig(Model):
    """A MariaDB server where `safehold drill` may create its scratch databases (instead of the instance's own)."""

    engine: Literal["mariadb"] = "mariadb"
    host: str = "127.0.0.1"
    port: int | None = Field(default=None, ge=1, le=65535)
    socket: str | None = None
    user: str | None = None
    password: SecretRef | None = None

    _secret_password = field_validator("password")(check_secret)


class DbAdminConfig(Model):
    """An administrative MariaDB login that re-creates the app's missing database account and databases on
    restore (default: root over the local server's Unix socket without a password, i.e. unix_socket auth)."""

    user: str = "root"
    password: SecretRef | None = None
    host: str = Field(default="localhost", description="localhost = the Unix socket, as for the app's own host")
    port: int | None = Field(default=None, ge=1, le=65535)
    socket: str | None = None

    _secret_password = field_validator("password")(check_secret)

