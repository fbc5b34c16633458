"""The whole file: finding it, reading it, and errors that name the file, the key and what is allowed."""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path

from pydantic import Field, ValidationError, model_validator

from safehold.config.base import Model
from safehold.config.fields import keys, locate, table_of
from safehold.config.instance import InstanceConfig
from safehold.config.notify import ExportConfig, NotifyConfig
from safehold.config.repository import RepositoryConfig
from safehold.config.web import Settings, WebConfig
from safehold.errors import ConfigError

DEFAULT_PATHS = (Path("safehold.toml"), Path("/etc/safehold/safehold.toml"))
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"


def _nul_in(data: object, where: str = "") -> str | None:
    """The key path of the first string value of the config holding a NUL byte (no path, name or secret
    reference can), or None."""
    if isinstance(data, str):
        return where if "\0" in data else None
    items = data.items() if isinstance(data, dict) else enumerate(data) if isinstance(data, list) else ()
    for key, value in items:
        if (found := _nul_in(value, f"{where}.{key}" if where else str(key))) is not None:
            return found
    return None


class Config(Model):
    """The whole validated configuration file."""

    settings: Settings = Field(default_factory=Settings, description="process-wide settings")
    repositories: dict[str, RepositoryConfig] = Field(
        default_factory=dict, description="restic repositories, each under a name the instances refer to",
        json_schema_extra={"name_example": "main"})
    instances: dict[str, InstanceConfig] = Field(
        default_factory=dict, description="the applications to protect, each under its name (letters, digits, "
                                          "_ . -; used in commands such as `safehold backup NAME`)",
        json_schema_extra={"name_example": "myapp"})
    notify: NotifyConfig = Field(default_factory=NotifyConfig, description="where failures (and with on_success, "
                                                                          "every run) are announced")
    export: ExportConfig = Field(default_factory=ExportConfig, description="encryption of portable exports "
                                                                          "(`safehold export`)")
    web: WebConfig = Field(default_factory=WebConfig, description="`safehold serve`: the admin console (see "
                                                                 "docs/web.md)")
    # Where the file was read from: set by parse(), never a key of the file.
    source: Path | None = Field(default=None, exclude=True)

    @model_validator(mode="after")
    def _references(self) -> Config:
        for name, instance in self.instances.items():
            if not re.match(NAME_PATTERN, name):
                raise ValueError(f"instance name {name!r} must match {NAME_PATTERN}")
            for repo in instance.repositories:
                if repo not in self.repositories:
                    known = ", ".join(sorted(self.repositories)) or "none defined"
                    raise ValueError(
                        f"instances.{name}.repositories names {repo!r}, not a [repositories.*] ({known})"
                    )
        return self

    @property
    def state_dir(self) -> Path:
        """Where run history, locks and escrowed keys live (0700)."""
        if self.settings.state_dir:
            return Path(self.settings.state_dir).expanduser()
        if os.geteuid() == 0:
            return Path("/var/lib/safehold")
        return Path(os.environ.get("XDG_STATE_HOME", "~/.local/state")).expanduser() / "safehold"

    def own_folders(self) -> dict[str, Path]:
        """safehold's own folders on this host (local repositories, the state folder), by what they are."""
        folders = {f"repository {name}": path for name, repo in self.repositories.items()
                   if (path := repo.local_path()) is not None}
        folders["the state folder"] = self.state_dir
        return folders

    def instance(self, name: str) -> InstanceConfig:
        """The instance called `name`, or a ConfigError listing the known ones."""
        if name not in self.instances:
            known = ", ".join(sorted(self.instances)) or "none"
            raise ConfigError(f"no instance {name!r} in {self.source}", f"known instances: {known}")
        return self.instances[name]

    def select(self, name: str | None) -> dict[str, InstanceConfig]:
        """One named instance, or all of them when `name` is None."""
        if name is None:
            if not self.instances:
                raise ConfigError(f"{self.source} defines no [instances.*]", "add one (see safehold init)")
            return dict(self.instances)
        return {name: self.instance(name)}


def find_config(explicit: Path | None) -> Path:
    """--config, then $SAFEHOLD_CONFIG, then ./safehold.toml, then /etc/safehold/safehold.toml."""
    if explicit is not None:
        candidates: tuple[Path, ...] = (explicit,)
    elif os.environ.get("SAFEHOLD_CONFIG"):
        candidates = (Path(os.environ["SAFEHOLD_CONFIG"]),)
    else:
        candidates = DEFAULT_PATHS
    for path in candidates:
        if path.is_file():
            return path
    raise ConfigError(
        f"no config file found (looked at {', '.join(str(p) for p in candidates)})",
        "run `safehold init` to write one, or `safehold demo` to try safehold without one",
    )


def _format_loc(loc: tuple[object, ...]) -> str:
    return ".".join(str(part) for part in loc if not str(part).startswith("function-after"))


def _hint(loc: tuple[object, ...], kind: str) -> str:
    """What the key an error names is for (its description in the model), or the keys its table allows."""
    table, field = locate(Config, loc)
    if kind == "extra_forbidden":
        return f"keys allowed here: {', '.join(keys(table))}"
    if field is None or table_of(field) is not None or not field.description:
        return "fix the config file"  # a table's own rule, whose message says what to change
    name = next(name for name, known in keys(table).items() if known is field)
    return f"{name}: {field.description}"


def parse(text: str, source: Path) -> Config:
    """Validate TOML text; errors name the file, the key path and what is allowed."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}", "fix the syntax at that line") from None
    if (key := _nul_in(data)) is not None:
        raise ConfigError(f"{source}: {key}: holds a NUL byte (\\u0000), which no path, name or secret reference "
                          "can", "fix the config file")
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = _format_loc(first["loc"])
        msg = first["msg"].removeprefix("Value error, ")
        if first["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling; `safehold init` writes every allowed key)"
        where = f"{source}: {loc}: " if loc else f"{source}: "
        more = f" (+{len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
        raise ConfigError(f"{where}{msg}{more}", _hint(first["loc"], first["type"])) from None
    config.source = source
    return config


def load(explicit: Path | None = None) -> Config:
    """Find, read and validate the config file."""
    path = find_config(explicit)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}", "check the path and its permissions") from None
    return parse(text, path)
