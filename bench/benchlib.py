"""Shared helpers of the benchmarks: shell commands, timing with peak RSS, best-of runs, sizes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


def sh(command: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run a shell command, failing loudly."""
    done = subprocess.run(["bash", "-o", "pipefail", "-c", command], capture_output=True, text=True,
                          env={**os.environ, **(env or {})})
    if done.returncode:
        sys.exit(f"failed: {command}\n{done.stderr[-2000:]}")
    return done


@dataclass
class Measure:
    label: str
    command: str
    seconds: float
    rss_mb: float
    size_mb: float | None = None


def timed(label: str, command: str, env: dict[str, str] | None = None, size: Path | None = None,
          settle: Callable[[], None] = lambda: None) -> Measure:
    """Wall time and peak RSS (largest process of the pipeline, via GNU time) of one shell command."""
    sh("sync")
    settle()
    rss_file = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench-rss-{os.getpid()}"
    started = time.monotonic()
    sh(f"/usr/bin/time -o {rss_file} -f %M bash -o pipefail -c {sh_quote(command)}", env)
    seconds = time.monotonic() - started
    rss = int(rss_file.read_text().split()[-1]) / 1024
    measure = Measure(label, command, seconds, rss, du(size) if size else None)
    print(f"{label}: {seconds:.1f} s, {rss:.0f} MB RSS" + (f", {measure.size_mb:.1f} MB" if size else ""),
          flush=True)
    return measure


def best_of(runs: int, plans: list[tuple], env: dict[str, str] | None = None,
            settle: Callable[[], None] = lambda: None) -> list[Measure]:
    """Fastest of `runs` attempts per (label, command, reset shell command, size path) plan.

    Attempts alternate the order of the tools, so none always runs right after another's writes.
    """
    results: dict[str, list[Measure]] = {plan[0]: [] for plan in plans}
    for attempt in range(runs):
        for label, command, reset, size in plans if attempt % 2 == 0 else reversed(plans):
            sh(reset, env)
            results[label].append(timed(label, command, env, size, settle))
    return [min(results[plan[0]], key=lambda m: m.seconds) for plan in plans]


def sh_quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


def du(path: Path) -> float:
    """Bytes on disk (apparent size) of a file or folder, in MB."""
    if path.is_file():
        return path.stat().st_size / 1e6
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 1e6




def safehold_config(work: Path, instance: str) -> Path:
    """A safehold config in `work` with a restic repository `bench` (password file 0600) and `instance`'s TOML."""
    password = work / "repo.pass"
    password.write_text("bench-password\n")
    password.chmod(0o600)
    config = work / "safehold.toml"
    config.write_text(f'[settings]\nstate_dir = "{work / "state"}"\n\n[repositories.bench]\nurl = "{work / "repo"}"\n'
                      f'password = "file:{password}"\n\n{instance}')
    return config
