"""Running one job in a worker: claim, wait for inputs, execute, collect outputs, finish.

Two short transactions per job on the normal path:

1. **claim** — ``UPDATE job SET state='running' … WHERE state IN ('queued','new')``, read
   the inputs and outputs, mark the outputs running. A finished job is never claimed; a
   job whose inputs are not ready goes back to ``new`` and is looked at again later (or as
   soon as the job making its input finishes); a ``running`` job is taken over only when
   its holder is dead (same host: its pid is gone; elsewhere: no heartbeat for a minute).
2. **finish** — conditional on still holding the job: job state, exit code, command line,
   stdout/stderr tails; every output's state and metadata; ``RunJob`` for jobs waiting on
   these outputs; ``AdvanceInvocation`` for a workflow's job.

Between the two the command runs in a fresh working directory under the data dir.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from app.datatypes import file_metadata
from app.errors import NotFound
from app.jobs import monitor as monitoring
from app.jobs.context import InputDataset, Structure, build_context
from app.jobs.execution import PATH, Execution, job_environment, run_command
from app.models import Dataset, DatasetState, Job, JobInput, JobOutput, JobState
from app.models.base import utcnow
from app.schemas.tasks import AdvanceInvocation, RunJob
from app.services import collections
from app.services.jobs import DELETED_INFO, discard_outputs
from app.services.registry import Services
from app.tools import toolbox
from app.tools.command import CommandError
from app.tools.loader import Tool
from app.tools.outputs import output_format
from app.tools.params import data_refs

log = logging.getLogger(__name__)

READY = frozenset({DatasetState.OK, DatasetState.EMPTY, DatasetState.FAILED_METADATA})
FAILED = frozenset({DatasetState.ERROR, DatasetState.DISCARDED, DatasetState.DEFERRED})
MAX_WAIT_MS = 10_000

_monitors: dict[int, monitoring.JobMonitor] = {}


def monitor_for(services: Services) -> monitoring.JobMonitor:
    """The process's job monitor for these services."""
    key = id(services)
    if key not in _monitors:
        _monitors[key] = monitoring.JobMonitor(services.session_factory)
    return _monitors[key]


@dataclass
class Claimed:
    """A job this worker now holds, with what it needs to run."""

    job_id: int
    tool_id: str
    params: dict[str, Any]
    invocation_id: int | None
    inputs: list[Any]  # rows: param, id, state, object_key, extension, dataset_name, hid, metadata_, purged
    outputs: list[tuple[str, int]]  # (output name, dataset id)


def job_dir(services: Services, job_id: int) -> Path:
    """The working directory of a job."""
    return services.settings.resolved_data_dir / "jobs" / f"{job_id // 1000:06d}" / str(job_id)


def run_job(services: Services, job_id: int, *, waits: int = 0) -> str:
    """Run a job if it is this worker's to run; return what happened (for logs and tests)."""
    claimed, outcome = _claim(services, job_id, waits)
    if claimed is None:
        return outcome
    try:
        return _execute(services, claimed)
    except Exception as exc:
        log.exception("job %d failed inside the runner", job_id)
        _finish_error(services, job_id, f"internal error while running the job: {type(exc).__name__}: {exc}")
        return "error"


# -- claim -------------------------------------------------------------------------------------


def _claim(services: Services, job_id: int, waits: int) -> tuple[Claimed | None, str]:
    me = monitoring.worker_id()
    now = utcnow()
    with services.session_factory.begin() as session:
        claim = (sa.update(Job).values(state=JobState.RUNNING, worker_id=me, attempts=Job.attempts + 1,
                                       start_time=now, update_time=now, pid=None)
                 .returning(Job.tool_id, Job.params, Job.invocation_id))
        row = session.execute(claim.where(Job.id == job_id, Job.state.in_([JobState.QUEUED, JobState.NEW]))).first()
        if row is None:
            row, outcome = _take_over(session, services, job_id, claim)
            if row is None:
                return None, outcome
        inputs = session.execute(
            sa.select(JobInput.name.label("param"), Dataset.id, Dataset.state, Dataset.object_key, Dataset.extension,
                      Dataset.name.label("dataset_name"), Dataset.hid, Dataset.metadata_, Dataset.purged)
            .join(Dataset, Dataset.id == JobInput.dataset_id).where(JobInput.job_id == job_id).order_by(JobInput.id)
        ).all()
        failed = [i for i in inputs if i.state in FAILED or i.purged or (i.state in READY and not i.object_key)]
        if failed:
            bad = failed[0]
            _fail(session, services, job_id, row.invocation_id,
                  f"input dataset {bad.hid} ({bad.dataset_name}) of parameter '{bad.param}' is in state {bad.state}; "
                  "the job cannot run")
            return None, "input error"
        if any(i.state not in READY for i in inputs):
            _wait(session, services, job_id, waits)
            return None, "waiting"
        outputs = session.execute(
            sa.select(JobOutput.name, JobOutput.dataset_id).where(JobOutput.job_id == job_id).order_by(JobOutput.id)
        ).all()
        session.execute(sa.update(Dataset).where(Dataset.id.in_([d for _, d in outputs]),
                                                 Dataset.state.in_([DatasetState.QUEUED, DatasetState.NEW]))
                        .values(state=DatasetState.RUNNING, update_time=now))
    return Claimed(job_id, row.tool_id, row.params, row.invocation_id, inputs, [tuple(o) for o in outputs]), "claimed"


