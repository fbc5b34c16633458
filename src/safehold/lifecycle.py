"""The run lifecycle: a run as unattended operation sees it, recorded in the history, then followed by
its hooks. Its own floor, below every action and above history, notify and metrics:

    with tracked(config, "itflow", "backup", reporter, after_stored=retention_after_backup) as record:
        result = do_the_work()
        record.bytes_added = result["bytes_added"]

On exit the run is stored (ok, or failed with the error's one line when the block raised), then: the
caller's `after_stored` step runs after a run that stored its point (ok, or partial: a copy missing;
never after a failed one) — a backup passes retention (actions.prune), which this floor cannot import
without a cycle — notifications and incident tickets go out, and the metrics textfile is rewritten.
A hook that fails is reported as a warning: it never turns a good run into a failed one or hides the error of
a failed one. A run refused because the instance was busy (lock.Locked) is not a run: it leaves no history and
no notification, and neither does one whose block set `record.discard` (it turned out to concern another
instance); one stopped with Ctrl-C is recorded as failed without notifications.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from safehold import metrics, notify
from safehold.config import Config
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


# A step after a run that stored its point: (config, history, the stored run, its record, reporter).
AfterStored = Callable[[Config, History, Run, RunRecord, Reporter], None]


@contextlib.contextmanager
def tracked(config: Config, instance: str, kind: Kind, reporter: Reporter,
            details: dict[str, Any] | None = None, after_stored: AfterStored | None = None) -> Iterator[RunRecord]:
    """Record a run of `kind` for `instance` around the block, then run the after-run hooks
    (`after_stored` first, when the run stored its point)."""
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
        _after(config, history, record, previous, reporter, after_stored)
        raise
    if record.discard:
        history.discard(record.id)
        return
    record.run = history.record_end(record.id, record.result, record.bytes_added, record.bytes_total,
                                    record.error, record.details)
    _after(config, history, record, previous, reporter, after_stored)


def _after(config: Config, history: History, record: RunRecord, previous: Run | None, reporter: Reporter,
           after_stored: AfterStored | None) -> None:
    run = record.run
    assert run is not None
    # A partial run stored its point; only a copy is missing. Retention still runs, so the repositories
    # that hold it do not grow for as long as a copy's server is down (a failed run prunes nothing).
    if after_stored is not None and run.result in ("ok", "partial"):
        _hook("retention", reporter, lambda: after_stored(config, history, run, record, reporter))
    _hook("notification", reporter, lambda: notify.after_run(config, history, run, previous, reporter))
    if config.settings.metrics_textfile:
        _hook("metrics textfile", reporter, lambda: metrics.write_textfile(config))


def _hook(what: str, reporter: Reporter, action: Callable[[], object]) -> None:
    try:
        action()
    except Exception as exc:  # noqa: BLE001 - a hook must never change the run's own result
        line = exc.line() if hasattr(exc, "line") else str(exc)
        reporter.warn(f"{what} after the run failed: {line}")
