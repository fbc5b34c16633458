"""`safehold key escrow|verify`: keep an application's master key and prove it still works.

Only ITFlow has a key that exists nowhere in clear (its credential-vault master key, wrapped per
user): escrow unwraps it once with an admin's password and keeps it 0600 in the state dir, from
where every later point carries it inside the encrypted `/safehold/keys.json`. The other
profiles' keys live in their config files and are taken with each point automatically.
"""

from __future__ import annotations

import json

from safehold.actions.common import describe, find_point, open_repository
from safehold.apps import itflow
from safehold.config import Config
from safehold.errors import ConfigError, SafeholdError
from safehold.output import Reporter
from safehold.repository.manifest import KEYS_PATH
from safehold.secrets import Secret


def check_escrow(config: Config, name: str) -> None:
    """Refuse an unknown instance, or one whose app has no key to escrow (before any password is asked)."""
    app = config.instance(name).app
    if app != "itflow":
        raise ConfigError(f"instance {name} is {app}: only ITFlow has a master key to escrow",
                          "i-doit's $g_crypto_hash and iTop's encryption_key are saved with every point already")


def escrow(config: Config, name: str, password: Secret, user: str | None, reporter: Reporter) -> dict[str, object]:
    """Escrow the master key of ITFlow instance `name`, unwrapped with an account's password."""
    check_escrow(config, name)
    instance, _, _ = describe(config, name)
    return itflow.escrow(instance, config.state_dir, password, user, reporter)


def verify(config: Config, name: str, run: str | None, reporter: Reporter) -> dict[str, object]:
    """Check the escrowed keys (from the state dir, or from point `run`) against the live instance."""
    instance, profile, instance_config = describe(config, name)
    if run is None:
        keys = profile.keys(instance, config.state_dir)
        source = "state dir"
    else:
        repo = open_repository(config, instance_config.repositories[0])
        point = find_point(config, repo, name, run)
        if not point.manifest.keys_snapshot:
            raise SafeholdError(f"point {point.run_id} holds no keys", "run `safehold key escrow` and back up again")
        data = json.loads(repo.cat_file(point.manifest.keys_snapshot, KEYS_PATH))
        keys = {key: Secret(value, key) for key, value in data.items()}
        source = f"point {point.run_id}"
    reporter.step(f"checking {len(keys)} key(s) of {name} from the {source}")
    problems = profile.verify_keys(instance, keys)
    return {"instance": name, "source": source, "keys": sorted(keys), "problems": problems, "ok": not problems}
