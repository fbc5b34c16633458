"""`safehold drill` against real MariaDB, SQLite and restic: healthy points pass, each corruption is named.

One live instance (a MariaDB database with a view, trigger and routine, an SQLite database, an
uploads tree and a config file) is backed up once per module; damaged points are forged next to
the healthy one through the Repository API, the way a damaged repository or a buggy dump would
present them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import types
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from safehold import config as config_module
from safehold.actions import drill as drill_action
from safehold.actions.backup import backup_instance
from safehold.actions.common import find_point, open_repository
from safehold.apps import generic
from safehold.engines.mariadb import client
from safehold.history import History
from safehold.models import Instance
from safehold.output import Silent
from safehold.repository.manifest import MANIFEST_PATH, Manifest, new_run_id, now
from safehold.secrets import Secret
from tests.conftest import MARIADB, SRC, databases_appearing, need, private_file, run_cli, sql
from tests.conftest import write_config as write_repository_config

UPLOADS = {"a/b.txt": b"invoice 1\n", "a/c.pdf": b"%PDF" + bytes(range(256)) * 40, "d.png": b"\x89PNG" * 999,
           "e/f/g.txt": b"deep\n", "h.txt": b""}


def _make_live(root: Path) -> tuple[str, Path]:
    name = f"t_drill_{secrets.token_hex(4)}"
    sql([f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4",
         f"CREATE TABLE `{name}`.customers (id INT PRIMARY KEY AUTO_INCREMENT, name VARCHAR(50), KEY (name))",
         f"CREATE TABLE `{name}`.orders (id INT PRIMARY KEY AUTO_INCREMENT, customer INT, total DECIMAL(9,2),"
         f" FOREIGN KEY (customer) REFERENCES `{name}`.customers(id))",
         f"CREATE TABLE `{name}`.log (id INT PRIMARY KEY AUTO_INCREMENT, line VARCHAR(50))",
         f"INSERT INTO `{name}`.customers (name) VALUES " + ",".join(f"('c{i}')" for i in range(10)),
         f"INSERT INTO `{name}`.orders (customer, total) VALUES " + ",".join(f"({i % 10 + 1}, {i}.5)"
                                                                            for i in range(25)),
         f"CREATE VIEW `{name}`.big_orders AS SELECT * FROM `{name}`.orders WHERE total > 10"])
    sql(["CREATE TRIGGER orders_check BEFORE INSERT ON orders FOR EACH ROW SET NEW.total = ABS(NEW.total)",
         "CREATE FUNCTION double_it(x INT) RETURNS INT DETERMINISTIC RETURN x * 2"], name)
    lite = root / "app" / "notes.sqlite"
    lite.parent.mkdir(parents=True)
    with sqlite3.connect(lite) as conn:
        conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
        conn.executemany("INSERT INTO notes (body) VALUES (?)", [(f"note {i}",) for i in range(7)])
    conn.close()
    for rel, data in UPLOADS.items():
        path = root / "app" / "uploads" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    (root / "app" / "config.php").write_text("<?php $db = 'x';\n")
    return name, lite


def write_config(root: Path, instance: str, repo: dict[str, str], db: str, lite: Path,
                 user: str = "root", password: str | None = None, scratch_server: str = "") -> Path:
    """A generic instance: MariaDB database, SQLite database, uploads tree and a config file."""
    auth = f'user = "{user}"\n' + (f'password = "{password}"\n' if password else "")
    text = f'''[settings]
state_dir = "{root / 'state'}"

[repositories.main]
url = "{repo['url']}"
password = "file:{repo['password_file']}"

[instances.{instance}]
app = "generic"
repositories = ["main"]
files = ["{root / 'app' / 'uploads'}"]
config_files = ["{root / 'app' / 'config.php'}"]
{scratch_server}

[[instances.{instance}.databases]]
engine = "mariadb"
host = "{MARIADB['host']}"
port = {MARIADB['port']}
{auth}names = ["{db}"]

[[instances.{instance}.databases]]
engine = "sqlite"
path = "{lite}"
'''
    path = root / f"safehold-{user}{'-scratch' if scratch_server else ''}.toml"
    path.write_text(text)
    return path


class Env(types.SimpleNamespace):
    root: Path
    instance: str
    db: str
    lite: Path
    config_path: Path
    repo_info: dict[str, str]
    run_id: str
    scratch_tmp: Path


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, mariadb: dict[str, object], restic: str) -> Iterator[Env]:
    """A live instance with one healthy recovery point."""
    root = tmp_path_factory.mktemp("drill")
    password = private_file(root / "secrets" / "repo.pass", secrets.token_urlsafe(24))
    repo_info = {"url": str(root / "repo"), "password_file": str(password)}
    db, lite = _make_live(root)
    instance = f"shop{secrets.token_hex(3)}"
    config_path = write_config(root, instance, repo_info, db, lite)
    scratch_tmp = root / "tmp"
    scratch_tmp.mkdir()
    config = config_module.load(config_path)
    result = backup_instance(config, instance, Silent())
    try:
        yield Env(root=root, instance=instance, db=db, lite=lite, config_path=config_path, repo_info=repo_info,
                  run_id=str(result["run_id"]), scratch_tmp=scratch_tmp)
    finally:
        sql(f"DROP DATABASE IF EXISTS `{db}`")
        for (name,) in sql(f"SHOW DATABASES LIKE 'safehold\\_drill\\_{instance}\\_%'"):
            sql(f"DROP DATABASE IF EXISTS `{name}`")


def server_folders(instance: str) -> list[Path]:
    """Private server folders of drills of `instance` (in $TMPDIR, or /tmp when the server's account
    cannot enter the test's private temp folder)."""
    roots = {Path(tempfile.gettempdir()), Path("/tmp")}
    return [path for root in roots for path in root.glob(f"safehold_drill_{instance}_*")]


def server_processes(folders: list[Path]) -> list[int]:
    """Processes whose command line names one of `folders` (a private server still running)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            line = (entry / "cmdline").read_bytes().decode(errors="replace") if entry.name.isdigit() else ""
        except OSError:
            continue
        if any(str(folder) in line for folder in folders):
            found.append(int(entry.name))
    return found


def scratch_left(env: Env) -> list[str]:
    """Scratch databases, folders and private servers of this instance that still exist."""
    dbs = [row[0] for row in sql(f"SHOW DATABASES LIKE 'safehold\\_drill\\_{env.instance}\\_%'")]
    folders = sorted({*env.scratch_tmp.iterdir(), *server_folders(env.instance)})
    return dbs + [str(p) for p in folders] + [f"process {pid}" for pid in server_processes(folders)]


@pytest.fixture
def no_private_server(monkeypatch: pytest.MonkeyPatch) -> None:
    """A host without MariaDB server binaries: the drill falls back to the live server."""
    from safehold.engines import mariadb

    monkeypatch.setattr(mariadb, "private_server", lambda *args, **kwargs: None)


@pytest.fixture
def drill(env: Env, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., dict[str, object]]]:
    """Run a drill in-process with scratch folders under the test's temp dir; assert nothing is left."""
    monkeypatch.setattr(tempfile, "tempdir", str(env.scratch_tmp))

    def run(run_id: str, config_path: Path | None = None) -> dict[str, object]:
        config = config_module.load(config_path or env.config_path)
        return drill_action.drill(config, env.instance, Silent(), run_id)[0]

    yield run
    assert scratch_left(env) == []


def forge(env: Env, change: Callable[[Manifest], None], run_id: str | None = None) -> str:
    """Store a new point whose manifest is the healthy one's, changed by `change`."""
    config = config_module.load(env.config_path)
    repo = open_repository(config, "main")
    manifest = find_point(config, repo, env.instance, run_id or env.run_id).manifest.model_copy(deep=True)
    manifest.run_id, manifest.started, manifest.finished = new_run_id(), now(), now()
    change(manifest)
    tags = [f"instance={env.instance}", f"run={manifest.run_id}", "part=manifest"]
    repo.backup_stream(MANIFEST_PATH, tags, lambda out: out.write(manifest.to_bytes()), Silent(), "manifest")
    return manifest.run_id


def store(env: Env, path: str, data: bytes, run_id: str) -> str:
    """Store one stream in the repository as a part of run `run_id`; returns its snapshot id."""
    repo = open_repository(config_module.load(env.config_path), "main")
    tags = [f"instance={env.instance}", f"run={run_id}", "part=forged"]
    summary, _ = repo.backup_stream(path, tags, lambda out: out.write(data), Silent(), "forged")
    return summary.snapshot_id


def test_a_run_id_that_names_no_point_is_a_usage_mistake_not_a_failed_drill(env: Env) -> None:
    history = History(env.root / "state")
    before = len(history.runs(None, "drill"))
    res = run_cli("drill", env.instance, "--run", "19990101", config=env.config_path)
    assert res.returncode == 2 and f"no point '19990101' of {env.instance}" in res.stderr, res.stderr
    assert len(history.runs(None, "drill")) == before  # nothing recorded: check and reports stay quiet
    for argv in (("show", "19990101"), ("restore", env.instance, "19990101", "--dry-run"),
                 ("export", "19990101", str(env.root / "x.tar.zst")), ("verify", "19990101")):
        typo = run_cli(*argv, config=env.config_path)
        assert typo.returncode == 2 and "no point '19990101'" in typo.stderr, (argv, typo.stderr)


def test_healthy_drill_passes_and_reports_phases(env: Env) -> None:
    res = run_cli("drill", env.instance, "--run", env.run_id, "--json", config=env.config_path,
                  env={"TMPDIR": str(env.scratch_tmp)})
    assert res.returncode == 0, res.stdout + res.stderr
    result = json.loads(res.stdout)[0]
    assert result["ok"] and result["problems"] == []
    assert set(result["phases"]) == {"fetch", "database load", "indexes", "files"}
    assert result["rto_seconds"] == pytest.approx(sum(result["phases"].values()), abs=0.01)
    assert 0 <= result["rpo_seconds"] < 600
    checks = {c["check"]: c for c in result["checks"]}
    assert all(c["ok"] for c in checks.values())
    assert checks[f"database {env.db} tables"]["detail"].startswith("3 tables, 35 rows match")
    assert "1 views" in checks[f"database {env.db} schema objects"]["detail"]
    assert f"database {env.lite} tables" in checks  # SQLite too, with content checksums
    assert "(1 with checksums)" in checks[f"database {env.lite} tables"]["detail"]
    assert checks[f"files {env.root / 'app' / 'uploads'}"]["detail"] == "5 files, " \
        f"{sum(len(d) for d in UPLOADS.values())} bytes, 5 sampled hashes match"
    recorded = History(env.root / "state").runs(None, "drill")[0]
    assert recorded.result == "ok" and recorded.details["run_id"] == env.run_id and recorded.details["ok"]
    assert scratch_left(env) == []


def test_tampered_manifest_counts_are_named(env: Env, drill: Callable[..., dict[str, object]]) -> None:
    def tamper(m: Manifest) -> None:
        mariadb = next(d for d in m.databases if d.engine == "mariadb")
        mariadb.tables["customers"].rows = 11
        mariadb.objects["views"] = 2

    result = drill(forge(env, tamper))
    assert not result["ok"]
    assert result["problems"] == [f"table {env.db}.customers: 11 rows expected, 10 restored",
                                  f"database {env.db}: 2 views expected, 1 restored"]


def test_altered_data_is_caught_by_checksum(env: Env, drill: Callable[..., dict[str, object]]) -> None:
    altered = env.root / "altered.sqlite"
    altered.write_bytes(env.lite.read_bytes())
    with sqlite3.connect(altered) as conn:
        conn.execute("UPDATE notes SET body = 'forged' WHERE id = 3")
    conn.close()
    run_id = new_run_id()

    def swap(m: Manifest) -> None:
        lite = next(d for d in m.databases if d.engine == "sqlite")
        lite.snapshot = store(env, lite.path, altered.read_bytes(), run_id)

    result = drill(forge(env, swap))
    assert len(result["problems"]) == 1
    assert result["problems"][0].startswith(f"table {env.lite}.notes: checksum differs (")


def test_missing_table_is_named(env: Env, drill: Callable[..., dict[str, object]]) -> None:
    dump = subprocess.run(["mariadb-dump", "-h127.0.0.1", "-uroot", "--skip-dump-date", "--routines", "--triggers",
                           f"--ignore-table={env.db}.log", env.db], check=True, capture_output=True).stdout
    run_id = new_run_id()

    def swap(m: Manifest) -> None:
        mariadb = next(d for d in m.databases if d.engine == "mariadb")
        mariadb.snapshot = store(env, mariadb.path, dump, run_id)
        mariadb.method = "mariadb-dump"  # the forged dump is plain SQL, whatever the default method wrote

    result = drill(forge(env, swap))
    assert result["problems"] == [f"table {env.db}.log missing"]


def test_file_missing_from_point_is_named(env: Env, drill: Callable[..., dict[str, object]]) -> None:
    uploads = env.root / "app" / "uploads"
    victim = uploads / "a" / "b.txt"
    saved = victim.read_bytes()
    victim.unlink()
    config = config_module.load(env.config_path)
    repo = open_repository(config, "main")
    run_id = new_run_id()
    try:
        summary = repo.backup_paths([uploads, env.root / "app" / "config.php"],
                                    [f"instance={env.instance}", f"run={run_id}", "part=files"], [], Silent(), "files")
    finally:
        victim.write_bytes(saved)

    def swap(m: Manifest) -> None:
        m.files_snapshot = summary.snapshot_id

    result = drill(forge(env, swap))
    assert result["problems"] == [f"files {uploads}: 5 files expected, 4 restored",
                                  f"files {uploads}: {sum(len(d) for d in UPLOADS.values())} bytes expected, "
                                  f"{sum(len(d) for d in UPLOADS.values()) - len(saved)} restored",
                                  f"file {uploads}/a/b.txt missing"]


def _own_database_user(env: Env) -> tuple[str, str]:
    """A database user with every right on the instance's own database and none elsewhere."""
    user, password = f"t_drill_{secrets.token_hex(3)}", secrets.token_urlsafe(12)
    hosts = ("localhost", "127.0.0.1")
    sql([f"CREATE USER '{user}'@'{h}' IDENTIFIED BY '{password}'" for h in hosts]
        + [f"GRANT ALL PRIVILEGES ON `{env.db}`.* TO '{user}'@'{h}'" for h in hosts])
    return user, password


def _drop_user(user: str) -> None:
    sql([f"DROP USER IF EXISTS '{user}'@'{h}'" for h in ("localhost", "127.0.0.1")])


def test_drill_with_rights_on_its_own_database_only_uses_a_private_server(
        env: Env, drill: Callable[..., dict[str, object]], monkeypatch: pytest.MonkeyPatch) -> None:
    """No rights needed on the live server, and no database appears there while the drill runs."""
    user, password = _own_database_user(env)
    monkeypatch.setenv("T_DRILL_PW", password)
    try:
        with databases_appearing(0.01) as appeared:
            result = drill(env.run_id, write_config(env.root, env.instance, env.repo_info, env.db, env.lite, user,
                                                    "env:T_DRILL_PW"))
    finally:
        _drop_user(user)
    assert result["ok"], result["problems"]
    assert not [name for name in appeared if name.startswith(f"safehold_drill_{env.instance}")]
    (server,) = result["scratch"]["servers"]
    assert server["kind"] == "private" and server["engine"] == "mariadb" and server["version"]
    if os.geteuid() == 0:  # mysql cannot enter the test's 0700 temp folder: the server went to /tmp, and said so
        assert Path(server["folder"]).parent == Path("/tmp")
        assert f"server folder in /tmp, not in {env.scratch_tmp}" in " ".join(server["notes"])
    assert Path(server["folder"]).name.startswith(f"safehold_drill_{env.instance}_")
    assert not os.path.exists(server["folder"]) and server["pid"] not in server_processes([Path(server["folder"])])
    assert result["rto_seconds"] == pytest.approx(sum(result["phases"].values()), abs=0.01)
    assert result["rto_missing"] is None
    # The drill fixture checks that no scratch database, folder or server process is left.


def test_without_local_server_binaries_the_live_server_needs_create_rights(
        env: Env, drill: Callable[..., dict[str, object]], monkeypatch: pytest.MonkeyPatch,
        no_private_server: None) -> None:
    user, password = _own_database_user(env)
    monkeypatch.setenv("T_DRILL_PW", password)
    try:
        limited = write_config(env.root, env.instance, env.repo_info, env.db, env.lite, user, "env:T_DRILL_PW")
        result = drill(env.run_id, limited)
        # The same instance with a scratch server where drills may create databases passes.
        elsewhere = write_config(env.root, env.instance, env.repo_info, env.db, env.lite, user, "env:T_DRILL_PW",
                                 'drill_server = { host = "127.0.0.1", port = 3306, user = "root" }')
        passed = drill(env.run_id, elsewhere)
    finally:
        _drop_user(user)
    assert len(result["problems"]) == 1
    assert result["problems"][0].startswith(f"cannot create scratch database safehold_drill_{env.instance}_")
    assert result["problems"][0].endswith(": access denied — grant CREATE, DROP ON `safehold\\_drill\\_%`.* to "
                                          "the instance's database user")
    assert result["scratch"]["servers"] == [{"engine": "mariadb", "kind": "live",
                                             "where": f"mariadb {user}@127.0.0.1:3306"}]
    # No database came back, so no recovery time was measured: the result says so instead of a number.
    assert result["rto_seconds"] is None
    assert result["rto_missing"] == f"no RTO: database {env.db} not restored"
    assert passed["ok"], passed["problems"]
    assert passed["scratch"]["servers"][0]["kind"] == "drill_server" and passed["rto_seconds"] is not None
    # The other parts were still drilled.
    assert {c["check"] for c in result["checks"] if c["ok"]} >= {f"database {env.lite} tables",
                                                                f"files {env.root / 'app' / 'uploads'}"}


def test_scratch_prefix_is_configurable(env: Env, drill: Callable[..., dict[str, object]], tmp_path: Path) -> None:
    text = env.config_path.read_text().replace("[settings]\n", '[settings]\ndrill_prefix = "t_drl_"\n')
    config = tmp_path / "prefixed.toml"
    config.write_text(text)
    result = drill(env.run_id, config)
    assert result["ok"], result["problems"]
    assert result["scratch"]["databases"][0].startswith(f"t_drl_{env.instance}_")
    assert Path(result["scratch"]["folder"]).name.startswith(f"t_drl_{env.instance}_")
    bad = tmp_path / "bad.toml"
    bad.write_text(text.replace('"t_drl_"', '"Robert\'); DROP"'))
    res = run_cli("drill", env.instance, config=bad)
    assert res.returncode == 2 and "drill_prefix" in res.stderr, res.stderr


def test_escrowed_key_checks(env: Env, drill: Callable[..., dict[str, object]], tmp_path: Path,
                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The drill hands escrowed keys and the scratch database to the profile's verify_keys."""
    sql(f"CREATE TABLE `{env.db}`.probe (mac CHAR(64))")
    right = "right-key"
    sql(f"INSERT INTO `{env.db}`.probe VALUES ('{hashlib.sha256((right + 'probe').encode()).hexdigest()}')")
    escrowed = {"key": "wrong-key"}
    seen: list[str | None] = []

    def verify_keys(instance: Instance, keys: dict[str, Secret], database_name: str | None = None) -> list[str]:
        seen.append(database_name)
        with client.cursor(instance.databases[0].connection, database_name) as cur:  # the scratch server's
            cur.execute("SELECT mac FROM probe")
            (mac,) = cur.fetchone()
        digest = hashlib.sha256((keys["app_key"].reveal() + "probe").encode()).hexdigest()
        return [] if digest == mac else ["escrowed key app_key does not decrypt the stored credential"]

    profile = types.ModuleType("keyed")
    profile.__dict__.update({k: v for k, v in vars(generic).items() if not k.startswith("__")})  # the generic one
    profile.keys = lambda instance, state_dir: {"app_key": Secret(escrowed["key"])}
    profile.verify_keys = verify_keys
    monkeypatch.setitem(__import__("safehold.apps", fromlist=["APPS"]).APPS, "generic", profile)
    try:
        config = config_module.load(env.config_path)
        wrong = str(backup_instance(config, env.instance, Silent())["run_id"])
        escrowed["key"] = right
        good = str(backup_instance(config, env.instance, Silent())["run_id"])
        missing = forge(env, lambda m: m.keys.append("other_key"), good)
        results = [drill(run) for run in (wrong, good, missing)]
    finally:
        sql(f"DROP TABLE `{env.db}`.probe")
    assert results[0]["problems"] == ["escrowed key app_key does not decrypt the stored credential"]
    assert results[1]["ok"], results[1]["problems"]
    assert results[2]["problems"] == ["escrowed key other_key missing from the point"]
    assert all(name and name.startswith(f"safehold_drill_{env.instance}_") for name in seen)


def _live_state(env: Env) -> tuple[object, ...]:
    sums = sql(f"CHECKSUM TABLE `{env.db}`.customers, `{env.db}`.orders EXTENDED")
    files = sorted((str(p), hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
                   for p in (env.root / "app").rglob("*") if p.is_file())
    return tuple(sums), tuple(files)


def test_drill_never_touches_live_data_even_under_writes(env: Env, drill: Callable[..., dict[str, object]]) -> None:
    before = _live_state(env)
    stop = threading.Event()
    written: list[int] = []

    def writer() -> None:
        import MySQLdb

        conn = MySQLdb.connect(**MARIADB, database=env.db, autocommit=True)
        while not stop.is_set():
            conn.cursor().execute("INSERT INTO log (line) VALUES ('busy')")
            written.append(1)
            time.sleep(0.005)
        conn.close()

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        result = drill(env.run_id)
    finally:
        stop.set()
        thread.join()
    assert result["ok"], result["problems"]
    assert _live_state(env) == before
    assert sql(f"SELECT COUNT(*) FROM `{env.db}`.log")[0][0] == len(written) > 0
    sql(f"DELETE FROM `{env.db}`.log")


def test_leftovers_of_a_killed_drill_on_the_live_server_are_removed(
        env: Env, drill: Callable[..., dict[str, object]], no_private_server: None) -> None:
    stale = drill_action.scratch_stem(env.instance, "20260101T000000Z-abcd")
    other = drill_action.scratch_stem(f"{env.instance}_x", "20260101T000000Z-abcd")  # another instance's scratch space
    sql([f"CREATE DATABASE `{stale}`", f"CREATE DATABASE `{other}`"])
    folder = env.scratch_tmp / stale
    folder.mkdir()
    (folder / "dump.sql").write_text("x")
    try:
        result = drill(env.run_id)
        assert sorted(result["leftovers_removed"]) == sorted([str(folder), stale])
        assert sql(f"SHOW DATABASES LIKE '{other}'")
    finally:
        sql(f"DROP DATABASE IF EXISTS `{other}`")


def test_dump_that_would_write_into_the_live_database_is_not_loaded(env: Env,
                                                                     drill: Callable[..., dict[str, object]]) -> None:
    """A trigger created as `live`.name is replayed into `live` by mariadb-dump's output: never load it."""
    sql(f"CREATE TRIGGER `{env.db}`.log_check BEFORE INSERT ON `{env.db}`.log FOR EACH ROW SET NEW.line = 'x'")
    try:
        config = config_module.load(env.config_path)
        run_id = str(backup_instance(config, env.instance, Silent())["run_id"])
    finally:
        sql(f"DROP TRIGGER `{env.db}`.log_check")
    result = drill(run_id)
    assert len(result["problems"]) == 1
    assert result["problems"][0].startswith(f"database {env.db}: not loaded into scratch space because the dump "
                                            f"names the live database in `")
    assert not sql(f"SHOW TRIGGERS FROM `{env.db}` LIKE 'log'")  # live untouched


def _start_drill(env: Env) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "safehold", "drill", env.instance, "--run", env.run_id,
                             "--config", str(env.config_path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "PYTHONPATH": str(SRC), "TMPDIR": str(env.scratch_tmp)})


def _private_scratch_databases(env: Env) -> list[str]:
    """Scratch databases on the private server of a running drill of the instance."""
    import MySQLdb

    for folder in server_folders(env.instance):
        with contextlib.suppress(MySQLdb.Error):
            conn = MySQLdb.connect(unix_socket=str(folder / "mysqld.sock"), user="root")
            try:
                cur = conn.cursor()
                cur.execute(f"SHOW DATABASES LIKE 'safehold\\_drill\\_{env.instance}\\_%'")
                return [row[0] for row in cur.fetchall()]
            finally:
                conn.close()
    return []


def _wait_for_scratch_database(env: Env, child: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while not _private_scratch_databases(env):
        assert child.poll() is None and time.monotonic() < deadline, "drill ended before its scratch DB was seen"
        time.sleep(0.02)
    assert not sql(f"SHOW DATABASES LIKE 'safehold\\_drill\\_{env.instance}\\_%'")  # none on the live server


def test_sigterm_cleans_up_and_sigkill_leftovers_go_next_time(env: Env,
                                                              drill: Callable[..., dict[str, object]]) -> None:
    child = _start_drill(env)
    _wait_for_scratch_database(env, child)
    child.send_signal(signal.SIGTERM)
    assert child.wait(timeout=60) == 1
    assert scratch_left(env) == []
    stopped = History(env.root / "state").runs(None, "drill")[0]
    assert stopped.result == "failed" and "drill stopped by SIGTERM" in stopped.details["problems"]

    # Stopped while its private server is still being set up (datadir, start): nothing is left either.
    child = _start_drill(env)
    deadline = time.monotonic() + 60
    while not any(f.name.endswith("_mariadb") for f in server_folders(env.instance)):
        assert child.poll() is None and time.monotonic() < deadline, "drill ended before its server was seen"
        time.sleep(0.005)
    child.send_signal(signal.SIGTERM)
    assert child.wait(timeout=60) == 1
    assert scratch_left(env) == []

    child = _start_drill(env)
    _wait_for_scratch_database(env, child)
    child.kill()
    child.wait(timeout=60)
    # restic's password file folder of the killed process stays too (the core's secret_files cannot
    # outlive SIGKILL either); it is not drill scratch space, so remove it here.
    for folder in env.scratch_tmp.glob("safehold-secret-*"):
        shutil.rmtree(folder)
    left = scratch_left(env)
    # A SIGKILLed drill cannot clean up its folder, nor stop its private server and remove its datadir ...
    assert len(left) == 3 and sum(item.startswith("process ") for item in left) == 1, left
    result = drill(env.run_id)  # ... so the next one does
    assert result["ok"] and sorted(result["leftovers_removed"]) == sorted(left)


def test_postgres_point_drills_and_leaves_nothing(tmp_path: Path, repo: dict[str, str]) -> None:
    ready = subprocess.run(["pg_isready", "-h", "127.0.0.1", "-q"], check=False).returncode == 0
    need(ready, "PostgreSQL on 127.0.0.1:5432 is not running")

    def psql(database: str, query: str) -> str:
        return subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-X", "-At", "-v", "ON_ERROR_STOP=1",
                               "-d", database, "-c", query], check=True, capture_output=True, text=True).stdout

    name, instance = f"t_drill_pg_{secrets.token_hex(3)}", f"pg{secrets.token_hex(3)}"
    reader = f"t_drill_reader_{secrets.token_hex(3)}"  # a role of the live cluster, not in the database's dump
    psql("postgres", f"CREATE DATABASE {name}")
    psql("postgres", f'CREATE ROLE "{reader}"')
    try:
        psql(name, "CREATE TABLE t (id serial PRIMARY KEY, v text); INSERT INTO t (v) SELECT 'x' FROM"
                   f' generate_series(1, 42); CREATE VIEW v AS SELECT * FROM t; GRANT SELECT ON t TO "{reader}"')
        config = write_repository_config(tmp_path, repo, f'''[instances.{instance}]
repositories = ["main"]
[[instances.{instance}.databases]]
engine = "postgres"
host = "127.0.0.1"
user = "postgres"
names = ["{name}"]
''')
        assert run_cli("backup", instance, config=config).returncode == 0
        res = run_cli("drill", instance, "--json", config=config, env={"TMPDIR": str(tmp_path)})
        assert res.returncode == 0, res.stdout + res.stderr
        result = json.loads(res.stdout)[0]
        checks = {c["check"]: c["detail"] for c in result["checks"]}
        assert checks[f"database {name} tables"].startswith("1 tables, 42 rows match")
        # Loaded into a private PostgreSQL server (socket only), never into the live one, and all of it removed.
        (server,) = result["scratch"]["servers"]
        assert server["kind"] == "private" and server["engine"] == "postgres", server
        assert not os.path.exists(server["folder"]) and not server_processes([Path(server["folder"])])
        assert not server_folders(instance)
        assert psql("postgres", f"SELECT datname FROM pg_database WHERE datname LIKE 'safehold_drill_{instance}%'")\
            == ""
    finally:
        psql("postgres", f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        psql("postgres", f'DROP ROLE IF EXISTS "{reader}"')


def test_exclude_without_slash_matches_at_any_depth(tmp_path: Path, repo: dict[str, str]) -> None:
    """`exclude = ["backups"]` is restic's pattern (any depth): the manifest counts what restic stored."""
    site = tmp_path / "site"
    for rel in ("index.php", "uploads/a.txt", "uploads/backups/index.php", "uploads/backups/old.zip",
                "backups/dump.sql", "deep/x/backups/y.txt", "deep/x/keep.txt", "backups.txt"):
        (site / rel).parent.mkdir(parents=True, exist_ok=True)
        (site / rel).write_text(rel)
    (site / "deep" / "link").symlink_to("x")
    instance = f"site{secrets.token_hex(3)}"
    config = write_repository_config(tmp_path, repo, f'''[instances.{instance}]
repositories = ["main"]
files = ["{site}"]
exclude = ["backups"]
''')
    assert run_cli("backup", instance, config=config).returncode == 0
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    res = run_cli("drill", instance, "--json", config=config, env={"TMPDIR": str(scratch)})
    assert res.returncode == 0, res.stdout + res.stderr
    result = json.loads(res.stdout)[0]
    assert result["ok"] and result["problems"] == []
    checks = {c["check"]: c["detail"] for c in result["checks"]}
    kept = ("index.php", "uploads/a.txt", "deep/x/keep.txt", "backups.txt")
    assert checks[f"files {site}"] == f"5 files, {sum(len(rel) for rel in kept)} bytes, 4 sampled hashes match"
