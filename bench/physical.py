"""Benchmark: a physical per-database copy (mariadb-backup + IMPORT TABLESPACE) against safehold's logical method.

Not a test. Run explicitly, as root on the database host (it moves files into the server's datadir):

    PYTHONPATH=src python bench/physical.py --size-mb 2000

Builds an ITFlow-shaped database where one table (ticket_replies) holds about two thirds of the bytes
(bench/shapes.py, shape `itflow-dominant`), then times in one run, on the same server:
backups (safehold's logical default and its `method = "physical"`, each into a fresh restic repository;
the physical copy by hand: `mariadb-backup --backup --stream=mbstream --databases=DB | restic backup
--stdin` plus a schema-only `mariadb-dump`; `mariadb-dump | zstd -3`), restores (safehold, both methods;
by hand: `restic dump | mbstream -x`, `mariadb-backup --prepare --export`, the schema, then per table
DISCARD TABLESPACE, the .ibd/.cfg moved into the datadir owned by mysql, IMPORT TABLESPACE;
`zstd -dc | mariadb`), checks each restored copy byte-identical
(`mariadb-dump --skip-dump-date --hex-blob`), then applies bench/mariadb.py's two 1 % changes and
measures what the next point of each method adds to its repository. The load average before each
step is recorded (the machine is shared). The table and exact commands are printed and, with
--results, put into bench/RESULTS.md under "Physical method".
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import mariadb as logical  # bench/mariadb.py (the script's folder comes first on sys.path)
import shapes
from benchlib import Measure, du, sh, timed

ROOT = Path(__file__).resolve().parents[1]
HOST = " ".join(logical.HOST)
SECTION = "## Physical method (bench/physical.py)"


def same_as(database: str, copy: str) -> bool:
    """Whether `mariadb-dump --skip-dump-date --hex-blob` of the copy equals the original's (names aside)."""
    dump = " ".join(logical.DUMP) + " --skip-dump-date"
    return subprocess.run(f"cmp <({dump} {database} | sed 1,6d) "
                          f"<({dump} {copy} | sed -e 1,6d -e 's/{copy}/{database}/g')", shell=True,
                          executable="/bin/bash", capture_output=True).returncode == 0


def physical_restore_script(database: str, copy: str, stage: Path, datadir: Path, schema: Path) -> str:
    """The physical restore as one shell command: extract, prepare, schema, then discard/move/import per table."""
    tables = (f"mariadb {HOST} -N -e \"SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA='{copy}'"
              " AND TABLE_TYPE='BASE TABLE'\"")
    # ITFlow's table names need no filename encoding; the engine module maps names generally.
    return (
        f"rm -rf {stage} && mkdir -p {stage} && restic dump -q latest /{database}.mbstream | mbstream -x -C {stage}"
        f" && mariadb-backup --prepare --export --target-dir={stage} 2>{stage}.log"
        f" && mariadb {HOST} -e 'CREATE DATABASE {copy}' && mariadb {HOST} {copy} < {schema}"
        f" && T=$({tables})"
        f" && mariadb {HOST} {copy} -e \"SET foreign_key_checks=0; $(for t in $T; do "
        f"echo \"ALTER TABLE \\`$t\\` DISCARD TABLESPACE;\"; done)\""
        f" && for t in $T; do mv {stage}/{database}/$t.ibd {stage}/{database}/$t.cfg {datadir}/{copy}/"
        f" && chown mysql:mysql {datadir}/{copy}/$t.ibd {datadir}/{copy}/$t.cfg; done"
        f" && mariadb {HOST} {copy} -e \"SET foreign_key_checks=0; $(for t in $T; do "
        f"echo \"ALTER TABLE \\`$t\\` IMPORT TABLESPACE;\"; done)\""
        f" && rm -f {datadir}/{copy}/*.cfg && rm -rf {stage}"
    )


