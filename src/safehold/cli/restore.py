"""Commands that read a point back: ls, restore, verify."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.text import Text

from safehold import config as config_module
from safehold.cli.common import (
    ConfigOpt,
    JsonOpt,
    app,
    load_config,
    out,
    print_table,
    problem_line,
    run_action,
    shown,
    stream_json,
)
from safehold.errors import EXIT_FAILED, ConfigError
from safehold.output import Reporter

if TYPE_CHECKING:
    from safehold.actions.browse import Listing


def _print_listing(listing: Listing) -> int:
    """Print a listing line by line as restic streams it; returns how many entries there were."""
    from safehold.files import restic_time_ns

    head = listing.head
    where = head.get("stored_path") or head["path"] or "its file trees and config files"
    print(shown(f"point {head['run_id']} of {head['instance']} in {head['repository']}: {where}"))
    count = 0
    for entry in listing.entries:
        ns = restic_time_ns(str(entry["mtime"] or ""))
        when = datetime.fromtimestamp(ns / 1e9).strftime("%Y-%m-%d %H:%M:%S") if ns is not None else "-"
        size = "-" if entry["size"] is None else str(entry["size"])
        slash = "/" if entry["type"] == "dir" else ""
        print(f"{entry['permissions']}  {entry['type']:<7} {size:>12}  {when}  {shown(str(entry['path']))}{slash}")
        count += 1
    if not count:
        print("(nothing in it)")
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
        listing = list_files(load_config(config), instance, run, path, recursive, repository)
        return stream_json(listing.head, "entries", listing.entries) if json_out else _print_listing(listing)

    run_action(json_out, action, lambda count: None, streamed=True)


def _print_comparison(comparison: list[dict[str, Any]], verbose: bool) -> None:
    """One summary line per database, then the tables that differ (every table with --verbose; --json has all)."""
    shown_rows = comparison if verbose else [c for c in comparison if not c["ok"]]
    for database in dict.fromkeys(c["database"] for c in comparison):
        tables = [c for c in comparison if c["database"] == database]
        differ = sum(not c["ok"] for c in tables)
        rows = sum(int(c["restored"] or 0) for c in tables)
        verdict = (("all match the point's manifest", "green") if not differ else
                   (f"{differ} differ from the point's manifest", "red"))
        out.print(Text.assemble(f"database {database}: {len(tables)} tables, {rows} rows restored; ", verdict))
    if shown_rows:
        print_table("row counts: manifest vs restored", ["database", "table", "expected", "restored", ""],
                    [[c["database"], c["table"], c["expected"], c["restored"], "ok" if c["ok"] else "DIFFERS"]
                     for c in shown_rows])


@app.command()
def restore(
    instance: Annotated[str | None, typer.Argument(help="instance name (may be left out when only one is "
                                                        "configured)")] = None,
    run: Annotated[str, typer.Argument(help="run id or latest (not with --from-file)")] = "latest",
    to_db: Annotated[list[str] | None, typer.Option("--to-db", help="NAME, or OLD=NEW per database")] = None,
    files_to: Annotated[Path | None, typer.Option(help="restore files under this folder instead of in place")] = None,
    only: Annotated[list[str] | None, typer.Option(help="db, files or config (repeatable)")] = None,
    dry_run: Annotated[bool, typer.Option(help="print the plan, change nothing")] = False,
    force: Annotated[bool, typer.Option(help="overwrite non-empty databases and, with --path, files that differ "
                                              "from the point (after a safety point)")] = False,
    allow_version_change: Annotated[bool, typer.Option(
        "--allow-version-change", help="restore a point of another app or schema version than the live code "
                                       "(warned and recorded; --force does not allow it)")] = False,
    repository: Annotated[str | None, typer.Option(help="repository to restore from")] = None,
    from_file: Annotated[Path | None, typer.Option("--from-file", help="restore from a `safehold export` file")] = None,
    path: Annotated[list[str] | None, typer.Option("--path", help="only this file or folder, by its path on the "
                                                                  "host (repeatable; no database)")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="list every restored table's row count, "
                                                                  "not only those that differ")] = False,
    trust_signer: Annotated[str | None, typer.Option("--trust-signer", help="with --from-file: accept an export "
                                                     "signed by this key fingerprint (SHA256:...), checked by hand "
                                                     "against the kit of the installation that made it")] = None,
    allow_unsigned: Annotated[bool, typer.Option("--allow-unsigned", help="with --from-file: accept an export "
                                                 "without a valid signature (the config still decides where it "
                                                 "goes)")] = False,
    config: ConfigOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Restore a recovery point (databases, files, config), or single files and folders of it (--path)."""
    from safehold.actions.import_file import restore_from_file
    from safehold.actions.restore import restore as do_restore

    def render(res: dict[str, Any]) -> None:
        plan = res["plan"]
        out.print(f"point {plan['run_id']} of {plan['instance']} from {plan['repository']}")
        if plan.get("config_from_point"):
            verb = "comes" if res["dry_run"] else "came"
            out.print(f"  config file {shown(plan['config_from_point'])} {verb} back from the point first (it is "
                      "missing here)", soft_wrap=True)
        for db in plan["databases"]:
            note: list[str | tuple[str, str]] = [" ", ("(has data)", "yellow")] if db["target_has_data"] else []
            out.print(Text.assemble(f"  database {db['from']} → {db['into']} ({db['tables']} tables)", *note))
        _print_accounts(plan.get("accounts") or {}, res["dry_run"])
        for included in plan["paths"]:
            note = [" ", ("(replaces the live one)", "yellow")] if included in plan["replaces"] else []
            out.print(Text.assemble(f"  files {shown(included)} → {shown(plan['files_into'])}", *note), soft_wrap=True)
        if res["dry_run"]:
            _print_selection(plan.get("selection"))
            if res.get("version_change"):
                out.print(Text.assemble(("version change allowed: ", "yellow"), "; ".join(res["version_change"])),
                          soft_wrap=True)
            out.print("a safety point of what would be replaced is taken first" if plan["safety_point"]
                      else "nothing to save: no safety point")
            out.print("dry run: nothing was changed")
            return
        if res.get("comparison"):
            _print_comparison(res["comparison"], verbose)
        if restored := res.get("restored"):
            same = f"; {restored['unchanged']} already as in the point" if restored.get("unchanged") else ""
            out.print(f"{restored['files']} file(s), {restored['bytes']} bytes came back{same}", soft_wrap=True)
        if res.get("version_change"):
            out.print(Text.assemble(("restored across a version change (--allow-version-change): ", "yellow"),
                                    "; ".join(res["version_change"])), soft_wrap=True)
        verdict = ("restore complete", "green") if res["ok"] else ("restore finished with differences", "red")
        saved = f"; safety point {res['safety_point']}" if res.get("safety_point") else ""
        out.print(Text.assemble(verdict, f" in {res['seconds']} s{saved}"))

    def action(r: Reporter) -> dict[str, Any]:
        cfg = load_config(config)
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
            return restore_from_file(cfg, name, from_file, r, only=only, to_db=to_db, files_to=files_to,
                                     dry_run=dry_run, force=force, allow_version_change=allow_version_change,
                                     trust_signer=trust_signer, allow_unsigned=allow_unsigned)
        if trust_signer or allow_unsigned:
            raise ConfigError("--trust-signer and --allow-unsigned are about export files",
                              "use them with --from-file, or drop them")
        return do_restore(cfg, name, point, r, only=only, to_db=to_db, files_to=files_to, dry_run=dry_run,
                          force=force, allow_version_change=allow_version_change, repository=repository,
                          paths=path or [])

    run_action(json_out, action, render, lambda res: 0 if res.get("ok", True) else EXIT_FAILED)


