"""`safehold report`: one printable page per configured scope for an auditor or an MSP's client.

It shows what is kept where (points per repository), the last backup, the last drill with its
measured recovery time (RTO) and point age (RPO), every failure in the period, and a chart of
backup duration and size over time. Points and sizes come from the repositories (manifests), the
drill from the drill log; failures from the run history (every kind: backup, drill, restore,
verify, prune, killed runs too; a restore refused before it changed anything too), from
repositories that cannot be read, and from backup parts stored without a manifest (merged into
the failed run they belong to when the history has it). The chart is inline SVG, so the page
needs no JavaScript and prints as it looks.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape

from safehold import __version__
from safehold.actions.common import Point, open_repository, points, tag_value
from safehold.config import Config
from safehold.errors import SafeholdError
from safehold.history import History
from safehold.lock import is_locked
from safehold.repository.manifest import now
from safehold.repository.restic import snapshot_time

CHART_WIDTH, CHART_HEIGHT, CHART_PAD = 640, 120, 28


def age(seconds: float | None) -> str:
    """A point's age for people: minutes under an hour, else hours."""
    if seconds is None:
        return "-"
    return f"{seconds / 60:.0f} min" if seconds < 3600 else f"{seconds / 3600:.1f} h"


def point_row(point: Point) -> dict[str, Any]:
    """The facts of one point the report shows (and its test compares)."""
    m = point.manifest
    return {
        "run_id": m.run_id,
        "started": m.started,
        "seconds": round((m.finished - m.started).total_seconds(), 1) if m.finished else None,
        "bytes": sum(d.bytes for d in m.databases) + sum(t.bytes for t in m.trees),
        "safety_point": m.safety_point,
        "note": m.note,
    }


def _incomplete_runs(config: Config, instance: str, snaps: list[dict[str, Any]], complete: set[str],
                     since: datetime) -> list[tuple[str, datetime]]:
    """(run id, first part's time) of runs that stored parts but never their manifest: failed or killed backups."""
    first_seen: dict[str, datetime] = {}
    for snap in snaps:
        run = tag_value(snap, "run")
        if run and run not in complete:
            when = snapshot_time(snap)
            first_seen[run] = min(when, first_seen.get(run, when))
    runs = sorted(first_seen, key=first_seen.get)  # type: ignore[arg-type]
    if runs and is_locked(config.state_dir, instance):
        runs = runs[:-1]  # the newest one may still be running
    return [(r, first_seen[r]) for r in runs if first_seen[r] >= since]


# A part of a failed run is stored between the run's start and its end; clocks are the same host's.
PART_SLACK = timedelta(minutes=1)


class Failure(dict[str, Any]):
    """One line of the report's failure list: its `when`, `what` and `message` keys are what the page shows.

    A failed backup from the history also knows when it ended (`until`, an attribute, never shown), so
    parts it stored without a manifest can be said on it rather than as a failure of their own.
    """

    def __init__(self, when: datetime, what: str, message: str, until: datetime | None = None) -> None:
        super().__init__(when=when, what=what, message=message)
        self.until = until


def history_failures(history: History, name: str, since: datetime) -> list[Failure]:
    """Every failed (or partial) run of the instance in the period, with its error line."""
    failures = []
    for run in history.failures(name, since):
        message = run.reason() or "no reason recorded"
        # A verify names the run it was asked for (none: every point); drills and restores the point itself.
        point = run.details.get("run" if run.kind == "verify" else "run_id")
        if run.kind in ("drill", "restore", "verify") and point:
            message = f"{run.kind} of point {point}: {message}"
        failures.append(Failure(run.started, run.kind if run.result == "failed" else f"{run.kind} ({run.result})",
                                message, until=run.finished or now()))
    return failures


def _add_incomplete(failures: list[Failure], repo_name: str, runs: list[tuple[str, datetime]]) -> None:
    """Parts without a manifest: said on the failed backup they belong to, else a failure of their own."""
    for run_id, when in runs:
        note = f"backup run {run_id} did not complete (parts without a manifest in {repo_name})"
        owner = next((f for f in failures if f["what"] == "backup" and f.until is not None
                      and f["when"] - PART_SLACK <= when <= f.until + PART_SLACK), None)
        if owner is not None:
            owner["message"] += f"; {note}"
        else:
            failures.append(Failure(when, "backup", note))


