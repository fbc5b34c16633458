"""A two-instance safehold setup (real MariaDB databases, real restic repository) for the web tests."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import private_file, sql

ENV_SECRET = "SAFEHOLD_WEB_TEST_SECRET"
# beta also names a database that does not exist, so its backups fail (the console must show that in red)
MISSING_DB = "t_web_missing_db"


@dataclass
class WebEnv:
    """Paths, names and the secret values that must never show up in a page."""

    config: Path
    state_dir: Path
    databases: dict[str, str]
    secrets: list[str]
    env: dict[str, str]


def build(tmp_path: Path, new_db, repo: dict[str, str]) -> WebEnv:  # noqa: ANN001 - the new_db fixture
    """Instances `alpha` (database + files) and `beta` (database), one local repository."""
    databases = {}
    for name, rows in (("alpha", 25), ("beta", 7)):
        db = new_db("t_web")
        sql(["CREATE TABLE items (id INT PRIMARY KEY, label VARCHAR(40))",
             f"INSERT INTO items SELECT seq, CONCAT('item ', seq) FROM seq_1_to_{rows}",
             "CREATE TABLE notes (id INT PRIMARY KEY AUTO_INCREMENT, body TEXT)",
             "INSERT INTO notes (body) VALUES ('hello'), ('world')"], db)
        databases[name] = db
    files = tmp_path / "alpha-files"
    files.mkdir()
    (files / "upload.txt").write_text("uploaded file\n")
    env_secret = "envsecret-" + secrets.token_hex(8)
    notify_password = "notifypw-" + secrets.token_hex(8)
    aws_key = private_file(tmp_path / "secrets" / "aws.key", "awskey-" + secrets.token_hex(8))
    state_dir = tmp_path / "state"
    config = tmp_path / "safehold.toml"
    config.write_text(f'''
[settings]
state_dir = "{state_dir}"

[repositories.local]
url = "{repo['url']}"
password = "file:{repo['password_file']}"
env = {{ AWS_SECRET_ACCESS_KEY = "env:{ENV_SECRET}", AWS_ACCESS_KEY_ID = "file:{aws_key}" }}

[notify]
urls = ["mailtos://admin:{notify_password}@mail.example.org"]

[instances.alpha]
app = "generic"
repositories = ["local"]
files = ["{files}"]
schedule = {{ week_days = ["monday","tuesday","wednesday","thursday","friday","saturday","sunday"], time = "23:30" }}
[[instances.alpha.databases]]
engine = "mariadb"
host = "127.0.0.1"
port = 3306
user = "root"
names = ["{databases['alpha']}"]

[instances.beta]
app = "generic"
repositories = ["local"]
schedule = {{ enabled = false, time = "02:00" }}
[[instances.beta.databases]]
engine = "mariadb"
host = "127.0.0.1"
port = 3306
user = "root"
names = ["{databases['beta']}", "{MISSING_DB}"]
''')
    return WebEnv(config=config, state_dir=state_dir, databases=databases,
                  secrets=[repo["password"], env_secret, notify_password, aws_key.read_text()],
                  env={ENV_SECRET: env_secret})
