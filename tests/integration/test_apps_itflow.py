"""ITFlow end to end: a realistic install, backup, destruction, restore; cron pause; key escrow;
version guard; config errors."""

from __future__ import annotations

import fcntl
import json
import secrets
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest

from safehold import config as config_module
from safehold.actions.backup import backup_instance
from safehold.apps import itflow as itflow_profile
from safehold.output import Silent
from tests.conftest import mariadb_dump, run_cli, sql
from tests.integration.appkit import (
    WEB_GID,
    WEB_UID,
    itflow_encrypt,
    itflow_wrap,
    ok,
    put,
    tree_state,
    write_config,
)

SHARED_SCHEMA = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "itflow-schema.sql"
ADMIN_PASSWORD = "correct horse battery staple"
MASTER = "Ab3_x-Yz0123Qwer"
WEB = (WEB_UID, WEB_GID)

# The tables and columns this profile relies on, as in ITFlow's db.sql (used when ../shared is absent).
OWN_SCHEMA = [
    """CREATE TABLE `settings` (`company_id` int(11) NOT NULL, `config_current_database_version` varchar(10) NOT NULL,
       `config_enable_cron` tinyint(1) NOT NULL DEFAULT 0, PRIMARY KEY (`company_id`)) ENGINE=InnoDB""",
    """CREATE TABLE `users` (`user_id` int(11) NOT NULL AUTO_INCREMENT, `user_name` varchar(200) NOT NULL,
       `user_email` varchar(200) NOT NULL, `user_password` varchar(200) NOT NULL,
       `user_specific_encryption_ciphertext` varchar(200) DEFAULT NULL, `user_archived_at` datetime DEFAULT NULL,
       `user_role_id` int(11) DEFAULT 0, PRIMARY KEY (`user_id`)) ENGINE=InnoDB""",
    """CREATE TABLE `clients` (`client_id` int(11) NOT NULL AUTO_INCREMENT, `client_name` varchar(200) NOT NULL,
       `client_currency_code` varchar(200) NOT NULL, `client_net_terms` int(10) NOT NULL,
       PRIMARY KEY (`client_id`)) ENGINE=InnoDB""",
    """CREATE TABLE `credentials` (`credential_id` int(11) NOT NULL AUTO_INCREMENT,
       `credential_name` varchar(200) NOT NULL, `credential_username` varchar(500) DEFAULT NULL,
       `credential_password` varchar(500) DEFAULT NULL, `credential_client_id` int(11) NOT NULL DEFAULT 0,
       PRIMARY KEY (`credential_id`)) ENGINE=InnoDB""",
    """CREATE TABLE `files` (`file_id` int(11) NOT NULL AUTO_INCREMENT, `file_reference_name` varchar(200)
       DEFAULT NULL, `file_name` varchar(200) NOT NULL, `file_client_id` int(11) NOT NULL DEFAULT 0,
       PRIMARY KEY (`file_id`)) ENGINE=InnoDB""",
    """CREATE TABLE `client_notes` (`client_note_id` int(11) NOT NULL AUTO_INCREMENT,
       `client_note_client_id` int(11) NOT NULL, PRIMARY KEY (`client_note_id`),
       CONSTRAINT `client_notes_ibfk_1` FOREIGN KEY (`client_note_client_id`) REFERENCES `clients` (`client_id`)
       ON DELETE CASCADE) ENGINE=InnoDB""",
]


