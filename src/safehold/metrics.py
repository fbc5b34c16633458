"""Prometheus metrics from the run history: a node-exporter textfile and the /metrics page text.

Everything comes from the local history database (no repository access), so rendering is cheap
enough for every scrape. The textfile is written to a temporary file in the same folder and renamed
over the old one, so node-exporter never reads half a file.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from safehold.config import Config
from safehold.history import History

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class _HistoryCollector:
    """A prometheus_client collector reading the history at collect time."""

    def __init__(self, config: Config) -> None:
        self.config = config

    def collect(self):  # noqa: ANN201 - prometheus_client's collector protocol
        from prometheus_client.core import GaugeMetricFamily  # only the /metrics page needs it (see render)

        history = History(self.config.state_dir)
        ir = ["instance", "repository"]
        ik = ["instance", "kind"]
        g = {
            "success": GaugeMetricFamily("safehold_last_success_timestamp_seconds",
                                         "End of the last successful backup (unix time)", labels=ir),
            "bytes_added": GaugeMetricFamily("safehold_last_backup_bytes_added",
                                             "New bytes stored by the last successful backup", labels=ir),
            "bytes_total": GaugeMetricFamily("safehold_last_backup_bytes_total",
                                             "Size of the data in the last successful backup", labels=ir),
            "points": GaugeMetricFamily("safehold_points", "Recovery points after the last retention run",
                                        labels=ir),
            "run_ok": GaugeMetricFamily("safehold_last_run_success", "1 if the last run of this kind ended ok",
                                        labels=ik),
            "run_time": GaugeMetricFamily("safehold_last_run_timestamp_seconds", "Start of the last run",
                                          labels=ik),
            "duration": GaugeMetricFamily("safehold_last_run_duration_seconds", "Duration of the last run",
                                          labels=ik),
            "drill": GaugeMetricFamily("safehold_last_drill_success", "1 if the last drill passed",
                                       labels=["instance"]),
            "enabled": GaugeMetricFamily("safehold_schedule_enabled", "1 if the backup schedule is enabled",
                                         labels=["instance"]),
        }
        for name, instance in self.config.instances.items():
            good = history.last_success(name)
            if good is not None and good.finished is not None:
                repo = str(good.details.get("repository", instance.repositories[0]))
                g["success"].add_metric([name, repo], good.finished.timestamp())
                g["bytes_added"].add_metric([name, repo], good.bytes_added or 0)
                g["bytes_total"].add_metric([name, repo], good.bytes_total or 0)
                for points_repo, count in (good.details.get("points") or {}).items():
                    g["points"].add_metric([name, points_repo], count)
            for kind in ("backup", "drill", "prune", "verify"):
                last = history.last_run(name, kind)
                if last is None:
                    continue
                g["run_ok"].add_metric([name, kind], 1 if last.result == "ok" else 0)
                g["run_time"].add_metric([name, kind], last.started.timestamp())
                g["duration"].add_metric([name, kind], last.duration or 0)
                if kind == "drill":
                    g["drill"].add_metric([name], 1 if last.result == "ok" else 0)
            g["enabled"].add_metric([name], 1 if instance.schedule and instance.schedule.enabled else 0)
        yield from g.values()


def render(config: Config) -> str:
    """The /metrics page text (Prometheus text format 0.0.4)."""
    # Imported here, not at the top: every command would pay for it at start (see safehold.cli).
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_HistoryCollector(config))  # type: ignore[arg-type]
    return generate_latest(registry).decode()


def write_textfile(config: Config, path: Path | None = None) -> Path:
    """Write the metrics for node-exporter's textfile collector atomically; returns the path."""
    target = Path(path or config.settings.metrics_textfile or "")
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(render(config))
        # node-exporter runs as another user; metrics carry no secret.
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target
