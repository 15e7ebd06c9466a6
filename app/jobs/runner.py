"""Running one job in a worker: claim, wait for inputs, execute, collect outputs, finish.

Two short transactions per job, on one connection held for the job:

1. **claim** — ``UPDATE job SET state='running' … WHERE state IN ('queued','new')`` and one
   query for the inputs and outputs. A finished job is never claimed; a job whose inputs
   are not ready goes back to ``new`` and is looked at again later (at once when the job
   making its input ends); a ``running`` job is taken over only when its holder is dead
   (same host: its pid is gone; elsewhere: no heartbeat for a minute).
2. **finish** — conditional on still holding the job: job state, exit code, command line,
   stdout/stderr tails; every output's state and metadata; ``RunJob`` for jobs waiting on
   these outputs; ``AdvanceInvocation`` for a workflow's job.

Between the two the command runs in a fresh working directory under the data dir. The
statements are built once: a trivial job is dominated by these few round trips.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from app.errors import NotFound
from app.jobs import end_actions
from app.jobs import monitor as monitoring
from app.jobs import pgfast
from app.jobs.statements import CLAIM, DATASETS, FINISH, OUTPUT_OK, TAKE_OVER
from app.jobs.context import InputDataset, build_context, collection_structures
from app.jobs.execution import PATH, Execution, job_environment, run_command
from app.jobs.helpers import helpers_for
from app.jobs.outputs import measure, store_output
from app.models import Dataset, DatasetState, Job, JobOutput, JobState
from app.models.base import utcnow
from app.objectstore import ObjectStore
from app.schemas.tasks import AdvanceInvocation, RunJob
from app.services.jobs import DELETED_INFO, discard_outputs, wake_jobs_waiting_on
from app.services.registry import Services
from app.tools import toolbox
from app.tools.command import CommandError
from app.tools.loader import Tool
from app.tools.outputs import output_format

log = logging.getLogger(__name__)

READY = frozenset({DatasetState.OK, DatasetState.EMPTY, DatasetState.FAILED_METADATA})
FAILED = frozenset({DatasetState.ERROR, DatasetState.DISCARDED, DatasetState.DEFERRED})
MAX_WAIT_MS = 10_000


@dataclass
class Claimed:
    """A job this worker now holds, with what it needs to run."""

    job_id: int
    tool_id: str
    params: dict[str, Any]
    invocation_id: int | None
    inputs: list[Any]  # rows: param, id, state, object_key, extension, dataset_name, hid, metadata, purged
    outputs: list[tuple[str, int]]  # (output name, dataset id)


def job_dir(services: Services, job_id: int) -> Path:
    """The working directory of a job."""
    return services.settings.resolved_data_dir / "jobs" / f"{job_id // 1000:06d}" / str(job_id)


def run_job(services: Services, job_id: int, *, waits: int = 0) -> str:
    """Run a job if it is this worker's to run; return what happened (for logs and tests)."""
    monitor = helpers_for(services).monitor
    if not monitor.hold(job_id):
        return "handled by another thread of this worker"
    try:
        return _claim_and_run(services, job_id, waits)
    finally:
        monitor.release(job_id)


def _claim_and_run(services: Services, job_id: int, waits: int) -> str:
    fast = helpers_for(services).fast
    if fast is not None:
        rows = pgfast.claim(fast, job_id, monitoring.worker_id(), utcnow())
        if rows:
            claimed, outcome = _check_inputs(services, job_id, rows[0], [r for r in rows if r.id is not None], waits)
            return _run(services, claimed, None) if claimed else outcome
    with services.engine.connect() as conn:
        claimed, outcome = _claim(services, conn, job_id, waits)
        return _run(services, claimed, conn) if claimed else outcome


def _run(services: Services, claimed: Claimed, conn: Connection | None) -> str:
    try:
        return _execute(services, conn, claimed)
    except Exception as exc:
        log.exception("job %d failed inside the runner", claimed.job_id)
        _finish_error(services, claimed.job_id, f"internal error while running the job: {type(exc).__name__}: {exc}")
        return "error"


def _session(services: Services, conn: Connection | None) -> Session:
    """A session (on the job's connection when there is one); its commit publishes what it sent."""
    return services.session_factory(bind=conn) if conn is not None else services.session_factory()