def _instance_and_run(cfg: config_module.Config, instance: str | None, run: str) -> tuple[str, str]:
    """`restore [INSTANCE] [RUN]`: with one instance configured, a lone argument that names none is the run."""
    if instance is None:
        if len(cfg.instances) != 1:
            known = ", ".join(sorted(cfg.instances)) or "none"
            raise ConfigError(f"{cfg.source} configures {len(cfg.instances)} instances: name the one to restore",
                              f"safehold restore INSTANCE [RUN] (instances: {known})")
        return next(iter(cfg.instances)), run
    if instance not in cfg.instances and run == "latest" and len(cfg.instances) == 1:
        return next(iter(cfg.instances)), instance
    return instance, run


def _print_accounts(step: dict[str, Any], dry_run: bool) -> None:
    """The database accounts and databases a restore re-creates first (and how, or why it cannot)."""
    via = f" through {step['via']}" if step.get("via") else ""
    verb = "is" if dry_run else "was"
    for name in step.get("create_databases", []):
        out.print(f"  database {name} {verb} missing: created with its recorded character set and collation{via}",
                  soft_wrap=True)
    for name in step.get("create_accounts", []):
        out.print(f"  database account {name} {verb} missing: re-created as recorded (auth, grants){via}",
                  soft_wrap=True)
    for line in step.get("postgres", []):
        out.print(f"  {line}", soft_wrap=True, markup=False)
    if step.get("problem"):
        out.print(Text.assemble(("the restore would stop: ", "red"), f"{step['problem']}; an administrator runs "
                                "this SQL first (the app's password in place of the placeholder):"), soft_wrap=True)
        out.print(step["sql"], soft_wrap=True, markup=False, highlight=False)


