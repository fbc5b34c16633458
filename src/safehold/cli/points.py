"""Commands that make, list and remove recovery points: init, demo, backup, list, show, prune, forget, export."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, get_args

import typer
from rich.text import Text

from safehold.actions.common import dumps
from safehold.cli.common import (
    ConfigOpt,
    InstanceArg,
    JsonOpt,
    app,
    err,
    load_config,
    out,
    print_table,
    problem_line,
    run_action,
)
from safehold.config import Config, InstanceConfig
from safehold.errors import EXIT_FAILED, EXIT_PARTIAL, ConfigError
from safehold.output import Reporter


@app.command()
def init(
    app_name: Annotated[str | None, typer.Option(
        "--app", help=f"{' | '.join(get_args(InstanceConfig.model_fields['app'].annotation))} "
                      "(default: found from --root)")] = None,
    root: Annotated[Path | None, typer.Option(help="install root of the application")] = None,
    repo: Annotated[str | None, typer.Option(help="restic repository URL or local path")] = None,
    output: Annotated[Path, typer.Option("--output", "-o", help="file to write")] = Path("safehold.toml"),
    force: Annotated[bool, typer.Option(help="overwrite an existing file")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Write a commented safehold.toml to start from."""
    from safehold.actions.init import write_example

    def render(res: dict[str, Any]) -> None:
        out.print(f"wrote {res['path']} — edit it, then run `safehold backup`")
        state = "created (0600, random)" if res["password_file_created"] else "already there: kept as it is"
        out.print(f"repository password file {res['password_file']}: {state} — without it no point can be read; "
                  "keep a copy off this host (`safehold kit`)")

    run_action(json_out, lambda r: write_example(output, app_name, root, repo, force), render)


@app.command()
def demo(
    workdir: Annotated[Path, typer.Option(help="working folder (recreated)")] = Path("safehold-demo"),
    json_out: JsonOpt = False,
) -> None:
    """Build a demo instance, back it up, damage it, restore it and prove everything came back."""
    from safehold.actions.demo import run_demo

    def render(res: dict[str, Any]) -> None:
        print_table("demo: what was checked", ["check", "result"], [[c["check"], "ok" if c["ok"] else "FAILED"]
                                                                    for c in res["checks"]])
        if res["ok"]:
            out.print(Text.assemble(("demo passed", "bold green"),
                                    f": backed up, damaged, restored and verified in {res['seconds']} s. "
                                    f"Files are in {res['workdir']} (config: {res['config']})."))
        else:
            out.print(Text.assemble(("demo FAILED", "bold red"), ": see the table above"))

    run_action(json_out, lambda r: run_demo(workdir, r), render, lambda res: 0 if res["ok"] else EXIT_FAILED)


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
           dry_run: Annotated[bool, typer.Option(help="show what a backup would take and whether every part is "
                                                      "reachable; nothing is changed")] = False,
           config: ConfigOpt = None, json_out: JsonOpt = False) -> None:
    """Make one recovery point of an instance (all instances when none is named)."""
    from safehold.actions.backup import backup as do_backup

    if dry_run:
        from safehold.actions.backup_plan import plan

        run_action(json_out, lambda r: plan(load_config(config), instance, r, note, keep_days), _render_plan,
                   lambda plans: EXIT_FAILED if any(p["problems"] for p in plans) else 0)
        return

    def render(results: list[dict[str, Any]]) -> None:
        for res in results:
            if res["result"] == "ok":
                marks = "".join(f" ({m})" for m in (res["note"], _kept_until(res)) if m)
                out.print(Text.assemble(("ok", "green"), f" {res['instance']}: point {res['run_id']} in "
                                        f"{res['repository']}, {res['bytes_added'] / 1e6:.2f} MB added, "
                                        f"{res['seconds']} s{marks}"), soft_wrap=True)
            else:
                _print_failed(res)

    run_action(json_out, lambda r: do_backup(load_config(config), instance, r, note, keep_days), render,
               _instances_code)


