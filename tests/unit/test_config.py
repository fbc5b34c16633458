"""Config validation: errors name the file, the key path and what is allowed."""

from __future__ import annotations

from pathlib import Path

import pytest

from safehold.config import parse
from safehold.errors import ConfigError
from tests.conftest import run_cli

BASE = """
[repositories.main]
url = "/srv/repo"
password = "env:REPO_PASS"
[instances.app]
repositories = ["main"]
files = ["/srv/app"]
"""


def error_of(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse(text, Path("/etc/safehold/safehold.toml"))
    assert info.value.exit_code == 2
    return info.value.line()


def test_valid_config_parses() -> None:
    config = parse(BASE, Path("x.toml"))
    assert config.instances["app"].retention.last == 14
    assert config.instances["app"].app == "generic"


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (('app = "generic"', 'app = "wordpress"'), "instances.app.app"),
        (('files = ["/srv/app"]', 'files = ["/srv/app"]\ncolor = 1'), "instances.app.color: unknown key"),
        (('repositories = ["main"]', 'repositories = ["offsite"]'), "not a [repositories.*]"),
        (('password = "env:REPO_PASS"', 'password = "hunter2"'), "repositories.main.password"),
        (('files = ["/srv/app"]', 'files = []'), "needs at least one of databases, files"),
        (('files = ["/srv/app"]', 'files = ["/a"]\nretention = { last = 0 }'), "instances.app.retention.last"),
        (('files = ["/srv/app"]', 'files = ["/a"]\nretention = {}'), "instances.app.retention: keeps no point besides"),
        (('files = ["/srv/app"]', 'files = ["srv/app"]'), "instances.app.files: 'srv/app' is a relative path"),
        (('files = ["/srv/app"]', 'root = "www"\nfiles = ["/srv/app"]'), "instances.app.root: 'www' is a relative"),
        (('url = "/srv/repo"', 'url = "backups/repo"'), "repositories.main.url: 'backups/repo' is a relative"),
        (('files = ["/srv/app"]', 'files = ["/a"]\n[[instances.app.databases]]\nengine = "mariadb"\n'
                                  'names = ["a", "b", "a"]'),
         "instances.app.databases.0.names: lists a more than once"),
        (('url = "/srv/repo"', 'url = "/srv/repo"\n[settings]\nstate_dir = "state"'), "settings.state_dir: 'state'"),
        (('files = ["/srv/app"]', 'files = ["/a"]\nretention = { daily = 0, weekly = 0 }'), "keeps no point besides"),
        (('url = "/srv/repo"', 'url = "/srv/repo"\nlimit_upload = 0'), "repositories.main.limit_upload"),
        (('url = "/srv/repo"', 'url = "/srv/repo"\nlimit_upload = true'), "repositories.main.limit_upload"),
        (('url = "/srv/repo"', 'url = "/srv/repo"\nlimit_download = "1M"'), "repositories.main.limit_download"),
        (('files = ["/srv/app"]', 'files = ["/a"]\nschedule = { verify = "every sunday" }'),
         "instances.app.schedule.verify: 'every sunday' is not a cron expression"),
        (('files = ["/srv/app"]', 'files = ["/a"]\nschedule = { verify = "0 5 * * 0", verify_read_data = "0%" }'),
         "instances.app.schedule.verify_read_data: '0%': use none, all, a share such as 5% or an amount such as 2G"),
        (('files = ["/srv/app"]', 'files = ["/a"]\nschedule = { verify_read_data = "150%" }'),
         "instances.app.schedule.verify_read_data: '150%'"),
    ],
)
def test_errors_name_the_key(change: tuple[str, str], expected: str) -> None:
    text = BASE.replace('app = "generic"', "") if change[0] == 'app = "generic"' else BASE
    if change[0] == 'app = "generic"':
        text = text.replace("[instances.app]", '[instances.app]\napp = "wordpress"')
    else:
        text = text.replace(*change)
    line = error_of(text)
    assert "/etc/safehold/safehold.toml" in line
    assert expected in line


def test_plain_secret_never_echoed() -> None:
    line = error_of(BASE.replace('"env:REPO_PASS"', '"hunter2"'))
    assert "hunter2" not in line


@pytest.mark.parametrize(("where", "extra"), [
    ("repositories.main.env.AWS_SECRET_ACCESS_KEY", '[repositories.main.env]\nAWS_SECRET_ACCESS_KEY = "hunter2"\n'),
    ("instances.app.databases.0.password", '[[instances.app.databases]]\nengine = "mariadb"\nnames = ["a"]\n'
                                           'password = "hunter2"\n'),
    ("notify.itflow.api_key", '[notify.itflow]\nurl = "https://itflow.example/"\napi_key = "hunter2"\n'),
    ("export.passphrase", '[export]\npassphrase = "hunter2"\n'),
])
def test_a_secret_in_place_of_its_reference_is_refused_unshown(where: str, extra: str) -> None:
    line = error_of(BASE + extra)
    assert f"{where}: must be a secret reference" in line and "hunter2" not in line
    assert parse(BASE + extra.replace('"hunter2"', '"env:SECRET"'), Path("x.toml"))


def test_app_profile_needs_root() -> None:
    line = error_of(BASE.replace("[instances.app]", '[instances.app]\napp = "itflow"'))
    assert "needs root" in line


def test_bad_toml_says_where() -> None:
    assert "not valid TOML" in error_of("[instances\n")


def test_database_shapes() -> None:
    text = BASE + '[[instances.app.databases]]\nengine = "mariadb"\n'
    assert "needs names" in error_of(text)
    text = BASE + '[[instances.app.databases]]\nengine = "sqlite"\n'
    assert "needs path" in error_of(text)


def test_rate_limits_become_restic_options() -> None:
    config = parse(BASE.replace('url = "/srv/repo"', 'url = "/srv/repo"\nlimit_upload = 2048'), Path("x.toml"))
    assert config.repositories["main"].rate_limits() == ["--limit-upload", "2048"]
    assert parse(BASE, Path("x.toml")).repositories["main"].rate_limits() == []


@pytest.mark.parametrize(("value", "words"), [
    ("/srv/app\\u0000/files", "holds a NUL byte"),
    ("/srv/" + "n" * 300, "name longer than 255 bytes"),
    ("/srv/" + "/".join(["d" * 200] * 25), "longer than any path"),
])
def test_an_impossible_path_is_a_config_error(tmp_path: Path, value: str, words: str) -> None:
    config = tmp_path / "safehold.toml"
    config.write_text(f'[repositories.main]\nurl = "{tmp_path}/repo"\npassword = "env:X"\n'
                      f'[instances.app]\nrepositories = ["main"]\nfiles = ["{value}"]\n')
    result = run_cli("backup", "app", config=config)
    assert result.returncode == 2, result.stderr
    assert words in result.stderr and result.stderr.count("error:") == 1 and "this is a bug" not in result.stderr
