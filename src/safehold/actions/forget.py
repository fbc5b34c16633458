"""`safehold forget INSTANCE RUN...`: remove recovery points an administrator names, and free their space.

Retention (`prune`) removes what the policy no longer keeps; this removes what a person chooses: a
point `verify --repair` found damaged, one made by mistake, one holding data that must be deleted,
a point kept with --keep-days that is no longer needed. A run goes whole (every part and the
manifest) from each repository of the instance, or from the one named, so no copy keeps what had to
go; a run that left parts but no manifest (it failed or was killed) is removed the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from safehold.actions.common import Point, latest, lock_instance, open_repository, points, repositories_of, tag_value
from safehold.actions.prune import remove_snapshots
from safehold.config import Config
from safehold.errors import EXIT_USAGE, SafeholdError
from safehold.lifecycle import tracked
from safehold.output import Reporter
from safehold.repository.restic import Repository, snapshot_time

# Shown to the person before anything goes; True removes them.
Confirm = Callable[[list[dict[str, Any]]], bool]


class Refused(SafeholdError):
    """Nothing was removed: a run named is unknown or ambiguous, or the removal lacks --force or a confirmation."""

    exit_code = EXIT_USAGE


@dataclass
class Holding:
    """What one repository holds of the instance: each run's snapshots, and its complete points newest first."""

    repository: Repository
    runs: dict[str, list[dict[str, Any]]]
    points: list[Point]

    @property
    def name(self) -> str:
        return self.repository.name


def holding(config: Config, repo: Repository, instance: str) -> Holding:
    """List what `repo` holds of `instance` (one restic listing; manifests come from the cache)."""
    listing = repo.snapshots([f"instance={instance}"])
    runs: dict[str, list[dict[str, Any]]] = {}
    for snap in listing:
        if (run := tag_value(snap, "run")) is not None:
            runs.setdefault(run, []).append(snap)
    return Holding(repo, runs, points(config, repo, instance, listing))


def _where(holdings: Sequence[Holding]) -> str:
    names = [h.name for h in holdings]
    return f"repositor{'y' if len(names) == 1 else 'ies'} {', '.join(names)}"


def resolve(selectors: Sequence[str], holdings: Sequence[Holding], instance: str) -> list[str]:
    """The run id each of `selectors` names, in their order without repeats: `latest`, a run id or a
    unique prefix of one (or of a snapshot id of the run), among every run the repositories hold,
    complete or not. Raises Refused for one that names none or several: a typo removes nothing."""
    every = {run for h in holdings for run in h.runs}
    snapshot_ids = {run: [s["id"] for h in holdings for s in h.runs.get(run, [])] for run in every}
    complete = sorted((p for h in holdings for p in h.points), key=lambda p: p.manifest.started, reverse=True)
    chosen: list[str] = []
    for selector in selectors:
        if selector == "latest":
            found = [latest(complete).run_id] if complete else []
        elif selector in every:
            found = [selector]
        else:
            found = sorted(run for run in every
                           if run.startswith(selector) or any(i.startswith(selector) for i in snapshot_ids[run]))
        if not found:
            raise Refused(f"no run {selector!r} of {instance} in {_where(holdings)}; nothing was removed",
                          f"see `safehold list {instance}` for run ids")
        if len(found) > 1:
            raise Refused(f"{selector!r} matches {len(found)} runs of {instance} ({', '.join(found[:3])}"
                          f"{', …' if len(found) > 3 else ''}); nothing was removed",
                          "give more characters of the run id")
        if found[0] not in chosen:
            chosen.append(found[0])
    return chosen


def newest_removed(holdings: Sequence[Holding], chosen: Sequence[str]) -> list[dict[str, str | None]]:
    """Each repository whose newest complete point (safety points aside) is among `chosen`, with the
    point that would be its newest after (None: none would be left)."""
    hit = []
    for h in holdings:
        regular = [p.run_id for p in h.points if not p.manifest.safety_point]
        if regular and regular[0] in chosen:
            after = next((run for run in regular if run not in chosen), None)
            hit.append({"repository": h.name, "run_id": regular[0], "newest_after": after})
    return hit


