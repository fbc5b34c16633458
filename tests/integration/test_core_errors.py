"""Issue 3: what a user can get wrong gives one clear line, a non-zero exit, and loses nothing."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import SRC, database_config, files_instances, mariadb_dump, private_file, run_cli, sql, write_config
from tests.integration.test_core_roundtrip import fill_mariadb


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    return lines[0]


FILES_ONLY = """
[instances.app]
repositories = ["main"]
files = ["{files}"]
"""


@pytest.fixture
def files_instance(tmp_path: Path, repo: dict[str, str]) -> Path:
    files = tmp_path / "files"
    files.mkdir()
    (files / "a.txt").write_text("important\n")
    return write_config(tmp_path, repo, FILES_ONLY.format(files=files))


def test_malformed_toml(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[instances.app\nrepositories = [")
    result = run_cli("backup", config=path)
    assert result.returncode == 2
    line = one_line_error(result)
    assert str(path) in line and "not valid TOML" in line


def test_unknown_key_names_its_path(tmp_path: Path, repo: dict[str, str], files_instance: Path) -> None:
    files_instance.write_text(files_instance.read_text() + "colour = \"blue\"\n")
    result = run_cli("backup", config=files_instance)
    assert result.returncode == 2
    line = one_line_error(result)
    assert "instances.app.colour" in line and "unknown key" in line


def test_plain_password_in_config_is_refused(tmp_path: Path, repo: dict[str, str]) -> None:
    path = write_config(tmp_path, repo, FILES_ONLY.format(files=tmp_path))
    path.write_text(path.read_text().replace(f"file:{repo['password_file']}", "hunter2"))
    result = run_cli("backup", config=path)
    assert result.returncode == 2
    line = one_line_error(result)
    assert "repositories.main.password" in line and "hunter2" not in result.stderr + result.stdout


def test_missing_secret_file(files_instance: Path, repo: dict[str, str]) -> None:
    os.unlink(repo["password_file"])
    result = run_cli("backup", config=files_instance)
    assert result.returncode == 2
    assert "does not exist" in one_line_error(result)


def test_world_readable_secret_file(files_instance: Path, repo: dict[str, str]) -> None:
    os.chmod(repo["password_file"], 0o644)
    result = run_cli("backup", config=files_instance)
    assert result.returncode == 2
    line = one_line_error(result)
    assert "readable by others" in line and "chmod 600" in line


def test_wrong_repository_password_keeps_last_point(files_instance: Path, repo: dict[str, str],
                                                    tmp_path: Path) -> None:
    assert run_cli("backup", config=files_instance).returncode == 0
    good = repo["password"]
    private_file(Path(repo["password_file"]), "not-the-password")
    result = run_cli("backup", config=files_instance)
    assert result.returncode == 1
    assert "wrong password for repository main" in one_line_error(result)
    assert "not-the-password" not in result.stderr
    for argv in (("show", "latest"), ("export", "latest", str(tmp_path / "x.tar.zst"))):
        searched = run_cli(*argv, config=files_instance)  # a wrong password, not "no point 'latest' found"
        assert searched.returncode == 1 and "wrong password for repository main" in one_line_error(searched)
    private_file(Path(repo["password_file"]), good)
    restored = run_cli("restore", "app", "latest", "--files-to", str(tmp_path / "back"), config=files_instance)
    assert restored.returncode == 0, restored.stderr
    assert list((tmp_path / "back").rglob("a.txt"))


def test_a_damaged_manifest_cache_is_fetched_again(files_instance: Path, tmp_path: Path) -> None:
    assert run_cli("backup", config=files_instance).returncode == 0
    [cached] = (tmp_path / "state" / "manifests" / "main").glob("*.json")
    good = cached.read_bytes()
    cached.write_bytes(b"")  # as a full disk left it, before cache files were written aside and renamed
    listed = run_cli("list", "--json", config=files_instance)
    assert listed.returncode == 0, listed.stderr
    assert len(json.loads(listed.stdout)) == 1
    assert cached.read_bytes() == good and oct(cached.stat().st_mode & 0o777) == "0o600"
    assert not [p for p in cached.parent.iterdir() if p.name.startswith(".")]  # no partial files left


def test_unreadable_source_file_fails_the_run_naming_it(files_instance: Path, tmp_path: Path) -> None:
    # Root without CAP_DAC_OVERRIDE/CAP_DAC_READ_SEARCH reads like the NFS root_squash case: owner bits apply.
    assert run_cli("backup", config=files_instance).returncode == 0
    locked = tmp_path / "files" / "locked.txt"  # lower case: the path is compared in a lowered line
    locked.write_text("not for root\n")
    os.chown(locked, 65534, 65534)
    locked.chmod(0)
    argv = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", sys.executable, "-m", "safehold", "backup",
            "--config", str(files_instance)]
    result = subprocess.run(argv, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(SRC)},
                            timeout=600)
    assert result.returncode == 1
    line = one_line_error(result)
    assert f"1 file(s) could not be read: {locked} (permission denied)" in line.lower() and "exclude" in line
    assert "repository" not in line.split("—")[0]  # restic's "permission denied" is not the repository's
    listed = json.loads(run_cli("list", "app", "--json", config=files_instance).stdout)
    assert len(listed) == 1  # the incomplete snapshot never became a point


def test_repository_that_disappears_is_reported_not_silently_recreated(files_instance: Path,
                                                                      repo: dict[str, str]) -> None:
    assert run_cli("backup", config=files_instance).returncode == 0
    known = files_instance.parent / "state" / "repositories" / "main.url"
    assert known.is_file() and repo["url"] not in known.read_text()  # a hash: URLs may carry credentials
    shutil.rmtree(repo["url"])
    result = run_cli("backup", config=files_instance)
    assert result.returncode == 1
    assert "has disappeared: earlier runs used it" in one_line_error(result)
    again = run_cli("backup", config=files_instance)  # as the message says: a new, empty repository
    assert again.returncode == 0 and "is new: initialising it" in again.stderr


def test_copy_repository_that_disappears_is_reported_not_silently_recreated(tmp_path: Path,
                                                                           repo: dict[str, str]) -> None:
    # An unmounted backup disk leaves its empty mount point: copying every point there fills the wrong disk.
    files = tmp_path / "files"
    files.mkdir()
    (files / "a.txt").write_text("important\n")
    mount = tmp_path / "usb"
    config = write_config(tmp_path, repo, files_instances(files, (mount, repo["password_file"]), app=["main", "copy"]))
    assert run_cli("backup", config=config).returncode == 0
    for entry in mount.iterdir():
        shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    planned = run_cli("backup", "--dry-run", config=config)
    assert planned.returncode == 1 and "problem: repository copy (" in planned.stdout, planned.stdout
    assert "has disappeared: earlier runs used it" in planned.stdout
    result = run_cli("backup", "--json", config=config)
    assert result.returncode == 3, result.stderr
    assert "copy to copy failed: repository copy" in json.loads(result.stdout)[0]["error"]
    assert "has disappeared: earlier runs used it" in result.stderr and list(mount.iterdir()) == []
    again = run_cli("backup", config=config)  # as the message says: a new repository, and every point copied
    assert again.returncode == 0 and "is new: initialising it as a copy of main" in again.stderr, again.stderr


def test_latest_of_one_of_several_instances(tmp_path: Path, repo: dict[str, str]) -> None:
    # `latest` names one point per instance: with several it needs --instance, a run id needs none.
    files = tmp_path / "files"
    files.mkdir()
    (files / "a.txt").write_text("important\n")
    config = write_config(tmp_path, repo, files_instances(files, app=["main"], crm=["main"]))
    for instance in ("app", "app", "crm"):
        assert run_cli("backup", instance, config=config).returncode == 0
    runs = {(r["instance"], r["run_id"]) for r in json.loads(run_cli("list", "--json", config=config).stdout)}
    newest_app = max(run for instance, run in runs if instance == "app")
    refused = run_cli("show", "latest", config=config)
    assert refused.returncode == 2 and "(app, crm)" in one_line_error(refused)
    shown = json.loads(run_cli("show", "latest", "--instance", "app", "--json", config=config).stdout)
    assert shown["run_id"] == newest_app
    assert json.loads(run_cli("show", newest_app, "--json", config=config).stdout)["instance"] == "app"
    checked = json.loads(run_cli("verify", "latest", "--instance", "app", "--json", config=config).stdout)
    assert checked["points_checked"] == {"app@main": 1} and checked["ok"]
    assert run_cli("verify", "latest", config=config).returncode == 2


def test_read_back_catches_a_part_missing_after_upload(files_instance: Path, repo: dict[str, str]) -> None:
    from safehold import config as config_module
    from safehold.actions.backup import backup_instance
    from safehold.actions.common import open_repository
    from safehold.actions.replicate import read_back
    from safehold.errors import RepositoryError
    from safehold.output import Silent

    config = config_module.load(files_instance)
    run_id = str(backup_instance(config, "app", Silent())["run_id"])
    store = open_repository(config, "main")
    part = next(s for s in store.snapshots(["instance=app"]) if "part=files" in s["tags"])
    store.forget([part["id"]])
    with pytest.raises(RepositoryError, match=f"point {run_id} in main: part snapshot {part['id'][:8]} is missing"):
        read_back(config, store, "app", [run_id])


def test_repository_not_writable(tmp_path: Path, repo: dict[str, str], mount_point) -> None:
    readonly = mount_point("ro", "ro,size=1m")
    path = write_config(tmp_path, {**repo, "url": str(readonly / "repo")}, FILES_ONLY.format(files=tmp_path / "f"))
    (tmp_path / "f").mkdir()
    result = run_cli("backup", config=path)
    assert result.returncode == 1
    assert "read-only file system" in one_line_error(result)


def test_repository_on_a_read_only_mount_refuses_writes_at_once_and_still_restores(
        tmp_path: Path, repo: dict[str, str], mount_point) -> None:
    # restic writes a lock file even to read, and 0.14 retries it for ~45 s before it gives up; a backup disk
    # mounted read-only for a recovery must still list, verify and restore (restic --no-lock) and refuse writes
    # at once, as a read-only disk, not as a lock held by another run.
    disk = mount_point("disk", "size=8m")
    (tmp_path / "f").mkdir()
    (tmp_path / "f" / "a.txt").write_text("kept\n")
    path = write_config(tmp_path, {**repo, "url": str(disk / "repo")}, FILES_ONLY.format(files=tmp_path / "f"))
    assert run_cli("backup", config=path).returncode == 0
    subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True, capture_output=True)
    started = time.monotonic()
    refused = run_cli("backup", config=path)
    assert refused.returncode == 1, refused.stderr
    said = one_line_error(refused)
    assert "repository main is on a read-only file system" in said and "remount it read-write" in said, said
    assert "locked" not in said and time.monotonic() - started < 30
    listed = run_cli("list", "--json", config=path)
    assert listed.returncode == 0 and len(json.loads(listed.stdout)) == 1, listed.stderr
    verified = run_cli("verify", config=path)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    restored = run_cli("restore", "app", "latest", "--files-to", str(tmp_path / "back"), config=path)
    assert restored.returncode == 0, restored.stderr
    assert (tmp_path / "back" / str(tmp_path / "f" / "a.txt").lstrip("/")).read_text() == "kept\n"


def test_repository_with_a_lost_pack_is_damaged_not_missing(files_instance: Path, repo: dict[str, str]) -> None:
    (files_instance.parent / "files" / "big.bin").write_bytes(os.urandom(1 << 20))
    assert run_cli("backup", config=files_instance).returncode == 0
    known = files_instance.parent / "state" / "repositories" / "main.url"
    packs = [p for p in (Path(repo["url"]) / "data").rglob("*") if p.is_file()]
    # The pack of big.bin's data (a lost tree pack makes restic retry every tree for minutes).
    max(packs, key=lambda p: p.stat().st_size).unlink()
    # Only plain verify here: `--read-data` makes restic retry the lost pack for ~45 s, and its wording is
    # covered by tests/unit/test_restic_errors.py (captured from such a run) and tests/integration/test_repair.py.
    for args in (("verify",),):
        result = run_cli(*args, config=files_instance)
        assert result.returncode == 1, result.stderr
        said = result.stdout + result.stderr
        assert "problem: repository main is damaged: data its snapshots need is missing" in result.stdout, said
        assert "run `safehold verify --repair`" in said and "another repository" in said
        assert "does not exist" not in said and "disappeared" not in said
        assert known.is_file()  # still the repository earlier runs used: no new one is created over it


def test_folder_holding_other_files_is_not_made_a_repository(tmp_path: Path, repo: dict[str, str]) -> None:
    (tmp_path / "f").mkdir()
    share = tmp_path / "share"
    share.mkdir()
    (share / "doc.txt").write_text("someone's document\n")
    path = write_config(tmp_path, {**repo, "url": str(share)}, FILES_ONLY.format(files=tmp_path / "f"))
    result = run_cli("backup", config=path)
    assert result.returncode == 1
    line = one_line_error(result)
    assert f"{share} is not a restic repository but is not empty" in line and "doc.txt" in line
    assert "new or empty folder" in line
    assert [p.name for p in share.iterdir()] == ["doc.txt"]
    from safehold.errors import RepositoryError
    from safehold.output import Silent
    from safehold.repository.restic import Repository
    from safehold.secrets import Secret

    copy = Repository("copy", str(share), Secret(repo["password"]))  # a second repository, filled by copies
    with pytest.raises(RepositoryError, match="is not a restic repository but is not empty"):
        copy.ensure_copy_of(copy, Silent())
    assert [p.name for p in share.iterdir()] == ["doc.txt"]
    (share / "doc.txt").unlink()  # an empty folder (or a missing one) becomes the repository
    result = run_cli("backup", config=path)
    assert result.returncode == 0 and "is new: initialising it" in result.stderr, result.stderr
    assert (share / "config").is_file()


def test_disk_full_during_backup_keeps_last_point(tmp_path: Path, repo: dict[str, str], mount_point) -> None:
    small = mount_point("small", "size=4m")
    files = tmp_path / "files"
    files.mkdir()
    (files / "a.txt").write_text("first version\n")
    path = write_config(tmp_path, {**repo, "url": str(small / "repo")}, FILES_ONLY.format(files=files))
    assert run_cli("backup", config=path).returncode == 0
    (files / "big.bin").write_bytes(os.urandom(8_000_000))
    result = run_cli("backup", config=path)
    assert result.returncode == 1
    assert "disk full" in one_line_error(result)
    (files / "big.bin").unlink()
    listed = json.loads(run_cli("list", "--json", config=path).stdout)
    assert len(listed) == 1
    restored = run_cli("restore", "app", "latest", "--files-to", str(tmp_path / "back"), config=path)
    assert restored.returncode == 0, restored.stderr
    assert (tmp_path / "back" / str(files / "a.txt").lstrip("/")).read_text() == "first version\n"


def test_full_state_directory_is_named_as_a_full_disk(tmp_path: Path, repo: dict[str, str], mount_point) -> None:
    state = mount_point("state", "size=2m")
    files = tmp_path / "files"
    files.mkdir()
    (files / "a.txt").write_text("first version\n")
    path = write_config(tmp_path, repo, FILES_ONLY.format(files=files))
    path.write_text(path.read_text().replace(f'state_dir = "{tmp_path / "state"}"', f'state_dir = "{state}/s"'))
    assert run_cli("backup", config=path).returncode == 0
    with contextlib.suppress(OSError), (state / "filler").open("wb") as filler:
        while True:
            filler.write(b"\0" * 65536)
    (files / "a.txt").write_text("second version\n")
    result = run_cli("backup", config=path)
    assert result.returncode == 1
    said = one_line_error(result)
    assert f"the disk holding the state directory {state}/s is full" in said and "free space there" in said, said
    (state / "filler").unlink()
    listed = json.loads(run_cli("list", "--json", config=path).stdout)
    assert len(listed) == 1  # the point made before is intact, and runs work again once there is room
    assert run_cli("backup", config=path).returncode == 0


@pytest.fixture
def db_user(new_db):
    db = new_db("t_core")
    fill_mariadb(db)
    user, password = f"t_core_{secrets.token_hex(3)}", "Pw-" + secrets.token_urlsafe(18)
    sql([f"CREATE USER '{user}'@'%' IDENTIFIED BY '{password}'",
         f"GRANT ALL ON `{db}`.* TO '{user}'@'%'", f"GRANT ALL ON `{db}_r`.* TO '{user}'@'%'",
         f"GRANT SELECT ON mysql.proc TO '{user}'@'%'",
         f"GRANT RELOAD, PROCESS, SET USER ON *.* TO '{user}'@'%'"])
    yield {"db": db, "user": user, "password": password}
    sql(f"DROP USER IF EXISTS '{user}'@'%'")


def db_config(tmp_path: Path, repo: dict[str, str], db: dict[str, str], port: int = 3306) -> Path:
    secret = private_file(tmp_path / "secrets" / "db.pass", db["password"])
    return database_config(tmp_path, repo, "app", "mariadb", db["user"], db["db"],
                           f'port = {port}\npassword = "file:{secret}"\n')


def test_files_restore_into_a_full_or_read_only_folder_says_so(files_instance: Path, tmp_path: Path,
                                                               mount_point) -> None:
    (tmp_path / "files" / "big.bin").write_bytes(os.urandom(3 << 20))
    assert run_cli("backup", config=files_instance).returncode == 0
    full = run_cli("restore", "app", "latest", "--files-to", str(mount_point("full", "size=1m") / "out"),
                   config=files_instance)
    assert full.returncode == 1
    line = one_line_error(full)
    assert "cannot write the restored files into" in line and "no space left on device" in line
    assert "repository" not in line.split("—")[0]  # the repository is fine; the target is full
    readonly = run_cli("restore", "app", "latest", "--files-to", str(mount_point("ro", "ro,size=1m") / "out"),
                       config=files_instance)
    assert readonly.returncode == 1
    assert "cannot create the restore folder" in one_line_error(readonly) and "read-only" in readonly.stderr
    again = run_cli("restore", "app", "latest", "--files-to", str(tmp_path / "back"), config=files_instance)
    restored = tmp_path / "back" / str(tmp_path / "files" / "big.bin").lstrip("/")
    assert again.returncode == 0 and restored.stat().st_size == 3 << 20


def test_wrong_database_password_is_not_shown(tmp_path: Path, repo: dict[str, str], db_user) -> None:
    path = db_config(tmp_path, repo, {**db_user, "password": "Wrong-" + db_user["password"]})
    result = run_cli("backup", config=path)
    assert result.returncode == 1
    line = one_line_error(result)
    assert "access denied" in line
    assert db_user["password"] not in result.stderr + result.stdout


def test_missing_privilege_is_not_called_a_failed_login(tmp_path: Path, repo: dict[str, str], db_user) -> None:
    sql([f"REVOKE ALL ON `{db_user['db']}`.* FROM '{db_user['user']}'@'%'",
         f"GRANT SELECT, SHOW VIEW, TRIGGER, LOCK TABLES ON `{db_user['db']}`.* TO '{db_user['user']}'@'%'"])
    # Without EVENT, mariadb-dump's `show events` gets "Access denied for user … to database" (1044).
    result = run_cli("backup", config=db_config(tmp_path, repo, db_user))
    assert result.returncode == 1
    line = one_line_error(result)
    assert "lacks a privilege" in line and "EVENT" in line and "cannot log in" not in line


def test_database_unreachable(tmp_path: Path, repo: dict[str, str], db_user) -> None:
    path = db_config(tmp_path, repo, db_user, port=1)
    result = run_cli("backup", config=path)
    assert result.returncode == 1
    assert "unreachable" in one_line_error(result)


def test_database_name_that_looks_like_markup(tmp_path: Path, repo: dict[str, str],
                                             mariadb: dict[str, object]) -> None:
    # rich read `[/a]` as a closing tag: the backup, then every `history`, crashed with a traceback.
    path = database_config(tmp_path, repo, "app", "mariadb", "root", "audit_[/a]")
    result = run_cli("backup", config=path)
    assert result.returncode == 1
    assert "database 'audit_[/a]' does not exist" in one_line_error(result)
    history = run_cli("history", config=path)
    assert history.returncode == 0 and "database 'audit_[/a]' does not exist" in history.stdout, history.stderr


def snapshot_cmdlines(stop: list[bool], seen: set[str]) -> None:
    while not stop:
        for pid in os.listdir("/proc"):
            if pid.isdigit():
                with contextlib.suppress(OSError):
                    seen.add(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
        time.sleep(0.005)


def test_no_secret_in_argv_logs_or_manifest(tmp_path: Path, repo: dict[str, str], db_user) -> None:
    import threading

    path = db_config(tmp_path, repo, db_user)
    seen: set[str] = set()
    stop: list[bool] = []
    watcher = threading.Thread(target=snapshot_cmdlines, args=(stop, seen))
    watcher.start()
    try:
        result = run_cli("backup", "--json", config=path)
        restore = run_cli("restore", "app", "latest", "--to-db", db_user["db"] + "_r", config=path)
    finally:
        stop.append(True)
        watcher.join()
        sql(f"DROP DATABASE IF EXISTS `{db_user['db']}_r`")
    assert result.returncode == 0, result.stdout + result.stderr
    assert restore.returncode == 0, restore.stdout + restore.stderr
    assert any("restic" in c for c in seen) and any("mariadb" in c for c in seen)
    secrets_ = [db_user["password"], repo["password"]]
    for secret in secrets_:
        assert not [c for c in seen if secret in c]
        assert secret not in result.stdout + result.stderr + restore.stdout + restore.stderr
    manifest = run_cli("show", "latest", "--json", config=path).stdout
    assert json.loads(manifest)["databases"]
    for secret in secrets_:
        assert secret not in manifest
        for file in (tmp_path / "state").rglob("*"):
            if file.is_file():
                assert secret.encode() not in file.read_bytes()


def test_killed_run_leaves_last_point_and_next_run_works(tmp_path: Path, repo: dict[str, str], db_user) -> None:
    path = db_config(tmp_path, repo, db_user)
    assert run_cli("backup", config=path).returncode == 0
    before = mariadb_dump(db_user["db"])
    sql(["INSERT INTO replies(ticket_id, body) SELECT t.id, REPEAT(SHA2(RAND(), 512), 20) FROM tickets t"
         " JOIN replies r LIMIT 30000"], db_user["db"])
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    child = subprocess.Popen([sys.executable, "-m", "safehold", "backup", "--config", str(path)], env=env,
                             stderr=subprocess.PIPE, text=True, start_new_session=True)
    assert child.stderr is not None
    for line in child.stderr:
        if "dumping" in line:
            break
    time.sleep(0.3)
    os.killpg(child.pid, signal.SIGKILL)  # safehold and its restic child, as a crash or OOM kill would
    child.wait()
    listed = json.loads(run_cli("list", "--json", config=path).stdout)
    assert len(listed) == 1  # the killed run never became a point
    again = run_cli("backup", config=path)
    assert again.returncode == 0, again.stderr
    pruned = run_cli("prune", config=path)  # needs restic's exclusive lock: stale ones must be cleared
    assert pruned.returncode == 0, pruned.stderr
    restored = run_cli("restore", "app", listed[0]["run_id"], "--to-db", db_user["db"] + "_r", config=path)
    try:
        assert restored.returncode == 0, restored.stderr
        assert mariadb_dump(db_user["db"] + "_r").replace(
            (db_user["db"] + "_r").encode(), db_user["db"].encode()) == before
    finally:
        sql(f"DROP DATABASE IF EXISTS `{db_user['db']}_r`")


def test_a_full_temp_folder_is_named_on_backup_and_restore(tmp_path: Path, repo: dict[str, str], mount_point,
                                                           new_db) -> None:
    db = new_db("t_tmpfull")
    sql(["CREATE TABLE scans (id INT PRIMARY KEY, note VARCHAR(20), body LONGBLOB)",
         *[f"INSERT INTO scans VALUES ({i}, 'scan {i}', 0x{os.urandom(2 << 20).hex()})" for i in range(3)]], db)
    path = database_config(tmp_path, repo, "app", "mariadb", "root", db)
    new_db.created.append(f"{db}_r")
    small = mount_point("small", "size=1m")
    for command in (("backup", "app"), ("restore", "app", "latest", "--to-db", f"{db}_r")):
        result = run_cli(*command, config=path, env={"TMPDIR": str(small)})
        assert result.returncode == 1, result.stderr
        assert f"no space left in {small}" in one_line_error(result)
        assert "Errno" not in result.stderr
        assert run_cli("backup", "app", config=path).returncode == 0  # with room: the point the restore reads
    assert list(small.iterdir()) == []
    restored = run_cli("restore", "app", "latest", "--to-db", f"{db}_r", "--force", config=path)
    assert restored.returncode == 0, restored.stderr
