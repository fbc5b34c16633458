"""Command line: parse, call one action, print its result, set the exit code. Nothing else."""

from __future__ import annotations

import enum
import json
import logging
import os
import re
import select
import signal
import sys
import tempfile
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich import box
from rich.table import Table
from rich.text import Text

from safehold import config as config_module

try:  # Typer ≥0.20 carries its own copy of click; its exceptions are not click's
    from typer._click import exceptions as click_errors
except ImportError:  # pragma: no cover - older Typer on plain click
    from click import exceptions as click_errors  # type: ignore[no-redef]
from safehold.actions.common import dumps
from safehold.errors import EXIT_FAILED, EXIT_PARTIAL, EXIT_USAGE, ConfigError, SafeholdError, Stopped
from safehold.output import Reporter, literal_console

if TYPE_CHECKING:
    from safehold.actions.browse import Listing

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


def _run(json_out: bool, action: Callable[[Reporter], Any], render: Callable[[Any], None],
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
        _fail(reporter, json_out, exc.message, exc.hint, exc.exit_code)
    except OSError as exc:  # a path the actions did not expect to fail: still one line, never a traceback
        if isinstance(exc, BrokenPipeError) and _reader_gone():  # `safehold ls app -r | head` has its lines
            _stdout_closed(reporter)
        message = (exc.strerror or str(exc)) + (f": {exc.filename}" if exc.filename else "")
        _fail(reporter, json_out, message, "check that path (space, permissions)", 1)
    except typer.Abort:  # a prompt got end of input (no terminal, empty stdin) or Ctrl-C
        err.print()  # the prompt left the line open
        _fail(reporter, json_out, "no answer to the prompt (input ended or was interrupted)",
              "run it in a terminal, or give the value as an option (--password-ref env:NAME or file:PATH)",
              EXIT_USAGE)
    except KeyboardInterrupt:
        if json_out:  # a script reads stdout: it gets its one JSON document, as for SIGTERM
            _fail(reporter, json_out, "interrupted — the last complete recovery point is untouched", None, 130)
        reporter.close()
        err.print(Text.assemble(("interrupted", "bold red"), ": the last complete recovery point is untouched"))
        raise typer.Exit(130) from None
    except Stopped as exc:
        _fail(reporter, json_out, exc.line(), None, 128 + signal.Signals[exc.signal_name].value)
    except Exception as exc:  # noqa: BLE001 - a bug: one line for the admin, the traceback kept for the report
        _fail(reporter, json_out, f"internal error ({type(exc).__name__}: {exc})",
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


def _fail(reporter: Reporter | None, json_out: bool, message: str, hint: str | None, code: int) -> NoReturn:
    """Print a failure as one line (or a JSON object with `hint` unless it is None) and exit with `code`."""
    if reporter is not None:
        reporter.close()
    _print_failure(json_out, message, hint)
    raise typer.Exit(code) from None


def _print_failure(json_out: bool, message: str, hint: str | None) -> None:
    if json_out:
        print(dumps({"ok": False, "error": message, **({"hint": hint} if hint is not None else {})}))
    else:
        err.print(Text.assemble(("error:", "bold red"), f" {message} — {hint}" if hint else f" {message}"),
                  soft_wrap=True)


def _problem(text: str) -> Text:
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


def _load(path: Path | None) -> config_module.Config:
    return config_module.load(path)


def _table(title: str, columns: list[str], rows: list[list[Any]]) -> None:
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


@app.command()
def init(
    app_name: Annotated[str, typer.Option("--app", help="itflow | idoit | itop | generic")] = "generic",
    root: Annotated[Path | None, typer.Option(help="install root of the application")] = None,
    repo: Annotated[str | None, typer.Option(help="restic repository URL or local path")] = None,
    output: Annotated[Path, typer.Option("--output", "-o", help="file to write")] = Path("safehold.toml"),
    force: Annotated[bool, typer.Option(help="overwrite an existing file")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Write a commented safehold.toml to start from."""
    from safehold.actions.init import write_example

    _run(json_out, lambda r: write_example(output, app_name, root, repo, force),
         lambda res: out.print(f"wrote {res['path']} — edit it, then run `safehold backup`"))


@app.command()
def demo(
    workdir: Annotated[Path, typer.Option(help="working folder (recreated)")] = Path("safehold-demo"),
    json_out: JsonOpt = False,
) -> None:
    """Build a demo instance, back it up, damage it, restore it and prove everything came back."""
    from safehold.actions.demo import run_demo

    def render(res: dict[str, Any]) -> None:
        _table("demo: what was checked", ["check", "result"], [[c["check"], "ok" if c["ok"] else "FAILED"]
                                                               for c in res["checks"]])
        if res["ok"]:
            out.print(Text.assemble(("demo passed", "bold green"),
                                    f": backed up, damaged, restored and verified in {res['seconds']} s. "
                                    f"Files are in {res['workdir']} (config: {res['config']})."))
        else:
            out.print(Text.assemble(("demo FAILED", "bold red"), ": see the table above"))

    _run(json_out, lambda r: run_demo(workdir, r), render, lambda res: 0 if res["ok"] else EXIT_FAILED)


def _kept_until(row: dict[str, Any]) -> str | None:
    """`kept until DATE` while a point's --keep-days holds it, else None (then it is an ordinary point)."""
    until = row["keep_until"]
    return f"kept until {until:%Y-%m-%d}" if until and until > datetime.now(UTC) else None


@app.command()
def backup(instance: InstanceArg = None,
           note: Annotated[str | None, typer.Option(help="why the point is made (one line, at most 200 "
                                                         "characters), kept in its manifest")] = None,
           keep_days: Annotated[int | None, typer.Option(help="prune keeps the point N days (at least 1), "
                                                              "whatever the retention rules say")] = None,
           config: ConfigOpt = None, json_out: JsonOpt = False) -> None:
    """Make one recovery point of an instance (all instances when none is named)."""
    from safehold.actions.backup import backup as do_backup

    def render(results: list[dict[str, Any]]) -> None:
        for res in results:
            if res["result"] == "ok":
                marks = "".join(f" ({m})" for m in (res["note"], _kept_until(res)) if m)
                out.print(Text.assemble(("ok", "green"), f" {res['instance']}: point {res['run_id']} in "
                                        f"{res['repository']}, {res['bytes_added'] / 1e6:.2f} MB added, "
                                        f"{res['seconds']} s{marks}"), soft_wrap=True)
            elif res["result"] == "partial":
                err.print(Text.assemble(("partial:", "bold yellow"), f" {res['instance']}: {res['error']}"),
                          soft_wrap=True)
            else:
                err.print(Text.assemble(("error:", "bold red"), f" {res['instance']}: {res['error']}"), soft_wrap=True)

    def code(results: list[dict[str, Any]]) -> int:
        failed = [r for r in results if r["result"] != "ok"]
        partial = [r for r in results if r["result"] == "partial"]
        if failed and len(failed) == len(results) and not partial:
            return EXIT_FAILED
        return EXIT_PARTIAL if failed else 0

    _run(json_out, lambda r: do_backup(_load(config), instance, r, note, keep_days), render, code)


@app.command("list")
def list_cmd(instance: InstanceArg = None, config: ConfigOpt = None, json_out: JsonOpt = False) -> None:
    """Recovery points, newest first."""
    from safehold.actions.points import list_points

    def render(rows: list[dict[str, Any]]) -> None:
        _table("recovery points", ["instance", "repository", "run id", "started (UTC)", "s", "DBs", "files", "MB",
                                   "app version", "kind"],
               [[r["instance"], r["repository"], r["run_id"], str(r["started"])[:19], r["seconds"] and
                 round(r["seconds"], 1), r["databases"], r["files"], f"{r['bytes'] / 1e6:.1f}", r["app_version"],
                 "safety" if r["safety_point"] else "kept" if _kept_until(r) else ""] for r in rows])
        # Notes go below the table, one line per point (copies share it): a column would cut them off.
        for run_id, row in {r["run_id"]: r for r in rows if r["note"] or _kept_until(r)}.items():
            out.print(f"{run_id}: {'; '.join(m for m in (row['note'], _kept_until(row)) if m)}", soft_wrap=True)

    def action(r: Reporter) -> list[dict[str, Any]]:
        from safehold.actions.replicate import host_only_warning

        cfg = _load(config)
        for name in cfg.select(instance):
            if warning := host_only_warning(cfg, name):
                r.warn(warning)
        unreachable: list[str] = []
        rows = list_points(cfg, instance, unreachable)
        for problem in unreachable:
            r.warn(f"{problem} (its points are not listed)")
        return rows

    _run(json_out, action, render)


@app.command()
def show(run: Annotated[str, typer.Argument(help="run id (a unique prefix is enough) or latest")],
         instance: Annotated[str | None, typer.Option(help="instance (default: search all)")] = None,
         config: ConfigOpt = None, json_out: JsonOpt = False) -> None:
    """The manifest of one recovery point."""
    from safehold.actions.points import show_point

    _run(json_out, lambda r: show_point(_load(config), run, instance), lambda res: out.print_json(dumps(res)))


# Characters that would break a listing's lines or steer the terminal (a file name may hold any of them).
CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _shown(text: str) -> str:
    """Text as printed on one line: control characters (a newline in a file name) escaped."""
    return CONTROL_CHARACTERS.sub(lambda match: f"\\x{ord(match[0]):02x}", text)


def _print_listing(listing: Listing) -> int:
    """Print a listing line by line as restic streams it; returns how many entries there were."""
    from safehold.files import restic_time_ns

    head = listing.head
    where = head.get("stored_path") or head["path"] or "its file trees and config files"
    print(_shown(f"point {head['run_id']} of {head['instance']} in {head['repository']}: {where}"))
    count = 0
    for entry in listing.entries:
        ns = restic_time_ns(str(entry["mtime"] or ""))
        when = datetime.fromtimestamp(ns / 1e9).strftime("%Y-%m-%d %H:%M:%S") if ns is not None else "-"
        size = "-" if entry["size"] is None else str(entry["size"])
        slash = "/" if entry["type"] == "dir" else ""
        print(f"{entry['permissions']}  {entry['type']:<7} {size:>12}  {when}  {_shown(str(entry['path']))}{slash}")
        count += 1
    if not count:
        print("(nothing in it)")
    return count


def _print_json_listing(listing: Listing) -> int:
    """Print a listing as one JSON object, entry by entry as restic streams them (it may not fit in memory)."""
    fields = "".join(f"{json.dumps(key)}: {json.dumps(value, default=str)}, " for key, value in listing.head.items())
    sys.stdout.write("{" + fields + '"entries": [')
    count = 0
    for entry in listing.entries:
        sys.stdout.write(("," if count else "") + "\n  " + json.dumps(entry, default=str))
        count += 1
    sys.stdout.write(f'\n], "count": {count}}}\n')
    return count


@app.command("ls")
def ls_cmd(
    instance: Annotated[str, typer.Argument(help="instance name")],
    run: Annotated[str, typer.Argument(help="run id or latest")] = "latest",
    path: Annotated[str | None, typer.Argument(help="a path as it was on the host, e.g. "
                                                    "/var/www/itflow/uploads/clients/5 (default: the point's "
                                                    "trees)")] = None,
    recursive: Annotated[bool, typer.Option("--recursive", "-r", help="everything below PATH")] = False,
    repository: Annotated[str | None, typer.Option(help="repository to list from")] = None,
    config: ConfigOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Files and folders of a point's file trees and config files (type, size, mtime, mode), by host path."""
    from safehold.actions.browse import list_files

    if path is None and "/" in run:  # `safehold ls app /var/www/…`: a path in the newest point
        run, path = "latest", run

    def action(r: Reporter) -> int:
        listing = list_files(_load(config), instance, run, path, recursive, repository)
        return _print_json_listing(listing) if json_out else _print_listing(listing)

    _run(json_out, action, lambda count: None, streamed=True)


@app.command()
def restore(
    instance: Annotated[str, typer.Argument(help="instance name (may be left out when only one is configured)")],
    run: Annotated[str, typer.Argument(help="run id or latest (not with --from-file)")] = "latest",
    to_db: Annotated[list[str] | None, typer.Option("--to-db", help="NAME, or OLD=NEW per database")] = None,
    files_to: Annotated[Path | None, typer.Option(help="restore files under this folder instead of in place")] = None,
    only: Annotated[list[str] | None, typer.Option(help="db, files or config (repeatable)")] = None,
    dry_run: Annotated[bool, typer.Option(help="print the plan, change nothing")] = False,
    force: Annotated[bool, typer.Option(help="overwrite non-empty databases (after a safety point)")] = False,
    repository: Annotated[str | None, typer.Option(help="repository to restore from")] = None,
    from_file: Annotated[Path | None, typer.Option("--from-file", help="restore from a `safehold export` file")] = None,
    path: Annotated[list[str] | None, typer.Option("--path", help="only this file or folder, by its path on the "
                                                                  "host (repeatable; no database)")] = None,
    config: ConfigOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Restore a recovery point (databases, files, config), or single files and folders of it (--path)."""
    from safehold.actions.import_file import restore_from_file
    from safehold.actions.restore import restore as do_restore

    def render(res: dict[str, Any]) -> None:
        plan = res["plan"]
        out.print(f"point {plan['run_id']} of {plan['instance']} from {plan['repository']}")
        for db in plan["databases"]:
            note = [" ", ("(has data)", "yellow")] if db["target_has_data"] else []
            out.print(Text.assemble(f"  database {db['from']} → {db['into']} ({db['tables']} tables)", *note))
        for included in plan["paths"]:
            out.print(f"  files {_shown(included)} → {_shown(plan['files_into'])}", soft_wrap=True)
        if res["dry_run"]:
            _print_selection(plan.get("selection"))
            out.print("dry run: nothing was changed")
            return
        if res.get("comparison"):
            _table("row counts: manifest vs restored", ["database", "table", "expected", "restored", ""],
                   [[c["database"], c["table"], c["expected"], c["restored"], "ok" if c["ok"] else "DIFFERS"]
                    for c in res["comparison"]])
        if restored := res.get("restored"):
            same = f"; {restored['unchanged']} already as in the point" if restored.get("unchanged") else ""
            out.print(f"{restored['files']} file(s), {restored['bytes']} bytes came back{same}", soft_wrap=True)
        verdict = ("restore complete", "green") if res["ok"] else ("restore finished with differences", "red")
        out.print(Text.assemble(verdict, f" in {res['seconds']} s" + (f"; safety point {res['safety_point']}"
                                                                      if res.get("safety_point") else "")))

    def action(r: Reporter) -> dict[str, Any]:
        cfg = _load(config)
        name, point = _instance_and_run(cfg, instance, run)
        if from_file is not None:
            # The file holds one point and is restored as it is: a RUN or --repository would be ignored.
            if point != "latest":
                raise ConfigError(f"--from-file restores the point inside the file, not run {point}",
                                  "drop the run id to restore the file's point, or drop --from-file to restore "
                                  f"{point} from the repository")
            if repository is not None:
                raise ConfigError("--from-file restores from the file, not from a repository",
                                  "drop --repository or drop --from-file")
            if path:
                raise ConfigError("--path restores from a repository, not from an export file",
                                  "restore the file's point with --files-to DIR and copy what you need from there")
            return restore_from_file(cfg, name, from_file, r, only=only, to_db=to_db,
                                     files_to=files_to, dry_run=dry_run, force=force)
        return do_restore(cfg, name, point, r, only=only, to_db=to_db, files_to=files_to,
                          dry_run=dry_run, force=force, repository=repository, paths=path or [])

    _run(json_out, action, render, lambda res: 0 if res.get("ok", True) else EXIT_FAILED)


def _instance_and_run(cfg: config_module.Config, instance: str, run: str) -> tuple[str, str]:
    """`restore [INSTANCE] RUN`: with one instance configured, a lone argument that names none is the run."""
    if instance not in cfg.instances and run == "latest" and len(cfg.instances) == 1:
        return next(iter(cfg.instances)), instance
    return instance, run


def _print_selection(selection: dict[str, Any] | None) -> None:
    """What a `restore --path` dry run would do with each path."""
    if not selection:
        return
    for item in selection["items"]:
        note = " (differs on the host: only --force replaces it)" if item["action"] == "replace" else ""
        out.print(f"  {item['action']:<8} {_shown(str(item['path']))}{note}", soft_wrap=True)
    out.print(f"{selection['files']} file(s), {selection['bytes']} bytes would come back; "
              f"{selection['unchanged']} already as in the point; {len(selection['conflicts'])} differ on the host",
              soft_wrap=True)


@app.command()
def verify(
    run: Annotated[str | None, typer.Argument(help="run id (default: every point); with --repair the instance "
                                                   "(default: all)")] = None,
    all_points: Annotated[bool, typer.Option("--all", help="check every point (the default)")] = False,
    read_data: Annotated[bool, typer.Option(help="read and check every stored byte")] = False,
    instance: Annotated[str | None, typer.Option(help="only this instance")] = None,
    repair: Annotated[bool, typer.Option(help="rebuild the index of a damaged repository and name the points "
                                              "that lost data")] = False,
    config: ConfigOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Check repository integrity and that every point holds all its parts."""
    from safehold.actions.verify import repair as do_repair
    from safehold.actions.verify import verify as do_verify

    def render(res: dict[str, Any]) -> None:
        for where, count in res["points_checked"].items():
            out.print(f"{where}: {count} point(s) checked")
        for problem in res["problems"]:
            out.print(_problem(problem), soft_wrap=True)
        out.print(Text("verify ok", "green") if res["ok"] else Text("verify found problems", "red"))

    def render_repair(res: dict[str, Any]) -> None:
        for row in res["repositories"]:
            name = row["repository"]
            if row["ok"]:
                out.print(f"{name}: " + ("index rebuilt, the repository is sound" if row["repaired"] else "sound"))
            elif not row["damaged"]:
                out.print(_problem(row["error"]), soft_wrap=True)
            for point in row["damaged"]:
                out.print(_problem(f"repository {name}: point {point['run_id']} of {point['instance']} lost data; "
                                   "it is kept (it may still hold most of it)"), soft_wrap=True)
            if row["forget"]:
                out.print(f"{name}: backups store the lost data anew from now on (a damaged point whose data the "
                          "sources still hold becomes whole again). To remove the damaged ones (until then "
                          "`verify` reports them), run:", soft_wrap=True)
                for line in row["forget"]:
                    out.print(f"  {line}", soft_wrap=True)
        out.print(Text("repair done: every repository is sound", "green") if res["ok"] else
                  Text("repair done: damage remains (see above)", "red"))

    if repair:
        _run(json_out, lambda r: do_repair(_load(config), instance, None if all_points else run, read_data, r),
             render_repair, lambda res: 0 if res["ok"] else EXIT_FAILED)
    else:
        _run(json_out, lambda r: do_verify(_load(config), None if all_points else run, read_data, r, instance),
             render, lambda res: 0 if res["ok"] else EXIT_FAILED)


@app.command()
def prune(instance: InstanceArg = None,
          dry_run: Annotated[bool, typer.Option(help="show what would be removed")] = False,
          config: ConfigOpt = None, json_out: JsonOpt = False) -> None:
    """Apply retention: remove points the policy no longer keeps."""
    from safehold.actions.prune import prune as do_prune

    def render(rows: list[dict[str, Any]]) -> None:
        for row in rows:
            verb = "would remove" if row["dry_run"] else "removed"
            out.print(f"{row['instance']}@{row['repository']}: keep {len(row['keep'])}, {verb} "
                      f"{len(row['remove'])}: {', '.join(row['remove']) or '-'}")
            if row["dry_run"]:
                for run in row["keep"]:
                    out.print(f"  keep {run} ({', '.join(row['why'][run])})")

    _run(json_out, lambda r: do_prune(_load(config), instance, r, dry_run), render)


def _forget_line(row: dict[str, Any]) -> str:
    """One run `forget` removes: id, start, kind, where, note."""
    kind = {"point": "point", "safety": "safety point", "incomplete": "incomplete run (no manifest)"}[row["kind"]]
    marks = "".join(f"; {m}" for m in (row["note"] and f"note: {row['note']}", _kept_until(row)) if m)
    return (f"  {row['run_id']}  {row['started']:%Y-%m-%d %H:%M} UTC  {kind} in {', '.join(row['repositories'])}"
            f"{marks}")


@app.command()
def forget(instance: Annotated[str, typer.Argument(help="instance name")],
           runs: Annotated[list[str], typer.Argument(help="run ids (a unique prefix is enough) or latest",
                                                     show_default=False)],
           repository: Annotated[str | None, typer.Option(help="only from this repository (default: from every "
                                                               "repository of the instance)")] = None,
           dry_run: Annotated[bool, typer.Option(help="show what would be removed, change nothing")] = False,
           yes: Annotated[bool, typer.Option("--yes", help="remove without asking")] = False,
           force: Annotated[bool, typer.Option(help="also remove a repository's newest point")] = False,
           config: ConfigOpt = None, json_out: JsonOpt = False) -> None:
    """Remove chosen recovery points (damaged, made by mistake, data that must go) and free their space."""
    from safehold.actions.forget import forget as do_forget

    def confirm(rows: list[dict[str, Any]]) -> bool:
        err.print(f"{instance}: {len(rows)} run(s) will be removed for good:")
        for row in rows:
            err.print(_forget_line(row), soft_wrap=True)
        try:
            return typer.confirm("Remove them?", default=False, err=True)
        except typer.Abort:  # end of input or Ctrl-C at the prompt: a no
            err.print()
            return False

    def render(res: dict[str, Any]) -> None:
        out.print(f"{instance}: {'would remove' if res['dry_run'] else 'removed'} {len(res['removed'])} run(s):")
        for row in res["removed"]:
            out.print(_forget_line(row), soft_wrap=True)
        for hit in res["newest"]:
            goes, left = ("would go", "would be") if res["dry_run"] else ("removed", "is now")
            out.print(Text.assemble((f"newest point {goes} (--force):", "yellow"), f" {hit['run_id']} in "
                                    f"{hit['repository']}; the newest there {left} {hit['newest_after'] or 'none'}"),
                      soft_wrap=True)
        out.print("dry run: nothing was changed" if res["dry_run"] else "their space is freed")

    _run(json_out, lambda r: do_forget(_load(config), instance, runs, r, repository, dry_run, force, yes,
                                       confirm if sys.stdin.isatty() else None), render)


key_app = typer.Typer(no_args_is_help=True, help="Application keys: escrow and check them; the recovery kit.")
app.add_typer(key_app, name="key")


@key_app.command("escrow")
def key_escrow(
    instance: Annotated[str, typer.Argument(help="instance name (an ITFlow instance)")],
    password_ref: Annotated[str | None, typer.Option("--password-ref", help="env:NAME or file:PATH holding the "
                                                     "admin's ITFlow password (default: prompt)")] = None,
    user: Annotated[str | None, typer.Option(help="email of the ITFlow account (default: try each)")] = None,
    config: ConfigOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Unwrap ITFlow's master key with an admin password, prove it, keep it for every point."""
    from safehold.actions.keys import check_escrow, escrow
    from safehold.secrets import Secret, resolve

    def action(reporter: Reporter) -> dict[str, Any]:
        cfg = _load(config)
        check_escrow(cfg, instance)  # before the password: no point asking for one that cannot be used
        if password_ref:
            password = resolve(password_ref, "--password-ref")
        else:
            password = Secret(typer.prompt("ITFlow password of an admin account", hide_input=True, err=True), "prompt")
        return escrow(cfg, instance, password, user, reporter)

    _run(json_out, action, lambda res: out.print(Text.assemble(
        ("master key escrowed", "green"), f" for {res['instance']} (account {res['user']}); "
        + (f"it decrypts credential #{res['proved_on_credential']}" if res["proved_on_credential"] else
           "no credential stored yet to test it on")), soft_wrap=True))


@key_app.command("verify")
def key_verify(
    instance: Annotated[str, typer.Argument(help="instance name")],
    run: Annotated[str | None, typer.Argument(help="check the keys inside this point (default: escrowed)")] = None,
    config: ConfigOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Prove the escrowed keys (or a point's keys) still unlock the live instance's data."""
    from safehold.actions.keys import verify as verify_keys

    def render(res: dict[str, Any]) -> None:
        for problem in res["problems"]:
            out.print(_problem(problem), soft_wrap=True)
        if res["ok"]:
            out.print(Text.assemble(("keys ok", "green"), f" ({', '.join(res['keys']) or 'none'}) from the "
                                    f"{res['source']}"), soft_wrap=True)

    _run(json_out, lambda r: verify_keys(_load(config), instance, run, r), render,
         lambda res: 0 if res["ok"] else EXIT_FAILED)


@app.command()
def export(run: Annotated[str, typer.Argument(help="run id (a unique prefix is enough) or latest")],
           file: Annotated[Path, typer.Argument(help="output file: NAME.tar.zst, or NAME.tar.zst.age to encrypt")],
           instance: Annotated[str | None, typer.Option(help="instance (default: search all)")] = None,
           force: Annotated[bool, typer.Option(help="overwrite an existing file")] = False,
           config: ConfigOpt = None, json_out: JsonOpt = False) -> None:
    """Write one recovery point to a single portable file (.tar.zst, age-encrypted when .age)."""
    from safehold.actions.export import export as do_export

    _run(json_out, lambda r: do_export(_load(config), run, file, r, instance, force),
         lambda res: out.print(Text.assemble(("exported", "green"), f" point {res['run_id']} of {res['instance']} "
                                             f"to {res['file']} ({res['bytes'] / 1e6:.1f} MB"
                                             f"{', encrypted' if res['encrypted'] else ''})")))


repo_app = typer.Typer(help="Repository housekeeping (SSH host keys, passwords).", no_args_is_help=True)
app.add_typer(repo_app, name="repo")


@repo_app.command("trust")
def repo_trust(name: Annotated[str, typer.Argument(help="sftp repository name")],
               yes: Annotated[bool, typer.Option("--yes", help="accept the shown fingerprint without asking")] = False,
               replace: Annotated[bool, typer.Option(help="replace a pinned key that changed")] = False,
               config: ConfigOpt = None, json_out: JsonOpt = False) -> None:
    """Pin the SSH host key of an sftp repository (shows the fingerprint first)."""
    from safehold.repository.ssh import trust

    def confirm(host: str, prints: list[str]) -> bool:
        if not sys.stdin.isatty():
            return False
        return typer.confirm(f"{host} presents {', '.join(prints)}. Does this match the server's fingerprint?",
                             err=True)

    _run(json_out, lambda r: trust(_load(config), name, yes, replace, confirm),
         lambda res: out.print(f"{res['host']}: {', '.join(res['fingerprints'])} "
                               f"{'pinned in ' + res['known_hosts'] if res['changed'] else 'already pinned'}"))


@repo_app.command("passwd")
def repo_passwd(name: Annotated[str, typer.Argument(help="repository name")],
                new_password_ref: Annotated[str | None, typer.Option(
                    help="env:NAME or file:PATH holding the new password (a missing file gets a generated one); "
                         "default: generate one; required when the password is an env: reference")] = None,
                remove_old_keys: Annotated[bool, typer.Option("--remove-old-keys", help="finish a pending change: "
                                                              "remove every key but the new one")] = False,
                config: ConfigOpt = None, json_out: JsonOpt = False) -> None:
    """Change a repository's password (someone who knew it left): add a new key, store it, remove the old keys."""
    from safehold.actions.repo_password import change_password, lines

    def render(res: dict[str, Any]) -> None:
        for line in lines(res):
            out.print(line, soft_wrap=True)

    _run(json_out, lambda r: change_password(_load(config), name, new_password_ref, remove_old_keys, r), render)


@key_app.command("kit")
def key_kit(output: Annotated[Path | None, typer.Option("--output", "-o", help="HTML file to write (once)")] = None,
            config: ConfigOpt = None, json_out: JsonOpt = False) -> None:
    """Write the printable recovery kit (repository passwords, escrowed keys, restore steps)."""
    from safehold.actions.kit import write_kit

    _run(json_out, lambda r: write_kit(_load(config), output, r),
         lambda res: out.print(f"wrote {res['path']} (mode 0600): print it, keep it safe, delete the file"))


@app.command()
def drill(instance: InstanceArg = None,
          run: Annotated[str | None, typer.Option("--run", help="run id to drill (default: the newest point)")] = None,
          config: ConfigOpt = None, json_out: JsonOpt = False) -> None:
    """Test-restore a point into scratch space, compare it with its manifest, measure RTO/RPO."""
    from safehold.actions.drill import drill as do_drill

    def render(results: list[dict[str, Any]]) -> None:
        for res in results:
            _table(f"drill {res['instance']} point {res['run_id'] or '-'}", ["check", "result", "detail"],
                   [[c["check"], "ok" if c["ok"] else "FAILED", c["detail"]] for c in res["checks"]])
            for problem in res["problems"]:
                out.print(_problem(problem))
            phases = ", ".join(f"{k} {v:.2f} s" for k, v in res["phases"].items()) or "-"
            rpo = f"{res['rpo_seconds'] / 3600:.1f} h" if res.get("rpo_seconds") is not None else "-"
            verdict = ("drill passed", "green") if res["ok"] else ("drill FAILED", "red")
            out.print(Text.assemble(verdict, f" {res['instance']}: RTO {res['rto_seconds']:.2f} s ({phases}); "
                                             f"point age (RPO) {rpo}"))

    def code(results: list[dict[str, Any]]) -> int:
        failed = [r for r in results if not r["ok"]]
        return 0 if not failed else EXIT_FAILED if len(failed) == len(results) else EXIT_PARTIAL

    _run(json_out, lambda r: do_drill(_load(config), instance, r, run), render, code)


@app.command()
def report(instance: InstanceArg = None,
           html: Annotated[Path | None, typer.Option("--html", help="write the printable HTML page here")] = None,
           days: Annotated[int, typer.Option(help="period the report covers, in days", min=1)] = 30,
           config: ConfigOpt = None, json_out: JsonOpt = False) -> None:
    """Recovery report: points kept, last backup, last drill (RTO/RPO), failures, history chart."""
    from safehold.actions.report import report as do_report

    def render(data: dict[str, Any]) -> None:
        for inst in data["instances"]:
            drill_res = inst["last_drill"]
            last = inst["last_backup"]
            out.print(Text.assemble((inst["name"], "bold"), f" ({inst['app']}): " + ", ".join(
                f"{r['name']} {r['points'] if r['error'] is None else 'unreachable'} point(s)"
                for r in inst["repositories"])))
            out.print(f"  last backup: {last['run_id'] + ' ' + str(last['started'])[:16] if last else 'none'}"
                      + (f" ({last['note']})" if last and last["note"] else ""), soft_wrap=True)
            out.print("  last drill: " + ("none" if not drill_res else
                      f"{'passed' if drill_res['ok'] else 'FAILED'}, RTO {drill_res['rto_seconds']:.1f} s"))
            for failure in inst["failures"]:
                out.print(Text.assemble("  ", (failure["what"], "red"),
                                        f" {str(failure['when'])[:16]}: {failure['message']}"))
        if data.get("html"):
            out.print(f"wrote {data['html']}")

    _run(json_out, lambda r: do_report(_load(config), instance, html, days), render)


# The audit log's "user" for account changes made on the host itself.
COMMAND_LINE = "(command line)"
user_app = typer.Typer(help="Accounts of the web console.", no_args_is_help=True)
app.add_typer(user_app, name="user")


@user_app.command("add")
def user_add(
    name: Annotated[str, typer.Argument(help="user name")],
    role: Annotated[str, typer.Option(help="viewer (read-only) or operator (backup, restore, verify, drill)")],
    password_ref: Annotated[str | None, typer.Option(help="env:NAME or file:PATH holding the password "
                                                          "(default: ask)")] = None,
    replace: Annotated[bool, typer.Option(help="reset the password and role of an existing user")] = False,
    config: ConfigOpt = None,
) -> None:
    """Create a console account; the password is asked for, or read from a secret reference."""
    from safehold.secrets import resolve
    from safehold.web.store import Store

    def action(reporter: Reporter) -> dict[str, str]:
        cfg = _load(config)
        if password_ref:
            password = resolve(password_ref, "--password-ref").reveal()
        else:
            password = typer.prompt(f"password for {name}", hide_input=True, confirmation_prompt=True, err=True)
        store = Store(cfg.state_dir)
        store.add_user(name, role, password, replace=replace)
        store.audit(COMMAND_LINE, None, "user reset" if replace else "user add", name, role)
        return {"user": name, "role": role}

    _run(False, action, lambda res: out.print(f"user {res['user']} ({res['role']}) saved"))


@user_app.command("list")
def user_list(config: ConfigOpt = None, json_out: JsonOpt = False) -> None:
    """Console accounts and their roles."""
    from safehold.web.store import Store

    def render(users: list[dict[str, object]]) -> None:
        for user in users:
            out.print(f"{_shown(str(user['name']))}  {user['role']}")  # a name added before names were checked
        if not users:
            out.print("no accounts yet: safehold user add NAME --role operator")

    _run(json_out, lambda r: Store(_load(config).state_dir).users(), render)


@user_app.command("remove")
def user_remove(name: Annotated[str, typer.Argument(help="user name")], config: ConfigOpt = None) -> None:
    """Delete a console account (someone left); its open sessions end at once."""
    from safehold.web.store import Store

    def action(reporter: Reporter) -> str:
        store = Store(_load(config).state_dir)
        store.remove_user(name)
        store.audit(COMMAND_LINE, None, "user remove", name, "ok")
        return name

    _run(False, action, lambda removed: out.print(f"user {removed} removed; their sessions are closed"))

def _mb(value: int | None) -> str | None:
    return None if value is None else f"{value / 1e6:.2f}"


class RunKind(enum.StrEnum):
    """What the run history records (a typo in --kind is a usage error, not an empty history)."""

    backup = "backup"
    drill = "drill"
    prune = "prune"
    restore = "restore"


@app.command()
def history(instance: Annotated[str | None, typer.Argument(help="instance name (default: all)")] = None,
            kind: Annotated[RunKind | None, typer.Option(help="only runs of this kind")] = None,
            limit: Annotated[int, typer.Option(help="how many runs", min=1)] = 30,
            config: ConfigOpt = None, json_out: JsonOpt = False) -> None:
    """Past runs (backups, drills, prunes, restores) with their result, size and error, newest first."""
    from safehold.history import History

    def action(_: Reporter) -> list[dict[str, Any]]:
        cfg = _load(config)
        if instance is not None:
            cfg.instance(instance)  # an unknown instance is an error, not an empty history
        return [r.as_dict() for r in History(cfg.state_dir).runs(instance, kind.value if kind else None, limit)]

    def render(rows: list[dict[str, Any]]) -> None:
        # One line per run rather than a table: the error is the point and must never be cut off.
        colour = {"ok": "green", "failed": "red", "partial": "yellow", "running": "cyan"}
        if not rows:
            out.print("no runs recorded yet")
        for r in rows:
            size = f" +{_mb(r['bytes_added'])} MB of {_mb(r['bytes_total'])} MB" if r["bytes_total"] is not None else ""
            took = f" {r['duration']:.1f} s" if r["duration"] is not None else ""
            out.print(Text.assemble(f"{r['started'][:19].replace('T', ' ')}  {r['instance']}  {r['kind']}  ",
                                    (r["result"], colour.get(r["result"], "white")),
                                    f"{took}{size}" + (f"  {r['error']}" if r["error"] else "")), soft_wrap=True)

    _run(json_out, action, render)


@app.command()
def check(instance: InstanceArg = None, config: ConfigOpt = None, json_out: JsonOpt = False) -> None:
    """Monitoring: freshness, last result, size anomaly, drill, off-host copy. Nagios exit codes 0/1/2/3."""
    from safehold.actions.check import UNKNOWN
    from safehold.actions.check import check as do_check

    try:
        result = do_check(_load(config), instance)
    except SafeholdError as exc:
        result = {"status": "UNKNOWN", "code": UNKNOWN, "line": f"SAFEHOLD UNKNOWN - {exc.line()}", "instances": []}
    print(dumps(result) if json_out else result["line"])
    raise typer.Exit(result["code"])


@app.command()
def serve(config: ConfigOpt = None,
          listen: Annotated[str | None, typer.Option(help="HOST:PORT of the console (default: web.listen, "
                                                          "127.0.0.1:8750)")] = None,
          no_web: Annotated[bool, typer.Option("--no-web", help="run the schedules only, no console")] = False,
          tick: Annotated[float, typer.Option(help="seconds between schedule checks")] = 1.0,
          workers: Annotated[int, typer.Option(help="jobs that may run at once")] = 2) -> None:
    """Run the schedules (re-reading the config every tick) and the web console until Ctrl-C or SIGTERM."""
    import threading

    from safehold.scheduler import Scheduler

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    try:
        path = config_module.find_config(config)
        loaded = config_module.load(path)
    except SafeholdError as exc:
        _fail(None, False, exc.message, exc.hint, exc.exit_code)
    reporter = Reporter("plain")
    scheduler = Scheduler(path, reporter, tick_seconds=tick, workers=workers)
    for job in scheduler.next_runs():
        reporter.step(f"{job['kind']} of {job['instance']}: {job['schedule']}, next {job['next']}")
    if not no_web:
        from safehold.web.server import serve as serve_console

        # uvicorn stops on SIGTERM and then re-raises it; a handler here makes that a clean exit 0.
        signal.signal(signal.SIGTERM, lambda *_: None)
        # Console jobs share the scheduler's pool, so "Backup now" and scheduled runs queue together.
        _run(False, lambda r: serve_console(loaded, listen, services=[scheduler], pool=scheduler.pool),
             lambda res: None)
        return
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    scheduler.start()
    done.wait()
    reporter.step("stopping: waiting for running jobs to finish")
    scheduler.stop()


schedule_app = typer.Typer(help="Schedules: install systemd timers or a cron file.", no_args_is_help=True)
app.add_typer(schedule_app, name="schedule")


@schedule_app.command("install")
def schedule_install(
    folder: Annotated[Path, typer.Option("--dir", help="where to write the units / cron file")],
    fmt: Annotated[str, typer.Option("--format", help="systemd or cron")] = "systemd",
    user: Annotated[str | None, typer.Option(help="run the jobs as this user")] = None,
    config: ConfigOpt = None, json_out: JsonOpt = False,
) -> None:
    """Write systemd service+timer units (OnCalendar) or a cron file for every enabled schedule."""
    from safehold.actions.schedule_install import install

    def render(res: dict[str, Any]) -> None:
        out.print(f"wrote {', '.join(res['written']) or 'nothing'} in {res['folder']}")
        if res["skipped_disabled"]:
            out.print(Text.assemble(("disabled, not installed:", "yellow"), f" {', '.join(res['skipped_disabled'])}"))
        out.print(f"next: {res['next']}")

    _run(json_out, lambda r: install(_load(config), folder, fmt, user), render)


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
        _print_failure(json_out, exc.format_message().rstrip("."), f"see `{command} --help`")
        sys.exit(EXIT_USAGE if isinstance(exc, click_errors.UsageError) else exc.exit_code)
    except typer.Abort:  # input ended outside an action (an action reports its own)
        _print_failure(json_out, "input ended before the command could start", "nothing was changed")
        sys.exit(EXIT_FAILED)
    sys.exit(code if isinstance(code, int) else 0)
