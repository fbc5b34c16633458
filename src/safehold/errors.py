"""Errors a user can cause or fix, each with one line that says what happened and what to do."""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_PARTIAL = 3


def os_reason(exc: OSError) -> str:
    """What an OSError says, as the tail of an error line: "no space left on device"."""
    return (exc.strerror or str(exc)).lower()


class SafeholdError(Exception):
    """An error reported to the user as one line: what happened, then what to do."""

    exit_code = EXIT_FAILED

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.line()

    def line(self) -> str:
        """The single line shown to the user."""
        return f"{self.message} — {self.hint}" if self.hint else self.message


class ConfigError(SafeholdError):
    """Bad or missing configuration (exit 2)."""

    exit_code = EXIT_USAGE


class UnknownPoint(SafeholdError):
    """A run id the user gave names no point, or several (a typo, not a failure: exit 2)."""

    exit_code = EXIT_USAGE


class AmbiguousPoint(UnknownPoint):
    """A run id prefix the user gave matches several points."""


class RepositoryError(SafeholdError):
    """The restic repository is unreachable, locked, corrupt or the password is wrong."""


class NoPoints(RepositoryError):
    """An instance has no recovery point in a repository yet."""


class DatabaseError(SafeholdError):
    """A database could not be read or written."""

    code = 0  # the server's error number when the server refused (1049: no such database), else 0


class RestoreRefused(SafeholdError):
    """A restore would overwrite live data or mismatch versions; --force overrides."""

    exit_code = EXIT_FAILED


class PartialFailure(SafeholdError):
    """Some instances or repository copies failed while others succeeded (exit 3)."""

    exit_code = EXIT_PARTIAL


class Stopped(BaseException):
    """safehold was asked to stop (SIGTERM, e.g. a service timeout). Not an Exception, so no step that
    handles errors (one instance of several, one notification) swallows it and carries on; every
    `finally` on the way out runs, so temporary files and database connections are cleaned up."""

    def __init__(self, signal_name: str) -> None:
        super().__init__(signal_name)
        self.signal_name = signal_name

    def line(self) -> str:
        """The single line shown to the user (and recorded as the run's error)."""
        return f"stopped by {self.signal_name} — the last complete recovery point is untouched"
