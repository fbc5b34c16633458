"""The generic profile: everything is declared in the config (databases, files, config files, quiesce
commands); every other member is the default one."""

from __future__ import annotations

from pathlib import Path

from safehold.apps import defaults
from safehold.apps.common import base_instance
from safehold.config import InstanceConfig
from safehold.models import Instance

APP_KEYS = ""  # an app's own key files are declared in files/config_files like everything else
RUNS_ON_PHP = False  # a generic instance declares what it needs itself


def detect(root: Path) -> bool:
    """Any folder can be a generic instance."""
    return root.is_dir()


def describe(name: str, config: InstanceConfig) -> Instance:
    """The instance exactly as declared."""
    return base_instance(name, config, "generic")


quiesce, restore_quiesce, quiesce_plan = defaults.quiesce, defaults.restore_quiesce, defaults.quiesce_plan
keys, verify_keys = defaults.keys, defaults.verify_keys
check_restore, post_restore = defaults.check_restore, defaults.post_restore
