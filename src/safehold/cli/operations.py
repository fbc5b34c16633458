"""Unattended operation: drill, report, history, check, serve, schedule install."""

from __future__ import annotations

import enum
import logging
import signal
import sys
from pathlib import Path
from typing import Annotated, Any, get_args

import typer
from rich.text import Text

from safehold import config as config_module
from safehold.actions.common import dumps
from safehold.cli.common import (
    ConfigOpt,
    InstanceArg,
    JsonOpt,
    app,
    fail,
    load_config,
    out,
    print_table,
    problem_line,
    run_action,
)
from safehold.errors import EXIT_FAILED, EXIT_PARTIAL, SafeholdError
from safehold.history import Kind
from safehold.output import Reporter


@app.command()
def drill(instance: InstanceArg = None,
          run: Annotated[str | None, typer.Option("--run", help="run id to drill (default: the newest point)")] = None,
          config: ConfigOpt = None, json_out: JsonOpt = False) -> None:
    """Test-restore a point into scratch space, compare it with its manifest, measure RTO/RPO."""
    from safehold.actions.drill import drill as do_drill

    def render(results: list[dict[str, Any]]) -> None:
        for res in results:
            print_table(f"drill {res['instance']} point {res['run_id'] or '-'}", ["check", "result", "detail"],
                        [[c["check"], "ok" if c["ok"] else "FAILED", c["detail"]] for c in res["checks"]])
            for problem in res["problems"]:
                out.print(problem_line(problem))
            phases = ", ".join(f"{k} {v:.2f} s" for k, v in res["phases"].items()) or "-"
            rpo = f"{res['rpo_seconds'] / 3600:.1f} h" if res.get("rpo_seconds") is not None else "-"
            verdict = ("drill passed", "green") if res["ok"] else ("drill FAILED", "red")
            rto = f"{_rto(res, 2)} ({phases})" if res.get("rto_seconds") is not None else _rto(res, 2)
            out.print(Text.assemble(verdict, f" {res['instance']}: {rto}; point age (RPO) {rpo}"))

    def code(results: list[dict[str, Any]]) -> int:
        failed = [r for r in results if not r["ok"]]
        return 0 if not failed else EXIT_FAILED if len(failed) == len(results) else EXIT_PARTIAL

    run_action(json_out, lambda r: do_drill(load_config(config), instance, r, run), render, code)


def _rto(result: dict[str, Any], digits: int) -> str:
    """A drill's measured RTO, or why it measured none (it did not restore every part)."""
    if result.get("rto_seconds") is None:
        return str(result.get("rto_missing") or "no RTO measured")
    return f"RTO {result['rto_seconds']:.{digits}f} s"


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
                      f"{'passed' if drill_res['ok'] else 'FAILED'}, {_rto(drill_res, 1)}"))
            for failure in inst["failures"]:
                out.print(Text.assemble("  ", (failure["what"], "red"),
                                        f" {str(failure['when'])[:16]}: {failure['message']}"))
        if data.get("html"):
            out.print(f"wrote {data['html']}")

    run_action(json_out, lambda r: do_report(load_config(config), instance, html, days), render)


def _mb(value: int | None) -> str | None:
    return None if value is None else f"{value / 1e6:.2f}"


# What the run history records (a typo in --kind is a usage error, not an empty history). The members come
# from history.Kind so the two cannot drift; mypy reads members only from a literal list, hence the ignore.
RunKind = enum.StrEnum("RunKind", {kind: kind for kind in get_args(Kind)})  # type: ignore[misc]


@app.command()
def history(instance: Annotated[str | None, typer.Argument(help="instance name (default: all)")] = None,
            kind: Annotated[RunKind | None, typer.Option(help="only runs of this kind")] = None,
            limit: Annotated[int, typer.Option(help="how many runs", min=1)] = 30,
            config: ConfigOpt = None, json_out: JsonOpt = False) -> None:
    """Past runs (backups, drills, verifies, prunes, restores) with their result, size and error, newest first."""
    from safehold.history import History

    def action(_: Reporter) -> list[dict[str, Any]]:
        cfg = load_config(config)
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

    run_action(json_out, action, render)


@app.command()
def check(instance: InstanceArg = None, config: ConfigOpt = None, json_out: JsonOpt = False) -> None:
    """Monitoring: freshness, last result, size anomaly, drill, off-host copy. Nagios exit codes 0/1/2/3."""
    from safehold.actions.check import UNKNOWN
    from safehold.actions.check import check as do_check

    try:
        result = do_check(load_config(config), instance)
    except Exception as exc:  # noqa: BLE001 - a monitoring plugin answers UNKNOWN, never a traceback
        # Any other exit code is a verdict (a crash's 1 reads as WARNING); the reason stays one line.
        reason = exc.line() if isinstance(exc, SafeholdError) else f"internal error ({type(exc).__name__}: {exc})"
        result = {"status": "UNKNOWN", "code": UNKNOWN, "line": f"SAFEHOLD UNKNOWN - {' '.join(reason.split())}",
                  "instances": []}
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
        fail(None, False, exc.message, exc.hint, exc.exit_code)
    reporter = Reporter("plain")
    scheduler = Scheduler(path, reporter, tick_seconds=tick, workers=workers)
    for job in scheduler.next_runs():
        reporter.step(f"{job['kind']} of {job['instance']}: {job['schedule']}, next {job['next']}")
    if not no_web:
        from safehold.web.server import serve as serve_console

        # uvicorn stops on SIGTERM and then re-raises it; a handler here makes that a clean exit 0.
        signal.signal(signal.SIGTERM, lambda *_: None)
        # Console jobs share the scheduler's pool, so "Backup now" and scheduled runs queue together.
        run_action(False, lambda r: serve_console(loaded, listen, services=[scheduler], pool=scheduler.pool),
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
        if res["removed"]:
            out.print(Text.assemble(("removed, no longer scheduled:", "yellow"), f" {', '.join(res['removed'])}"))
        if res["skipped_disabled"]:
            out.print(Text.assemble(("disabled, not installed:", "yellow"), f" {', '.join(res['skipped_disabled'])}"))
        if res["skipped_no_day"]:
            out.print(Text.assemble(("backup schedule names no day, not installed:", "yellow"),
                                    f" {', '.join(res['skipped_no_day'])}"))
        for warning in res["dst_skipped"]:
            out.print(Text.assemble(("daylight saving:", "yellow"), f" {warning}"), soft_wrap=True)
        if res["environment"]:
            out.print(Text.assemble(("the config reads", "yellow"), f" {', '.join(res['environment'])} from the "
                                    "environment, which a timer or cron job does not have: set them in a drop-in "
                                    "(Environment=) or the cron file, or use file: references"))
        out.print(f"next: {res['next']}")

    run_action(json_out, lambda r: install(load_config(config), folder, fmt, user), render)
