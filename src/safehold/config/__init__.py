"""safehold.toml → validated models. Secrets stay references here; they are resolved at use.

The models are split by the part of the file they describe (`repository`, `database`, `instance`,
`notify`, `web`); `loading` reads and validates the whole file; `sample` writes the commented sample
and docs/config.md from the models' field descriptions (`fields` walks how the models nest). Every
name below is importable from `safehold.config` itself.
"""

from safehold.config.base import NAME_MAX, PATH_MAX, SECRET_PATTERN, Model, SecretRef, impossible_path
from safehold.config.database import DatabaseConfig, DbAdminConfig, ScratchServerConfig
from safehold.config.instance import WEEK_DAYS, InstanceConfig, QuiesceConfig, RetentionConfig, ScheduleConfig
from safehold.config.loading import DEFAULT_PATHS, NAME_PATTERN, Config, find_config, load, parse
from safehold.config.notify import ExportConfig, ItflowTicketConfig, ItopTicketConfig, NotifyConfig
from safehold.config.repository import REMOTE_SCHEMES, RepositoryConfig, local_path, s3_location
from safehold.config.web import Settings, WebConfig, host_pattern, parse_listen

__all__ = [
    "DEFAULT_PATHS", "NAME_MAX", "NAME_PATTERN", "PATH_MAX", "REMOTE_SCHEMES", "SECRET_PATTERN", "WEEK_DAYS",
    "Config", "DatabaseConfig", "DbAdminConfig", "ExportConfig", "InstanceConfig", "ItflowTicketConfig",
    "ItopTicketConfig", "Model", "NotifyConfig", "QuiesceConfig", "RepositoryConfig", "RetentionConfig",
    "ScheduleConfig", "ScratchServerConfig", "SecretRef", "Settings", "WebConfig", "find_config", "host_pattern",
    "impossible_path", "load", "local_path", "parse", "parse_listen", "s3_location",
]