def _print_failed(res: dict[str, Any]) -> None:
    """The line of an instance that failed (or was done in part) among several (see each_instance)."""
    label = ("partial:", "bold yellow") if res["result"] == "partial" else ("error:", "bold red")
    err.print(Text.assemble(label, f" {res['instance']}: {res['error']}"), soft_wrap=True)


def _instances_code(results: list[dict[str, Any]]) -> int:
    """The exit code of a command run on several instances: failed when nothing was done, partial when
    some instance failed or was done in part."""
    failed = [r for r in results if r["result"] != "ok"]
    partial = [r for r in results if r["result"] == "partial"]
    if failed and len(failed) == len(results) and not partial:
        return EXIT_FAILED
    return EXIT_PARTIAL if failed else 0


REPOSITORY_STATES = {"ready": "reachable and initialised", "new": "new: would be initialised on the first run",
                     "problem": "not usable"}


def _size(files: int | None, size: int | None) -> str:
    return "not counted" if files is None else f"{files} file(s), {(size or 0) / 1e6:.2f} MB before excludes"


def _render_plan(plans: list[dict[str, Any]]) -> None:
    """One block per instance: what a backup would take, then its problems."""
    for res in plans:
        versions = ", ".join(f"{what} {res[key]}" for what, key in (("version", "app_version"),
                                                                  ("schema", "schema_version")) if res[key])
        out.print(Text.assemble((res["instance"], "bold"), f" ({res['app']}{', ' + versions if versions else ''})"))
        lines = [f"note: {res['note']}" if res["note"] else None,
                 f"kept {res['keep_days']} days (--keep-days)" if res["keep_days"] else None]
        for db in res["databases"]:
            found = "not readable" if db["problem"] else f"{db['tables']} tables, {db['rows']} rows"
            where = "" if db["server"] == db["name"] else f" on {db['server']}"  # SQLite: the file is both
            lines.append(f"database {db['engine']} {db['name']}{where}: {found}")
        for tree in res["trees"]:
            link = f" (via symlink {tree['link']})" if tree["link"] else ""
            found = _size(tree["files"], tree["bytes"]) if tree["exists"] else "MISSING"
            lines.append(f"{tree['kind']} {tree['path']}{link}: {found}")
        lines += [f"exclude: {', '.join(res['exclude'])}" if res["exclude"] else None,
                  *(f"quiesce: {step}" for step in res["quiesce"] or ["nothing (no pause configured)"]),
                  f"escrowed keys: {', '.join(res['keys']) or 'none'}"]
        lines += [f"repository {r['name']} ({r['url']}): {REPOSITORY_STATES[r['state']]}" for r in res["repositories"]]
        lines += [f"warning: {w}" for w in res["warnings"]]
        for line in filter(None, lines):
            out.print(f"  {line}", soft_wrap=True)
        for problem in res["problems"]:
            out.print(Text.assemble("  ", problem_line(problem)), soft_wrap=True)
    out.print("dry run: nothing was changed")


@app.command("list")
def list_cmd(instance: InstanceArg = None, config: ConfigOpt = None, json_out: JsonOpt = False) -> None:
    """Recovery points, newest first."""
    from safehold.actions.points import list_points

    def render(rows: list[dict[str, Any]]) -> None:
        print_table("recovery points", ["instance", "repository", "run id", "started (UTC)", "s", "DBs", "files", "MB",
                                        "app version", "kind"],
                    [[r["instance"], r["repository"], r["run_id"], str(r["started"])[:19], r["seconds"] and
                      round(r["seconds"], 1), r["databases"], r["files"], f"{r['bytes'] / 1e6:.1f}", r["app_version"],
                      "safety" if r["safety_point"] else "kept" if _kept_until(r) else ""] for r in rows])
        # Notes go below the table, one line per point (copies share it): a column would cut them off.
        for run_id, row in {r["run_id"]: r for r in rows if r["note"] or _kept_until(r)}.items():
            out.print(f"{run_id}: {'; '.join(m for m in (row['note'], _kept_until(row)) if m)}", soft_wrap=True)

    def action(r: Reporter) -> list[dict[str, Any]]:
        cfg = load_config(config)
        unreachable: list[str] = []
        rows = list_points(cfg, instance, unreachable)
        for problem in unreachable:
            r.warn(f"{problem} (its points are not listed)")
        return rows

    run_action(json_out, action, render)


