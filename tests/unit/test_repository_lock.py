"""The per-repository flock that makes safehold's restic commands on one host take turns."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from safehold.lock import RepositoryBusy, repository_lock


def test_shared_holders_run_together_and_an_exclusive_one_waits_for_them(tmp_path: Path) -> None:
    path = tmp_path / "main.lock"
    events: list[str] = []
    shared_in = threading.Barrier(2)

    def shared(name: str) -> None:
        with repository_lock(path, False, "backup", 10):
            shared_in.wait(timeout=5)  # both inside at once, or this times out
            time.sleep(0.3)
            events.append(f"{name} done")

    def exclusive() -> None:
        time.sleep(0.1)
        with repository_lock(path, True, "prune", 10):
            events.append("prune")

    threads = [threading.Thread(target=shared, args=(n,)) for n in ("a", "b")] + [threading.Thread(target=exclusive)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert sorted(events[:2]) == ["a done", "b done"] and events[2] == "prune"


def test_a_waiter_names_the_exclusive_holder_and_gives_up_after_its_wait(tmp_path: Path,
                                                                         caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "main.lock"
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with repository_lock(path, True, "check", 10):
            holding.set()
            release.wait(timeout=10)

    holder = threading.Thread(target=hold)
    holder.start()
    holding.wait(timeout=5)
    try:
        with pytest.raises(RepositoryBusy) as raised, repository_lock(path, False, "snapshots", 0.3):
            pass
    finally:
        release.set()
        holder.join(timeout=10)
    assert "repository main is still busy with restic check (pid " in raised.value.line()
    assert "after waiting 0.3 s" in raised.value.line()
    assert "repository main is busy with restic check" in caplog.text and "restic snapshots waits" in caplog.text
    # Released: the holder's name is gone from the file, and the next one goes ahead at once.
    assert path.read_text() == ""
    with repository_lock(path, True, "forget", 0):
        pass


def test_the_same_thread_does_not_wait_for_itself(tmp_path: Path) -> None:
    # A command started while this thread still reads another's output (a dump being streamed).
    path = tmp_path / "main.lock"
    with repository_lock(path, False, "dump", 0), repository_lock(path, True, "forget", 0):
        pass


def test_a_state_folder_this_user_cannot_write_only_skips_the_turn_taking(tmp_path: Path) -> None:
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the state folder should be\n")
    with repository_lock(blocked / "repositories" / "main.lock", True, "check", 0):
        pass
