"""The report page renders for instances with no points, no drills, or a drill that failed before restoring."""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

from safehold.actions.report import _add_incomplete, _chart, history_failures, render_html
from safehold.history import History
from safehold.repository.manifest import now


def _page(instance: dict[str, object]) -> str:
    base = {"name": "app", "app": "generic", "repositories": [], "last_backup": None, "last_drill": None,
            "failures": [], "history": [], "charts": {"duration": _chart([], "seconds", 1),
                                                      "size": _chart([], "bytes", 1e6)}}
    return render_html({"generated": now(), "since": now() - timedelta(days=30), "days": 30, "version": "t",
                        "config": "/etc/safehold/safehold.toml", "instances": [{**base, **instance}]})


def test_empty_instance_renders() -> None:
    page = _page({"repositories": [{"name": "main", "points": 0, "newest": None, "oldest": None, "error": None}]})
    assert "no drill yet" in page and "no points in the period" in page and "<script" not in page


def test_the_last_backups_note_is_shown_escaped() -> None:
    last = {"run_id": "20261125T233000Z-ab12", "started": now(), "seconds": 2.0, "bytes": 1000, "safety_point": False,
            "note": "before <update> 25.06"}
    page = _page({"last_backup": last})
    assert '<td data-field="last-backup-note">before &lt;update&gt; 25.06</td>' in page
    assert "last-backup-note" not in _page({"last_backup": {**last, "note": None}})

def test_failed_drill_without_restore_shows_no_rto() -> None:
    failed = {"run_id": None, "started": now(), "ok": False, "problems": ["no point 'x' of app in repository main"],
              "phases": {}, "rto_seconds": None, "rpo_seconds": None, "checks": [],
              "rto_missing": "no RTO: the drill stopped before every part was restored"}
    page = _page({"last_drill": failed, "repositories": [{"name": "main", "points": None, "newest": None,
                                                          "oldest": None, "error": "repository main: unreachable"}]})
    assert "not measured" in page and "FAILED" in page and "unreachable" in page
    assert "no point &#39;x&#39; of app" in page  # escaped, never raw HTML
    assert "no RTO: the drill stopped before every part was restored" in page


def test_a_drill_that_restored_no_database_shows_no_rto_and_why() -> None:
    """Files came back (a phase was timed) but the database did not: that is no recovery time."""
    drill = {"run_id": "20261125T233000Z-ab12", "started": now(), "ok": False, "rpo_seconds": 60.0, "checks": [],
             "problems": ["cannot create scratch database …: access denied"], "phases": {"files": 1.5},
             "rto_seconds": None, "rto_missing": "no RTO: database shop not restored"}
    page = _page({"last_drill": drill})
    assert '<div class="big bad" data-field="rto">not measured</div>' in page
    assert '<div data-field="rto-missing">no RTO: database shop not restored</div>' in page


def test_the_last_repository_check_is_shown_with_how_much_it_read(tmp_path: Path) -> None:
    from safehold.actions.report import _last_verify
    from tests.unit.test_check_history_metrics import load, make_config

    config = load(make_config(tmp_path))
    assert _last_verify(config, "app") is None and "Last repository check" not in _page({})
    history = History(config.state_dir)
    run = history.record_start("app", "verify", {"read_data": "5%"})
    problem = "repository main is damaged: stored data does not match <its> checksum"
    history.record_end(run, "failed", error=problem, details={"read_data": "5%", "problems": [problem]})
    page = _page({"last_verify": _last_verify(config, "app")})
    assert '<td data-field="verify-read">5%</td>' in page
    assert "FAILED</span>: repository main is damaged: stored data does not match &lt;its&gt; checksum" in page


def _run(history: History, kind: str, result: str, error: str | None, details: dict | None = None,
         started: datetime | None = None, seconds: float = 60) -> int:
    run = history.record_start("app", kind, details)  # type: ignore[arg-type]
    history.record_end(run, result, error=error)  # type: ignore[arg-type]
    if started is not None:
        with history._connect() as db:
            db.execute("UPDATE runs SET started=?, finished=? WHERE id=?",
                       (started.timestamp(), started.timestamp() + seconds, run))
    return run


