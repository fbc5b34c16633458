"""Keeping a repository: copies between repositories, retention's forget and prune, repairs, restic's
own check, sizes, and its keys (passwords)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from safehold import runner
from safehold.output import Reporter
from safehold.repository.restic.errors import RepositoryDamaged
from safehold.repository.restic.process import ResticProcess, index_repair_command, restic_version
from safehold.secrets import Secret, mask_url, secret_files


class Maintenance(ResticProcess):
    """The copying, maintenance and key commands of a repository."""

    def _run_with(self, source: ResticProcess, *args: str) -> bytes:
        """Run restic on this repository with `source` as --from-repo, both given by environment."""
        secrets = [*self.secrets, *source.secrets]
        # The source is only read (restic takes its non-exclusive lock there), the target written.
        with self._call(*args) as call, source._call("snapshots") as from_call:
            env = {**call.env, **{key: value.reveal() for key, value in source.env.items()},
                   "RESTIC_FROM_REPOSITORY": source.url, "RESTIC_FROM_PASSWORD_FILE": from_call.env[
                       "RESTIC_PASSWORD_FILE"]}
            # -o options (the sftp command) are global in restic 0.14, so the source's come first and ours win.
            call.refuse_writing(args[0])
            argv = ["restic", *from_call.options, *call.options, *args]
            try:
                return runner.run(argv, what=f"restic {args[0]}", env=env, secrets=secrets)
            except runner.ProcessFailed as exc:
                text = exc.stderr.lower()
                # Say which side failed: restic names the source repository as "source" / its URL.
                if "source" in text or source.url.lower() in text:
                    raise source._explain(exc.stderr, from_call) from None
                raise self._explain(exc.stderr, call) from None

    def ensure_copy_of(self, source: ResticProcess, reporter: Reporter) -> None:
        """Open this repository, initialising it with `source`'s chunker so copies deduplicate.

        A copy that earlier runs used is not created anew when it is gone, as in ensure(): an
        unmounted backup disk leaves an empty mount point, and every point would be copied there.
        """
        if self._known():
            return
        if not self.is_initialised():
            self._refuse_occupied_location()
            reporter.step(f"repository {self.name} ({mask_url(self.url)}) is new: initialising it as a copy of "
                          f"{source.name}")
            self._run_with(source, "init", "--copy-chunker-params")
        self._remember()

    def copy_from(self, source: ResticProcess, snapshot_ids: Sequence[str]) -> None:
        """Copy snapshots (and only the data they need) from `source`; restic skips ones already here."""
        if snapshot_ids:
            self._run_with(source, "copy", *snapshot_ids)

    def unlock_stale(self) -> None:
        """Remove only locks restic can prove dead (same host, process gone, or too old)."""
        if not self.read_only:  # none can be left where nothing can write
            self.run("unlock")

    # -- maintenance ----------------------------------------------------------------------

    def forget(self, snapshot_ids: Sequence[str]) -> None:
        """Drop snapshots (data is freed by prune)."""
        if snapshot_ids:
            self.run("forget", *snapshot_ids)

    def prune(self) -> None:
        """Free data no snapshot references; needs the exclusive lock, so clear stale ones first."""
        self.unlock_stale()
        self.run("prune")

    def repair_index(self) -> None:
        """Rebuild the index from the pack files present, so lost data is no longer known and the next
        backup stores it anew; needs the exclusive lock, so clear stale ones first."""
        self.unlock_stale()
        self.run(*index_repair_command(restic_version()))

    def readable(self, snapshot_ids: Sequence[str]) -> bool:
        """Whether the index holds every tree and data blob these snapshots reference.

        `stats --mode raw-data` walks the trees and looks each data blob up without reading it: after a
        rebuilt index, the cheap way to tell which snapshots lost data. Other failures raise.
        """
        try:
            self.run("stats", "--mode", "raw-data", "--json", *snapshot_ids)
        except RepositoryDamaged:
            return False
        return True

    # -- keys (passwords) -----------------------------------------------------------------

    def keys(self) -> list[dict[str, Any]]:
        """The repository's keys: `id` (short in restic 0.14, full later) and `current`, the one this
        password opens; listing them opens the repository, so it also proves the password."""
        return self.run_json("key", "list") or []

    def add_key(self, password: Secret) -> None:
        """Add a key for `password`, handed to restic as a memfd like the current one (never argv)."""
        with self._call("key", "add") as call, secret_files(new_password=password) as files:
            try:
                runner.run(call.argv("key", "add", "--new-password-file", str(files["new_password"])),
                           what="restic key add", env=call.env, secrets=[*self.secrets, password])
            except runner.ProcessFailed as exc:
                raise self._explain(exc.stderr, call) from None

    def remove_key(self, key_id: str) -> None:
        """Remove one key (restic refuses to remove the one this password opens)."""
        self.run("key", "remove", key_id)

    def check(self, read_data: bool = False, subset: str | None = None) -> str:
        """restic's own integrity check, reading all stored data or a `subset` of it (restic's
        --read-data-subset: "5%", "2G", "1/7"); returns its output."""
        self.unlock_stale()
        args = ["check", *(["--read-data"] if read_data else [f"--read-data-subset={subset}"] if subset else [])]
        return self.run(*args).decode(errors="replace")

    def raw_size(self) -> int:
        """Bytes the repository stores (after dedup and compression)."""
        stats = self.run_json("stats", "--mode", "raw-data")
        return int(stats.get("total_size", 0))
