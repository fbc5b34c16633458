"""The members of `contract.AppProfile` for a profile that has nothing of its own to say there: the
configured quiesce commands, no keys, no version to guard, nothing to fix after a restore. A profile
takes one by naming it (`keys = defaults.keys`); the contract test still fails for a member it lacks.
"""

from __future__ import annotations

from pathlib import Path

from safehold.apps.common import command_plan, command_quiesce
from safehold.config import InstanceConfig
from safehold.models import Instance
from safehold.output import Reporter
from safehold.repository.manifest import Manifest
from safehold.secrets import Secret

quiesce = command_quiesce  # the configured stop/start commands, if any (resumed even after a crash)
restore_quiesce = command_quiesce  # the same around a restore


def quiesce_plan(instance: Instance, config: InstanceConfig, state_dir: Path) -> list[str]:
    """The configured commands quiesce would run."""
    return command_plan(config)


def keys(instance: Instance, state_dir: Path) -> dict[str, Secret]:
    """No application keys to escrow (key files are declared in files/config_files like everything else)."""
    return {}


def check_restore(instance: Instance, manifest: Manifest, in_place: set[str], reporter: Reporter) -> list[str]:
    """No application version to guard."""
    return []


def post_restore(instance: Instance, reporter: Reporter, manifest: Manifest, restored: set[str]) -> None:
    """Nothing to do: restic restores owners, modes and mtimes."""


def verify_keys(instance: Instance, keys: dict[str, Secret], database_name: str | None = None) -> list[str]:
    """No keys, nothing to verify."""
    return []
