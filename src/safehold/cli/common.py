"""What every command shares: the Typer app, common options, the consoles, and how an action is run
and its result or failure printed (one line or one JSON document) with its exit code."""

from __future__ import annotations

import json
import logging
import os
import re
import select
import signal
import sys
import tempfile
import traceback
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich import box
from rich.table import Table
from rich.text import Text

from safehold import config as config_module
from safehold.actions.common import dumps
from safehold.errors import EXIT_FAILED, EXIT_USAGE, SafeholdError, Stopped
from safehold.output import Reporter, literal_console

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Consistent, encrypted, verified recovery points for self-hosted IT apps.")


ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="config file (default: $SAFEHOLD_CONFIG, "
                                                 "./safehold.toml, /etc/safehold/safehold.toml)")]
JsonOpt = Annotated[bool, typer.Option("--json", help="machine-readable result on stdout")]
InstanceArg = Annotated[str | None, typer.Argument(help="instance name (default: all)")]


# Strings print as they are; safehold's own styles are the (text, style) parts of a Text.
# Piped or mailed (cron) output is read later, not in an 80-column window: tables keep every column.
out = literal_console(**({} if sys.stdout.isatty() or "COLUMNS" in os.environ else {"width": 200}))
err = literal_console(stderr=True)


def run_action(json_out: bool, action: Callable[[Reporter], Any], render: Callable[[Any], None],
               exit_code: Callable[[Any], int] = lambda _: 0, streamed: bool = False) -> None:
    """Run an action with a reporter, print its result, and exit with the right code.

    `streamed`: the action printed its JSON as it came (a listing too long to hold): not printed again.
    """
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    _stop_on_sigterm()
    reporter = Reporter("json" if json_out else None)
    try:
        result = action(reporter)
    except SafeholdError as exc:
        fail(reporter, json_out, exc.message, exc.hint, exc.exit_code)
    except OSError as exc:  # a path the actions did not expect to fail: still one line, never a traceback
        if isinstance(exc, BrokenPipeError) and _reader_gone():  # `safehold ls app -r | head` has its lines
            _stdout_closed(reporter)
        message = (exc.strerror or str(exc)) + (f": {exc.filename}" if exc.filename else "")
        fail(reporter, json_out, message, "check that path (space, permissions)", 1)
    except typer.Abort:  # a prompt got end of input (no terminal, empty stdin) or Ctrl-C
        err.print()  # the prompt left the line open
        fail(reporter, json_out, "no answer to the prompt (input ended or was interrupted)",
             "run it in a terminal, or give the value as an option (--password-ref env:NAME or file:PATH)",
             EXIT_USAGE)
    except KeyboardInterrupt:
        if json_out:  # a script reads stdout: it gets its one JSON document, as for SIGTERM
            fail(reporter, json_out, "interrupted — the last complete recovery point is untouched", None, 130)
        reporter.close()
        err.print(Text.assemble(("interrupted", "bold red"), ": the last complete recovery point is untouched"))
        raise typer.Exit(130) from None
    except Stopped as exc:
        fail(reporter, json_out, exc.line(), None, 128 + signal.Signals[exc.signal_name].value)
    except Exception as exc:  # noqa: BLE001 - a bug: one line for the admin, the traceback kept for the report
        fail(reporter, json_out, f"internal error ({type(exc).__name__}: {exc})",
             f"this is a bug in safehold; the last complete recovery point is untouched; please report it "
             f"with the traceback in {_keep_traceback()}", EXIT_FAILED)
    reporter.close()
    try:
        if not json_out:
            render(result)
        elif not streamed:
            print(dumps(result))
    except BrokenPipeError:
        if not _reader_gone():
            raise
        _stdout_closed(reporter)
    code = exit_code(result)
    if code:
        raise typer.Exit(code)


def _reader_gone() -> bool:
    """Whether stdout is a pipe whose reader closed it (`| head` read what it wanted), not some other pipe
    of the action's that broke."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (OSError, ValueError):
        return False


def _stdout_closed(reporter: Reporter) -> NoReturn:
    """End quietly with SIGPIPE's code, as `ls | head` does: nothing failed that the admin must look at."""
    reporter.close()
    # Python flushes stdout once more at exit and would complain about the closed pipe.
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    raise typer.Exit(128 + signal.SIGPIPE) from None