def _print_selection(selection: dict[str, Any] | None) -> None:
    """What a `restore --path` dry run would do with each path."""
    if not selection:
        return
    for item in selection["items"]:
        note = " (differs on the host: only --force replaces it)" if item["action"] == "replace" else ""
        out.print(f"  {item['action']:<8} {shown(str(item['path']))}{note}", soft_wrap=True)
    out.print(f"{selection['files']} file(s), {selection['bytes']} bytes would come back; "
              f"{selection['unchanged']} already as in the point; {len(selection['conflicts'])} differ on the host",
              soft_wrap=True)


@app.command()
def verify(
    run: Annotated[str | None, typer.Argument(help="run id or prefix, or latest (default: every point); with "
                                                   "--repair the instance (default: all)")] = None,
    all_points: Annotated[bool, typer.Option("--all", help="check every point (the default)")] = False,
    read_data: Annotated[bool, typer.Option(help="read and check every stored byte")] = False,
    instance: Annotated[str | None, typer.Option(help="only this instance")] = None,
    repair: Annotated[bool, typer.Option(help="rebuild the index of a damaged repository and name the points "
                                              "that lost data")] = False,
    scheduled: Annotated[bool, typer.Option(help="as schedule.verify runs it (needs --instance): read "
                                                 "schedule.verify_read_data of the data, record the run in the "
                                                 "history, notify on problems")] = False,
    config: ConfigOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Check repository integrity and that every point holds all its parts."""
    from safehold.actions.verify import Verified, verify_instance, verify_recorded
    from safehold.actions.verify import repair as do_repair

    def render(res: dict[str, Any]) -> None:
        for line in res["shared_checks"].values():
            out.print(f"{line}: not checked again", soft_wrap=True)
        for where, count in res["points_checked"].items():
            out.print(f"{where}: {count} point(s) checked")
        for problem in res["problems"]:
            out.print(problem_line(problem), soft_wrap=True)
        out.print(Text("verify ok", "green") if res["ok"] else Text("verify found problems", "red"))

    def render_repair(res: dict[str, Any]) -> None:
        for row in res["repositories"]:
            name = row["repository"]
            if row["ok"]:
                out.print(f"{name}: " + ("index rebuilt, the repository is sound" if row["repaired"] else "sound"))
            elif not row["damaged"]:
                out.print(problem_line(row["error"]), soft_wrap=True)
            for point in row["damaged"]:
                out.print(problem_line(f"repository {name}: point {point['run_id']} of {point['instance']} lost data; "
                                       "it is kept (it may still hold most of it)"), soft_wrap=True)
            if row["forget"]:
                out.print(f"{name}: backups store the lost data anew from now on (a damaged point whose data the "
                          "sources still hold becomes whole again). To remove the damaged ones (until then "
                          "`verify` reports them), run:", soft_wrap=True)
                for line in row["forget"]:
                    out.print(f"  {line}", soft_wrap=True)
        out.print(Text("repair done: every repository is sound", "green") if res["ok"] else
                  Text("repair done: damage remains (see above)", "red"))

    chosen = None if all_points else run
    if scheduled:
        def as_scheduled(reporter: Reporter) -> Verified:
            if instance is None or run is not None or repair or read_data:
                raise ConfigError("--scheduled verifies one instance as its schedule does", "give --instance NAME "
                                  "alone (schedule.verify_read_data says how much of the data it reads)")
            return verify_instance(load_config(config), instance, reporter)

        run_action(json_out, as_scheduled, render, lambda res: 0 if res["ok"] else EXIT_FAILED)
    elif repair:
        run_action(json_out, lambda r: do_repair(load_config(config), instance, chosen, read_data, r),
                   render_repair, lambda res: 0 if res["ok"] else EXIT_FAILED)
    else:
        run_action(json_out, lambda r: verify_recorded(load_config(config), chosen, read_data, r, instance),
                   render, lambda res: 0 if res["ok"] else EXIT_FAILED)
