"""`safehold repo passwd` without restic: shared passwords, key ids, where the new password comes
from, refusals made before anything is touched, stale kits and the printed result."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from safehold.actions.repo_password import (
    _new_password,
    backup_path,
    change_password,
    current_key,
    lines,
    same_key,
    sharing,
    stale_kits,
)
from safehold.config import Config, parse
from safehold.errors import ConfigError, RepositoryError, SafeholdError
from safehold.output import Silent


def _config(tmp_path: Path, main: str, other: str = "env:OTHER_PASSWORD") -> Config:
    return parse(f"""
settings = {{ state_dir = "{tmp_path / 'state'}" }}
repositories.main = {{ url = "{tmp_path / 'main'}", password = "{main}" }}
repositories.copy = {{ url = "{tmp_path / 'copy'}", password = "{other}" }}
instances.app = {{ repositories = ["main", "copy"], files = ["/srv/app"] }}
""", tmp_path / "safehold.toml")


def test_a_password_file_shared_under_another_path_is_found(tmp_path: Path) -> None:
    secret = tmp_path / "secrets" / "repo.pass"
    secret.parent.mkdir()
    secret.write_text("x" * 20)
    (tmp_path / "link.pass").symlink_to(secret)
    config = _config(tmp_path, f"file:{secret}", f"file:{tmp_path / 'secrets' / '..' / 'link.pass'}")
    assert sharing(config, "main") == ["copy"] and sharing(config, "copy") == ["main"]
    assert sharing(_config(tmp_path, f"file:{secret}"), "main") == []
    assert sharing(_config(tmp_path, "env:SAME", "env:SAME"), "main") == ["copy"]
    assert sharing(_config(tmp_path, "env:SAME", f"file:{tmp_path}/SAME"), "main") == []


def test_refusals_come_before_any_restic_call(tmp_path: Path) -> None:
    # The repositories do not exist: reaching restic would fail with another message.
    with pytest.raises(ConfigError, match="read their password from the same place"):
        change_password(_config(tmp_path, "env:SAME", "env:SAME"), "main", None, False, Silent())
    with pytest.raises(ConfigError, match="--new-password-ref") as refused:
        change_password(_config(tmp_path, "env:MAIN"), "main", None, False, Silent())
    assert refused.value.exit_code == 2 and "nothing was changed" in refused.value.hint
    with pytest.raises(ConfigError, match="no repository 'nas'.*"):
        change_password(_config(tmp_path, "env:MAIN"), "nas", None, False, Silent())
    with pytest.raises(ConfigError, match="takes no --new-password-ref"):
        change_password(_config(tmp_path, "env:MAIN"), "main", "env:NEW", True, Silent())


def test_finishing_with_nothing_pending_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SafeholdError, match="no password change of repository main is pending"):
        change_password(_config(tmp_path, "env:MAIN"), "main", None, True, Silent())


def test_key_ids_of_old_and_new_restic_match() -> None:
    full = "547c130c1d68fb40528e7fbe5c3a1c773ed7d50e09456b6790b5d6502d4cefd5"
    assert same_key("547c130c", full) and same_key(full, "547c130c") and same_key(full, full)
    assert not same_key("19886786", full) and not same_key("", full)
    keys = [{"id": "547c130c", "current": False}, {"id": "19886786", "current": True}]
    assert current_key(keys) == "19886786"
    with pytest.raises(RepositoryError):
        current_key([{"id": "547c130c", "current": False}])


def test_new_password_generated_read_or_written_into_a_missing_file(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    generated, where = _new_password(None)
    assert len(generated.reveal()) >= 40 and where == "" and generated.reveal() not in repr(generated)
    assert _new_password(None)[0] != generated
    missing = tmp_path / "new" / "repo.pass"
    made, where = _new_password(f"file:{missing}")
    assert where == f"file:{missing}" and missing.read_text() == made.reveal() + "\n"
    assert missing.stat().st_mode & 0o777 == 0o600
    assert _new_password(f"file:{missing}")[0] == made  # an existing file is read, not overwritten
    monkeypatch.setenv("SH_NEW_PASSWORD", "from-the-environment")
    from_env, where = _new_password("env:SH_NEW_PASSWORD")
    assert from_env.reveal() == "from-the-environment" and where == "env:SH_NEW_PASSWORD"
    assert backup_path(missing) == missing.parent / "repo.pass.old"


def test_an_empty_new_password_is_refused_before_restic_adds_a_key_for_it(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    spaces = tmp_path / "spaces.pass"
    spaces.write_text("  \t \n")
    spaces.chmod(0o600)
    monkeypatch.setenv("SH_NEW_PASSWORD", "")
    for reference in (f"file:{spaces}", "env:SH_NEW_PASSWORD"):
        with pytest.raises(ConfigError, match="is empty or only spaces") as refused:
            _new_password(reference)
        assert refused.value.exit_code == 2 and "nothing was changed" in refused.value.hint


def test_only_kits_written_before_the_change_are_stale(tmp_path: Path) -> None:
    config = _config(tmp_path, "env:MAIN")
    old_kit, new_kit = tmp_path / "old-kit.html", tmp_path / "state" / "recovery-kit.html"
    new_kit.parent.mkdir()
    for kit in (old_kit, new_kit, tmp_path / "gone.html"):
        kit.write_text("kit")
    (tmp_path / "state" / "recovery-kits.txt").write_text(f"{old_kit}\n{tmp_path / 'gone.html'}\n")
    (tmp_path / "gone.html").unlink()
    an_hour_ago = time.time() - 3600
    os.utime(old_kit, (an_hour_ago, an_hour_ago))
    since = datetime.fromtimestamp(time.time() - 60, UTC).isoformat()
    assert stale_kits(config, since) == [str(old_kit)]
    assert sorted(stale_kits(config, "")) == sorted([str(old_kit), str(new_kit)])


def test_printed_result_names_places_and_steps_never_a_password() -> None:
    done = {"repository": "main", "done": True, "keys_removed": ["547c130c", "19886786"], "key": "aaaa1111",
            "old_password_refused": True, "new_password": "file:/etc/safehold/main.pass",
            "stale_kits": ["/root/kit.html"]}
    text = "\n".join(line.plain for line in lines(done))
    assert "2 old key(s) removed, the old password no longer opens it" in text
    assert "file:/etc/safehold/main.pass" in text and "/root/kit.html holds the old password" in text
    assert "RE-PRINT THE RECOVERY KIT" in text
    pending = {"repository": "main", "done": False, "key": "aaaa1111", "new_password": "env:NEW",
               "next_steps": ["set it", "run `safehold repo passwd main --remove-old-keys`"]}
    text = "\n".join(line.plain for line in lines(pending))
    assert "the old password still opens it" in text
    assert "  2. run `safehold repo passwd main --remove-old-keys`" in text