def _take_over(session: Session, services: Services, job_id: int, claim: sa.Update) -> tuple[Any, str]:
    """Claim a job that is not queued: only a running one whose holder died (or a deleting one)."""
    current = session.execute(
        sa.select(Job.state, Job.worker_id, Job.update_time, Job.attempts, Job.pid, Job.invocation_id)
        .where(Job.id == job_id)).first()
    if current is None:
        return None, "missing"
    if current.state in JobState.TERMINAL:
        return None, "finished"
    age = (utcnow() - current.update_time).total_seconds()
    alive = monitoring.holder_is_alive(current.worker_id, age, job_id, monitor_for(services))
    if alive:
        return None, "held by a live worker"
    if current.state == JobState.DELETING:
        _mark_deleted(session, services, job_id, current.invocation_id)
        return None, "deleted"
    if current.state != JobState.RUNNING:
        return None, f"state {current.state}"
    monitoring.stop_leftovers(job_id, current.pid)
    row = session.execute(claim.where(Job.id == job_id, Job.state == JobState.RUNNING,
                                      Job.attempts == current.attempts)).first()
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


def _execute(services: Services, claimed: Claimed) -> str:
    settings = services.settings
    store = services.object_store
    try:
        tool = toolbox(settings).get(claimed.tool_id)
    except NotFound:
        _finish_error(services, claimed.job_id, f"tool {claimed.tool_id!r} is not installed on this worker")
        return "error"
    workdir = job_dir(services, claimed.job_id)
    shutil.rmtree(workdir, ignore_errors=True)
    (workdir / "outputs").mkdir(parents=True)
    (workdir / "tmp").mkdir()
    datasets = {row.id: InputDataset(row.id, str(store.path(row.object_key)), row.extension, row.dataset_name,
                                     row.hid, row.metadata_ or {}) for row in claimed.inputs}
    outputs = {name: workdir / "outputs" / name for name, _ in claimed.outputs}
    try:
        context = build_context(tool, claimed.params, datasets, _structures(services, tool, claimed.params), outputs)
        if tool.template is None:
            raise CommandError(f"tool {tool.id!r} has no command")
        command = tool.template.render(context, path=PATH)
    except (CommandError, KeyError) as exc:
        _finish_error(services, claimed.job_id, f"the command could not be rendered: {exc}")
        return "error"
    resources = tool.definition.resources
    wall_time = min(resources.walltime or settings.job_wall_time, settings.job_wall_time)
    started = time.monotonic()
    result = run_command(claimed.job_id, command, workdir, env=job_environment(claimed.job_id, workdir, resources.cpus),
                         wall_time=wall_time, cap=settings.job_output_cap, monitor=monitor_for(services),
                         memory_mb=resources.memory_mb)
    log.debug("job %d ran in %.3f s (exit %s)", claimed.job_id, time.monotonic() - started, result.exit_code)
    try:
        return _finish(services, claimed, tool, command.script, result, outputs)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _structures(services: Services, tool: Tool, params: dict[str, Any]) -> dict[tuple[str, int], Structure]:
    """The element structure of every collection the job's parameters name."""
    refs = [(v["src"], v["id"]) for _, param, v in data_refs(tool.inputs, params) if v.get("src") in ("hdca", "dce")]
    if not refs:
        return {}
    out: dict[tuple[str, int], Structure] = {}
    with services.session_factory() as session:
        for src, ref_id in refs:
            ref = collections.collection_ref(session, None, src, ref_id, "collection")
            out[(src, ref_id)] = (ref.collection_type, _structure(collections.load_tree(session, ref.collection_id)))
    return out


def _structure(tree: list[collections.TreeElement]) -> list[tuple[str, Any]]:
    return [(e.identifier, (e.child_type, _structure(e.children)) if e.child_collection_id else e.dataset_id)
            for e in tree]


# -- finish ------------------------------------------------------------------------------------


