"""Read a `.env` file (Laravel's: the format vlucas/phpdotenv reads) without running the application.

The file is parsed with python-dotenv's parser. `${VAR}` inside an unquoted or double-quoted value is
expanded by Laravel at runtime: such a value is refused when read (naming the key and line), never
guessed. A `KEY_FILE` entry (the Docker secrets form of `snipe:docker/startup.sh` `file_env`) is read
from the file it names. Laravel's `env()` spellings are honoured: `null`/`(null)` mean "not set",
`empty`/`(empty)` an empty string.
"""

from __future__ import annotations

import io
from pathlib import Path

from dotenv.parser import parse_stream

from safehold.errors import ConfigError

HINT = ("safehold reads .env files as plain values and never runs the app; write the value out, or declare the "
        "database in safehold.toml")


class Env:
    """The values of one `.env` file; a value Laravel would expand at runtime is refused when read."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.values: dict[str, str] = {}
        self.expanded: dict[str, int] = {}  # key → line of a value holding ${VAR}
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read {path}: {exc.strerror}", "check the path and its permissions") from None
        line = 1
        for binding in parse_stream(io.StringIO(text)):
            if binding.key is not None and binding.value is not None:
                self.values[binding.key] = binding.value
                raw = binding.original.string.partition("=")[2].lstrip()
                if "${" in binding.value and not raw.startswith("'"):
                    self.expanded[binding.key] = line
                else:
                    self.expanded.pop(binding.key, None)
            line += binding.original.string.count("\n")

    def get(self, key: str, default: str | None = None) -> str | None:
        """`KEY`, or the content of the file `KEY_FILE` names (Docker secrets), else `default`."""
        if key in self.expanded:
            raise ConfigError(f"{self.path} line {self.expanded[key]}: {key} refers to another variable (${{…}}), "
                              "which Laravel expands at runtime", HINT)
        if key in self.values:
            value = self.values[key]
            # Laravel's env() helper: (null) / null mean "not set", (empty) / empty an empty string.
            if value.lower() in ("null", "(null)"):
                return default
            return "" if value.lower() in ("empty", "(empty)") else value
        if (named := self.values.get(f"{key}_FILE")) is not None:
            try:
                return Path(named).read_text().rstrip("\r\n")
            except OSError as exc:
                raise ConfigError(f"{self.path}: {key}_FILE names {named}, which cannot be read ({exc.strerror})",
                                  "fix the path or its permissions") from None
        return default