def _chart(rows: list[dict[str, Any]], key: str, scale: float) -> dict[str, Any]:
    """Coordinates of one series (oldest left) for the inline SVG chart."""
    values = [(row["started"], (row[key] or 0) / scale) for row in rows]
    top = max((v for _, v in values), default=0) or 1
    inner_w, inner_h = CHART_WIDTH - 2 * CHART_PAD, CHART_HEIGHT - 2 * CHART_PAD
    step = inner_w / max(len(values) - 1, 1)
    dots = [{"x": round(CHART_PAD + i * step, 1), "y": round(CHART_PAD + inner_h * (1 - v / top), 1),
             "value": v, "when": when} for i, (when, v) in enumerate(values)]
    return {"max": top, "dots": dots, "polyline": " ".join(f"{d['x']},{d['y']}" for d in dots),
            "width": CHART_WIDTH, "height": CHART_HEIGHT, "pad": CHART_PAD}


def instance_report(config: Config, name: str, since: datetime) -> dict[str, Any]:
    """Everything the page shows about one instance."""
    instance = config.instance(name)
    repositories: list[dict[str, Any]] = []
    failures = history_failures(History(config.state_dir), name, since)
    history: list[dict[str, Any]] = []
    last: Point | None = None
    for index, repo_name in enumerate(instance.repositories):
        try:
            repo = open_repository(config, repo_name)
            kept = points(config, repo, name)
            snaps = repo.snapshots([f"instance={name}"])
        except SafeholdError as exc:
            repositories.append({"name": repo_name, "points": None, "newest": None, "oldest": None,
                                 "error": exc.message})
            failures.append(Failure(now(), "repository", f"{repo_name}: {exc.message}"))
            continue
        repositories.append({"name": repo_name, "points": len(kept), "error": None,
                             "newest": kept[0].manifest.started if kept else None,
                             "oldest": kept[-1].manifest.started if kept else None})
        _add_incomplete(failures, repo_name, _incomplete_runs(config, name, snaps, {p.run_id for p in kept}, since))
        if index == 0:  # every run goes to the first repository; the others hold copies
            history = [point_row(p) for p in reversed(kept) if p.manifest.started >= since]
            last = next((p for p in kept if not p.manifest.safety_point), None)
    failures.sort(key=lambda f: f["when"], reverse=True)
    plain = [row for row in history if not row["safety_point"]]
    return {
        "name": name, "app": instance.app, "repositories": repositories,
        "last_backup": point_row(last) if last else None,
        "last_drill": _last_drill(config, name),
        "last_verify": _last_verify(config, name),
        "failures": failures,
        "history": history,
        "charts": {"duration": _chart(plain, "seconds", 1), "size": _chart(plain, "bytes", 1e6)},
    }


def _last_drill(config: Config, name: str) -> dict[str, Any] | None:
    """The newest finished drill's result; a killed one (which recorded nothing but its end) as failed."""
    run = History(config.state_dir).last_drill(name)
    if run is None:
        return None
    if run.details.get("instance"):
        return run.details
    return {"started": run.started, "run_id": None, "ok": False, "problems": [run.reason() or "no result recorded"]}


def _last_verify(config: Config, name: str) -> dict[str, Any] | None:
    """The newest recorded verify (repository check): when, how much data it read, what it found, and the
    repositories whose check it took from another instance's verify of the same round."""
    run = History(config.state_dir).last_run(name, "verify")
    if run is None:
        return None
    return {"started": run.started, "ok": run.result == "ok", "read_data": run.details.get("read_data", "?"),
            "problems": run.details.get("problems") or ([run.error] if run.error else []),
            "shared": sorted((run.details.get("shared_checks") or {}).values())}


def build(config: Config, name: str | None, days: int = 30) -> dict[str, Any]:
    """The report's data for one instance or all, over the last `days` days."""
    generated = now()
    since = generated - timedelta(days=days)
    return {"generated": generated, "since": since, "days": days, "version": __version__,
            "config": str(config.source),
            "instances": [instance_report(config, n, since) for n in config.select(name)]}


def render_html(data: dict[str, Any]) -> str:
    """The report as one self-contained HTML page (inline CSS and SVG, no JavaScript)."""
    env = Environment(loader=PackageLoader("safehold", "templates"), autoescape=select_autoescape(["html"]))
    env.filters["mb"] = lambda value: "-" if value is None else f"{value / 1e6:.1f} MB"
    env.filters["when"] = lambda value: "-" if value is None else str(value)[:16].replace("T", " ") + " UTC"
    env.filters["age"] = age
    return env.get_template("report.html").render(**data)


def report(config: Config, name: str | None, html: Path | None = None, days: int = 30) -> dict[str, Any]:
    """Build the report; with `html`, also write the page there. Returns the data."""
    data = build(config, name, days)
    if html is not None:
        html.parent.mkdir(parents=True, exist_ok=True)
        html.write_text(render_html(data), encoding="utf-8")
        data["html"] = str(html)
    return data