def _finish(services: Services, claimed: Claimed, tool: Tool, script: str, result: Execution,
            outputs: dict[str, Path]) -> str:
    """Store outputs and record the end of the job, if this worker still holds it."""
    failure = result.failure or _exit_failure(result)
    rows = []
    if failure is None:
        extensions: dict[str, list[str]] = {}
        for row in claimed.inputs:
            extensions.setdefault(row.param, []).append(row.extension)
        missing = [name for name, path in outputs.items() if not path.is_file()]
        if missing:
            failure = f"the tool did not write output {missing[0]!r}"
        else:
            rows = _store_outputs(services, claimed, tool, extensions, outputs)
    state = JobState.OK if failure is None else JobState.ERROR
    now = utcnow()
    with services.session_factory.begin() as session:
        done = session.execute(
            sa.update(Job).where(Job.id == claimed.job_id, Job.state == JobState.RUNNING,
                                 Job.worker_id == monitoring.worker_id())
            .values(state=state, exit_code=result.exit_code, command_line=script, stdout=result.stdout,
                    stderr=result.stderr, info=failure, end_time=now, update_time=now, pid=None)
        ).rowcount
        if not done:
            current = session.scalar(sa.select(Job.state).where(Job.id == claimed.job_id))
            if current == JobState.DELETING:
                _mark_deleted(session, services, claimed.job_id, claimed.invocation_id)
                return "deleted"
            return f"lost the job (now {current})"
        if failure is None:
            session.execute(sa.update(Dataset), rows)
        else:
            _error_outputs(session, claimed.job_id, failure)
        _after_end(session, services, claimed.job_id, claimed.invocation_id)
    return state


def _exit_failure(result: Execution) -> str | None:
    if result.exit_code == 0:
        return None
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    detail = "\n".join(lines[-20:]) if lines else "(no stderr)"
    return f"the tool exited with code {result.exit_code}:\n{detail}"[-4000:]


def _store_outputs(services: Services, claimed: Claimed, tool: Tool, extensions: dict[str, list[str]],
                   outputs: dict[str, Path]) -> list[dict[str, Any]]:
    """Move each output into the object store and measure it; the rows for the bulk UPDATE."""
    store = services.object_store
    by_name = dict(claimed.outputs)
    now = utcnow()
    rows = []
    for output in tool.outputs:
        dataset_id = by_name.get(output.name)
        if dataset_id is None:
            continue
        key = store.put(dataset_id, outputs[output.name])
        meta = file_metadata(store.path(key), output_format(tool, output, extensions))
        rows.append({"id": dataset_id, "state": DatasetState.OK, "object_key": key, "extension": meta.extension,
                     "file_size": meta.file_size, "line_count": meta.line_count, "peek": meta.peek,
                     "blurb": meta.blurb, "info": None, "update_time": now})
    return rows


def _error_outputs(session: Session, job_id: int, message: str) -> None:
    session.execute(
        sa.update(Dataset)
        .where(Dataset.id.in_(sa.select(JobOutput.dataset_id).where(JobOutput.job_id == job_id)),
               Dataset.state.not_in([DatasetState.DISCARDED]))
        .values(state=DatasetState.ERROR, info=message[:4000], blurb="error", update_time=utcnow())
    )


def _after_end(session: Session, services: Services, job_id: int, invocation_id: int | None) -> None:
    """Wake jobs waiting on this job's outputs, and the invocation the job belongs to."""
    waiting = session.scalars(
        sa.select(JobInput.job_id).distinct()
        .join(Job, Job.id == JobInput.job_id)
        .where(JobInput.dataset_id.in_(sa.select(JobOutput.dataset_id).where(JobOutput.job_id == job_id)),
               Job.state == JobState.NEW)
    ).all()
    for waiting_id in waiting:
        services.enqueuer.send(session, RunJob(job_id=waiting_id))
    if invocation_id is not None:
        services.enqueuer.send(session, AdvanceInvocation(invocation_id=invocation_id))


def _fail(session: Session, services: Services, job_id: int, invocation_id: int | None, message: str) -> None:
    """End a claimed job in error before it ran (its outputs too)."""
    now = utcnow()
    session.execute(sa.update(Job).where(Job.id == job_id)
                    .values(state=JobState.ERROR, info=message[:4000], end_time=now, update_time=now))
    _error_outputs(session, job_id, message)
    _after_end(session, services, job_id, invocation_id)


def _finish_error(services: Services, job_id: int, message: str) -> None:
    """End a job this worker holds in error (its outputs too)."""
    with services.session_factory.begin() as session:
        ended = session.execute(
            sa.update(Job).where(Job.id == job_id, Job.state == JobState.RUNNING, Job.worker_id == monitoring.worker_id())
            .values(state=JobState.ERROR, info=message[:4000], end_time=utcnow(), update_time=utcnow(), pid=None)
            .returning(Job.invocation_id)).first()
        if ended is not None:
            _error_outputs(session, job_id, message)
            _after_end(session, services, job_id, ended.invocation_id)


def _mark_deleted(session: Session, services: Services, job_id: int, invocation_id: int | None) -> None:
    """A cancelled job's process is gone: the job is deleted, its outputs discarded."""
    now = utcnow()
    session.execute(sa.update(Job).where(Job.id == job_id)
                    .values(state=JobState.DELETED, info=DELETED_INFO, end_time=now, update_time=now, pid=None))
    discard_outputs(session, job_id)
    _after_end(session, services, job_id, invocation_id)
