"""An in-place restore says one line per database and lists only the tables that differ (all with --verbose)."""

from __future__ import annotations

import pytest

from safehold.cli import restore as restore_cli


def _rows(differ: bool) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = [{"database": "itflow", "table": f"t{i:03}", "expected": 10, "restored": 10,
                                      "ok": True} for i in range(138)]
    if differ:
        rows[5] = {"database": "itflow", "table": "t005", "expected": 10, "restored": 9, "ok": False}
    return rows


@pytest.fixture
def printed(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch):  # noqa: ANN201
    monkeypatch.setattr(restore_cli, "out", restore_cli.out.__class__(width=200, file=None))

    def show(rows: list[dict[str, object]], verbose: bool) -> str:
        restore_cli._print_comparison(rows, verbose)
        return capsys.readouterr().out

    return show


def test_all_matching_is_one_line(printed) -> None:  # noqa: ANN001
    text = printed(_rows(False), False)
    assert text.strip() == "database itflow: 138 tables, 1380 rows restored; all match the point's manifest"


def test_only_differing_tables_are_listed(printed) -> None:  # noqa: ANN001
    text = printed(_rows(True), False)
    assert "138 tables, 1379 rows restored; 1 differ from the point's manifest" in text
    assert "t005" in text and "DIFFERS" in text and "t004" not in text


def test_verbose_lists_every_table(printed) -> None:  # noqa: ANN001
    text = printed(_rows(False), True)
    assert all(f"t{i:03}" in text for i in range(138))