def describe(holdings: Sequence[Holding], chosen: Sequence[str]) -> list[dict[str, Any]]:
    """What goes, one row per run: when it started, its kind (point, safety, incomplete), its note and
    --keep-days date, and the repositories that hold it."""
    rows = []
    for run in chosen:
        where = [h for h in holdings if run in h.runs]
        point = next((p for h in where for p in h.points if p.run_id == run), None)
        row: dict[str, Any] = {"run_id": run, "repositories": [h.name for h in where],
                               "snapshots": sum(len(h.runs[run]) for h in where)}
        if point is None:  # parts of a run that never wrote its manifest
            row.update(started=min(snapshot_time(s) for h in where for s in h.runs[run]), kind="incomplete",
                       note=None, keep_until=None)
        else:
            m = point.manifest
            row.update(started=m.started, kind="safety" if m.safety_point else "point", note=m.note,
                       keep_until=m.keep_until)
        rows.append(row)
    return rows


def _refuse_newest(holdings: Sequence[Holding], chosen: Sequence[str], instance: str) -> None:
    for hit in newest_removed(holdings, chosen):
        after = f"leaves {hit['newest_after']} as the newest" if hit["newest_after"] else "leaves no point"
        raise Refused(f"{hit['run_id']} is the newest point of {instance} in repository {hit['repository']}: "
                      f"removing it {after} there, and the data since then unprotected; nothing was removed",
                      f"make a new point first (`safehold backup {instance}`), or add --force")


def _holdings(config: Config, instance: str, repo_names: Sequence[str]) -> list[Holding]:
    found = []
    for repo_name in repo_names:
        try:
            found.append(holding(config, open_repository(config, repo_name), instance))
        except SafeholdError as exc:
            if len(repo_names) > 1:
                # A copy server that is down need not keep a point that has to go from the others.
                meanwhile = "to remove the runs from the other repositories meanwhile, name each with --repository"
                exc.hint = "; ".join(filter(None, [exc.hint, meanwhile]))
            raise
    return found


def forget(config: Config, instance: str, runs: Sequence[str], reporter: Reporter, repository: str | None = None,
           dry_run: bool = False, force: bool = False, yes: bool = False,
           confirm: Confirm | None = None) -> dict[str, Any]:
    """Remove the runs `runs` names from every repository of `instance` (or `repository` alone), then
    free their space; recorded in the run history as a prune.

    Refused (nothing removed) when a run is unknown or ambiguous, when a repository's newest complete
    point would go without `force`, or, unless `yes`, when `confirm` (None: there is no one to ask)
    does not approve what goes. `dry_run` only says what would go.
    """
    repo_names = repositories_of(config, instance, repository)
    holdings = _holdings(config, instance, repo_names)
    chosen = resolve(runs, holdings, instance)
    if not force:
        _refuse_newest(holdings, chosen, instance)
    result: dict[str, Any] = {"instance": instance, "dry_run": dry_run, "removed": describe(holdings, chosen),
                              "newest": newest_removed(holdings, chosen)}
    if dry_run:
        return result
    if not yes:
        if confirm is None:
            raise Refused("removing points needs a confirmation and there is no terminal to ask on; nothing was "
                          "removed", "check the runs with --dry-run, then add --yes")
        if not confirm(result["removed"]):
            raise Refused("not confirmed; nothing was removed")
    with lock_instance(config, instance, "forget", reporter):
        # Listed again under the lock: what goes is what the repositories hold now (a prune that ran while
        # the person read the prompt may have removed some of it, or the points newer than a chosen one).
        # The runs stay the confirmed ones: `latest` is not resolved again.
        holdings = _holdings(config, instance, repo_names)
        if not force:
            _refuse_newest(holdings, chosen, instance)
        with tracked(config, instance, "prune", reporter, {"command": "forget"}) as record:
            removed: dict[str, list[str]] = {}
            for h in holdings:
                gone = [run for run in chosen if run in h.runs]
                if gone:
                    ids = [s["id"] for run in gone for s in h.runs[run]]
                    remove_snapshots(h.repository, ids, f"{len(gone)} run(s) of {instance}: {', '.join(gone)}",
                                     reporter)
                    removed[h.name] = gone
            record.details = {"removed": sorted({run for gone in removed.values() for run in gone}),
                              "repositories": removed}
    return result
