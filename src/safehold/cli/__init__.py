"""Command line: parse, call one action, print its result, set the exit code. Nothing else.

Each module of this package registers its commands on `app` when it is imported here, so every command
imports every action. Libraries only some commands use and that take tens of milliseconds to import
(requests, pycryptodome, prometheus_client, apprise) are therefore imported inside the functions that
use them: a nightly run of a small instance takes a few seconds, and Python's start is part of it.
"""

from __future__ import annotations

import importlib
import sys

import typer

try:  # Typer ≥0.20 carries its own copy of click; its exceptions are not click's
    from typer._click import exceptions as click_errors
except ImportError:  # pragma: no cover - older Typer on plain click
    from click import exceptions as click_errors  # type: ignore[no-redef]
from safehold.cli.common import app, print_failure
from safehold.errors import EXIT_FAILED, EXIT_USAGE

__all__ = ["app", "main"]

# Importing a module registers its commands on `app`; --help lists them in this order.
for _commands in ("points", "restore", "operations", "keys", "users"):
    importlib.import_module(f"safehold.cli.{_commands}")


def _command_path() -> str:
    """`safehold backup` from argv, for an error click raised without its context (a missing option value)."""
    words, command = ["safehold"], typer.main.get_command(app)
    for token in sys.argv[1:]:
        commands = getattr(command, "commands", {})
        if token not in commands:
            break
        words.append(token)
        command = commands[token]
    return " ".join(words)


def main() -> None:
    """Console-script entry point: usage mistakes end as one line (or one JSON object), exit 2."""
    json_out = "--json" in sys.argv[1:]
    try:
        code = app(standalone_mode=False)
    except click_errors.NoArgsIsHelpError as exc:  # bare `safehold` or a group: the help is the answer
        exc.show()
        sys.exit(EXIT_USAGE)
    except click_errors.ClickException as exc:  # Typer would draw a box around it; a script wants one line
        command = exc.ctx.command_path if isinstance(exc, click_errors.UsageError) and exc.ctx else _command_path()
        print_failure(json_out, exc.format_message().rstrip("."), f"see `{command} --help`")
        sys.exit(EXIT_USAGE if isinstance(exc, click_errors.UsageError) else exc.exit_code)
    except typer.Abort:  # input ended outside an action (an action reports its own)
        print_failure(json_out, "input ended before the command could start", "nothing was changed")
        sys.exit(EXIT_FAILED)
    sys.exit(code if isinstance(code, int) else 0)
