"""The per-process monitor of running jobs: cancellation, heartbeats and process ids.

One thread per worker process wakes every half second while jobs run. It stops jobs past
their wall time. It reads the states
of this process's jobs in one query and kills the process group of any job set to
``deleting`` (SIGTERM, SIGKILL a few seconds later); every ``HEARTBEAT`` seconds it bumps
their ``update_time``, which tells other workers the job's holder is alive; and for jobs
that run longer than a moment it records the process group (so that a re-run after this
worker's death can stop what was left behind) and shows their outputs as running.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from typing import BinaryIO

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from app.models import Dataset, DatasetState, Job, JobState
from app.models.base import utcnow

log = logging.getLogger(__name__)

POLL = 0.5
HEARTBEAT = 10.0
# A running job whose holder has not been heard of for this long is taken as orphaned.
LEASE = 60.0
KILL_GRACE = 3.0
# A job's captured stdout/stderr lives in memory; a tool writing more than this is stopped.
CAPTURE_LIMIT = 128 << 20
_STOP_STATES = (JobState.DELETING, JobState.DELETED)


_worker_ids: dict[int, str] = {}


def worker_id() -> str:
    """This process, as recorded in the jobs it runs: host:pid (worked out once per process)."""
    pid = os.getpid()
    found = _worker_ids.get(pid)
    if found is None:
        found = _worker_ids[pid] = f"{socket.gethostname()}:{pid}"
    return found


@dataclass
class RunningJob:
    """A job's process as the monitor tracks it."""

    job_id: int
    process: subprocess.Popen
    output_ids: list[int] = field(default_factory=list)
    deadline: float | None = None  # seconds of wall time allowed
    captures: list[BinaryIO] = field(default_factory=list)  # in-memory stdout/stderr, bounded
    started: float = field(default_factory=time.monotonic)
    pid_recorded: bool = False
    stop_reason: str | None = None
    stop_time: float | None = None


def _size(handle: BinaryIO) -> int:
    """Bytes written to an open file (0 once it is closed)."""
    try:
        return os.fstat(handle.fileno()).st_size
    except (OSError, ValueError):
        return 0


def kill_group(pgid: int, sig: int = signal.SIGKILL) -> None:
    """Signal a process group, ignoring one that is gone."""
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


class JobMonitor:
    """Watches the running jobs of one process (see the module docstring)."""

    def __init__(self, session_factory: sessionmaker[Session]):
        self.session_factory = session_factory
        self._jobs: dict[int, RunningJob] = {}
        self._held: set[int] = set()
        self._lock = threading.Lock()
        self._thread_pid: int | None = None
        self._last_heartbeat = time.monotonic()

    def is_active(self, job_id: int) -> bool:
        """True while this process handles the job (from before its claim until its end is recorded)."""
        with self._lock:
            return job_id in self._jobs or job_id in self._held

    def hold(self, job_id: int) -> bool:
        """Mark the job as handled by a thread of this process; False when another thread already is.

        Taken before the claim, so that a second message for the same job (a wake-up and a
        retry both delivered) never sees this process's own claim as orphaned and takes the
        job over under the first thread's feet.
        """
        with self._lock:
            if job_id in self._held:
                return False
            self._held.add(job_id)
            return True

    def release(self, job_id: int) -> None:
        """The thread is done with the job."""
        with self._lock:
            self._held.discard(job_id)

    def register(self, job_id: int, process: subprocess.Popen, output_ids: list[int], *,
                 deadline: float | None = None, captures: list[BinaryIO] | None = None) -> RunningJob:
        """Watch a job's process: stop it after ``deadline`` seconds or when a capture grows past
        ``CAPTURE_LIMIT``; show ``output_ids`` running after a while."""
        running = RunningJob(job_id, process, output_ids, deadline, list(captures or []))
        with self._lock:
            self._jobs[job_id] = running
            if self._thread_pid != os.getpid():
                self._thread_pid = os.getpid()
                threading.Thread(target=self._loop, name="job-monitor", daemon=True).start()
        return running

    def unregister(self, job_id: int) -> None:
        """Stop watching a job."""
        with self._lock:
            self._jobs.pop(job_id, None)

    def stop(self, running: RunningJob, reason: str) -> None:
        """Terminate a job's process group; SIGKILL follows after a grace period."""
        if running.stop_reason is None:
            running.stop_reason = reason
            running.stop_time = time.monotonic()
            kill_group(running.process.pid, signal.SIGTERM)

    def _loop(self) -> None:
        while True:
            time.sleep(POLL)
            try:
                self.check()
            except Exception:  # noqa: BLE001 - the monitor must outlive a database hiccup
                log.exception("job monitor pass failed")

    def check(self) -> None:
        """One pass: stop cancelled jobs, escalate kills, heartbeat, record process groups."""
        with self._lock:
            running = list(self._jobs.values())
        if not running:
            return
        now = time.monotonic()
        for job in running:
            if job.deadline is not None and now - job.started > job.deadline:
                self.stop(job, f"wall time limit of {job.deadline:g} s exceeded")
            if any(_size(capture) > CAPTURE_LIMIT for capture in job.captures):
                self.stop(job, f"the tool wrote more than {CAPTURE_LIMIT >> 20} MiB to stdout or stderr")
            if job.stop_time is not None and now - job.stop_time > KILL_GRACE and job.process.poll() is None:
                kill_group(job.process.pid)
        ids = [job.job_id for job in running]
        with self.session_factory.begin() as session:
            states = dict(session.execute(sa.select(Job.id, Job.state).where(Job.id.in_(ids))).all())
            for job in running:
                if states.get(job.job_id, JobState.DELETED) in _STOP_STATES:
                    self.stop(job, "deleted")
            for job in running:
                if not job.pid_recorded and now - job.started > POLL:
                    # Only now: a job of a few milliseconds is never worth these two writes.
                    job.pid_recorded = True
                    session.execute(sa.update(Job).where(Job.id == job.job_id, Job.worker_id == worker_id())
                                    .values(pid=job.process.pid))
                    session.execute(sa.update(Dataset).where(Dataset.id.in_(job.output_ids),
                                                             Dataset.state.in_([DatasetState.QUEUED, DatasetState.NEW]))
                                    .values(state=DatasetState.RUNNING))
            if now - self._last_heartbeat >= HEARTBEAT:
                self._last_heartbeat = now
                session.execute(sa.update(Job).where(Job.id.in_(ids), Job.worker_id == worker_id())
                                .values(update_time=utcnow()))


def holder_is_alive(holder: str | None, heartbeat_age: float, job_id: int, monitor: JobMonitor) -> bool:
    """Whether the worker that claimed a running job may still be running it."""
    if not holder:
        return False
    host, _, pid_text = holder.rpartition(":")
    if holder == worker_id():
        return monitor.is_active(job_id)
    if host == socket.gethostname() and pid_text.isdigit():
        try:
            os.kill(int(pid_text), 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
    return heartbeat_age < LEASE


def stop_leftovers(job_id: int, pgid: int | None) -> None:
    """Kill what a dead worker left running for this job (checked by the job id in its environment)."""
    if not pgid:
        return
    try:
        with open(f"/proc/{pgid}/environ", "rb") as handle:
            environ = handle.read().split(b"\0")
    except OSError:
        return
    if f"NEBULA_JOB_ID={job_id}".encode() in environ:
        log.warning("killing process group %d left by a dead worker for job %d", pgid, job_id)
        kill_group(pgid)
