"""Drill pieces without services: scratch names, named table problems, sampled file hashes."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from safehold.actions.drill import Outcome, Scratch, is_scratch, scratch_stem
from safehold.actions.report import age
from safehold.actions.restore import table_problem
from safehold.files import follow_links, restic_time_ns, sample_hashes, stored_trees, tree_stats
from safehold.models import TableReport
from safehold.output import Silent
from safehold.repository.manifest import TableEntry, new_run_id
from tests.conftest import SRC


def test_scratch_names_fit_mariadb_and_are_recognised_only_for_their_instance() -> None:
    run = new_run_id()
    for instance in ("itflow", "a.b-c", "x" * 63):
        stem = scratch_stem(instance, run)
        assert len(stem) + len("_99") <= 64 and stem.startswith("safehold_drill_")
        assert is_scratch(instance, stem) and is_scratch(instance, f"{stem}_1")
    stem = scratch_stem("shop", run)
    assert not is_scratch("shop_eu", stem) and not is_scratch("sho", stem)
    assert not is_scratch("shop", scratch_stem("shop_eu", run))
    assert not is_scratch("shop", "shop") and not is_scratch("shop", "safehold_drill_shop_live")
    # Names that read alike once sanitised or cut short still get scratch spaces of their own.
    for one, other in (("shop-db", "shop_db"), ("itflow_customer_alpha", "itflow_customer_alpha2")):
        assert not is_scratch(one, scratch_stem(other, run)) and not is_scratch(other, scratch_stem(one, run))
    # A private server's folder is the stem and the engine; another prefix is another drill's space.
    assert is_scratch("shop", f"{stem}_mariadb") and is_scratch("shop", f"{stem}_postgres")
    assert not is_scratch("shop", f"{stem}_mariadb/x") and not is_scratch("shop", f"{stem}_MariaDB")
    mine = scratch_stem("shop", run, "qa_drill_")
    assert mine.startswith("qa_drill_shop_") and is_scratch("shop", mine, "qa_drill_")
    assert not is_scratch("shop", mine) and not is_scratch("shop", stem, "qa_drill_")


def test_longest_configurable_prefix_still_fits_mariadb_names() -> None:
    from safehold.config import Settings

    longest = "a" * 15 + "_"
    stem = scratch_stem("x" * 63, new_run_id(), Settings(drill_prefix=longest).drill_prefix)
    assert len(stem) + len("_99") <= 64
    for bad in ("safehold_drill", "Drill_", "a" * 16 + "_", "x`; DROP_", "_"):
        with pytest.raises(ValueError, match="drill_prefix"):
            Settings(drill_prefix=bad)


def test_rto_only_when_every_part_was_restored() -> None:
    outcome = Outcome()
    outcome.add_phase("fetch", 1.25)
    outcome.add_phase("files", 2.0)
    assert outcome.rto() == (None, "no RTO: the drill stopped before every part was restored")
    outcome.finished = True
    assert outcome.rto() == (3.25, None)
    outcome.unrestored += ["database shop", "escrowed keys"]
    assert outcome.rto() == (None, "no RTO: database shop, escrowed keys not restored")


def test_private_server_folder_is_one_its_account_can_enter_with_room_for_the_socket(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from safehold.engines import scratch

    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    nobody = scratch.Account("nobody", 65534, 65534)
    monkeypatch.setattr(tempfile, "tempdir", str(private))
    assert scratch.roots()[0] == private
    # As root the server runs as its own account, which cannot enter a 0700 folder of root's: /tmp instead.
    owner = nobody if os.geteuid() == 0 else None
    name = f"safehold_drill_unit_{os.getpid()}_mariadb"
    folder = scratch.make_folder(name, owner, "mysqld.sock")
    try:
        assert folder.parent == (Path("/tmp") if owner else private) and folder.stat().st_mode & 0o777 == 0o700
    finally:
        folder.rmdir()
    assert scratch._reachable(private, None) and not scratch._reachable(private, nobody)
    # A socket address holds 107 bytes: a deep $TMPDIR sends the server to a short root.
    deep = tmp_path / ("d" * 100)
    deep.mkdir()
    deep.chmod(0o755)
    monkeypatch.setattr(tempfile, "tempdir", str(deep))
    folder = scratch.make_folder(name, None, "mysqld.sock")
    try:
        assert folder.parent == Path("/tmp") and len(str(folder / "mysqld.sock")) < scratch.SOCKET_ROOM
    finally:
        folder.rmdir()


def test_table_problems_are_named() -> None:
    entry = TableEntry(rows=10, checksum="aa")
    assert table_problem("d", "t", entry, TableReport(rows=10, checksum="aa")) is None
    assert table_problem("d", "t", entry, TableReport(rows=10)) is None  # no checksum on one side: rows only
    assert table_problem("d", "t", entry, TableReport(rows=9)) == "table d.t: 10 rows expected, 9 restored"
    assert table_problem("d", "t", entry, None) == "table d.t missing"
    assert table_problem("d", "t", None, TableReport(rows=1)) == "table d.t restored but not in the point's manifest"
    assert table_problem("d", "t", entry, TableReport(rows=10, checksum="bb")) == \
        "table d.t: checksum differs (aa expected, bb restored)"


def _listing(root: Path) -> list[dict[str, object]]:
    """Nodes as `restic ls --json` lists a snapshot of `root` (parents, folders, files, links)."""
    nodes: list[dict[str, object]] = [{"path": str(p), "type": "dir"} for p in [*reversed(root.parents), root]]
    for path in sorted(root.rglob("*")):
        info = path.lstat()
        kind = "symlink" if path.is_symlink() else "dir" if path.is_dir() else "file"
        node: dict[str, object] = {"path": str(path), "type": kind, "mtime": _restic_time(info.st_mtime_ns)}
        if kind == "file":
            node["size"] = info.st_size
        nodes.append(node)
    return nodes


def _restic_time(ns: int) -> str:
    when = datetime.fromtimestamp(ns // 1_000_000_000, UTC).astimezone(timezone(timedelta(hours=2)))
    return when.strftime("%Y-%m-%dT%H:%M:%S") + f".{ns % 1_000_000_000:09d}+02:00"


def test_sample_hashes_are_stable_bounded_and_correct(tmp_path: Path) -> None:
    for i in range(40):
        (tmp_path / f"d{i % 3}").mkdir(exist_ok=True)
        (tmp_path / f"d{i % 3}" / f"f{i}").write_bytes(b"x" * i)
    nodes = _listing(tmp_path)
    first = sample_hashes(stored_trees(nodes, [str(tmp_path)], 16)[str(tmp_path)], 16)
    assert len(first) == 16 and first == sample_hashes(stored_trees(nodes, [str(tmp_path)], 16)[str(tmp_path)], 16)
    rel, digest = next(iter(first.items()))
    assert hashlib.sha256((tmp_path / rel).read_bytes()).hexdigest() == digest
    # Only what the listing holds is sampled (restic's excludes decide, not a re-implementation of them).
    without_d1 = [n for n in nodes if "/d1/" not in str(n["path"])]
    assert not any(k.startswith("d1/") for k in sample_hashes(stored_trees(without_d1, [str(tmp_path)])[str(tmp_path)]))
    single = tmp_path / "d0" / "f0"
    assert sample_hashes(stored_trees(nodes, [str(single)])[str(single)]) == {".": hashlib.sha256(b"").hexdigest()}
    # A file changed after restic read it is passed over, and the next candidate takes its place.
    changed = tmp_path / rel
    changed.write_bytes(changed.read_bytes() + b"later")
    again = sample_hashes(stored_trees(nodes, [str(tmp_path)], 16)[str(tmp_path)], 16)
    assert len(again) == 16 and rel not in again and set(first) - {rel} < set(again)


def test_stored_counts_agree_with_the_restored_tree(tmp_path: Path) -> None:
    """The manifest counts a listing as the drill counts the restored tree: files and symlinks, file bytes."""
    root = tmp_path / "site"
    (root / "a" / "b").mkdir(parents=True)
    (root / "a" / "b" / "f.txt").write_bytes(b"12345")
    (root / "g.txt").write_bytes(b"xy")
    (root / "to_dir").symlink_to("a")
    (root / "to_file").symlink_to("g.txt")
    (root / "dangling").symlink_to("nowhere")
    (tmp_path / "site2").mkdir()
    (tmp_path / "site2" / "other").write_bytes(b"not in site")
    stored = stored_trees(_listing(tmp_path), [str(root), str(root / "g.txt"), str(root / "to_dir")])
    for path, expected in ((root, (5, 7)), (root / "g.txt", (1, 2)), (root / "to_dir", (1, 0))):
        assert (stored[str(path)].files, stored[str(path)].bytes) == tree_stats(path) == expected


def test_restic_times_and_followed_links() -> None:
    assert restic_time_ns("1970-01-01T00:00:01.5Z") == 1_500_000_000
    assert restic_time_ns("2024-05-01T12:00:00.000000007+02:00") == 1714557600 * 10**9 + 7
    assert restic_time_ns("garbage") is None
    link, real = Path("/srv/app_link"), Path("/srv/app1")
    assert follow_links(["/srv/app_link/tmp/*", "!/srv/app_link/tmp/index.php", "backups", "/srv/app_link2/x",
                         "/srv/app_link"], {link: real}) == \
        ["/srv/app1/tmp/*", "!/srv/app1/tmp/index.php", "backups", "/srv/app_link2/x", "/srv/app1"]


def test_age_reads_naturally() -> None:
    assert (age(None), age(59), age(1800), age(7200)) == ("-", "1 min", "30 min", "2.0 h")



def test_scratch_folder_holding_a_read_only_folder_is_removed() -> None:
    # restic restores folder modes: a 0555 folder of the point (a vendor or config tree) kept a drill run by
    # a user other than root from removing its scratch folder, so every drill failed and left it behind.
    folder = Path(tempfile.mkdtemp(prefix="safehold-test-"))
    (folder / "files" / "ro" / "unlisted").mkdir(parents=True)
    (folder / "files" / "ro" / "f").write_text("x")
    (folder / "files" / "ro" / "unlisted").chmod(0)
    (folder / "files" / "ro").chmod(0o555)
    try:
        if os.geteuid() != 0:
            assert Scratch("app", "s", folder).remove(Silent()) == []
        else:  # root may delete anything: remove it as nobody, as a backup user would (stdlib-only module)
            python = Path("/usr/bin/python3")
            if not python.exists():
                pytest.skip("needs /usr/bin/python3 to run as nobody")
            for path in [folder, *folder.rglob("*")]:
                os.chown(path, 65534, 65534)
            code = "import sys; from pathlib import Path; from safehold.tempdirs import remove_tree; " \
                   "print(remove_tree(Path(sys.argv[1])))"
            proc = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", str(python), "-c",
                                   code, str(folder)], capture_output=True, text=True, env={"PYTHONPATH": str(SRC)})
            assert proc.stdout == "True\n", proc.stderr
        assert not folder.exists()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_roles_a_postgres_dump_grants_to_are_found() -> None:
    """A private PostgreSQL server gets them before the dump loads (they live in the cluster, not the dump)."""
    from safehold.engines.postgres_scratch import granted_roles

    sql = """GRANT SELECT ON TABLE public.t TO "Report Reader" WITH GRANT OPTION;
REVOKE ALL ON TABLE public.t FROM PUBLIC;
GRANT ALL ON SCHEMA public TO pg_database_owner;
GRANT ALL ON TABLE public.t TO postgres;
ALTER DEFAULT PRIVILEGES FOR ROLE app_owner IN SCHEMA public GRANT SELECT ON TABLES  TO app_ro;
GRANT USAGE ON SEQUENCE public.t_id_seq TO "we""ird";
REVOKE SELECT ON TABLE public.t FROM app_ro;
"""
    assert granted_roles(sql) == ["Report Reader", "app_ro", 'we"ird', "app_owner"]
