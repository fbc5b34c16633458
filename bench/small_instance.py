"""Benchmark: an unchanged nightly point of an iTop-sized small instance, beside iTop's own backup.

Not a test. Run explicitly (from the repository root):

    PYTHONPATH=src python bench/small_instance.py --runs 5

It builds an iTop-sized instance: a MariaDB database of 200 `it_` tables holding about 2 MB, and a
code tree of about 120 MB (the real iTop 3.2.0 from ../shared/apps when it is there, else a tree of
generated PHP-like files of the same shape). It makes a first point, then times unchanged nightly
runs of:
- `safehold backup` (databases, the whole tree, read-back of the point; a real restic key, so each
  restic process pays the key derivation a user's does),
- iTop's own `backup.php` equivalent: `mariadb-dump` of the prefix tables `| gzip`, plus a tar.gz of
  the config file, the delta XML and extensions/ (what iTop's DBBackup puts beside the dump),
- plain `restic backup` of the same tree.
For safehold it also lists each restic process of one run and its wall and CPU time (a wrapper on PATH), which
is where a small run's time goes. Results are appended to bench/RESULTS.md with the command.

`--cheap-key` seals both repositories' keys again with scrypt N=1024 (tests/tools/cheap_init.py, what the
test suite does) after they are made: not what users run, but it shows how much of a run is restic's key
derivation, paid once per restic process.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import statistics
import sys
import tarfile
import time
from pathlib import Path

from benchlib import sh

ROOT = Path(__file__).resolve().parents[1]
ITOP_TARBALL = ROOT.parent / "shared" / "apps" / "itop-3.2.0.tar.gz"
DATABASE = "bench_small_itop"
# Logs each restic process: start, end, command, and its CPU seconds (user, system: bash's `times`).
RESTIC_LOGGER = """#!/bin/bash
started=$(date +%s.%N); "$REAL_RESTIC" "$@"; code=$?
times > "$RESTIC_CALLS.$$"  # in this shell, not a subshell: its second line is the children's
echo "$started $(date +%s.%N) $1 $(tail -1 "$RESTIC_CALLS.$$")" >> "$RESTIC_CALLS"; rm -f "$RESTIC_CALLS.$$"; exit $code
"""


def build_database(rng: random.Random) -> None:
    """200 tables of iTop's shapes (a key, names, a text body, a secondary index), ~2 MB of rows."""
    statements = [f"DROP DATABASE IF EXISTS {DATABASE}", f"CREATE DATABASE {DATABASE} CHARACTER SET utf8mb4",
                  f"USE {DATABASE}"]
    for index in range(200):
        table = f"it_table_{index:03d}"
        statements.append(f"CREATE TABLE {table} (id INT UNSIGNED AUTO_INCREMENT PRIMARY KEY, name VARCHAR(255),"
                          f" status ENUM('active','inactive'), body TEXT, created DATETIME, KEY (name))"
                          " ENGINE=InnoDB")
        rows = [f"('{table}-{n}', '{rng.choice(['active', 'inactive'])}', '{'x' * rng.randint(20, 300)}',"
                f" '2026-01-{1 + n % 28:02d} 10:00:00')" for n in range(rng.randint(5, 70))]
        statements.append(f"INSERT INTO {table} (name, status, body, created) VALUES {', '.join(rows)}")
    script = Path(os.environ.get("TMPDIR", "/tmp")) / "bench-small.sql"
    script.write_text(";\n".join(statements) + ";\n")
    sh(f"mariadb -uroot < {script}")
    script.unlink()


def build_tree(tree: Path, rng: random.Random) -> str:
    """The iTop code tree: the real release when its tarball is here, else generated files of its shape."""
    if ITOP_TARBALL.is_file():
        with tarfile.open(ITOP_TARBALL) as archive:
            archive.extractall(tree.parent, filter="tar")
        (tree.parent / "itop").rename(tree)
        return f"iTop 3.2.0 from {ITOP_TARBALL.name}"
    for index in range(9000):
        path = tree / f"module-{index % 90:02d}" / f"sub-{index % 7}" / f"file-{index}.php"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("<?php\n" + "".join(f"// line {rng.random()}\n" for _ in range(rng.randint(50, 600))))
    return "generated PHP-like tree (iTop tarball not found)"


def _bash_seconds(text: str) -> float:
    """Seconds of a time as bash's `times` prints it (`0m0.412s`)."""
    minutes, _, seconds = text.rstrip("s").partition("m")
    return int(minutes) * 60 + float(seconds)


def restic_calls(log: Path, run_started: float) -> list[tuple[str, float, float, float]]:
    """(command, start and end in seconds after `run_started` (epoch), CPU seconds) of every restic process
    the wrapper logged, in start order."""
    rows = [line.split() for line in log.read_text().splitlines()] if log.exists() else []
    return [(row[2], float(row[0]) - run_started, float(row[1]) - run_started,
             _bash_seconds(row[3]) + _bash_seconds(row[4]))
            for row in sorted(rows, key=lambda r: float(r[0]))]


def children_cpu() -> float:
    """CPU seconds (user + system) of every finished child process so far, their own children included."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="unchanged nightly runs timed per tool")
    parser.add_argument("--work", type=Path, default=Path("/var/tmp/safehold-bench-small"))
    parser.add_argument("--cheap-key", action="store_true",
                        help="reseal the repositories' keys with cheap scrypt (shows the key derivation's share)")
    args = parser.parse_args()
    rng = random.Random(7)
    work = args.work
    sh(f"rm -rf {work}")
    (work / "bin").mkdir(parents=True)
    tree = work / "itop"
    build_database(rng)
    tree_kind = build_tree(tree, rng)
    tree_mb = sum(p.stat().st_size for p in tree.rglob("*") if p.is_file()) / 1e6
    password = work / "repo.pass"
    password.write_text(os.urandom(24).hex())
    password.chmod(0o600)
    config = work / "safehold.toml"
    config.write_text(f"""[settings]
