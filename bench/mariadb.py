"""Benchmark: safehold's parallel MariaDB method against the tools users run today.

Not a test. Run explicitly, e.g. (from the repository root):

    PYTHONPATH=src python bench/mariadb.py --size-mb 3000

It builds an ITFlow-shaped database (bench/shapes.py, shape `itflow`) from the real ITFlow
schema in ../shared/fixtures, filled with generated rows of realistic sizes (ticket replies ~2 KB of HTML-ish text,
tickets ~1.5 KB, logs ~250 B, clients/contacts/assets), then times in one run, on the same server:
backups (safehold into a fresh restic repository, mariadb-dump | gzip -9, | zstd -3, mydumper -t 2 -c,
mariadb-dump | restic backup --stdin) and restores (safehold, gunzip | mariadb, myloader -t 2), each
with wall time, peak RSS of the largest process (GNU time) and output size; then changes 1% of the
rows (updates spread over tickets, appended ticket replies and log rows) and measures what the
next safehold point and the next `mariadb-dump | restic` snapshot add to their repositories.
Results go to bench/RESULTS.md (overwritten) with the exact commands.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

from benchlib import best_of, du, timed
from shapes import ITFLOW_SCHEMA, ITFLOW_SHARES, Text, append_logs, build_itflow, connect, load, settle, stamp, tsv

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ITFLOW_SCHEMA
SRC = ROOT / "src"
HOST = ["-h127.0.0.1", "-P3306", "-uroot"]
MYDUMPER_HOST = "-h 127.0.0.1 -P 3306 -u root"  # mydumper/myloader do not parse the glued forms
DUMP = ["mariadb-dump", *HOST, "--single-transaction", "--routines", "--events", "--triggers", "--hex-blob",
        "--quick", "--max-allowed-packet=1G"]
NOTES_MARKER = "<!-- notes: kept across runs -->"


CHANGES = {
    "recent": ("update 1% of the rows of tickets and ticket_replies, spread over their newest 10% (open tickets are "
               "the ones that change), append 1% new ticket_replies and 1% new logs",
               "{key} % 10 = 7 AND {key} > {top} * 0.9"),
    "uniform": ("update another 1% of the rows of tickets and ticket_replies, spread uniformly over the whole tables "
                "(every 100th row)", "{key} % 100 = 3"),
}


def change_one_percent(database: str, work: Path, schema: Path, kind: str) -> str:
    """Apply one of CHANGES; returns its description."""
    rng = random.Random(7)
    conn = connect(database)
    cur = conn.cursor()
    tops = {}
    for table, key in (("tickets", "ticket_id"), ("ticket_replies", "ticket_reply_id"), ("logs", "log_id")):
        cur.execute(f"SELECT MAX({key}) FROM {table}")
        tops[table] = int(cur.fetchone()[0])
    description, where = CHANGES[kind]
    cur.execute("UPDATE tickets SET ticket_status = 5, ticket_resolved_at = NOW() WHERE "
                + where.format(key="ticket_id", top=tops["tickets"]))
    cur.execute("UPDATE ticket_replies SET ticket_reply_archived_at = NOW() WHERE "
                + where.format(key="ticket_reply_id", top=tops["ticket_replies"]))
    if kind == "recent":
        text = Text(rng, schema)
        path = work / "rows.tsv"
        first = tops["ticket_replies"] + 1
        tsv([(i, "<p>" + text.paragraph(2000) + "</p>", "public", stamp(rng), 1, rng.randint(1, tops["tickets"]))
             for i in range(first, first + tops["ticket_replies"] // 100)], path)
        load(cur, "ticket_replies", ["ticket_reply_id", "ticket_reply", "ticket_reply_type",
                                     "ticket_reply_created_at", "ticket_reply_by", "ticket_reply_ticket_id"], path)
        append_logs(cur, rng, text, tops["logs"] + 1, tops["logs"] // 100, path)
    conn.close()
    return description


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=3000, help="approximate data size to generate (MB)")
    parser.add_argument("--schema", type=Path, default=SCHEMA, help="ITFlow schema dump (default ../shared/fixtures)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/safehold-bench"), help="scratch folder")
    parser.add_argument("--database", default="t_mariadb_bench", help="name of the generated database")
    parser.add_argument("--runs", type=int, default=2, help="attempts per measurement; the fastest counts")
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "RESULTS.md")
    parser.add_argument("--chunker-from", type=Path, help="restic repository (password: bench-password) whose chunker "
                                                         "parameters every repository of the run copies")
    args = parser.parse_args()
    work, db = args.work, args.database
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    started = time.monotonic()
    print(f"building {db} (~{args.size_mb} MB of rows)", flush=True)
    with connect() as conn:
        for suffix in ("_r1", "_r2", "_r3"):  # leftovers of an interrupted run
            conn.cursor().execute(f"DROP DATABASE IF EXISTS `{db}{suffix}`")
    build_itflow(db, args.size_mb, work, ITFLOW_SHARES["itflow"], args.schema)
    with connect(db) as conn:
        cur = conn.cursor()
        cur.execute("SELECT SUM(DATA_LENGTH + INDEX_LENGTH), SUM(TABLE_ROWS) FROM information_schema.TABLES"
                    " WHERE TABLE_SCHEMA=%s", (db,))
        db_bytes, rows = (float(v) for v in cur.fetchone())
    raw = timed("mariadb-dump (raw, to a file)", f"{' '.join(DUMP)} {db} > {work}/raw.sql", size=work / "raw.sql",
                settle=settle)
    print(f"built in {time.monotonic() - started:.0f} s; dump {raw.size_mb:.0f} MB", flush=True)

    config, password = write_config(work, db)
    safehold = f"PYTHONPATH={SRC} {sys.executable} -m safehold"
    restic_env = {"RESTIC_PASSWORD_FILE": str(password), "RESTIC_REPOSITORY": str(work / "dumprepo")}
    dump_cmd, host = " ".join(DUMP), " ".join(HOST)
    # restic picks a random chunker polynomial for each new repository; --chunker-from makes every repository
    # of the run (and of other runs given the same template) cut its chunks the same way.
    same_chunks = ""
    if args.chunker_from:
        os.environ["RESTIC_FROM_PASSWORD_FILE"] = str(password)
        if not args.chunker_from.exists():
            subprocess.run(["restic", "init", "-q", "-r", str(args.chunker_from), "--password-file", str(password)],
                           check=True)
        same_chunks = f" --copy-chunker-params --from-repo {args.chunker_from}"
    init_repo = f"rm -rf {work}/repo {work}/state && restic init -q -r {work}/repo{same_chunks}"
    init_dumprepo = f"rm -rf {work}/dumprepo && restic init -q{same_chunks}"
    runs = args.runs
    backups = best_of(runs, [
        ("safehold backup (parallel, into restic)", f"{safehold} backup itflow --config {config}", init_repo,
         work / "repo"),
        ("mariadb-dump | gzip -9", f"{dump_cmd} {db} | gzip -9 > {work}/dump.sql.gz", "true", work / "dump.sql.gz"),
        ("mariadb-dump | zstd -3", f"{dump_cmd} {db} | zstd -3 -q > {work}/dump.sql.zst", "true",
         work / "dump.sql.zst"),
        ("mydumper -t 2 -c", f"mydumper {MYDUMPER_HOST} -t 2 -c -B {db} -o {work}/mydumper",
         f"rm -rf {work}/mydumper", work / "mydumper"),
        ("mariadb-dump | restic backup --stdin",
         f"{dump_cmd} {db} | restic backup --stdin --stdin-filename {db}.sql -q", init_dumprepo, work / "dumprepo"),
    ], restic_env, settle)
    drop = "mariadb " + host + " -e 'DROP DATABASE IF EXISTS {}'"
    restores = best_of(runs, [
        ("safehold restore", f"{safehold} restore itflow latest --to-db {db}_r1 --config {config}",
         drop.format(f"{db}_r1"), None),
        ("gunzip | mariadb", f"mariadb {host} -e 'CREATE DATABASE {db}_r2' && "
                             f"gunzip < {work}/dump.sql.gz | mariadb {host} {db}_r2", drop.format(f"{db}_r2"), None),
        ("myloader -t 2", f"myloader {MYDUMPER_HOST} -t 2 -d {work}/mydumper -B {db}_r3", drop.format(f"{db}_r3"),
         None),
    ], settle=settle)
    # The copy was restored under another name: only the header and that name may differ.
    same = subprocess.run(f"cmp <({dump_cmd} --skip-dump-date {db} | sed 1,6d) "
                          f"<({dump_cmd} --skip-dump-date {db}_r1 | sed -e 1,6d -e 's/{db}_r1/{db}/g')", shell=True,
                          executable="/bin/bash", capture_output=True).returncode == 0
    growth = []
    for kind in CHANGES:
        description = change_one_percent(db, work, args.schema, kind)
        repo_before, dumprepo_before = du(work / "repo"), du(work / "dumprepo")
        ours = timed(f"safehold backup after change '{kind}'", f"{safehold} backup itflow --config {config}",
                     size=work / "repo", settle=settle)
        theirs = timed(f"mariadb-dump | restic backup --stdin after change '{kind}'",
                       f"{' '.join(DUMP)} {db} | restic backup --stdin --stdin-filename {db}.sql -q", restic_env,
                       size=work / "dumprepo", settle=settle)
        growth.append((kind, description, ours.size_mb - repo_before, theirs.size_mb - dumprepo_before))
    write_results(args, db_bytes, rows, raw, backups, restores, same, growth)
    with connect() as conn:
        for suffix in ("", "_r1", "_r2", "_r3"):
            conn.cursor().execute(f"DROP DATABASE IF EXISTS `{db}{suffix}`")
    shutil.rmtree(work, ignore_errors=True)
    print(f"done in {time.monotonic() - started:.0f} s; results in {args.results}")


def write_config(work: Path, db: str, instances: tuple[tuple[str, str, str], ...] = (("itflow", "repo", "auto"),)
                 ) -> tuple[Path, Path]:
    """safehold's config for the run, one instance per (name, repository folder in `work`, method) backing up
    `db` into its own repository, and the repositories' password file."""
    password = work / "repo.pass"
    password.write_text("bench-password\n")
    password.chmod(0o600)
    config = work / "safehold.toml"
    text = f'[settings]\nstate_dir = "{work / "state"}"\n'
    for name, folder, method in instances:
        text += f"""
[repositories.{name}]\nurl = "{work / folder}"\npassword = "file:{password}"\n
[instances.{name}]\napp = "generic"\nrepositories = ["{name}"]\n
[[instances.{name}.databases]]\nengine = "mariadb"\nhost = "127.0.0.1"\nport = 3306\nuser = "root"
names = ["{db}"]\nmethod = "{method}"\n"""
    config.write_text(text)
    return config, password


