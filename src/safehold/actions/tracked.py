"""A run as unattended operation sees it: recorded in the history, then followed by its hooks.

    with tracked(config, "itflow", "backup", reporter) as record:
        result = do_the_work()
        record.bytes_added = result["bytes_added"]

On exit the run is stored (ok, or failed with the error's one line when the block raised), then:
retention is applied after a backup that stored its point (ok, or partial: a copy missing; never after
a failed one), notifications and incident tickets go out,
and the metrics textfile is rewritten. A hook that fails is reported as a warning: it never turns
a good run into a failed one or hides the error of a failed one. A run refused because the instance
was busy (lock.Locked) is not a run: it leaves no history and no notification, and neither does one
whose block set `record.discard` (it turned out to concern another instance); one stopped with
Ctrl-C is recorded as failed without notifications.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from safehold.config import Config
from safehold.errors import SafeholdError
from safehold.history import History, Kind, Result, Run
from safehold.lock import Locked
from safehold.output import Reporter


@dataclass
class RunRecord:
    """What the block fills in; `run` is the stored row once the block ended."""

    id: int
    result: Result = "ok"
    bytes_added: int | None = None
    bytes_total: int | None = None
    error: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    run: Run | None = None
    discard: bool = False  # set by the block: no run of this instance after all (no row, no hooks)
    # Snapshot listings the run already made (repository name -> the instance's snapshots), so
    # retention does not list again; never stored.
    listings: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


@contextlib.contextmanager
def tracked(config: Config, instance: str, kind: Kind, reporter: Reporter,
            details: dict[str, Any] | None = None) -> Iterator[RunRecord]:
    """Record a run of `kind` for `instance` around the block, then run the after-run hooks."""
    history = History(config.state_dir)
    previous = history.last_run(instance, kind)
    record = RunRecord(history.record_start(instance, kind, details))
    try:
        yield record
    except Locked:
        history.discard(record.id)
        raise
    except KeyboardInterrupt:
        # Someone stopped it on purpose: recorded, but no alarm and no incident ticket.
        record.run = history.record_end(record.id, "failed", error="interrupted by the user", details=record.details)
        raise
    except BaseException as exc:
        line = exc.line() if hasattr(exc, "line") else (str(exc) or type(exc).__name__)
        record.run = history.record_end(record.id, "failed", error=line, details=record.details)
        _after(config, history, record, previous, reporter)
        raise
    if record.discard:
        history.discard(record.id)
        return
    record.run = history.record_end(record.id, record.result, record.bytes_added, record.bytes_total,
                                    record.error, record.details)
    _after(config, history, record, previous, reporter)


def _after(config: Config, history: History, record: RunRecord, previous: Run | None, reporter: Reporter) -> None:
    from safehold import metrics, notify

    run = record.run
    # A partial run stored its point; only a copy is missing. Retention still runs, so the repositories
    # that hold it do not grow for as long as a copy's server is down (a failed run prunes nothing).
    if run.kind == "backup" and run.result in ("ok", "partial"):
        _hook("retention", reporter, lambda: _apply_retention(config, history, run, record.listings, reporter))
    _hook("notification", reporter, lambda: notify.after_run(config, history, run, previous, reporter))
    if config.settings.metrics_textfile:
        _hook("metrics textfile", reporter, lambda: metrics.write_textfile(config))


def _hook(what: str, reporter: Reporter, action: Any) -> None:
    try:
        action()
    except Exception as exc:  # noqa: BLE001 - a hook must never change the run's own result
        line = exc.line() if hasattr(exc, "line") else str(exc)
        reporter.warn(f"{what} after the run failed: {line}")


def _apply_retention(config: Config, history: History, run: Run, listings: dict[str, list[dict[str, Any]]],
                     reporter: Reporter) -> None:
    from safehold.actions.common import open_repository, points
    from safehold.actions.prune import keep_reasons, prune_instance
    from safehold.repository.manifest import now

    instance = config.instance(run.instance)
    if not instance.retention.after_backup:
        return
    # One listing per repository decides whether anything must go; a full prune (which also lists
    # leftovers of failed runs and repacks) runs only then, so a normal night costs one restic call.
    counts: dict[str, int] = {}
    for repo_name in instance.repositories:
        try:
            complete = points(config, open_repository(config, repo_name), run.instance, listings.get(repo_name))
        except SafeholdError:
            if run.result != "partial":
                raise
            continue  # the copy this run could not reach: the prune below names it if others need one
        counts[repo_name] = len(complete)
        if len(keep_reasons(complete, instance.retention, now())) < len(complete):
            rows = prune_instance(config, run.instance, reporter)
            counts = {row["repository"]: len(row["keep"]) for row in rows}
            break
    history.add_details(run.id, {"points": counts})