# -- claim -------------------------------------------------------------------------------------


def _claim(services: Services, conn: Connection, job_id: int, waits: int) -> tuple[Claimed | None, str]:
    """The general claim: UPDATE, or take over from a dead worker; then the inputs and outputs."""
    with _session(services, conn) as session:
        args = {"job_id": job_id, "worker": monitoring.worker_id(), "now": utcnow()}
        row = session.execute(CLAIM, args).first()
        if row is None:
            row, outcome = _take_over(session, services, args)
            if row is None:
                session.commit()
                return None, outcome
        rows = session.execute(DATASETS, {"job_id": job_id}).all()
        session.commit()
    return _check_inputs(services, job_id, row, rows, waits)


def _check_inputs(services: Services, job_id: int, job: Any, rows: list[Any], waits: int) -> tuple[Claimed | None, str]:
    """The claimed job, if its inputs are ready; else it fails (an input failed) or waits."""
    inputs = [r for r in rows if not r.is_output]
    failed = [i for i in inputs if i.state in FAILED or i.purged or (i.state in READY and not i.object_key)]
    if failed:
        bad = failed[0]
        with services.session_factory.begin() as session:
            _fail(session, services, job_id, job.invocation_id,
                  f"input dataset {bad.hid} ({bad.dataset_name}) of parameter '{bad.param}' is in state {bad.state}; "
                  "the job cannot run")
        return None, "input error"
    if any(i.state not in READY for i in inputs):
        with services.session_factory.begin() as session:
            _wait(session, services, job_id, waits)
        return None, "waiting"
    outputs = [(r.param, r.id) for r in rows if r.is_output]
    return Claimed(job_id, job.tool_id, job.params, job.invocation_id, inputs, outputs), "claimed"


def _take_over(session: Session, services: Services, args: dict[str, Any]) -> tuple[Any, str]:
    """Claim a job that is not queued: only a running one whose holder died (or a deleting one)."""
    job_id = args["job_id"]
    current = session.execute(
        sa.select(Job.state, Job.worker_id, Job.update_time, Job.attempts, Job.pid, Job.invocation_id)
        .where(Job.id == job_id)).first()
    if current is None:
        return None, "missing"
    if current.state in JobState.TERMINAL:
        return None, "finished"
    age = (utcnow() - current.update_time).total_seconds()
    if monitoring.holder_is_alive(current.worker_id, age, job_id, helpers_for(services).monitor):
        return None, "held by a live worker"
    if current.state == JobState.DELETING:
        _mark_deleted(session, services, job_id, current.invocation_id)
        return None, "deleted"
    if current.state != JobState.RUNNING:
        return None, f"state {current.state}"
    monitoring.stop_leftovers(job_id, current.pid)
    row = session.execute(TAKE_OVER, {**args, "seen_attempts": current.attempts}).first()
    if row is None:
        return None, "taken by another worker"
    log.warning("job %d: its worker %s is gone; running it again", job_id, current.worker_id)
    return row, "taken over"


def _wait(session: Session, services: Services, job_id: int, waits: int) -> None:
    """Inputs are not ready: back to 'new', looked at again later (or when an input's job ends)."""
    session.execute(sa.update(Job).where(Job.id == job_id)
                    .values(state=JobState.NEW, worker_id=None, attempts=Job.attempts - 1, start_time=None))
    delay = min(MAX_WAIT_MS, int(500 * 1.5 ** waits))
    services.enqueuer.send(session, RunJob(job_id=job_id, waits=waits + 1), delay_ms=delay)


# -- execute -----------------------------------------------------------------------------------


