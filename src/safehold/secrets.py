"""Secret references (`env:NAME`, `file:PATH`) and the value type that never prints itself."""

from __future__ import annotations

import contextlib
import os
import re
import stat
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from safehold.errors import ConfigError

# Shorter secrets are only matched as whole words: a one-letter password must not turn every
# path holding that letter into a "secret in argv" or every "x" in an error into ***.
WHOLE_WORD_BELOW = 8


def _pattern(value: str) -> re.Pattern[str]:
    escaped = re.escape(value)
    if len(value) >= WHOLE_WORD_BELOW:
        return re.compile(escaped)
    return re.compile(rf"(?<![0-9A-Za-z]){escaped}(?![0-9A-Za-z])")


def appears_in(value: str, text: str) -> bool:
    """Whether the secret `value` shows in `text` (whole words only for short values)."""
    return bool(value) and _pattern(value).search(text) is not None


def mask(text: str, values: Iterable[str]) -> str:
    """`text` with every secret value in `values` replaced by *** (whole words only for short values)."""
    for value in values:
        if value:
            text = _pattern(value).sub("***", text)
    return text


def _hide_password(match: re.Match[str]) -> str:
    user, colon, _ = match[1].partition(":")
    return f"//{user}{':***' if colon else ''}@"


def mask_url(url: str) -> str:
    """A URL as safehold shows it: the password of `user:password@` hidden, the user kept.

    A user name is no secret (it is the SSH login a reader needs to check, `sftp:backup@nas:/srv`
    names it in the clear anyway); a password in a URL (rest:, a notification URL) is.
    """
    # The user info runs to the authority's last @, as Go's URL parser (restic) reads it: a password may
    # hold an @; the user name ends at the first colon.
    return re.sub(r"//([^/?#\s]*)@", _hide_password, url)


class Secret:
    """A secret value: masked in repr/str so it cannot leak into logs or exceptions."""

    __slots__ = ("_value", "reference")

    def __init__(self, value: str, reference: str = "") -> None:
        self._value = value
        self.reference = reference

    def reveal(self) -> str:
        """The clear value; call only where it is handed to a file or a library, never to output."""
        return self._value

    def __repr__(self) -> str:
        return f"Secret({self.reference or '***'})"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def check_private_file(path: Path, what: str) -> None:
    """Refuse a secret file that is missing, a folder, or that others can read or write."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise ConfigError(
            f"{what}: secret file {path} does not exist", "create it with mode 0600 or fix the path"
        ) from None
    except PermissionError:
        raise ConfigError(f"{what}: secret file {path} is not readable", "check its owner") from None
    if stat.S_ISDIR(mode):  # before the mode check: chmod 600 would not make a folder a secret
        raise ConfigError(f"{what}: secret file {path} is a folder, not a file",
                          "point it at the file that holds the secret")
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            f"{what}: secret file {path} is readable by others (mode {stat.S_IMODE(mode):04o})",
            f"run: chmod 600 {path}",
        )


def resolve(reference: str, what: str) -> Secret:
    """Turn `env:NAME` or `file:PATH` into a Secret; `what` names the config key for errors."""
    if reference.startswith("env:"):
        name = reference[4:]
        if name not in os.environ:
            raise ConfigError(f"{what}: environment variable {name} is not set", f"export {name}=...")
        return Secret(os.environ[name], reference)
    if reference.startswith("file:"):
        path = Path(reference[5:]).expanduser()
        check_private_file(path, what)
        try:
            value = path.read_text(encoding="utf-8").rstrip("\r\n")
        except PermissionError:  # owned by another user: stat works, reading does not
            raise ConfigError(f"{what}: secret file {path} is not readable by this user",
                              "run safehold as the file's owner, or give the file to that user") from None
        except UnicodeDecodeError:
            raise ConfigError(f"{what}: secret file {path} is not UTF-8 text",
                              "write the secret into it as one line of text") from None
        if not value:
            raise ConfigError(f"{what}: secret file {path} is empty", "write the secret into it")
        return Secret(value, reference)
    raise ConfigError(
        f"{what}: secrets must be references, not values",
        'use "env:NAME" or "file:/path/to/0600-file"',
    )


def write_private(path: Path, data: str | bytes) -> None:
    """Write a file that only its owner can read (0600), created with that mode from the start."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    raw = data.encode() if isinstance(data, str) else data
    # Written aside and renamed: a kill or a full disk never leaves a truncated key or cache file.
    fd, partial = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)  # mode 0600
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(raw)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(partial, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(partial)
        raise


@contextlib.contextmanager
def secret_files(**secrets: Secret) -> Iterator[dict[str, Path]]:
    """Secrets as file paths (`/dev/fd/N`) for a child process's lifetime, never written to disk.

    Each secret lives in an anonymous in-memory file (memfd, mode 0600) that disappears with the
    last process holding it, so even a SIGKILLed run leaves no password file behind. The runner
    passes these descriptors to the children whose argv or environment name them.
    """
    fds: dict[str, int] = {}
    try:
        for name, secret in secrets.items():
            fd = os.memfd_create(f"safehold-{name}", os.MFD_CLOEXEC)
            os.fchmod(fd, 0o600)
            os.write(fd, (secret.reveal() + "\n").encode())
            fds[name] = fd
        yield {name: Path(f"/dev/fd/{fd}") for name, fd in fds.items()}
    finally:
        for fd in fds.values():
            os.close(fd)


@contextlib.contextmanager
def secret_text_file(name: str, text: str) -> Iterator[Path]:
    """Like secret_files, for a whole secret document (an option file, a pgpass file)."""
    with secret_files(**{name: Secret(text.rstrip("\n"))}) as paths:
        yield paths[name]
