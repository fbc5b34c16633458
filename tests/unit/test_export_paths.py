"""Parts an export's manifest names are read only from inside the unpacked export."""

from __future__ import annotations

from pathlib import Path

import pytest

from safehold.actions.export import ROOT
from safehold.actions.import_file import Damaged, Staged


def test_a_part_named_out_of_the_export_or_through_a_symlink_is_refused(tmp_path: Path) -> None:
    (tmp_path / ROOT / "files" / "srv").mkdir(parents=True)
    (tmp_path / ROOT / "files" / "etc").symlink_to("/etc")
    staged = Staged(tmp_path, tmp_path / "point.tar.zst")
    assert staged.path("files//srv/app") == tmp_path / ROOT / "files" / "srv" / "app"
    assert staged.path("files//etc") == tmp_path / ROOT / "files" / "etc"  # a tree that is itself a link
    with pytest.raises(Damaged, match=r"'files/srv/\.\./\.\./\.\./x' is named with a '\.\.' path"):
        staged.path("files//srv/../../../x")
    with pytest.raises(Damaged, match="'files/etc/passwd' would be read through a symlink"):
        staged.path("files//etc/passwd")
