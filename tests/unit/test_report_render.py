"""The report page renders for instances with no points, no drills, or a drill that failed before restoring."""

from __future__ import annotations

from datetime import timedelta

from safehold.actions.report import _chart, render_html
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


def test_failed_drill_without_restore_shows_no_rto() -> None:
    failed = {"run_id": None, "started": now(), "ok": False, "problems": ["no point 'x' of app in repository main"],
              "phases": {}, "rto_seconds": 0.0, "rpo_seconds": None, "checks": []}
    page = _page({"last_drill": failed, "repositories": [{"name": "main", "points": None, "newest": None,
                                                          "oldest": None, "error": "repository main: unreachable"}]})
    assert "not measured" in page and "FAILED" in page and "unreachable" in page
    assert "no point &#39;x&#39; of app" in page  # escaped, never raw HTML
