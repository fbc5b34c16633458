"""Python config files read as literals only: values, partial dicts, and refusals that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from safehold.appconfig.pyliteral import parse_text
from safehold.errors import ConfigError

CONFIG = '''
import os
ALLOWED_HOSTS = ['*']
DATABASES = {
    'default': {
        'ENGINE': 'django.db.backends.postgresql',
        'NAME': 'netbox',
        'USER': 'netbox',
        'PASSWORD': os.environ.get('DB_PASSWORD', 'hunter2-secret'),
        'HOST': '',
        'PORT': 5432,
    }
}
SECRET_KEY = 'a' * 50
API_TOKEN_PEPPERS = {1: 'pepper-one', 2: "pepper-two"}
MEDIA_ROOT: str = '/srv/media'
DATABASES['default']['NAME'] = 'netbox_prod'
if os.environ.get('X'):
    REPORTS_ROOT = '/elsewhere'
DEBUG = False
DEBUG = True
'''


def test_literals_and_the_last_assignment_win() -> None:
    cfg = parse_text(CONFIG, Path("configuration.py"))
    assert cfg.get("ALLOWED_HOSTS") == ["*"]
    assert cfg.get("DATABASES", "default", "NAME") == "netbox_prod"
    assert cfg.text("DATABASES", "default", "PORT") == "5432"
    assert cfg.get("API_TOKEN_PEPPERS") == {1: "pepper-one", 2: "pepper-two"}
    assert cfg.get("MEDIA_ROOT") == "/srv/media"
    assert cfg.get("DEBUG") is True
    assert cfg.get("MISSING", default=None) is None


@pytest.mark.parametrize(("keys", "construct", "line"), [
    (("DATABASES", "default", "PASSWORD"), "a function call", 9),
    (("SECRET_KEY",), "an expression", 14),
    (("REPORTS_ROOT",), "an assignment inside an if block", 18),
])
def test_non_literals_are_refused_naming_the_key_never_the_text(keys: tuple[str, ...], construct: str,
                                                                 line: int) -> None:
    cfg = parse_text(CONFIG, Path("configuration.py"))
    with pytest.raises(ConfigError) as caught:
        cfg.get(*keys)
    message = caught.value.line()
    assert f"line {line}" in message and construct in message and keys[-1] in message
    assert "hunter2" not in message and "DB_PASSWORD" not in message


def test_missing_setting_and_bad_syntax() -> None:
    cfg = parse_text("X = 1\n", Path("c.py"))
    with pytest.raises(ConfigError, match=r"does not set DATABASES\['default'\]"):
        cfg.get("DATABASES", "default")
    with pytest.raises(ConfigError, match="not valid Python .line 1"):
        parse_text("X = (\n", Path("c.py"))