def step(label: str, command: str, env: dict[str, str] | None = None, size: Path | None = None) -> Measure:
    """timed(), with the 1-minute load average at the start put into the label's record."""
    load = os.getloadavg()[0]
    measure = timed(label, command, env, size, logical.settle)
    measure.label = f"{label} (load {load:.1f})"
    return measure


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=2000, help="approximate data size to generate (MB)")
    parser.add_argument("--work", type=Path, default=Path("/var/lib/safehold-bench-physical"),
                        help="scratch folder; on the datadir's filesystem, so the restore moves files, not copies")
    parser.add_argument("--database", default="t_physical_bench")
    parser.add_argument("--results", type=Path, help="append the table to this RESULTS.md")
    args = parser.parse_args()
    work, db = args.work, args.database
    with logical.connect() as conn:
        cur = conn.cursor()
        cur.execute("SELECT @@datadir")
        datadir = Path(cur.fetchone()[0])
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    started = time.monotonic()
    print(f"building {db} (~{args.size_mb} MB of rows)", flush=True)
    shapes.build("itflow-dominant", db, args.size_mb, work)
    with logical.connect(db) as conn:
        cur = conn.cursor()
        cur.execute("SELECT TABLE_NAME, DATA_LENGTH + INDEX_LENGTH FROM information_schema.TABLES"
                    " WHERE TABLE_SCHEMA=%s", (db,))
        sizes = {name: int(size) for name, size in cur.fetchall()}
    print(f"built in {time.monotonic() - started:.0f} s: {sum(sizes.values()) / 1e6:.0f} MB, ticket_replies "
          f"{100 * sizes['ticket_replies'] / sum(sizes.values()):.0f}%", flush=True)

    config, password = logical.write_config(work, db, (("itflow", "repo", "auto"), ("physical", "srepo", "physical")))
    safehold = f"PYTHONPATH={ROOT / 'src'} {sys.executable} -m safehold"
    env = {"RESTIC_PASSWORD_FILE": str(password), "RESTIC_REPOSITORY": str(work / "physrepo")}
    sh(f"restic init -q -r {work}/repo && restic init -q -r {work}/srepo && restic init -q", env)
    schema = work / "schema.sql"
    # (label, backup command, restic environment, repository): the three ways a nightly point is made.
    methods = [
        ("safehold, logical (default)", f"{safehold} backup itflow --config {config}", None, work / "repo"),
        ("safehold, method = \"physical\"", f"{safehold} backup physical --config {config}", None, work / "srepo"),
        ("mariadb-backup --stream \\| restic backup --stdin (+ schema dump)",
         f"mariadb-dump {HOST} --no-data --routines --events --triggers --skip-dump-date {db} > {schema}"
         f" && mkdir -p {work}/mbtmp && mariadb-backup --backup --host=127.0.0.1 --port=3306 --user=root "
         f"--stream=mbstream --databases={db} --target-dir={work}/mbtmp 2>{work}/backup.log"
         f" | restic backup -q --stdin --stdin-filename {db}.mbstream", env, work / "physrepo"),
    ]
    backups = [step(f"backup: {label}", command, restic, size) for label, command, restic, size in methods]
    backups.append(step("backup: mariadb-dump \\| zstd -3", f"{' '.join(logical.DUMP)} {db} | zstd -3 -q > "
                        f"{work}/dump.sql.zst", size=work / "dump.sql.zst"))
    restores = [
        step("restore: safehold, logical", f"{safehold} restore itflow latest --to-db {db}_r1 --config {config}"),
        step("restore: safehold, physical", f"{safehold} restore physical latest --to-db {db}_r4 --config {config}"),
        step("restore: restic dump \\| mbstream, prepare --export, IMPORT TABLESPACE (by hand)",
             physical_restore_script(db, f"{db}_r2", work / "stage", datadir, schema), env),
        step("restore: zstd -dc \\| mariadb", f"mariadb {HOST} -e 'CREATE DATABASE {db}_r3' && "
                                             f"zstd -dc {work}/dump.sql.zst | mariadb {HOST} {db}_r3"),
    ]
    identical = {copy: same_as(db, copy) for copy in (f"{db}_r1", f"{db}_r4", f"{db}_r2")}
    growth = []
    for kind in logical.CHANGES:
        description = logical.change_one_percent(db, work, logical.SCHEMA, kind)
        for label, command, restic, size in methods:
            before = du(size)
            after = step(f"{label} after '{kind}'", command, restic, size)
            growth.append((f"{kind}: {description}", label, after.size_mb - before, after.seconds))
    report = render(args, sizes, backups, restores, identical, growth)
    print(report)
    if args.results:
        text = args.results.read_text()
        head, _, tail = text.partition(SECTION)
        rest = tail.partition("\n## ")[2]  # a later section survives a re-run
        args.results.write_text(head + report + ("\n## " + rest if rest else ""))
    with logical.connect() as conn:
        for suffix in ("", "_r1", "_r2", "_r3", "_r4"):
            conn.cursor().execute(f"DROP DATABASE IF EXISTS `{db}{suffix}`")
    shutil.rmtree(work, ignore_errors=True)
    print(f"done in {time.monotonic() - started:.0f} s")


def render(args, sizes, backups, restores, identical, growth) -> str:  # noqa: ANN001
    """The markdown section for RESULTS.md."""
    total = sum(sizes.values())
    logical_restore = restores[0].seconds
    lines = [
        SECTION, "",
        f"Command: `PYTHONPATH=src python bench/physical.py --size-mb {args.size_mb}` (run "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} CPUs, one attempt per tool, machine "
        "shared with other helpers: the 1-minute load average at each step's start is in its label).", "",
        f"Database: ITFlow schema, {total / 1e6:.0f} MB in InnoDB, ticket_replies "
        f"{100 * sizes['ticket_replies'] / total:.0f}% of it.", "",
        "| step | seconds | peak RSS MB | repository / file MB |", "|---|---|---|---|",
        *[f"| {m.label} | {m.seconds:.1f} | {m.rss_mb:.0f} | {m.size_mb:.0f} |" for m in backups],
        *[f"| {m.label} | {m.seconds:.1f} ({logical_restore / m.seconds:.2f}× faster than logical) | {m.rss_mb:.0f} | |"
          for m in restores], "",
        "Restored copies byte-identical (`mariadb-dump --skip-dump-date --hex-blob`): "
        + ", ".join(f"{copy}: {'yes' if same else 'NO'}" for copy, same in identical.items()) + ".", "",
        "| 1 % change | method | repository grows MB (% of the database) | backup s |", "|---|---|---|---|",
        *[f"| {change} | {label} | {grown:.1f} ({100 * grown * 1e6 / total:.1f}%) | {seconds:.1f} |"
          for change, label, grown, seconds in growth], "",
        "Exact commands:", "",
        *[f"- {m.label}: `` {m.command} ``" for m in [*backups, *restores]], "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