def test_failures_of_every_kind_in_the_period_come_from_the_history(tmp_path: Path) -> None:
    history = History(tmp_path)
    t0 = datetime(2026, 11, 20, 1, 0, tzinfo=UTC)
    _run(history, "backup", "failed", "too old: before the period", started=t0 - timedelta(days=40))
    _run(history, "backup", "ok", None, started=t0)
    _run(history, "backup", "failed", "SQLite database /srv/app.db does not exist", started=t0 + timedelta(days=1))
    _run(history, "backup", "failed", "SQLite database /srv/app.db does not exist", started=t0 + timedelta(days=2))
    _run(history, "backup", "partial", "copy to offsite failed: unreachable", started=t0 + timedelta(days=3))
    _run(history, "restore", "failed", "restic: wrong password", {"run_id": "20261120T010000Z-ab12"},
         started=t0 + timedelta(days=4))
    _run(history, "prune", "failed", "repository main is locked", started=t0 + timedelta(days=5))
    drill = _run(history, "drill", "failed", "row counts differ in t", started=t0 + timedelta(days=6))
    history.add_details(drill, {"run_id": "20261125T010000Z-cd34", "problems": ["row counts differ in t", "x"]})
    # A drill killed with SIGKILL: its row has no end and no details, and its process is gone.
    dead = subprocess.Popen(["true"])
    dead.wait()
    killed = history.record_start("app", "drill")
    with history._connect() as db:
        db.execute("UPDATE runs SET pid=?, started=? WHERE id=?",
                   (dead.pid, (t0 + timedelta(days=7)).timestamp(), killed))

    failures = history_failures(history, "app", t0 - timedelta(days=30))
    assert [(f["what"], f["message"]) for f in failures] == [
        ("drill", f"interrupted: process {dead.pid} ended without recording a result"),
        ("drill", "drill of point 20261125T010000Z-cd34: row counts differ in t; x"),
        ("prune", "repository main is locked"),
        ("restore", "restore of point 20261120T010000Z-ab12: restic: wrong password"),
        ("backup (partial)", "copy to offsite failed: unreachable"),
        ("backup", "SQLite database /srv/app.db does not exist"),
        ("backup", "SQLite database /srv/app.db does not exist"),
    ]

    # Parts a failed backup left without a manifest are said on that backup, not counted twice.
    _add_incomplete(failures, "main", [("20261121T010010Z-ef56", t0 + timedelta(days=1, seconds=10)),
                                       ("20261119T010000Z-0000", t0 - timedelta(days=1))])
    assert len(failures) == 8
    assert failures[6]["message"] == "SQLite database /srv/app.db does not exist; backup run 20261121T010010Z-ef56 " \
                                     "did not complete (parts without a manifest in main)"
    assert failures[7] == {"when": t0 - timedelta(days=1), "what": "backup",
                           "message": "backup run 20261119T010000Z-0000 did not complete (parts without a manifest "
                                      "in main)"}


def test_failure_rows_hold_only_what_the_page_shows(tmp_path: Path) -> None:
    # A failed backup's end is needed to place its parts, but is no key of the row the page and --json show.
    history = History(tmp_path)
    t0 = datetime(2026, 11, 20, 1, 0, tzinfo=UTC)
    _run(history, "backup", "failed", "disk full", started=t0)
    failures = history_failures(history, "app", t0 - timedelta(days=1))
    _add_incomplete(failures, "main", [("20261120T010020Z-ab12", t0 + timedelta(seconds=20))])
    assert failures == [{"when": t0, "what": "backup", "message": "disk full; backup run 20261120T010020Z-ab12 did "
                                                                  "not complete (parts without a manifest in main)"}]
    assert json.loads(json.dumps(failures, default=str)) == [{**failures[0], "when": str(t0)}]
