"""The generic profile: everything is declared in the config (databases, files, config files)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from safehold.apps.common import base_instance, command_plan, command_quiesce
from safehold.config import InstanceConfig
from safehold.models import Instance
from safehold.output import Reporter
from safehold.repository.manifest import Manifest
from safehold.secrets import Secret

APP_KEYS = ""  # an app's own key files are declared in files/config_files like everything else
RUNS_ON_PHP = False  # a generic instance declares what it needs itself


def detect(root: Path) -> bool:
    """Any folder can be a generic instance."""
    return root.is_dir()


def describe(name: str, config: InstanceConfig) -> Instance:
    """The instance exactly as declared."""
    return base_instance(name, config, "generic")


@contextlib.contextmanager
def quiesce(instance: Instance, config: InstanceConfig, reporter: Reporter,
            state_dir: Path) -> Iterator[dict[str, object]]:
    """Configured stop/start commands, if any (resumed even after a crash, see apps.quiesce)."""
    with command_quiesce(instance, config, reporter, state_dir) as window:
        yield window


restore_quiesce = quiesce  # the configured commands, around a restore too


def quiesce_plan(instance: Instance, config: InstanceConfig, state_dir: Path) -> list[str]:
    """The configured commands quiesce would run."""
    return command_plan(config)


def keys(instance: Instance, state_dir: Path) -> dict[str, Secret]:
    """The generic profile escrows no application keys."""
    return {}


def post_restore(instance: Instance, reporter: Reporter, manifest: Manifest, restored: set[str]) -> None:
    """Nothing to do: restic restores owners, modes and mtimes."""


def check_restore(instance: Instance, manifest: Manifest, in_place: set[str], reporter: Reporter) -> list[str]:
    """No application version to guard."""
    return []


def verify_keys(instance: Instance, keys: dict[str, Secret], database_name: str | None = None) -> list[str]:
    """No keys, nothing to verify."""
    return []
