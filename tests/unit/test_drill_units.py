"""Drill pieces without services: scratch names, named table problems, sampled file hashes."""

from __future__ import annotations

import hashlib
from pathlib import Path

from safehold.actions.drill import is_scratch, scratch_stem
from safehold.actions.report import age
from safehold.actions.restore import table_problem
from safehold.files import sample_hashes
from safehold.models import TableReport
from safehold.repository.manifest import TableEntry, new_run_id


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


def test_table_problems_are_named() -> None:
    entry = TableEntry(rows=10, checksum="aa")
    assert table_problem("d", "t", entry, TableReport(rows=10, checksum="aa")) is None
    assert table_problem("d", "t", entry, TableReport(rows=10)) is None  # no checksum on one side: rows only
    assert table_problem("d", "t", entry, TableReport(rows=9)) == "table d.t: 10 rows expected, 9 restored"
    assert table_problem("d", "t", entry, None) == "table d.t missing"
    assert table_problem("d", "t", None, TableReport(rows=1)) == "table d.t restored but not in the point's manifest"
    assert table_problem("d", "t", entry, TableReport(rows=10, checksum="bb")) == \
        "table d.t: checksum differs (aa expected, bb restored)"


def test_sample_hashes_are_stable_bounded_and_correct(tmp_path: Path) -> None:
    for i in range(40):
        (tmp_path / f"d{i % 3}").mkdir(exist_ok=True)
        (tmp_path / f"d{i % 3}" / f"f{i}").write_bytes(b"x" * i)
    first = sample_hashes(tmp_path, [], 16)
    assert len(first) == 16 and first == sample_hashes(tmp_path, [], 16)
    rel, digest = next(iter(first.items()))
    assert hashlib.sha256((tmp_path / rel).read_bytes()).hexdigest() == digest
    assert not any(k.startswith("d1/") for k in sample_hashes(tmp_path, [str(tmp_path / "d1")], 16))
    single = tmp_path / "d0" / "f0"
    assert sample_hashes(single, []) == {".": hashlib.sha256(b"").hexdigest()}


def test_age_reads_naturally() -> None:
    assert (age(None), age(59), age(1800), age(7200)) == ("-", "1 min", "30 min", "2.0 h")

