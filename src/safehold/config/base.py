"""What every config section shares: the strict base model, secret references, path checks."""

from __future__ import annotations

import os
import re
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict

SECRET_PATTERN = r"^(env:[A-Za-z_][A-Za-z0-9_]*|file:.+)$"


class Model(BaseModel):
    """Base for config sections: unknown keys are errors, so typos do not pass silently."""

    model_config = ConfigDict(extra="forbid", frozen=False)


def check_secret(value: str) -> str:
    """A secret reference as it is; an error (that never shows the value) for anything else."""
    if not re.match(SECRET_PATTERN, value):
        raise ValueError('must be a secret reference "env:NAME" or "file:/path" (never the secret itself)')
    return value


SECRET_CHECK = AfterValidator(check_secret)
SecretRef = Annotated[str, SECRET_CHECK]  # "env:NAME" or "file:/path", resolved only where it is used


def check_absolute(value: str | list[str] | None) -> str | list[str] | None:
    # Runs start from cron, systemd and the web console, each in another working folder.
    for path in [value] if isinstance(value, str) else value or []:
        if problem := impossible_path(path):
            raise ValueError(problem)
        if not os.path.isabs(os.path.expanduser(path)):
            raise ValueError(f"{path!r} is a relative path; give the full path (starting with /)")
    return value


NAME_MAX, PATH_MAX = 255, 4095  # Linux: bytes in one name, in a whole path


def impossible_path(path: str) -> str | None:
    """Why no file system can hold `path` (a NUL byte, a name or path too long), or None."""
    if "\0" in path:
        return f"{path!r} holds a NUL byte, which no path can"
    if len(path.encode(errors="surrogateescape")) > PATH_MAX:
        return f"{path[:40]!r}... is longer than any path ({PATH_MAX} bytes)"
    if any(len(part.encode(errors="surrogateescape")) > NAME_MAX for part in path.split("/")):
        return f"{path!r} has a name longer than {NAME_MAX} bytes, which no file system holds"
    return None


