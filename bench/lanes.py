"""Benchmark: safehold's restore on the large shapes real databases grow into, beside the tools users run.

Not a test. Run explicitly (from the repository root):

    PYTHONPATH=src python bench/lanes.py --size-mb 1000 --shapes itflow-dominant itop-blob itflow

For each shape of bench/shapes.py it builds the database, then times in one run, on the same server:
backups (safehold into a fresh restic repository, `mariadb-dump | zstd -3`, mydumper -t 2 -c) and
restores (safehold, `zstd -dc | mariadb`, `gunzip | mariadb`, myloader -t 2), each with wall time,
mysqld's own CPU seconds (/proc/PID/stat of the server), peak RSS and the load average before it
(the machine is shared: only ratios from the same run count). The gzip file for `gunzip | mariadb`
is made from the zstd dump with `gzip -1`, untimed (its level does not change how fast it unpacks
much, and `gzip -9` of 3 GB takes minutes). The safehold copy is compared with the original by
`mariadb-dump --skip-dump-date --hex-blob`. Results replace the "Large shapes" section of
bench/RESULTS.md after each shape, with the exact commands.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from benchlib import Measure, safehold_config, sh, timed
from mariadb import DUMP, MYDUMPER_HOST, cell
from shapes import HOST, SHAPES, build, connect, largest_table, settle

ROOT = Path(__file__).resolve().parents[1]
START, END = "<!-- lanes: start -->", "<!-- lanes: end -->"


def mysqld_cpu() -> float:
    """CPU seconds the local server has used so far (user + system)."""
    pid = Path("/run/mysqld/mysqld.pid").read_text().strip()
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measured(label: str, command: str, env: dict[str, str] | None = None,
             size: Path | None = None) -> tuple[Measure, float, float]:
    """The command's Measure, mysqld's CPU seconds during it, and the load average just before."""
    settle()
    load = os.getloadavg()[0]
    before = mysqld_cpu()
    measure = timed(label, command, env, size)
    return measure, mysqld_cpu() - before, load


def drop(*names: str) -> None:
    with connect() as conn:
        for name in names:
            conn.cursor().execute(f"DROP DATABASE IF EXISTS `{name}`")


def run_shape(shape: str, size_mb: int, work: Path, db: str) -> dict:
    """Build one shape and measure every tool on it."""
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    copies = [f"{db}_r{n}" for n in range(1, 5)]
    drop(*copies)
    started = time.monotonic()
    build(shape, db, size_mb, work)
    table, share, db_mb = largest_table(db)
    print(f"{shape}: built in {time.monotonic() - started:.0f} s, {db_mb:.0f} MB, {table} {share:.0%}", flush=True)
    config = safehold_config(work, '[instances.lanes]\napp = "generic"\nrepositories = ["bench"]\n\n'
                             '[[instances.lanes.databases]]\nengine = "mariadb"\nhost = "127.0.0.1"\nport = 3306\n'
                             f'user = "root"\nnames = ["{db}"]\n')
    safehold = f"PYTHONPATH={ROOT / 'src'} {sys.executable} -m safehold"
    dump, host = " ".join(DUMP), " ".join(HOST)
    sh(f"restic init -q -r {work / 'repo'} --password-file {work / 'repo.pass'}")
    backups = [
        measured("safehold backup", f"{safehold} backup lanes --config {config}", size=work / "repo"),
        measured("mariadb-dump | zstd -3", f"{dump} {db} | zstd -3 -q > {work}/dump.sql.zst",
                 size=work / "dump.sql.zst"),
        measured("mydumper -t 2 -c", f"mydumper {MYDUMPER_HOST} -t 2 -c -B {db} -o {work}/mydumper",
                 size=work / "mydumper"),
    ]
    sh(f"zstd -dc {work}/dump.sql.zst | gzip -1 > {work}/dump.sql.gz")
    create = "mariadb " + host + " -e 'CREATE DATABASE {0}' && "
    restores = [
        measured("safehold restore", f"{safehold} restore lanes latest --to-db {copies[0]} --config {config}"),
        measured("zstd -dc | mariadb", create.format(copies[1]) + f"zstd -dc {work}/dump.sql.zst | mariadb {host} "
                 f"{copies[1]}"),
        measured("gunzip | mariadb", create.format(copies[2]) + f"gunzip < {work}/dump.sql.gz | mariadb {host} "
                 f"{copies[2]}"),
        measured("myloader -t 2", f"myloader {MYDUMPER_HOST} -t 2 -d {work}/mydumper -B {copies[3]}"),
    ]
    # The copy was restored under another name: only the header and that name may differ.
    reference = "mariadb-dump " + host + " --skip-dump-date --hex-blob --routines --events --triggers {0} | sed 1,6d"
    renamed = f"{reference.format(copies[0])} | sed 's/{copies[0]}/{db}/g'"
    same = subprocess.run(f"cmp <({reference.format(db)}) <({renamed})", shell=True, executable="/bin/bash",
                          capture_output=True).returncode == 0
    drop(db, *copies)
    shutil.rmtree(work, ignore_errors=True)
    return {"shape": shape, "table": table, "share": share, "db_mb": db_mb, "backups": backups, "restores": restores,
            "same": same}


def section(args: argparse.Namespace, results: list[dict]) -> str:
    lines = [START, f"## Large shapes (bench/lanes.py, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})", "",
             f"Command: `PYTHONPATH=src python bench/lanes.py --size-mb {args.size_mb} "
             f"--shapes {' '.join(args.shapes)}`"
             f" ({os.cpu_count()} CPUs shared with other jobs: the load average before each step is listed; one "
             "attempt per tool, ratios from the same run).", ""]
    for result in results:
        lines += [f"### {result['shape']}: {result['db_mb']:.0f} MB in InnoDB, {result['table']} holds "
                  f"{result['share']:.0%}", "",
                  "| restore | seconds | vs zstd -dc \\| mariadb | mysqld CPU-s | peak RSS MB | load avg |",
                  "|---|---|---|---|---|---|"]
        floor = result["restores"][1][0].seconds
        for measure, cpu, load in result["restores"]:
            lines.append(f"| {cell(measure.label)} | {measure.seconds:.1f} | {measure.seconds / floor:.2f}× | "
                         f"{cpu:.1f} | {measure.rss_mb:.0f} | {load:.1f} |")
        lines += ["", "| backup | seconds | vs mariadb-dump \\| zstd -3 | mysqld CPU-s | peak RSS MB | stored MB | "
                  "load avg |", "|---|---|---|---|---|---|---|"]
        floor = result["backups"][1][0].seconds
        for measure, cpu, load in result["backups"]:
            lines.append(f"| {cell(measure.label)} | {measure.seconds:.1f} | {measure.seconds / floor:.2f}× | "
                         f"{cpu:.1f} | {measure.rss_mb:.0f} | {measure.size_mb:.1f} | {load:.1f} |")
        lines += ["", f"safehold's copy byte-identical (`mariadb-dump --skip-dump-date --hex-blob`): "
                  f"{'yes' if result['same'] else 'NO'}.", "", "Exact commands:", ""]
        lines += [f"- {m.label}: `{m.command}`" for m, _, _ in result["backups"] + result["restores"]]
        lines.append("")
    return "\n".join(lines + [END])


def write(path: Path, text: str) -> None:
    """Replace the Large shapes section of RESULTS.md (or append it), keeping everything else."""
    old = path.read_text() if path.exists() else ""
    if START in old and END in old:
        head, _, rest = old.partition(START)
        new = head + text + rest.partition(END)[2]
    else:
        new = old.rstrip("\n") + "\n\n" + text + "\n"
    path.write_text(new)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=3000, help="approximate data size of each shape (MB)")
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--work", type=Path, default=Path("/tmp/safehold-bench-lanes"), help="scratch folder")
    parser.add_argument("--database", default="t_lanes_bench", help="name of the generated database")
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "RESULTS.md")
    args = parser.parse_args()
    results = []
    for shape in args.shapes:
        results.append(run_shape(shape, args.size_mb, args.work, args.database))
        write(args.results, section(args, results))
    print(f"results in {args.results}")


if __name__ == "__main__":
    main()
