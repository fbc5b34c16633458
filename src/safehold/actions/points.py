"""`safehold list` and `safehold show`: recovery points and their manifests."""

from __future__ import annotations

from safehold.actions.common import open_repository, points, search_point
from safehold.config import Config
from safehold.errors import SafeholdError


def list_points(config: Config, name: str | None, unreachable: list[str] | None = None) -> list[dict[str, object]]:
    """Points of one instance or all, per repository, newest first.

    With `unreachable`, a repository that cannot be read (a copy server that is down) is noted
    there and skipped, so the points in the others are still listed.
    """
    rows: list[dict[str, object]] = []
    for instance_name, instance in config.select(name).items():
        for repo_name in instance.repositories:
            try:
                found = points(config, open_repository(config, repo_name), instance_name)
            except SafeholdError as exc:
                if unreachable is None or len(instance.repositories) == 1:
                    raise
                unreachable.append(f"{instance_name}: {exc.line()}")
                continue
            for point in found:
                m = point.manifest
                rows.append({
                    "instance": instance_name, "repository": repo_name, "run_id": m.run_id,
                    "started": m.started, "finished": m.finished,
                    "seconds": (m.finished - m.started).total_seconds() if m.finished else None,
                    "databases": len(m.databases), "files": sum(t.files for t in m.trees),
                    "bytes": sum(d.bytes for d in m.databases) + sum(t.bytes for t in m.trees),
                    "app_version": m.app_version, "safety_point": m.safety_point,
                    "note": m.note, "keep_until": m.keep_until,
                })
    return rows


def show_point(config: Config, run: str, name: str | None = None) -> dict[str, object]:
    """The manifest of one point, searched in every repository of the instance(s)."""
    repo, point = search_point(config, run, name)
    return {"repository": repo.name, "snapshot": point.snapshot, **point.manifest.model_dump(mode="json")}
