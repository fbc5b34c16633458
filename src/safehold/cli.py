"""Command line: parse, call one action, print its result, set the exit code. Nothing else."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from safehold import config as config_module
from safehold.actions.common import dumps
from safehold.errors import EXIT_FAILED, EXIT_PARTIAL, EXIT_USAGE, SafeholdError
from safehold.output import Reporter

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Consistent, encrypted, verified recovery points for self-hosted IT apps.")

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="config file (default: $SAFEHOLD_CONFIG, "
                                                 "./safehold.toml, /etc/safehold/safehold.toml)")]
JsonOpt = Annotated[bool, typer.Option("--json", help="machine-readable result on stdout")]
InstanceArg = Annotated[str | None, typer.Argument(help="instance name (default: all)")]

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)


def _run(json_out: bool, action: Callable[[Reporter], Any], render: Callable[[Any], None],
         exit_code: Callable[[Any], int] = lambda _: 0) -> None:
    """Run an action with a reporter, print its result, and exit with the right code."""
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    reporter = Reporter("json" if json_out else None)
    try:
        result = action(reporter)
    except SafeholdError as exc:
        reporter.close()
        if json_out:
            print(dumps({"ok": False, "error": exc.message, "hint": exc.hint}))
        else:
            err.print(f"[bold red]error:[/] {exc.line()}", soft_wrap=True)
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        reporter.close()
        err.print("[bold red]interrupted[/]: the last complete recovery point is untouched")
        raise typer.Exit(130) from None
    reporter.close()
    if json_out:
        print(dumps(result))
    else:
        render(result)
    code = exit_code(result)
    if code:
        raise typer.Exit(code)


def _load(path: Path | None) -> config_module.Config:
    return config_module.load(path)


def _table(title: str, columns: list[str], rows: list[list[Any]]) -> None:
    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*["" if v is None else str(v) for v in row])
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
            out.print(f"[bold green]demo passed[/]: backed up, damaged, restored and verified in {res['seconds']} s. "
                      f"Files are in {res['workdir']} (config: {res['config']}).")
        else:
            out.print("[bold red]demo FAILED[/]: see the table above")

    _run(json_out, lambda r: run_demo(workdir, r), render, lambda res: 0 if res["ok"] else EXIT_FAILED)


@app.command()
def backup(instance: InstanceArg = None, config: ConfigOpt = None, json_out: JsonOpt = False) -> None:
    """Make one recovery point of an instance (all instances when none is named)."""
    from safehold.actions.backup import backup as do_backup

    def render(results: list[dict[str, Any]]) -> None:
        for res in results:
            if res["result"] == "ok":
                out.print(f"[green]ok[/] {res['instance']}: point {res['run_id']} in {res['repository']}, "
                          f"{res['bytes_added'] / 1e6:.2f} MB added, {res['seconds']} s")
            elif res["result"] == "partial":
                err.print(f"[bold yellow]partial:[/] {res['instance']}: {res['error']}", soft_wrap=True)
            else:
                err.print(f"[bold red]error:[/] {res['instance']}: {res['error']}", soft_wrap=True)

    def code(results: list[dict[str, Any]]) -> int:
        failed = [r for r in results if r["result"] != "ok"]
        partial = [r for r in results if r["result"] == "partial"]
        if failed and len(failed) == len(results) and not partial:
            return EXIT_FAILED
        return EXIT_PARTIAL if failed else 0

    _run(json_out, lambda r: do_backup(_load(config), instance, r), render, code)


@app.command("list")
def list_cmd(instance: InstanceArg = None, config: ConfigOpt = None, json_out: JsonOpt = False) -> None:
    """Recovery points, newest first."""
    from safehold.actions.points import list_points

    def render(rows: list[dict[str, Any]]) -> None:
        _table("recovery points", ["instance", "repository", "run id", "started (UTC)", "s", "DBs", "files", "MB",
                                   "app version", "kind"],
               [[r["instance"], r["repository"], r["run_id"], str(r["started"])[:19], r["seconds"] and
                 round(r["seconds"], 1), r["databases"], r["files"], f"{r['bytes'] / 1e6:.1f}", r["app_version"],
                 "safety" if r["safety_point"] else ""] for r in rows])

    def action(r: Reporter) -> list[dict[str, Any]]:
        from safehold.actions.replicate import host_only_warning

        cfg = _load(config)
        for name in cfg.select(instance):
            if warning := host_only_warning(cfg, name):
                r.warn(warning)
        return list_points(cfg, instance)

    _run(json_out, action, render)


@app.command()
def show(run: Annotated[str, typer.Argument(help="run id (a unique prefix is enough) or latest")],
         instance: Annotated[str | None, typer.Option(help="instance (default: search all)")] = None,
         config: ConfigOpt = None, json_out: JsonOpt = False) -> None:
    """The manifest of one recovery point."""
    from safehold.actions.points import show_point

    _run(json_out, lambda r: show_point(_load(config), run, instance), lambda res: out.print_json(dumps(res)))


@app.command()
def restore(
    instance: Annotated[str, typer.Argument(help="instance name")],
    run: Annotated[str, typer.Argument(help="run id or latest")] = "latest",
    to_db: Annotated[list[str] | None, typer.Option("--to-db", help="NAME, or OLD=NEW per database")] = None,
    files_to: Annotated[Path | None, typer.Option(help="restore files under this folder instead of in place")] = None,
    only: Annotated[list[str] | None, typer.Option(help="db, files or config (repeatable)")] = None,
    dry_run: Annotated[bool, typer.Option(help="print the plan, change nothing")] = False,
    force: Annotated[bool, typer.Option(help="overwrite non-empty databases (after a safety point)")] = False,
    repository: Annotated[str | None, typer.Option(help="repository to restore from")] = None,
    from_file: Annotated[Path | None, typer.Option("--from-file", help="restore from a `safehold export` file")] = None,
    config: ConfigOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Restore a recovery point (databases, files, config)."""
    from safehold.actions.import_file import restore_from_file
    from safehold.actions.restore import restore as do_restore

    def render(res: dict[str, Any]) -> None:
        plan = res["plan"]
        out.print(f"point {plan['run_id']} of {plan['instance']} from {plan['repository']}")
        for db in plan["databases"]:
            note = " [yellow](has data)[/]" if db["target_has_data"] else ""
            out.print(f"  database {db['from']} → {db['into']} ({db['tables']} tables){note}")
        for path in plan["paths"]:
            out.print(f"  files {path} → {plan['files_into']}")
        if res["dry_run"]:
            out.print("dry run: nothing was changed")
            return
        if res.get("comparison"):
            _table("row counts: manifest vs restored", ["database", "table", "expected", "restored", ""],
                   [[c["database"], c["table"], c["expected"], c["restored"], "ok" if c["ok"] else "DIFFERS"]
                    for c in res["comparison"]])
        verdict = "[green]restore complete[/]" if res["ok"] else "[red]restore finished with differences[/]"
        out.print(f"{verdict} in {res['seconds']} s" + (f"; safety point {res['safety_point']}"
                                                           if res.get("safety_point") else ""))

    def action(r: Reporter) -> dict[str, Any]:
        if from_file is not None:
            return restore_from_file(_load(config), instance, from_file, r, only=only, to_db=to_db,
                                     files_to=files_to, dry_run=dry_run, force=force)
        return do_restore(_load(config), instance, run, r, only=only, to_db=to_db, files_to=files_to,
                          dry_run=dry_run, force=force, repository=repository)

    _run(json_out, action, render, lambda res: 0 if res.get("ok", True) else EXIT_FAILED)