def _execute(services: Services, conn: Connection | None, claimed: Claimed) -> str:
    settings = services.settings
    try:
        tool = toolbox(settings).get(claimed.tool_id)
    except NotFound:
        _finish_error(services, claimed.job_id, f"tool {claimed.tool_id!r} is not installed on this worker")
        return "error"
    workdir = job_dir(services, claimed.job_id)
    _fresh_directory(workdir)
    store = services.object_store
    datasets = {row.id: InputDataset(row.id, str(_stored_path(store, row.id, row.object_key)), row.extension,
                                     row.dataset_name, row.hid, row.metadata or {}) for row in claimed.inputs}
    outputs = {name: workdir / f"{name}.out" for name, _ in claimed.outputs}
    try:
        context = build_context(tool, claimed.params, datasets, collection_structures(services.session_factory, tool, claimed.params), outputs)
        if tool.template is None:
            raise CommandError(f"tool {tool.id!r} has no command")
        command = tool.template.render(context, path=PATH)
    except (CommandError, KeyError) as exc:
        _finish_error(services, claimed.job_id, f"the command could not be rendered: {exc}")
        shutil.rmtree(workdir, ignore_errors=True)
        return "error"
    resources = tool.definition.resources
    wall_time = min(resources.walltime or settings.job_wall_time, settings.job_wall_time)
    try:
        result = run_command(claimed.job_id, command, workdir,
                             env=job_environment(claimed.job_id, workdir, resources.cpus), wall_time=wall_time,
                             cap=settings.job_output_cap, monitor=helpers_for(services).monitor,
                             memory_mb=resources.memory_mb, output_ids=[d for _, d in claimed.outputs])
        return _finish(services, conn, claimed, tool, command.script, result, outputs)
    finally:
        _remove_directory(workdir)


def _fresh_directory(workdir: Path) -> None:
    """An empty working directory (whatever an earlier attempt left is removed)."""
    try:
        os.mkdir(workdir)
    except FileExistsError:
        shutil.rmtree(workdir)
        os.mkdir(workdir)
    except FileNotFoundError:
        workdir.mkdir(parents=True)


def _remove_directory(workdir: Path) -> None:
    """Remove a job's working directory (mostly empty by now: its outputs were moved out)."""
    try:
        os.rmdir(workdir)
    except OSError:
        shutil.rmtree(workdir, ignore_errors=True)


def _stored_path(store: ObjectStore, dataset_id: int, key: str) -> Path:
    """The file of a stored dataset (keys the store made itself need no resolving)."""
    return store.root / key if key == store.key_for(dataset_id) else store.path(key)


# -- finish ------------------------------------------------------------------------------------


def _finish(services: Services, conn: Connection | None, claimed: Claimed, tool: Tool, script: str,
            result: Execution, outputs: dict[str, Path]) -> str:
    """Store outputs and record the end of the job, if this worker still holds it."""
    failure = result.failure or _exit_failure(result)
    rows: list[dict[str, Any]] = []
    now = utcnow()
    if failure is None:
        missing = [name for name, path in outputs.items() if not path.is_file()]
        if missing:
            failure = f"the tool did not write output {missing[0]!r}"
        else:
            rows = _store_outputs(services, claimed, tool, outputs, now)
    state = JobState.OK if failure is None else JobState.ERROR
    params = {"job_id": claimed.job_id, "worker": monitoring.worker_id(), "new_state": state,
              "code": result.exit_code, "script": script, "out": result.stdout, "err": result.stderr,
              "why": failure, "now": now}
    fast = helpers_for(services).fast
    if fast is not None and not (failure is None and claimed.invocation_id is not None
                                 and end_actions.any_at_end(services.session_factory, claimed.invocation_id)):
        done, waiting = pgfast.finish(fast, params, rows)
        if done:
            # Committed already: the wake-ups go out on their own. Lost with this process at
            # worst, they are made up for by the waiting jobs' own retries and beat's sweep.
            services.enqueuer.send_now([RunJob(job_id=waiting_id) for waiting_id in waiting])
            if claimed.invocation_id is not None:
                helpers_for(services).wakeups.wake(claimed.invocation_id)
            return state
        with services.session_factory.begin() as session:
            return _lost(session, services, claimed)
    with _session(services, conn) as session:
        if not session.execute(FINISH, params).rowcount:
            state = _lost(session, services, claimed)
        else:
            if failure is None:
                session.execute(OUTPUT_OK, rows)
                if claimed.invocation_id is not None:  # a workflow step's post-job actions (hide, datatype)
                    end_actions.apply_at_job_end(session, claimed.job_id, claimed.invocation_id, claimed.outputs)
            else:
                _error_outputs(session, claimed.job_id, failure)
            _after_end(session, services, claimed.invocation_id, [d for _, d in claimed.outputs])
        session.commit()
    return state