state_dir = "{work / 'state'}"
[repositories.main]
url = "{work / 'repo'}"
password = "file:{password}"
[instances.small]
repositories = ["main"]
files = ["{tree}"]
retention = {{ last = 1000 }}
[[instances.small.databases]]
engine = "mariadb"
user = "root"
names = ["{DATABASE}"]
""")
    real_restic = sh("command -v restic").stdout.strip()
    wrapper = work / "bin" / "restic"
    wrapper.write_text(RESTIC_LOGGER)
    wrapper.chmod(0o755)
    calls = work / "restic-calls.log"
    env = {"PATH": f"{work / 'bin'}{os.pathsep}{os.environ['PATH']}", "REAL_RESTIC": real_restic,
           "RESTIC_CALLS": str(calls), "PYTHONPATH": str(ROOT / "src")}
    safehold = f"{sys.executable} -m safehold backup small --config {config}"
    sh(safehold, env)  # the first point: everything is new
    tables = " ".join(f"it_table_{i:03d}" for i in range(200))
    itop_backup = (f"mariadb-dump -uroot --single-transaction --opt {DATABASE} {tables} | gzip > {work}/dump.sql.gz"
                   f" && tar czf {work}/itop-backup.tar.gz -C {work} dump.sql.gz"
                   f" $(cd {work} && ls -d itop/conf itop/extensions itop/data/*.delta.xml 2>/dev/null)")
    plain_repo = work / "plain-repo"
    plain_env = {"RESTIC_REPOSITORY": str(plain_repo), "RESTIC_PASSWORD_FILE": str(password)}
    sh(f"{real_restic} init -q && {real_restic} backup -q {tree}", plain_env)
    if args.cheap_key:
        sys.path.insert(0, str(ROOT / "tests" / "tools"))
        from cheap_init import cheapen_keys

        for repository in (work / "repo", plain_repo):
            cheapen_keys(repository, password)
    size_query = ("SELECT ROUND(SUM(data_length)/1e6, 1) FROM information_schema.tables"
                  f" WHERE table_schema = '{DATABASE}'")
    data_mb = sh(f'mariadb -uroot -N -e "{size_query}"').stdout.strip()
    # restic calibrates the key's scrypt to ~0.5 s at `init`, on a busy machine to less: what one process costs here.
    used = children_cpu()
    sh(f"{real_restic} cat config", {"RESTIC_REPOSITORY": str(work / "repo"), "RESTIC_PASSWORD_FILE": str(password)})
    key_cpu = children_cpu() - used
    load = os.getloadavg()[0]
    timings: dict[str, list[float]] = {"safehold backup (unchanged)": [], "iTop backup.php equivalent": [],
                                       "restic backup of the tree (unchanged)": []}
    cpu: dict[str, list[float]] = {label: [] for label in timings}
    breakdown: list[tuple[str, float, float, float]] = []
    for attempt in range(args.runs):
        for label, command, command_env in (("safehold backup (unchanged)", safehold, env),
                                            ("iTop backup.php equivalent", itop_backup, {}),
                                            ("restic backup of the tree (unchanged)",
                                             f"{real_restic} backup -q {tree}", plain_env)):
            calls.unlink(missing_ok=True)
            started, epoch, used = time.monotonic(), time.time(), children_cpu()
            sh(command, command_env)
            timings[label].append(time.monotonic() - started)
            cpu[label].append(children_cpu() - used)
            if label.startswith("safehold") and attempt == args.runs - 1:
                breakdown = restic_calls(calls, epoch)
    rows = [(label, min(values), statistics.median(values), statistics.median(cpu[label]))
            for label, values in timings.items()]
    report = [f"\n## Small instance, unchanged nightly point (bench/small_instance.py, "
              f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})\n",
              f"Command: `PYTHONPATH=src python bench/small_instance.py --runs {args.runs}"
              f"{' --cheap-key' * args.cheap_key}`. Database: 200 tables, "
              f"{data_mb} MB of data pages; tree: {tree_kind}, {tree_mb:.0f} MB. {os.cpu_count()} cores; "
              f"load average before the runs {load:.1f}.\n",
              f"Load average after the runs {os.getloadavg()[0]:.1f}. Opening the repository (`restic cat config`: "
              f"the key's derivation, calibrated at init) costs {key_cpu:.2f} CPU s. CPU s: user + system of the "
              "tool's processes (restic, mariadb-dump, gzip, tar...; not the MariaDB server's), which a busy machine "
              "stretches less than wall time.\n",
              "| tool | fastest s | median s | median CPU s |", "|---|---|---|---|",
              *[f"| {label} | {best:.2f} | {median:.2f} | {used:.2f} |" for label, best, median, used in rows],
              "\nrestic processes of safehold's last run (start order; several run side by side; seconds after "
              "`safehold backup` was started):\n",
              "| restic command | starts | ends | wall s | CPU s |", "|---|---|---|---|---|",
              *[f"| {cmd} | {start:.2f} | {end:.2f} | {end - start:.2f} | {used:.2f} |"
                for cmd, start, end, used in breakdown]]
    text = "\n".join(report) + "\n"
    print(text)
    with (ROOT / "bench" / "RESULTS.md").open("a") as results:
        results.write(text)
    sh(f"mariadb -uroot -e 'DROP DATABASE {DATABASE}'")


if __name__ == "__main__":
    main()
