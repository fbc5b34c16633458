"""The database logins of an instance: its own databases, an admin login for restores, a drill server."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from safehold.config.base import Model, SecretRef, check_absolute


def port_field() -> Any:
    """The TCP port of a database server (unset: the engine's default)."""
    return Field(default=None, ge=1, le=65535, description="TCP port; unset: the engine's default (MariaDB 3306, "
                                                           "PostgreSQL 5432)", examples=[3306])


def socket_field() -> Any:
    """The Unix socket of a database server, used instead of host and port."""
    return Field(default=None, description="Unix socket file, used instead of host and port; unset: host and port",
                 examples=["/run/mysqld/mysqld.sock"])


def password_field(example: str) -> Any:
    """A database password, as a secret reference (unset: no password, e.g. unix_socket or peer login)."""
    return Field(default=None, description="the password, as a secret reference; unset: log in without one "
                                           "(unix_socket or peer authentication)", examples=[example])


class DatabaseConfig(Model):
    """A database the instance owns (generic profile) or an override for a profile's database."""

    engine: Literal["mariadb", "postgres", "sqlite"] = Field(description="the database server's kind",
                                                             examples=["mariadb"])
    host: str = Field(default="127.0.0.1", description="server host name or address")
    port: int | None = port_field()
    socket: str | None = socket_field()
    user: str | None = Field(default=None, description="login name; unset: root for MariaDB, postgres for "
                                                       "PostgreSQL", examples=["backup"])
    password: SecretRef | None = password_field("env:APP_DB_PASSWORD")
    names: list[str] = Field(default_factory=list, description="the databases to keep (MariaDB, PostgreSQL; "
                                                               "required for them)", examples=[["app"]])
    path: str | None = Field(default=None, description="sqlite: the database file (required for sqlite)",
                             examples=["/srv/app/app.db"])
    method: Literal["auto", "parallel", "mariadb-dump", "physical"] = Field(
        default="auto", description="MariaDB dump method: parallel dumps several tables at once, mariadb-dump is "
                                    "one plain stream; auto picks parallel; physical copies the InnoDB files with "
                                    "mariadb-backup and restores them by IMPORT TABLESPACE (faster restores of big "
                                    "databases, more repository growth each night; only on the database host)")
    table_prefix: str | None = Field(
        default=None, description="keep only the tables whose names begin with this (an app sharing its database "
                                  "with others); unset: the whole database", examples=["app_"])
    workers: int | None = Field(default=None, ge=1, le=64,
                                description="tables the parallel method dumps and loads at once; unset: one per "
                                            "CPU, at least 2", examples=[4])

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

    engine: Literal["mariadb"] = Field(default="mariadb", description="the scratch server's kind")
    host: str = Field(default="127.0.0.1", description="server host name or address")
    port: int | None = port_field()
    socket: str | None = socket_field()
    user: str | None = Field(default=None, description="a login allowed to create and drop databases named like "
                                                       "settings.drill_prefix; unset: root",
                             examples=["safehold_drill"])
    password: SecretRef | None = password_field("env:DRILL_DB_PASSWORD")


class DbAdminConfig(Model):
    """An administrative MariaDB login that re-creates the app's missing database account and databases on
    restore (default: root over the local server's Unix socket without a password, i.e. unix_socket auth)."""

    user: str = Field(default="root", description="an administrative login (CREATE USER, GRANT, CREATE DATABASE)")
    password: SecretRef | None = password_field("env:DB_ADMIN_PASSWORD")
    host: str = Field(default="localhost", description="server host; localhost = the Unix socket, as for the app's "
                                                       "own host")
    port: int | None = port_field()
    socket: str | None = socket_field()