def php_string(value: str) -> str:
    """PHP var_export() of a string, as ITFlow's setup writes config.php."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def build_itflow(root: Path, database: str, *, app_version: str = "26.08.2") -> None:
    """An ITFlow folder as setup leaves it: config.php, code, custom dirs, uploads with guards."""
    put(root / "config.php", "<?php\n"
        f"$dbhost = {php_string('localhost')};\n$dbusername = {php_string('root')};\n"
        f"$dbpassword = {php_string('')};\n$database = {php_string(database)};\n"
        "$mysqli = mysqli_connect($dbhost, $dbusername, $dbpassword, $database) or die('Database Connection Failed');\n"
        "$config_app_name = 'ITFlow';\n$config_base_url = 'itflow.example.com';\n$config_https_only = TRUE;\n"
        "$repo_branch = 'master';\n$installation_id = 'Zq3dPz0mXe8yV1bN4cT7aW2sK5fH9gJ6';\n"
        "$config_enable_setup = 0;\n$dbhost = '127.0.0.1';\n$config_backup_key = 'k3yK3yk3yK3yk3yK3yk3yK3yk3yK3yk3';\n"
        "$config_backup_path = '/var/backups/itflow';\n",
        0o640, WEB)
    put(root / "includes" / "app_version.php", f'<?php\nDEFINE("APP_VERSION", "{app_version}");\n')
    put(root / "index.php", "<?php require_once 'config.php';\n")
    put(root / "admin" / "custom" / "branding.php", "<?php // local customisation\n")
    for sub in ("clients", "tickets", "tmp", "backups"):
        (root / "uploads" / sub).mkdir(parents=True, exist_ok=True)
        put(root / "uploads" / sub / "index.php", "", 0o640, WEB)
    put(root / "uploads" / ".htaccess", "php_flag engine off\n", 0o644, WEB)
    for guarded in ("tmp", "backups"):  # as ITFlow ships them: deny all, PHP off
        put(root / "uploads" / guarded / ".htaccess", itflow_profile.DENY_ALL, 0o644, WEB)
    put(root / "uploads" / "index.php", "", 0o640, WEB)
    put(root / "uploads" / "clients" / "1" / "contract.pdf", b"%PDF-1.4 " + bytes(range(256)) * 64, 0o640, WEB)
    put(root / "uploads" / "tmp" / "scratch.bin", b"x" * 1000, 0o600, WEB)
    put(root / "uploads" / "backups" / "itflow_20260101-000000_full_x.zip", b"zip", 0o600, WEB)
    for folder in [root / "uploads", *(root / "uploads").iterdir(), root / "uploads" / "clients" / "1"]:
        if folder.is_dir():
            folder.chmod(0o750)
            shutil.chown(folder, WEB_UID, WEB_GID)
    (root / "uploads" / "tickets").chmod(0o2770)


def fill_database(database: str, *, schema_version: str = "2.6.7") -> None:
    """Schema (ITFlow's own db.sql when available) plus settings, an admin, clients, credentials."""
    if SHARED_SCHEMA.is_file():
        _load_file(database)
    else:
        sql(OWN_SCHEMA, database)
    sql([f"INSERT INTO settings (company_id, config_current_database_version, config_enable_cron) "
         f"VALUES (1, '{schema_version}', 1)",
         "INSERT INTO users (user_name, user_email, user_password, user_specific_encryption_ciphertext) VALUES "
         f"('Admin', 'admin@example.com', '$2y$10$hash', '{itflow_wrap(MASTER, ADMIN_PASSWORD)}'),"
         f"('Tech', 'tech@example.com', '$2y$10$hash2', '{itflow_wrap(MASTER, 'tech password')}')",
         "INSERT INTO clients (client_name, client_currency_code, client_net_terms) VALUES ('Acme', 'EUR', 30),"
         " ('Émile & Söhne', 'CHF', 10)",
         "INSERT INTO credentials (credential_name, credential_username, credential_password, credential_client_id)"
         f" VALUES ('router', '{itflow_encrypt('admin', MASTER)}', '{itflow_encrypt('s3cret!', MASTER)}', 1)"],
        database)
    if not SHARED_SCHEMA.is_file():
        sql(["INSERT INTO files (file_reference_name, file_name, file_client_id) VALUES ('x1.pdf', 'contract.pdf', 1)",
             "INSERT INTO client_notes (client_note_client_id) VALUES (1)"], database)


def _load_file(database: str) -> None:
    import subprocess

    with SHARED_SCHEMA.open("rb") as schema:
        subprocess.run(["mariadb", "-h127.0.0.1", "-uroot", database], stdin=schema, check=True)


@pytest.fixture
def itflow(tmp_path: Path, repo: dict[str, str], new_db: Callable[[str], str]) -> dict[str, object]:
    database = new_db("t_apps")
    root = tmp_path / "www" / "itflow"
    build_itflow(root, database)
    fill_database(database)
    config = write_config(tmp_path, repo, "itflow", "itflow", root)
    return {"root": root, "db": database, "config": config, "state": tmp_path / "state"}


def cron(database: str) -> int:
    return int(sql("SELECT config_enable_cron FROM settings WHERE company_id = 1", database)[0][0])


SKIP = ("uploads/tmp/scratch.bin", "uploads/backups/itflow_20260101-000000_full_x.zip")


def test_backup_destroy_restore_is_exact(itflow: dict[str, object]) -> None:
    root, database, config = Path(str(itflow["root"])), str(itflow["db"]), Path(str(itflow["config"]))
    dump_before = mariadb_dump(database)
    files_before = tree_state(root, SKIP)
    ok(run_cli("backup", "itflow", config=config))
    show = json.loads(ok(run_cli("show", "latest", "--json", config=config)).stdout)
    assert show["app_version"] == "26.08.2" and show["schema_version"] == "2.6.7"
    assert show["quiesce"]["method"] == "itflow-cron"
    assert "itflow_config_backup_key" in show["keys"] and "k3yK3y" not in json.dumps(show)
    assert cron(database) == 1

    sql(f"DROP DATABASE `{database}`")
    shutil.rmtree(root)
    result = ok(run_cli("restore", "itflow", "latest", config=config))
    assert "config.php is missing: restoring it" in result.stderr
    assert mariadb_dump(database) == dump_before
    assert tree_state(root, SKIP) == files_before
    assert not (root / "uploads" / "tmp" / "scratch.bin").exists()  # scratch space is not kept
    assert (root / "uploads" / "tmp" / ".htaccess").read_text() == itflow_profile.DENY_ALL  # its guard is


def test_guards_a_point_lacks_are_written_back(itflow: dict[str, object]) -> None:
    """A point taken without uploads/ guards (before they were kept): restore writes ITFlow's own."""
    root, config = Path(str(itflow["root"])), Path(str(itflow["config"]))
    for guard in ("tmp/.htaccess", "backups/.htaccess", "backups/index.php", ".htaccess"):
        (root / "uploads" / guard).unlink()
    ok(run_cli("backup", "itflow", config=config))
    shutil.rmtree(root)
    result = ok(run_cli("restore", "itflow", "latest", "--only", "files", config=config))
    for relative, content in itflow_profile.GUARDS.items():
        assert (root / relative).read_text() == content, relative
        assert (root / relative).stat().st_uid == WEB_UID
    assert f"{root / 'uploads' / 'tmp' / '.htaccess'} was missing" in result.stderr


def test_cron_paused_during_snapshot_and_restored_even_on_failure(itflow: dict[str, object], tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    database, state = str(itflow["db"]), Path(str(itflow["state"]))
    config = config_module.load(Path(str(itflow["config"])))
    seen: list[int] = []
    messages: list[str] = []
    reporter = Silent()
    reporter.listeners.append(
        lambda e: seen.append(cron(database)) if str(e.get("message")).startswith("dumping") else None)
    reporter.listeners.append(lambda e: messages.append(str(e.get("message"))))
    # A cron job that is running holds its flock; the snapshot waits for it.
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with (tmp_path / "itflow_cron_0123456789abcdef.lock").open("w") as running:
        fcntl.flock(running, fcntl.LOCK_EX)
        reporter.listeners.append(lambda e: fcntl.flock(running, fcntl.LOCK_UN) if str(e.get("message")).startswith(
            "waiting for the ITFlow cron job") else None)
        backup_instance(config, "itflow", reporter)
    assert seen == [0] and cron(database) == 1
    assert any(m.startswith("waiting for the ITFlow cron job") for m in messages)
    assert any("master key is not escrowed" in m for m in messages)

    def explode(event: dict[str, object]) -> None:
        if str(event.get("message")).startswith("saving"):
            seen.append(cron(database))
            raise RuntimeError("disk full")

    reporter.listeners[:] = [explode]
    monkeypatch.undo()
    with pytest.raises(RuntimeError, match="disk full"):
        backup_instance(config, "itflow", reporter)
    assert seen[-1] == 0 and cron(database) == 1
    assert not list((state / "quiesce").glob("*.json"))


def test_key_escrow_wrong_and_right_password(itflow: dict[str, object], tmp_path: Path) -> None:
    config, state, database = Path(str(itflow["config"])), Path(str(itflow["state"])), str(itflow["db"])
    env = {"ITFLOW_PW": "wrong password"}
    bad = run_cli("key", "escrow", "itflow", "--password-ref", "env:ITFLOW_PW", config=config, env=env)
    assert bad.returncode == 1 and "password does not unlock the master key" in bad.stderr
    assert not (state / "keys" / "itflow.json").exists()
    prompted = run_cli("key", "escrow", "itflow", config=config, input="also wrong\n")
    assert prompted.returncode == 1 and "password does not unlock the master key" in prompted.stderr
    bad_user = run_cli("key", "escrow", "itflow", "--password-ref", "env:ITFLOW_PW", "--user", "nobody@x",
                       config=config, env=env)
    assert bad_user.returncode == 1 and "user nobody@x has no wrapped master key" in bad_user.stderr

    env = {"ITFLOW_PW": ADMIN_PASSWORD}
    good = ok(run_cli("key", "escrow", "itflow", "--password-ref", "env:ITFLOW_PW", config=config, env=env))
    assert "decrypts credential #1" in good.stdout
    key_file = state / "keys" / "itflow.json"
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert json.loads(key_file.read_text())["itflow_master_key"] == MASTER

    backup = ok(run_cli("backup", "itflow", config=config))
    show = ok(run_cli("show", "latest", "--json", config=config))
    for output in (good.stdout + good.stderr, backup.stdout + backup.stderr, show.stdout):
        assert MASTER not in output and ADMIN_PASSWORD not in output
    assert "itflow_master_key" in json.loads(show.stdout)["keys"]
    checked = ok(run_cli("key", "verify", "itflow", "latest", config=config))
    assert "keys ok" in checked.stdout

    # A vault re-encrypted under another key: the point's key no longer decrypts it, and says so.
    sql(f"UPDATE credentials SET credential_password = '{itflow_encrypt('x', 'Other_key_123456')}'", database)
    broken = run_cli("key", "verify", "itflow", "latest", config=config)
    assert broken.returncode == 1 and "does not decrypt credential #1" in broken.stdout


def test_version_guard(itflow: dict[str, object], new_db: Callable[[str], str]) -> None:
    root, database, config = Path(str(itflow["root"])), str(itflow["db"]), Path(str(itflow["config"]))
    ok(run_cli("backup", "itflow", config=config))
    sql("UPDATE settings SET config_current_database_version = '2.6.8'", database)
    put(root / "includes" / "app_version.php", '<?php\nDEFINE("APP_VERSION", "26.09.1");\n')
    # A copy under another name is never refused, and keeps cron off (a clone must not bill twice).
    copy = new_db("t_apps")
    ok(run_cli("restore", "itflow", "latest", "--only", "db", "--to-db", copy, config=config))
    assert cron(copy) == 0 and cron(database) == 1
    refused = run_cli("restore", "itflow", "latest", "--only", "db", config=config)
    assert refused.returncode == 1
    assert "schema version 2.6.8 here but 2.6.7 in the point" in refused.stderr
    assert "app version 26.09.1 here but 26.08.2 in the point" in refused.stderr
    assert "--allow-version-change" in refused.stderr
    # --force overwrites a database that holds data; it does not also override the version guard.
    forced = run_cli("restore", "itflow", "latest", "--only", "db", "--force", config=config)
    assert forced.returncode == 1 and "--allow-version-change restores it anyway" in forced.stderr
    assert sql("SELECT config_current_database_version FROM settings", database)[0][0] == "2.6.8"
    done = ok(run_cli("restore", "itflow", "latest", "--only", "db", "--force", "--allow-version-change",
                      "--json", config=config))
    assert "restoring across a version change" in done.stderr
    assert "app version 26.09.1 here" in json.loads(done.stdout)["version_change"][0]
    assert sql("SELECT config_current_database_version FROM settings", database)[0][0] == "2.6.7"
    last = json.loads(ok(run_cli("history", "itflow", "--json", config=config)).stdout)[0]
    assert last["kind"] == "restore" and last["result"] == "ok" and last["details"]["version_change"]


def test_config_errors(itflow: dict[str, object], tmp_path: Path, repo: dict[str, str]) -> None:
    root = Path(str(itflow["root"]))
    wrong = write_config(tmp_path, repo, "itflow", "itflow", tmp_path / "nowhere")
    result = run_cli("backup", "itflow", config=wrong)
    assert result.returncode == 2 and "ITFlow root" in result.stderr and "does not exist" in result.stderr

    other = tmp_path / "other"
    put(other / "config.php", "<?php $x = 1;\n")
    result = run_cli("backup", "itflow", config=write_config(tmp_path, repo, "itflow", "itflow", other))
    assert result.returncode == 1 and "does not look like an ITFlow install" in result.stderr

    put(root / "config.php", "<?php\n$dbhost = getenv('DB_HOST');\n$dbusername = 'x';\n$dbpassword = '';\n"
        "$database = 'x';\n")
    result = run_cli("backup", "itflow", config=write_config(tmp_path, repo, "itflow", "itflow", root))
    assert result.returncode == 2 and "config.php, line 2: $dbhost is set by a call to getenv()" in result.stderr
    put(root / "config.php", "<?php\n$database = 'x';\n$dbhost = 'unterminated;\n")
    result = run_cli("backup", "itflow", config=write_config(tmp_path, repo, "itflow", "itflow", root))
    assert result.returncode == 2 and "unterminated string" in result.stderr


def test_config_errors_never_show_the_password(itflow: dict[str, object]) -> None:
    """Valid PHP that assigns the password next to the host: the refusal names file, line and variable,
    and the password reaches neither the terminal, nor the run history, nor `safehold check`."""
    root, config = Path(str(itflow["root"])), Path(str(itflow["config"]))
    password = "Pw9#x-" + "long-enough-to-pass-any-80-character-cut-" * 3
    put(root / "config.php", "<?php\n$dbhost = 'localhost';\n$dbusername = 'root';\n$dbpassword = '';\n"
        f"$database = '{itflow['db']}';\nif (getenv('S')) {{ $dbhost = 'db2'; $dbpassword = '{password}'; }}\n")
    result = run_cli("backup", "itflow", config=config)
    assert result.returncode == 2, result.stderr
    assert f"{root / 'config.php'}, line 6: $dbhost is set by code inside a PHP `if` statement" in result.stderr
    history = run_cli("history", "--json", config=config)
    checked = run_cli("check", "--json", config=config)
    for shown in (result.stdout, result.stderr, history.stdout, checked.stdout, checked.stderr):
        assert "Pw9" not in shown and "db2" not in shown
    assert "line 6: $dbhost" in history.stdout and "line 6: $dbhost" in checked.stdout


def test_password_bytes_are_those_php_sends(itflow: dict[str, object], new_db: Callable[[str], str]) -> None:
    """PHP strings are bytes: "\\xc3\\xa9" is é in UTF-8; a raw latin-1 byte cannot be sent and is refused."""
    from tests.integration.appkit import drop_users

    root, config, database = Path(str(itflow["root"])), Path(str(itflow["config"])), str(itflow["db"])
    user = f"t_apps_bytes_{secrets.token_hex(3)}"  # tests of other checkouts may run at the same time
    users = [user]
    sql(f"CREATE USER '{user}'@'%' IDENTIFIED BY 'caf\u00e9 \"q\" \\\\ new\nline'")
    try:
        sql(f"GRANT ALL ON `{database}`.* TO '{user}'@'%'")
        put(root / "config.php", "<?php\n$dbhost = '127.0.0.1';\n$dbusername = '" + user + "';\n"
            '$dbpassword = "caf\\xc3\\xa9 \\"q\\" \\\\ new\\nline";\n'
            f"$database = '{database}';\n", 0o640, WEB)
        ok(run_cli("backup", "itflow", config=config))  # describe (client library) and mariadb-dump (option file)

        put(root / "config.php", b"<?php\n$dbhost = '127.0.0.1';\n$dbusername = '" + user.encode() + b"';\n"
            b"$dbpassword = 'caf\xe9';\n$database = '" + database.encode() + b"';\n", 0o640, WEB)
        result = run_cli("backup", "itflow", config=config)
        assert result.returncode == 2, result.stderr
        assert "line 4: $dbpassword is a string whose bytes are not UTF-8 text" in result.stderr
        assert "internal error" not in result.stderr and "caf" not in result.stderr
    finally:
        drop_users(users)


def test_init_writes_a_working_config(itflow: dict[str, object], tmp_path: Path, repo: dict[str, str]) -> None:
    root = Path(str(itflow["root"]))
    out = tmp_path / "init.toml"
    ok(run_cli("init", "--app", "itflow", "--root", str(root), "--repo", repo["url"], "--output", str(out)))
    instance = itflow_profile.describe("itflow", config_module.load(out).instance("itflow"))
    assert instance.databases[0].name == itflow["db"] and instance.schema_version == "2.6.7"
    assert instance.files == [root] and instance.config_files == [root / "config.php"]
    assert str(root / "uploads" / "tmp" / "*") in instance.exclude and "/var/backups/itflow/*" in instance.exclude
    assert itflow_profile.read_schema_version(instance, str(itflow["db"])) == "2.6.7"
    assert itflow_profile.read_schema_version(instance, "t_apps_missing") is None
    bad = run_cli("init", "--app", "itflow", "--root", str(tmp_path), "--output", str(tmp_path / "x.toml"))
    assert bad.returncode == 2 and "does not look like an ITFlow install" in bad.stderr


def _escrowed_install(tmp_path: Path, repo: dict[str, str], new_db: Callable[[str], str], real: Path,
                      configured: Path) -> Path:
    """A filled ITFlow install at `real`, configured as `configured`, with its master key escrowed."""
    database = new_db("t_files")
    build_itflow(real, database)
    fill_database(database)
    config = write_config(tmp_path, repo, "itflow", "itflow", configured)
    ok(run_cli("key", "escrow", "itflow", "--password-ref", "env:ITFLOW_PW", config=config,
               env={"ITFLOW_PW": ADMIN_PASSWORD}))
    return config


def test_drill_of_a_standard_install_passes(tmp_path: Path, repo: dict[str, str],
                                             new_db: Callable[[str], str]) -> None:
    """The profile's `!` re-include patterns (uploads guards) are counted as restic stores them."""
    root = tmp_path / "www" / "itflow"
    config = _escrowed_install(tmp_path, repo, new_db, root, root)
    ok(run_cli("backup", "itflow", config=config))
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    res = run_cli("drill", "itflow", "--json", config=config, env={"TMPDIR": str(scratch)})
    assert res.returncode == 0, res.stdout + res.stderr
    result = json.loads(res.stdout)[0]
    assert result["ok"] and result["problems"] == []
    checks = {c["check"]: c["detail"] for c in result["checks"]}
    # Everything but the two skipped files: the guards uploads/{tmp,backups}/index.php are kept.
    stored = sum(1 for p in root.rglob("*") if p.is_file()) - len(SKIP)
    assert checks[f"files {root}"].startswith(f"{stored} files, ")
    show = json.loads(ok(run_cli("show", "latest", "--json", config=config)).stdout)
    tree = next(t for t in show["trees"] if t["root"] == str(root))
    assert not any(rel in tree["samples"] for rel in SKIP)


def test_symlinked_root_is_restored_into_the_real_folder(tmp_path: Path, repo: dict[str, str],
                                                         new_db: Callable[[str], str]) -> None:
    """root names a symlink: the files come back where the app really lives, and the link stays a link."""
    real = tmp_path / "www" / "itflow1"
    link = tmp_path / "www" / "itflow_link"
    link.parent.mkdir(parents=True)
    link.symlink_to(real)
    config = _escrowed_install(tmp_path, repo, new_db, real, link)
    files_before = tree_state(real, SKIP)
    backup = ok(run_cli("backup", "itflow", config=config))
    assert f"{link} is a symlink to {real}" in backup.stderr
    assert backup.stderr.count("saving the real path") == 1  # once, not again for config.php behind it
    show = json.loads(ok(run_cli("show", "latest", "--json", config=config)).stdout)
    roots = {t["root"]: t for t in show["trees"]}
    assert set(roots) == {str(real), str(real / "config.php")}
    assert roots[str(real)]["link"] == str(link)
    assert roots[str(real)]["files"] == sum(1 for p in real.rglob("*") if p.is_file()) - len(SKIP)

    (real / "admin" / "custom" / "branding.php").unlink()
    ok(run_cli("restore", "itflow", "latest", "--only", "files", config=config))
    assert link.is_symlink() and link.resolve() == real
    assert tree_state(real, SKIP) == files_before
    # The real folder gone (the link dangles): config.php is found in the point under the real path first.
    shutil.rmtree(real)
    result = ok(run_cli("restore", "itflow", "latest", "--only", "files", config=config))
    assert f"{link / 'config.php'} is missing: restoring it" in result.stderr
    assert link.is_symlink() and tree_state(real, SKIP) == files_before

    scratch = tmp_path / "scratch"
    scratch.mkdir()
    res = run_cli("drill", "itflow", "--json", config=config, env={"TMPDIR": str(scratch)})
    assert res.returncode == 0, res.stdout + res.stderr
    assert json.loads(res.stdout)[0]["ok"]
