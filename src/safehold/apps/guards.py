"""The refusals every profile makes the same way: a root that holds no install of the app, and a
database restored alone (without the files, so under the code that is there) into another version.

Two version rules, as the applications themselves have them:
- `same_version`: the database goes only under code of the very version it was saved with (ITFlow,
  iTop, i-doit: their updaters run from the new code against the old schema, never back);
- `no_downgrade`: a database never goes into older code (no down-migrations: Laravel apps, GLPI,
  NetBox), newer code is allowed with a warning saying how to migrate it.
Restoring the files too brings the point's own code back, so neither refuses anything then.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from safehold.errors import SafeholdError
from safehold.models import Instance
from safehold.output import Reporter
from safehold.repository.manifest import Manifest


def require_install(root: Path, detect: Callable[[Path], bool], app: str, lacks: str, hint: str) -> None:
    """Refuse a root in which the profile's `detect` finds no install: `app` is named with its article
    ("an ITFlow"), `lacks` says what is missing, `hint` where the root should point."""
    if not detect(root):
        raise SafeholdError(f"{root} does not look like {app} install ({lacks})", hint)


def database_alone(in_place: set[str]) -> bool:
    """Do the parts put back in place hold the databases but not the files (the code stays as it is)?"""
    return "db" in in_place and "files" not in in_place


def versions(item: Instance | Manifest) -> dict[str, str | None]:
    """App and schema version of a live instance or of a point, keyed as version_mismatch lists them."""
    return {"app version": item.app_version, "schema version": item.schema_version}


def version_mismatch(app: str, live: dict[str, str | None], point: dict[str, str | None], hint: str) -> list[str]:
    """One refusal line listing every version that differs between the live instance and the point."""
    differ = [f"{what} {live[what]} here but {point.get(what)} in the point" for what in live
              if live[what] is not None and point.get(what) is not None and live[what] != point.get(what)]
    if not differ:
        return []
    return [f"{app} version mismatch: {'; '.join(differ)} — {hint}"]


def same_version(app: str, live: dict[str, str | None], point: dict[str, str | None], in_place: set[str],
                 hint: str) -> list[str]:
    """A database restored alone must be of the versions here (`versions` of both sides, or more)."""
    return version_mismatch(app, live, point, hint) if database_alone(in_place) else []


def version_tuple(version: str | None) -> tuple[int, ...] | None:
    """`v8.1.4` / `10.0.18` / `v24.10-dev` → (8, 1, 4) …: the dotted numbers before any `-suffix`."""
    digits = [int(p) for p in (version or "").lstrip("vV").split("-")[0].split(".") if p.isdigit()]
    return tuple(digits) or None


def no_downgrade(app: str, instance: Instance, manifest: Manifest, in_place: set[str], reporter: Reporter, *,
                 database: str, upgrade: str, point: str | None = None,
                 parse: Callable[[str | None], tuple[int, ...] | None] = version_tuple) -> list[str]:
    """Refuse a database restored alone into code older than the point's (`point`: the version compared,
    the point's app version unless given); warn with `upgrade` when the code here is newer.

    `database` completes "the point's database …" in the refusal, with the app's reason.
    """
    if not database_alone(in_place):
        return []
    live, saved = parse(instance.app_version), parse(point or manifest.app_version)
    if live is None or saved is None or live == saved:
        return []
    if live < saved:
        return [f"{app} version mismatch: the code here is {instance.app_version} but the point's database "
                f"{database} — restore the files too (the point holds its {app} code), or install {app} "
                f"{manifest.app_version} first"]
    reporter.warn(upgrade)
    return []