@app.command()
def show(first: Annotated[str, typer.Argument(metavar="NAME", help="instance name (a run id alone, the older "
                                                                "form, searches every instance)")],
         run: Annotated[str | None, typer.Argument(metavar="RUN", show_default=False,
                                                   help="run id (a unique prefix is enough) or latest (the "
                                                        "default)")] = None,
         instance: Annotated[str | None, typer.Option(help="instance, for the older form `show RUN --instance "
                                                          "NAME`")] = None,
         config: ConfigOpt = None, json_out: JsonOpt = False) -> None:
    """The manifest of one recovery point: `safehold show NAME RUN`, like restore and ls."""
    from safehold.actions.points import show_point

    def action(r: Reporter) -> dict[str, object]:
        cfg = load_config(config)
        name, point = _show_arguments(cfg, first, run, instance)
        return show_point(cfg, point, name)

    run_action(json_out, action, lambda res: out.print_json(dumps(res)))


def _show_arguments(cfg: Config, first: str, run: str | None, instance: str | None) -> tuple[str | None, str]:
    """(instance or None, run) of `show NAME [RUN]`, or of the older `show RUN [--instance NAME]`."""
    if run is not None:
        if instance is not None and instance != first:
            raise ConfigError(f"`show {first} {run}` names instance {first!r}, --instance names {instance!r}",
                              f"give one: safehold show {first} {run}")
        cfg.instance(first)  # an unknown name is said as such, not as "no point"
        return first, run
    if instance is None and first in cfg.instances:
        return first, "latest"
    if instance is None and first == "latest" and len(cfg.instances) > 1:
        raise ConfigError(f"`latest` names one point per instance and {len(cfg.instances)} are configured "
                          f"({', '.join(cfg.instances)})", "give the instance first: safehold show NAME latest "
                                                           "(or add --instance NAME)")
    return instance, first


@app.command()
def prune(instance: InstanceArg = None,
          dry_run: Annotated[bool, typer.Option(help="show what would be removed")] = False,
          config: ConfigOpt = None, json_out: JsonOpt = False) -> None:
    """Apply retention: remove points the policy no longer keeps."""
    from safehold.actions.prune import prune as do_prune

    def render(rows: list[dict[str, Any]]) -> None:
        for row in rows:
            if row["result"] != "ok":
                _print_failed(row)
                continue
            verb = "would remove" if row["dry_run"] else "removed"
            out.print(f"{row['instance']}@{row['repository']}: keep {len(row['keep'])}, {verb} "
                      f"{len(row['remove'])}: {', '.join(row['remove']) or '-'}")
            if row["dry_run"]:
                for run in row["keep"]:
                    out.print(f"  keep {run} ({', '.join(row['why'][run])})")

    run_action(json_out, lambda r: do_prune(load_config(config), instance, r, dry_run), render, _instances_code)


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

    run_action(json_out, lambda r: do_forget(load_config(config), instance, runs, r, repository, dry_run, force, yes,
                                             confirm if sys.stdin.isatty() else None), render)


@app.command()
def export(run: Annotated[str, typer.Argument(help="run id (a unique prefix is enough) or latest")],
           file: Annotated[Path, typer.Argument(help="output file: NAME.tar.zst, or NAME.tar.zst.age to encrypt")],
           instance: Annotated[str | None, typer.Option(help="instance (default: search all)")] = None,
           force: Annotated[bool, typer.Option(help="overwrite an existing file")] = False,
           config: ConfigOpt = None, json_out: JsonOpt = False) -> None:
    """Write one recovery point to a single portable file (.tar.zst, age-encrypted when .age)."""
    from safehold.actions.export import export as do_export

    run_action(json_out, lambda r: do_export(load_config(config), run, file, r, instance, force),
               lambda res: out.print(Text.assemble(("exported", "green"), f" point {res['run_id']} of "
                                                   f"{res['instance']} to {res['file']} ({res['bytes'] / 1e6:.1f} MB"
                                                   f"{', encrypted' if res['encrypted'] else ''})")))
