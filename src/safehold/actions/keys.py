"""`safehold key escrow|verify`: keep an application's master key and prove it still works.

Only ITFlow has a key that exists nowhere in clear (its credential-vault master key, wrapped per
user): escrow unwraps it once with an admin's password and keeps it 0600 in the state dir, from
where every later point carries it inside the encrypted `/safehold/keys.json`. The other
profiles' keys live in their config files and are taken with each point automatically.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from safehold.actions.common import describe, find_point, open_repository
from safehold.apps import profile_for
from safehold.apps.contract import AppProfile
from safehold.config import Config
from safehold.errors import ConfigError, SafeholdError
from safehold.models import Instance
from safehold.output import Reporter
from safehold.repository.manifest import KEYS_PATH
from safehold.secrets import Secret

# A profile's optional `escrow(instance, state_dir, password, user, reporter)` (apps/contract.py: only ITFlow has one).
Escrow = Callable[[Instance, Path, Secret, str | None, Reporter], dict[str, object]]


def key_profile(config: Config, name: str) -> AppProfile:
    """The profile of instance `name`, refused (exit 2, like an unknown instance) when its app has no
    application keys at all: escrowing or verifying them is a request that cannot apply, and the
    advice for a missing key (`safehold key escrow`) could not be followed for such an app."""
    app = config.instance(name).app
    profile = profile_for(app)
    if not profile.APP_KEYS:
        raise ConfigError(f"instance {name} is {app}: a {app} instance has no application keys to escrow or verify",
                          "its databases, files and config files are in every point; `safehold verify` checks them")
    return profile


def check_escrow(config: Config, name: str) -> Escrow:
    """The escrow of instance `name`'s profile, refused when its app has no key to escrow (before any password is
    asked)."""
    profile = key_profile(config, name)
    escrow: Escrow | None = getattr(profile, "escrow", None)
    if escrow is None:
        raise ConfigError(f"instance {name} is {config.instance(name).app}: only ITFlow has a master key to escrow",
                          f"{profile.APP_KEYS} is saved from its config file with every point already; "
                          f"`safehold key verify {name} latest` checks it")
    return escrow


def escrow(config: Config, name: str, password: Secret, user: str | None, reporter: Reporter) -> dict[str, object]:
    """Escrow the master key of ITFlow instance `name`, unwrapped with an account's password."""
    unwrap = check_escrow(config, name)
    instance, _, _ = describe(config, name)
    return unwrap(instance, config.state_dir, password, user, reporter)


def verify(config: Config, name: str, run: str | None, reporter: Reporter) -> dict[str, object]:
    """Check the escrowed keys (from the state dir, or from point `run`) against the live instance."""
    key_profile(config, name)
    instance, profile, instance_config = describe(config, name)
    if run is None:
        keys = profile.keys(instance, config.state_dir)
        source = "state dir"
    else:
        repo = open_repository(config, instance_config.repositories[0])
        point = find_point(config, repo, name, run)
        if not point.manifest.keys_snapshot:
            # Only a key escrowed by hand can be missing through an admin's omission; the others come
            # from the config file, which then held none.
            raise SafeholdError(f"point {point.run_id} holds no keys",
                                f"run `safehold key escrow {name}` and back up again" if hasattr(profile, "escrow")
                                else f"the app's config held no {profile.APP_KEYS} when it was made")
        data = json.loads(repo.cat_file(point.manifest.keys_snapshot, KEYS_PATH))
        keys = {key: Secret(value, key) for key, value in data.items()}
        source = f"point {point.run_id}"
    reporter.step(f"checking {len(keys)} key(s) of {name} from the {source}")
    problems = profile.verify_keys(instance, keys)
    return {"instance": name, "source": source, "keys": sorted(keys), "problems": problems, "ok": not problems}
