"""The worker pool that runs actions for the console (and for the scheduler, when it is wired in).

Each job gets its own Reporter whose listener feeds the job's live log and progress, which the
pages poll. Finished jobs are written to the state directory so the run log survives a restart.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from safehold.actions.common import dumps
from safehold.errors import SafeholdError
from safehold.lock import Locked, is_locked
from safehold.output import Reporter
from safehold.repository.manifest import new_run_id
from safehold.secrets import write_private

LOG = logging.getLogger(__name__)
JOB_ID = re.compile(r"\d{8}T\d{6}Z-[0-9a-f]{4}")  # used with fullmatch (`$` lets a final newline in)
MAX_LOG_LINES = 2000
HISTORY_LIMIT = 200
BUSY = "a run is already in progress"

Action = Callable[[Reporter], Any]


class Busy(SafeholdError):
    """The instance already has a run in progress."""


@dataclass
class Job:
    """One run of an action started from the console or the scheduler."""

    id: str
    kind: str
    instance: str
    user: str
    params: dict[str, Any] = field(default_factory=dict)
    state: str = "queued"  # queued | running | ok | failed
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    log: list[dict[str, Any]] = field(default_factory=list)
    progress: dict[str, dict[str, int | None]] = field(default_factory=dict)
    result: Any = None
    error: str | None = None

    @property
    def done(self) -> bool:
        return self.state in ("ok", "failed")

    def listen(self, event: dict[str, Any]) -> None:
        """Reporter listener: steps and warnings go to the log, progress to the bars."""
        if event["event"] == "progress":
            self.progress[event["part"]] = {"done": event["done"], "total": event["total"]}
        elif len(self.log) < MAX_LOG_LINES:
            self.log.append({"time": event["time"], "level": event["event"], "message": event["message"]})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class JobRunner:
    """A small thread pool; one job per instance at a time, on top of the instance lock.

    `pool` lets the console share the scheduler's executor, so scheduled and manual runs compete
    for the same workers; without it the runner has its own.
    """

    def __init__(self, state_dir: Path, workers: int = 2, pool: Executor | None = None) -> None:
        self.state_dir = state_dir
        self.folder = state_dir / "web" / "jobs"
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._own_pool = pool is None
        self._pool = pool or ThreadPoolExecutor(max_workers=workers, thread_name_prefix="safehold-job")
        self._jobs: dict[str, Job] = {}
        self._instances: dict[str, str] = {}  # saved job id -> its instance, so history() reads each file once
        self._lock = threading.Lock()
        self.on_finish: list[Callable[[Job], None]] = []

    def busy(self, instance: str) -> bool:
        """True while a job of this runner or any other process works on the instance."""
        with self._lock:
            mine = any(j.instance == instance and not j.done for j in self._jobs.values())
        return mine or is_locked(self.state_dir, instance)

    def submit(self, kind: str, instance: str, user: str, action: Action,
               params: dict[str, Any] | None = None) -> Job:
        """Queue `action(reporter)`; raises Busy when the instance already has a run."""
        with self._lock:
            if any(j.instance == instance and not j.done for j in self._jobs.values()) \
                    or is_locked(self.state_dir, instance):
                raise Busy(f"{instance}: {BUSY}", "wait for it to finish; the run log shows it")
            job = Job(new_run_id(), kind, instance, user, params or {})
            self._jobs[job.id] = job
        self._pool.submit(self._run, job, action)
        return job

    def _run(self, job: Job, action: Action) -> None:
        reporter = Reporter(mode="silent")
        reporter.listeners.append(job.listen)
        job.state, job.started = "running", time.time()
        try:
            job.result = json.loads(dumps(action(reporter)))
            job.state, job.error = "ok", None
            if isinstance(job.result, dict) and job.result.get("ok") is False:
                # verify, drill and restore report problems in their result instead of raising
                problems = [str(p) for p in job.result.get("problems") or []]
                job.state = "failed"
                job.error = "; ".join(problems[:3]) or "finished with differences: see the result"
        except Locked as exc:
            job.state, job.error = "failed", f"{BUSY}: {exc.line()}"
        except SafeholdError as exc:
            job.state, job.error = "failed", exc.line()
        except Exception as exc:  # noqa: BLE001 - a job must end visibly, whatever broke
            LOG.exception("job %s (%s %s) crashed", job.id, job.kind, job.instance)
            job.state, job.error = "failed", f"internal error ({type(exc).__name__}); see the server log"
        finally:
            reporter.close()
            job.finished = time.time()
            if job.error:
                job.log.append({"time": job.finished, "level": "error", "message": job.error})
            write_private(self.folder / f"{job.id}.json", json.dumps(job.to_dict()))
            for callback in self.on_finish:
                callback(job)

    def get(self, job_id: str) -> Job | None:
        """A job by id, live or from the saved history; ids are checked so paths stay inside the folder."""
        if not JOB_ID.fullmatch(job_id):
            return None
        with self._lock:
            if job_id in self._jobs:
                return self._jobs[job_id]
        return self._load(self.folder / f"{job_id}.json")

    @staticmethod
    def _load(path: Path) -> Job | None:
        try:
            return Job(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def history(self, instance: str | None = None, limit: int = HISTORY_LIMIT) -> list[Job]:
        """Jobs newest first (of one instance when given): those of this process from memory, others from disk.

        Saved jobs are read newest first until `limit` of them match, however many of other instances
        come in between; the instance of every file read is remembered, so they are not read again.
        """
        def matches(job: Job) -> bool:
            return instance is None or job.instance == instance

        with self._lock:
            jobs = {j.id: j for j in self._jobs.values() if matches(j)}
            known = {j.id for j in self._jobs.values()}
        found = 0
        for path in sorted(self.folder.glob("*.json"), reverse=True):
            if found >= limit:
                break
            if path.stem in known or (instance and self._instances.get(path.stem, instance) != instance):
                continue
            if (job := self._load(path)) is not None:
                self._instances[job.id] = job.instance  # a finished job's file never changes
                if matches(job):
                    jobs[job.id] = job
                    found += 1
        return sorted(jobs.values(), key=lambda j: j.created, reverse=True)[:limit]

    def shutdown(self) -> None:
        """Stop taking jobs; running ones finish (a shared pool is its owner's to stop)."""
        if self._own_pool:
            self._pool.shutdown(wait=False, cancel_futures=True)