def _lost(session: Session, services: Services, claimed: Claimed) -> str:
    """The job is no longer this worker's: cancelled meanwhile (then it is deleted now), or taken."""
    current = session.scalar(sa.select(Job.state).where(Job.id == claimed.job_id))
    if current == JobState.DELETING:
        _mark_deleted(session, services, claimed.job_id, claimed.invocation_id)
        return JobState.DELETED
    return f"lost the job (now {current})"


def _exit_failure(result: Execution) -> str | None:
    if result.exit_code == 0:
        return None
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    detail = "\n".join(lines[-20:]) if lines else "(no stderr)"
    return f"the tool exited with code {result.exit_code}:\n{detail}"[-4000:]


def _store_outputs(services: Services, claimed: Claimed, tool: Tool, outputs: dict[str, Path],
                   now: Any) -> list[dict[str, Any]]:
    """Move each output into the object store and measure it; the rows for the bulk UPDATE."""
    extensions: dict[str, list[str]] = {}
    for row in claimed.inputs:
        extensions.setdefault(row.param, []).append(row.extension)
    by_name = dict(claimed.outputs)
    rows = []
    for output in tool.outputs:
        dataset_id = by_name.get(output.name)
        if dataset_id is None:
            continue
        key, path = store_output(services.object_store, dataset_id, outputs[output.name])
        meta = measure(path, output_format(tool, output, extensions))
        rows.append({"dataset_id": dataset_id, "key": key, "ext": meta.extension, "size": meta.file_size,
                     "lines": meta.line_count, "text_peek": meta.peek, "text_blurb": meta.blurb,
                     "meta": meta.metadata, "now": now})
    return rows


def _error_outputs(session: Session, job_id: int, message: str) -> None:
    session.execute(
        sa.update(Dataset)
        .where(Dataset.id.in_(sa.select(JobOutput.dataset_id).where(JobOutput.job_id == job_id)),
               Dataset.state.not_in([DatasetState.DISCARDED]))
        .values(state=DatasetState.ERROR, info=message[:4000], blurb="error", update_time=utcnow())
    )


def _after_end(session: Session, services: Services, invocation_id: int | None, output_ids: list[int]) -> None:
    """Wake jobs waiting on this job's outputs, and the invocation the job belongs to."""
    wake_jobs_waiting_on(session, output_ids, enqueuer=services.enqueuer)
    if invocation_id is not None:
        services.enqueuer.send(session, AdvanceInvocation(invocation_id=invocation_id))


def _output_ids(session: Session, job_id: int) -> list[int]:
    return list(session.scalars(sa.select(JobOutput.dataset_id).where(JobOutput.job_id == job_id)))


def _fail(session: Session, services: Services, job_id: int, invocation_id: int | None, message: str) -> None:
    """End a claimed job in error before it ran (its outputs too)."""
    now = utcnow()
    session.execute(sa.update(Job).where(Job.id == job_id)
                    .values(state=JobState.ERROR, info=message[:4000], end_time=now, update_time=now))
    _error_outputs(session, job_id, message)
    _after_end(session, services, invocation_id, _output_ids(session, job_id))


def _finish_error(services: Services, job_id: int, message: str) -> None:
    """End a job this worker holds in error (its outputs too), in a transaction of its own."""
    with services.session_factory.begin() as session:
        ended = session.execute(
            sa.update(Job).where(Job.id == job_id, Job.state == JobState.RUNNING, Job.worker_id == monitoring.worker_id())
            .values(state=JobState.ERROR, info=message[:4000], end_time=utcnow(), update_time=utcnow(), pid=None)
            .returning(Job.invocation_id)).first()
        if ended is not None:
            _error_outputs(session, job_id, message)
            _after_end(session, services, ended.invocation_id, _output_ids(session, job_id))


def _mark_deleted(session: Session, services: Services, job_id: int, invocation_id: int | None) -> None:
    """A cancelled job's process is gone: the job is deleted, its outputs discarded."""
    now = utcnow()
    session.execute(sa.update(Job).where(Job.id == job_id)
                    .values(state=JobState.DELETED, info=DELETED_INFO, end_time=now, update_time=now, pid=None))
    discard_outputs(session, job_id)
    _after_end(session, services, invocation_id, _output_ids(session, job_id))