def _keep_traceback() -> str:
    """Write the current exception's traceback to a private file and return its path."""
    fd, path = tempfile.mkstemp(prefix="safehold-crash-", suffix=".txt")  # mode 0600
    with os.fdopen(fd, "w") as handle:
        traceback.print_exc(file=handle)
    return path


def fail(reporter: Reporter | None, json_out: bool, message: str, hint: str | None, code: int) -> NoReturn:
    """Print a failure as one line (or a JSON object with `hint` unless it is None) and exit with `code`."""
    if reporter is not None:
        reporter.close()
    print_failure(json_out, message, hint)
    raise typer.Exit(code) from None


class _OpenDocument:
    """Whether a JSON object is being printed piece by piece (stream_json), so a failure closes it."""

    count: int | None = None


def stream_json(head: dict[str, object], key: str, items: Iterable[object]) -> int:
    """Print `head` and then `items` under `key` as one JSON object, item by item as they come (a listing
    may not fit in memory); returns how many items there were.

    A failure part-way ends the same object with `"ok": false` and the error (print_failure), so a script
    still reads one document and sees that the list is cut short.
    """
    fields = "".join(f"{json.dumps(name)}: {json.dumps(value, default=str)}, " for name, value in head.items())
    sys.stdout.write("{" + fields + json.dumps(key) + ": [")
    _OpenDocument.count = 0
    for item in items:
        sys.stdout.write(("," if _OpenDocument.count else "") + "\n  " + json.dumps(item, default=str))
        _OpenDocument.count += 1
    count, _OpenDocument.count = _OpenDocument.count, None
    sys.stdout.write(f'\n], "count": {count}, "ok": true}}\n')
    return count


def print_failure(json_out: bool, message: str, hint: str | None) -> None:
    """`error: MESSAGE — HINT` on stderr, or the same as a JSON object on stdout."""
    failure = {"ok": False, "error": message, **({"hint": hint} if hint is not None else {})}
    if json_out and _OpenDocument.count is not None:
        count, _OpenDocument.count = _OpenDocument.count, None
        print(f'\n], "count": {count}, ' + dumps(failure)[1:])
    elif json_out:
        print(dumps(failure))
    else:
        err.print(Text.assemble(("error:", "bold red"), f" {message} — {hint}" if hint else f" {message}"),
                  soft_wrap=True)


def problem_line(text: str) -> Text:
    """One problem a verify or drill found, as printed."""
    return Text.assemble(("problem:", "red"), f" {text}")


def _stop_on_sigterm() -> None:
    """SIGTERM raises Stopped, so the way out runs every cleanup (the default kills without any).

    Left alone where a handler is set already (`serve` hands SIGTERM to uvicorn).
    """
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:

        def stop(signum: int, frame: object) -> None:
            raise Stopped(signal.Signals(signum).name)

        signal.signal(signal.SIGTERM, stop)


def load_config(path: Path | None) -> config_module.Config:
    """The config at --config PATH (or where find_config looks)."""
    return config_module.load(path)


def print_table(title: str, columns: list[str], rows: list[list[Any]]) -> None:
    """A titled table on stdout whose short columns (ids, times, numbers) are never cut."""
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD)
    cells = [["" if v is None else str(v) for v in row] for row in rows]
    for index, column in enumerate(columns):
        values = [row[index] for row in cells]
        # Run ids, names, times and numbers are copied into the next command: never cut to "20261…".
        whole = bool(values) and all(len(v) <= 40 for v in values)
        table.add_column(column, no_wrap=whole, min_width=max(map(len, values)) if whole else None)
    for row in cells:
        table.add_row(*row)
    out.print(table)


# Characters that would break a listing's lines or steer the terminal (a file name may hold any of them).
CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def shown(text: str) -> str:
    """Text as printed on one line: control characters (a newline in a file name) escaped."""
    return CONTROL_CHARACTERS.sub(lambda match: f"\\x{ord(match[0]):02x}", text)
