"""Config formats of the newer profiles: GLPI's class properties (PHP), Laravel's .env, Laravel's payloads."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from pathlib import Path

import pytest
from Crypto.Cipher import AES
from Crypto.Util.Padding import pad

from safehold.appconfig.envfile import Env
from safehold.appconfig.php import parse_text
from safehold.apps import laravel
from safehold.errors import ConfigError

# As DBConnection::createMainConfig() writes it (glpi-project/glpi src/DBConnection.php): var_export per property.
CONFIG_DB = b"""<?php
class DB extends DBmysql {
   public $dbhost = 'localhost';
   public $dbuser = 'glpi';
   public $dbpassword = 'p%40ss%25word';
   public $dbdefault = 'glpi';
   public $use_utf8mb4 = true;
   public $allow_myisam = false;
   public $dbreplica = getenv('X');
   public $dbhosts = array (
  0 => 'db1',
  1 => 'db2',
);
   public function connect() { $this->dbhost = 'other'; }
}
"""


def test_class_property_defaults() -> None:
    php = parse_text(CONFIG_DB, Path("config_db.php"))
    assert php.property("DB", "dbpassword") == "p%40ss%25word"
    assert php.property("DB", "use_utf8mb4") is True and php.property("DB", "dbhost") == "localhost"
    assert php.property("DB", "dbhosts") == {0: "db1", 1: "db2"}
    assert php.property("DB", "missing", default=None) is None
    with pytest.raises(ConfigError, match=r"line 9: DB::\$dbreplica is set by a call to getenv\(\)"):
        php.property("DB", "dbreplica")


def test_env_values_files_and_expansion(tmp_path: Path) -> None:
    secret = tmp_path / "db_password"
    secret.write_text("s3cret\n")
    env_path = tmp_path / ".env"
    env_path.write_text(f"APP_NAME=\"My App\"\nDB_HOST=db:3307\nDB_DATABASE=app\nDB_PASSWORD_FILE={secret}\n"
                        "DB_PREFIX=null\nMAIL_FROM_NAME=\"${APP_NAME}\"\nLITERAL='${NOT_EXPANDED}'\n"
                        "EMPTY=(empty)\n# comment\n")
    env = Env(env_path)
    assert env.get("APP_NAME") == "My App" and env.get("DB_PASSWORD") == "s3cret"
    assert env.get("DB_PREFIX", "") == "" and env.get("EMPTY") == "" and env.get("LITERAL") == "${NOT_EXPANDED}"
    with pytest.raises(ConfigError, match="line 6: MAIL_FROM_NAME refers to another variable"):
        env.get("MAIL_FROM_NAME")
    db = laravel.database(env, host_with_port=True)
    assert (db.connection.host, db.connection.port) == ("db", 3307)


def test_laravel_payload_decrypts_only_with_its_key() -> None:
    key, iv = bytes(range(32)), bytes(16)
    value = base64.b64encode(AES.new(key, AES.MODE_CBC, iv).encrypt(pad(b's:3:"abc";', 16))).decode()
    iv_text = base64.b64encode(iv).decode()
    mac = hmac.new(key, (iv_text + value).encode(), hashlib.sha256).hexdigest()
    payload = base64.b64encode(json.dumps({"iv": iv_text, "value": value, "mac": mac, "tag": ""}).encode()).decode()
    assert laravel.decrypt(payload, key) == b's:3:"abc";'
    assert laravel.decrypt(payload, bytes(32)) is None and laravel.decrypt("not base64!", key) is None