def cell(text: str) -> str:
    """Text safe inside a markdown table cell."""
    return text.replace("|", "\\|")


def write_results(args, db_bytes, rows, raw, backups, restores, same, growth) -> None:  # noqa: ANN001
    gzip_backup = backups[1]
    lines = [
        "# MariaDB benchmark (bench/mariadb.py)", "",
        f"Command: `PYTHONPATH=src python bench/mariadb.py --size-mb {args.size_mb} --runs {args.runs} "
        f"--schema {args.schema}` (run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} CPUs, "
        "machine shared with other jobs, so absolute times are noisy; every time is the fastest of "
        f"{args.runs} attempts, ratios come from the same run).", "",
        f"Database: ITFlow schema (../shared/fixtures/itflow-schema.sql), {rows:,.0f} rows (estimate), "
        f"{db_bytes / 1e6:.0f} MB in InnoDB (data + indexes); plain `mariadb-dump` output {raw.size_mb:.0f} MB "
        f"in {raw.seconds:.1f} s.", "",
        "## Backup", "", "| tool | seconds | vs gzip -9 | peak RSS MB | stored MB |", "|---|---|---|---|---|",
    ]
    for m in backups:
        lines.append(f"| {cell(m.label)} | {m.seconds:.1f} | {gzip_backup.seconds / m.seconds:.1f}× | {m.rss_mb:.0f} | "
                     f"{m.size_mb:.1f} |")
    gunzip = restores[1]
    lines += ["", "## Restore", "", "| tool | seconds | vs gunzip \\| mariadb | peak RSS MB |", "|---|---|---|---|"]
    for m in restores:
        lines.append(f"| {cell(m.label)} | {m.seconds:.1f} | {gunzip.seconds / m.seconds:.1f}× | {m.rss_mb:.0f} |")
    lines += [
        "", f"Restored copy byte-identical to the original (`mariadb-dump --skip-dump-date` compared): "
        f"{'yes' if same else 'NO'}.", "",
        "## Incremental growth after changing 1% of the rows", "",
        "| change | safehold adds MB | % of dump | mariadb-dump \\| restic adds MB | % of dump |",
        "|---|---|---|---|---|",
        *[f"| {kind}: {description} | {ours:.1f} | {100 * ours / raw.size_mb:.1f}% | {theirs:.1f} | "
          f"{100 * theirs / raw.size_mb:.1f}% |" for kind, description, ours, theirs in growth],
        "", "## Exact commands", "",
    ]
    for m in [raw, *backups, *restores]:
        lines.append(f"- {m.label}: `{m.command}`")
    # Hand-written analysis below the marker survives a re-run.
    notes = args.results.read_text().partition(NOTES_MARKER)[2] if args.results.exists() else ""
    args.results.write_text("\n".join(lines) + "\n\n" + NOTES_MARKER + notes)


if __name__ == "__main__":
    main()
