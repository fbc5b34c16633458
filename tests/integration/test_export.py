"""`safehold export` and `restore --from-file`: a > 8 GiB file round-trips, age encryption, restore by hand
with age/zstd/tar, and damaged, truncated, wrongly keyed or hostile files write nothing."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest
import zstandard

from tests.conftest import private_file, run_cli, sql
from tests.integration.offhost_servers import make_tree, password_file, read_tree, write_config

# The issue asks for a file past 8 GiB (iTop's zip backups break past 68 GB). The default run does the
# full size (~2.5 min, restic reads the sparse 8 GiB twice); SAFEHOLD_TEST_BIG_EXPORT=0 uses 256 MiB
# for a quick local run.
FULL_SIZE = os.environ.get("SAFEHOLD_TEST_BIG_EXPORT", "1") != "0"
BIG = ((8 << 30) if FULL_SIZE else (256 << 20)) + 4096
TAIL = b"tail-of-the-big-file"


def _instance(tmp_path: Path, new_db: Callable[[str], str], big: bool = False,
              extra: str = "") -> tuple[Path, Path, str]:
    """A point of an app with a database and files (and optionally the big sparse file)."""
    app = tmp_path / "app"
    make_tree(app)
    if big:
        with open(app / "big.sparse", "wb") as fh:
            fh.truncate(BIG)
            fh.seek(BIG - len(TAIL))
            fh.write(TAIL)
    db = new_db("t_offhost")
    sql(["CREATE TABLE tickets (id INT PRIMARY KEY, subject VARCHAR(100))",
         "INSERT INTO tickets VALUES (1, 'printer'), (2, 'vpn'), (3, 'mail')"], db)
    password = password_file(tmp_path)
    config = write_config(tmp_path / "safehold.toml",
                          {"local": {"url": str(tmp_path / "repo"), "password": f"file:{password}"}},
                          {"app": {"repositories": ["local"], "files": [str(app)],
                                   "databases": [{"engine": "mariadb", "user": "root", "names": [db]}]}}, extra)
    backup = run_cli("backup", "app", config=config)
    assert backup.returncode == 0, backup.stderr
    return config, app, db


def _assert_nothing_written(result: subprocess.CompletedProcess[str], expected: str, target: Path,
                            db: str) -> None:
    assert result.returncode == 1, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and expected in errors[0], result.stderr
    assert not target.exists()
    assert not list(target.parent.glob(".safehold-staging-*"))
    assert not sql(f"SHOW DATABASES LIKE '{db}'")


def test_big_export_round_trips(tmp_path: Path, new_db: Callable[[str], str]) -> None:
    config, app, db = _instance(tmp_path, new_db, big=True)
    export = tmp_path / "point.tar.zst"
    made = run_cli("export", "latest", str(export), "--json", config=config)
    assert made.returncode == 0, made.stderr
    assert json.loads(made.stdout)["payload_bytes"] > BIG
    assert export.stat().st_size < 64 << 20 and export.stat().st_mode & 0o777 == 0o600
    target = tmp_path / "restored"
    copy = f"{db}_copy"
    new_db.created.append(copy)  # type: ignore[attr-defined]
    restored = run_cli("restore", "app", "--from-file", str(export), "--to-db", copy, "--files-to", str(target),
                       "--json", config=config)
    assert restored.returncode == 0, restored.stderr
    assert json.loads(restored.stdout)["ok"]
    assert sql("SELECT id, subject FROM tickets ORDER BY id", copy) == [(1, "printer"), (2, "vpn"), (3, "mail")]
    big = target / str(app).lstrip("/") / "big.sparse"
    assert big.stat().st_size == BIG
    assert big.stat().st_blocks * 512 < 64 << 20, "the restored file should stay sparse"
    with open(big, "rb") as fh:
        fh.seek(BIG - len(TAIL))
        assert fh.read() == TAIL
    for rel in ("index.php", "uploads/a.txt", "uploads/deep/b.bin", "config.php"):
        assert (target / str(app).lstrip("/") / rel).read_bytes() == (app / rel).read_bytes()


def test_age_export_restores_and_by_hand(tmp_path: Path, new_db: Callable[[str], str]) -> None:
    import pyrage

    identity = pyrage.x25519.Identity.generate()
    key_file = private_file(tmp_path / "secrets" / "age.key", f"{identity}\n")
    wrong_file = private_file(tmp_path / "secrets" / "wrong.key", f"{pyrage.x25519.Identity.generate()}\n")
    extra = f'\n[export]\nrecipients = ["{identity.to_public()}"]\nidentity = "file:{key_file}"\n'
    config, app, db = _instance(tmp_path, new_db, extra=extra)
    export = tmp_path / "point.tar.zst.age"
    made = run_cli("export", "latest", str(export), config=config)
    assert made.returncode == 0, made.stderr
    assert export.read_bytes().startswith(b"age-encryption.org/v1")

    # By hand, as docs/export.md says: age -d | zstd -d | tar x, then sha256sum -c.
    by_hand = tmp_path / "by-hand"
    by_hand.mkdir()
    subprocess.run(f"age -d -i {key_file} {export} | zstd -d | tar x", shell=True, check=True, cwd=by_hand)
    root = by_hand / "safehold-export"
    subprocess.run(["sha256sum", "--quiet", "-c", "SHA256SUMS"], check=True, cwd=root)
    (dump,) = (root / "safehold" / "db").glob("*.tar")
    # The parallel dump comes with a script that loads it with bash, tar, zstd, paste and the client.
    by_hand_db = f"{db}_hand"
    new_db.created.append(by_hand_db)  # type: ignore[attr-defined]
    subprocess.run(f"tar -xOf {dump} restore.sh > restore.sh && bash restore.sh {dump} {by_hand_db} -h127.0.0.1 -uroot",
                   shell=True, check=True, capture_output=True, cwd=tmp_path)
    assert sql("SELECT id, subject FROM tickets ORDER BY id", by_hand_db) == [(1, "printer"), (2, "vpn"), (3, "mail")]
    assert (root / "files" / str(app).lstrip("/") / "index.php").read_bytes() == (app / "index.php").read_bytes()
    assert json.loads((root / "safehold" / "manifest.json").read_text())["instance"] == "app"

    # A wrong age key: one clear line, nothing written.
    wrong = config.read_text().replace(str(key_file), str(wrong_file))
    wrong_config = tmp_path / "wrong.toml"
    wrong_config.write_text(wrong)
    target = tmp_path / "restored"
    copy = f"{db}_age"
    refused = run_cli("restore", "app", "--from-file", str(export), "--to-db", copy, "--files-to", str(target),
                      config=wrong_config)
    _assert_nothing_written(refused, "cannot be decrypted", target, copy)

    new_db.created.append(copy)  # type: ignore[attr-defined]
    restored = run_cli("restore", "app", "--from-file", str(export), "--to-db", copy, "--files-to", str(target),
                       config=config)
    assert restored.returncode == 0, restored.stderr
    assert sql("SELECT COUNT(*) FROM tickets", copy) == [(3,)]


def _damage(export: Path, out: Path, how: str) -> Path:
    data = bytearray(export.read_bytes())
    assert len(data) > 4096, "damage must land inside the compressed data"
    if how == "truncated":
        data = data[: len(data) // 2]
    else:
        data[len(data) // 2] ^= 0x10
    out.write_bytes(bytes(data))
    return out


def test_damaged_export_writes_nothing(tmp_path: Path, new_db: Callable[[str], str]) -> None:
    config, app, db = _instance(tmp_path, new_db)
    export = tmp_path / "point.tar.zst"
    assert run_cli("export", "latest", str(export), config=config).returncode == 0
    target = tmp_path / "restored"
    for how in ("truncated", "bit-flipped"):
        damaged = _damage(export, tmp_path / f"{how}.tar.zst", how)
        result = run_cli("restore", "app", "--from-file", str(damaged), "--to-db", f"{db}_x", "--files-to",
                         str(target), config=config)
        _assert_nothing_written(result, "nothing was restored", target, f"{db}_x")
    # Each is a failed restore in the history, with the file it was asked to read.
    runs = json.loads(run_cli("history", "app", "--kind", "restore", "--json", config=config).stdout)
    assert [(r["result"], r["details"]["file"]) for r in runs] == [
        ("failed", str(tmp_path / f"{how}.tar.zst")) for how in ("bit-flipped", "truncated")]
    assert "is damaged or truncated" in runs[0]["error"]


@pytest.mark.parametrize("encryption", ["none", "recipients", "passphrase"])
def test_export_onto_a_full_disk_says_so_and_leaves_nothing(tmp_path: Path, new_db: Callable[[str], str],
                                                             mount_point: Callable[[str, str], Path],
                                                             encryption: str) -> None:
    import pyrage

    extra, name = "", "point.tar.zst"
    if encryption == "recipients":  # the age encryptor runs in its own thread and meets the full disk there
        extra, name = f'\n[export]\nrecipients = ["{pyrage.x25519.Identity.generate().to_public()}"]\n', name + ".age"
    elif encryption == "passphrase":
        phrase = private_file(tmp_path / "secrets" / "phrase", "correct horse battery staple\n")
        extra, name = f'\n[export]\npassphrase = "file:{phrase}"\n', name + ".age"
    config, app, _ = _instance(tmp_path, new_db, extra=extra)
    (app / "scan.pdf").write_bytes(os.urandom(3 << 20))  # past every write buffer: the disk fills mid-stream
    assert run_cli("backup", "app", config=config).returncode == 0
    small = mount_point("small", "size=1m")
    result = run_cli("export", "latest", str(small / name), config=config)
    assert result.returncode == 1
    errors = [x for x in result.stderr.splitlines() if x.startswith("error:")]
    assert len(errors) == 1 and f"cannot write {small / name}: no space left on device" in errors[0], result.stderr
    assert "Traceback" not in result.stderr
    assert list(small.iterdir()) == []  # no partial file
    assert run_cli("export", "latest", str(tmp_path / name), config=config).returncode == 0


def test_a_full_disk_while_unpacking_is_not_called_a_damaged_export(tmp_path: Path, new_db: Callable[[str], str],
                                                                    mount_point: Callable[[str, str], Path]) -> None:
    config, app, db = _instance(tmp_path, new_db)
    (app / "scan.pdf").write_bytes(os.urandom(3 << 20))
    assert run_cli("backup", "app", config=config).returncode == 0
    export = tmp_path / "point.tar.zst"
    assert run_cli("export", "latest", str(export), config=config).returncode == 0
    small = mount_point("small", "size=1m")  # the export is unpacked beside the --files-to folder
    result = run_cli("restore", "app", "--from-file", str(export), "--to-db", f"{db}_x", "--files-to",
                     str(small / "out"), config=config)
    _assert_nothing_written(result, f"cannot unpack {export} into {small}: no space left on device", small / "out",
                            f"{db}_x")
    assert "damaged" not in result.stderr and "intact copy" not in result.stderr


def _hostile_export(path: Path, members: list[tuple[tarfile.TarInfo, bytes]]) -> Path:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for info, data in members:
            info.size = len(data) if info.isfile() else 0
            tar.addfile(info, io.BytesIO(data) if info.isfile() else None)
    path.write_bytes(zstandard.ZstdCompressor().compress(raw.getvalue()))
    return path


def _member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, link, 0o644
    return info


@pytest.mark.parametrize("case", ["dotdot", "absolute", "symlink-escape", "write-through-symlink"])
def test_hostile_export_is_refused(tmp_path: Path, case: str) -> None:
    app = tmp_path / "app"
    make_tree(app)
    config = write_config(tmp_path / "safehold.toml",
                          {"local": {"url": str(tmp_path / "repo"), "password": f"file:{password_file(tmp_path)}"}},
                          {"app": {"repositories": ["local"], "files": [str(app)]}})
    victim = tmp_path / "victim"
    members = {
        "dotdot": [(_member("safehold-export/../../victim/evil"), b"x")],
        "absolute": [(_member(f"{victim}/evil"), b"x")],
        "symlink-escape": [(_member("safehold-export/files/link", tarfile.SYMTYPE, "../../../victim"), b"")],
        "write-through-symlink": [(_member("safehold-export/files/etc", tarfile.SYMTYPE, str(victim)), b""),
                                  (_member("safehold-export/files/etc/evil"), b"x")],
    }[case]
    hostile = _hostile_export(tmp_path / "hostile.tar.zst", members)
    target = tmp_path / "restored"
    result = run_cli("restore", "app", "--from-file", str(hostile), "--files-to", str(target), config=config)
    _assert_nothing_written(result, "export refused", target, "t_offhost_never_created")
    assert not victim.exists()


def test_an_export_leading_through_a_symlink_to_the_host_files_is_refused(tmp_path: Path) -> None:
    # Checksums prove a file intact, not honest: a tampered export carries its own. Here the tree's first
    # folder is an (absolute) symlink to the host's, so the tree under it would be the live one.
    app = tmp_path / "app"
    live = make_tree(app)
    config = write_config(tmp_path / "safehold.toml",
                          {"local": {"url": str(tmp_path / "repo"), "password": f"file:{password_file(tmp_path)}"}},
                          {"app": {"repositories": ["local"], "files": [str(app)]}})
    assert run_cli("backup", "app", config=config).returncode == 0
    export = tmp_path / "point.tar.zst"
    assert run_cli("export", "latest", str(export), config=config).returncode == 0
    first = app.parts[1]
    members, sums = [], []
    with tarfile.open(fileobj=zstandard.ZstdDecompressor().stream_reader(export.open("rb")), mode="r|") as tar:
        for info in tar:
            if info.name.startswith("safehold-export/files/") or info.name.endswith("/SHA256SUMS"):
                continue
            data = tar.extractfile(info).read() if info.isfile() else b""  # type: ignore[union-attr]
            if info.isfile():
                sums.append(f"{hashlib.sha256(data).hexdigest()}  {info.name.removeprefix('safehold-export/')}\n")
            members.append((info, data))
    members.append((_member(f"safehold-export/files/{first}", tarfile.SYMTYPE, f"/{first}"), b""))
    members.append((_member("safehold-export/SHA256SUMS"), "".join(sums).encode()))
    hostile = _hostile_export(tmp_path / "hostile.tar.zst", members)
    target = tmp_path / "restored"
    result = run_cli("restore", "app", "--from-file", str(hostile), "--files-to", str(target), config=config)
    _assert_nothing_written(result, "export refused", target, "t_offhost_never_created")
    assert read_tree(app) == live


def test_passphrase_export_is_standard_age(tmp_path: Path, new_db: Callable[[str], str]) -> None:
    import pyrage

    phrase = private_file(tmp_path / "secrets" / "export.pass", "a long export passphrase")
    config, app, db = _instance(tmp_path, new_db, extra=f'\n[export]\npassphrase = "file:{phrase}"\n')
    export = tmp_path / "point.tar.zst.age"
    made = run_cli("export", "latest", str(export), config=config)
    assert made.returncode == 0, made.stderr
    # Any age implementation opens it with the passphrase (here: pyrage, in memory, the file is small).
    plain = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(
        pyrage.passphrase.decrypt(export.read_bytes(), "a long export passphrase"))).read()
    with tarfile.open(fileobj=io.BytesIO(plain)) as tar:
        assert "safehold-export/SHA256SUMS" in tar.getnames()
    target = tmp_path / "restored"
    copy = f"{db}_pp"
    phrase.write_text("not the passphrase")
    refused = run_cli("restore", "app", "--from-file", str(export), "--to-db", copy, "--files-to", str(target),
                      config=config)
    _assert_nothing_written(refused, "wrong passphrase", target, copy)
    phrase.write_text("a long export passphrase")
    new_db.created.append(copy)  # type: ignore[attr-defined]
    restored = run_cli("restore", "app", "--from-file", str(export), "--to-db", copy, "--files-to", str(target),
                       config=config)
    assert restored.returncode == 0, restored.stderr
    assert (target / str(app).lstrip("/") / "config.php").read_bytes() == (app / "config.php").read_bytes()


def test_an_export_of_another_instance_is_refused_unless_forced(tmp_path: Path, new_db: Callable[[str], str]) -> None:
    config, app, db = _instance(tmp_path, new_db, extra="""
[instances.staging]
repositories = ["local"]
files = ["/nonexistent/staging"]
databases = [{ engine = "mariadb", user = "root", names = ["t_offhost_staging"] }]
""")
    export = tmp_path / "point.tar.zst"
    assert run_cli("export", "latest", str(export), "--instance", "app", config=config).returncode == 0
    target = tmp_path / "restored"
    args = ("restore", "staging", "--from-file", str(export), "--to-db", f"{db}_s", "--files-to", str(target))
    for dry in ((), ("--dry-run",)):
        refused = run_cli(*args, *dry, config=config)
        _assert_nothing_written(refused, "was made of instance 'app', not 'staging'", target, f"{db}_s")
        assert "add --force" in refused.stderr
    forced = run_cli(*args, "--force", config=config)
    assert forced.returncode == 0, forced.stderr
    assert sql(f"SELECT COUNT(*) FROM `{db}_s`.tickets")[0][0] == 3