@app.command()
def verify(
    run: Annotated[str | None, typer.Argument(help="run id (default: every point)")] = None,
    all_points: Annotated[bool, typer.Option("--all", help="check every point (the default)")] = False,
    read_data: Annotated[bool, typer.Option(help="read and check every stored byte")] = False,
    instance: Annotated[str | None, typer.Option(help="only this instance")] = None,
    config: ConfigOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Check repository integrity and that every point holds all its parts."""
    from safehold.actions.verify import verify as do_verify

    def render(res: dict[str, Any]) -> None:
        for where, count in res["points_checked"].items():
            out.print(f"{where}: {count} point(s) checked")
        for problem in res["problems"]:
            out.print(f"[red]problem:[/] {problem}")
        out.print("[green]verify ok[/]" if res["ok"] else "[red]verify found problems[/]")

    _run(json_out, lambda r: do_verify(_load(config), None if all_points else run, read_data, r, instance), render,
         lambda res: 0 if res["ok"] else EXIT_FAILED)


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

    _run(json_out, lambda r: do_prune(_load(config), instance, r, dry_run), render)


@app.command()
def export(run: Annotated[str, typer.Argument(help="run id (a unique prefix is enough) or latest")],
           file: Annotated[Path, typer.Argument(help="output file: NAME.tar.zst, or NAME.tar.zst.age to encrypt")],
           instance: Annotated[str | None, typer.Option(help="instance (default: search all)")] = None,
           force: Annotated[bool, typer.Option(help="overwrite an existing file")] = False,
           config: ConfigOpt = None, json_out: JsonOpt = False) -> None:
    """Write one recovery point to a single portable file (.tar.zst, age-encrypted when .age)."""
    from safehold.actions.export import export as do_export

    _run(json_out, lambda r: do_export(_load(config), run, file, r, instance, force),
         lambda res: out.print(f"[green]exported[/] point {res['run_id']} of {res['instance']} to {res['file']} "
                               f"({res['bytes'] / 1e6:.1f} MB{', encrypted' if res['encrypted'] else ''})"))


repo_app = typer.Typer(help="Repository housekeeping (SSH host keys).", no_args_is_help=True)
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
        return typer.confirm(f"{host} presents {', '.join(prints)}. Does this match the server's fingerprint?")

    _run(json_out, lambda r: trust(_load(config), name, yes, replace, confirm),
         lambda res: out.print(f"{res['host']}: {', '.join(res['fingerprints'])} "
                               f"{'pinned in ' + res['known_hosts'] if res['changed'] else 'already pinned'}"))


key_app = typer.Typer(help="Keys and the recovery kit.", no_args_is_help=True)
app.add_typer(key_app, name="key")


@key_app.command("kit")
def key_kit(output: Annotated[Path | None, typer.Option("--output", "-o", help="HTML file to write (once)")] = None,
            config: ConfigOpt = None, json_out: JsonOpt = False) -> None:
    """Write the printable recovery kit (repository passwords, escrowed keys, restore steps)."""
    from safehold.actions.kit import write_kit

    _run(json_out, lambda r: write_kit(_load(config), output, r),
         lambda res: out.print(f"wrote {res['path']} (mode 0600): print it, keep it safe, delete the file"))


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except SystemExit as exc:
        if exc.code not in (0, None) and isinstance(exc.code, int) and exc.code == 2:
            sys.exit(EXIT_USAGE)
        raise
