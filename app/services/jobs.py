"""Jobs: creating them in bulk (idempotently for workflow keys), listing, showing, cancelling.

``create_jobs`` is what both the tools API and the workflow scheduler call. It writes a
whole batch with a fixed number of statements, whatever its size: one SELECT for keys
already used, one for the input datasets, one UPDATE per history for hids, then bulk
inserts (``COPY`` on PostgreSQL) of jobs, output datasets, job inputs and outputs, and one
``RunJob`` message per job sent in the same transaction.
"""

from __future__ import annotations

from collections import defaultdict
from itertools import islice
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session, selectinload

from app.bulk_insert import insert_rows
from app.errors import NotFound
from app.ids import IdEncoder
from app.jobs.statements import WAITING
from app.messaging import Enqueuer
from app.models import Dataset, DatasetState, Job, JobInput, JobOutput, JobState, User
from app.models.base import utcnow
from app.schemas.tasks import AdvanceInvocation, RunJob
from app.services.histories import allocate_hids
from app.tools.loader import Tool
from app.tools.outputs import output_format, output_label

_CHUNK = 900
DELETED_INFO = "Job output deleted by user before job completed."
SKIPPED_EXTENSION = "expression.json"  # a skipped job's outputs hold JSON null, as in Galaxy


@dataclass
class JobSpec:
    """One job to create: the tool, validated parameters, and the datasets it reads."""

    user_id: int
    history_id: int
    tool: Tool
    params: dict[str, Any]
    inputs: dict[str, list[int]]
    invocation_id: int | None = None
    invocation_step_id: int | None = None
    element_index: int | None = None
    output_visible: bool = True
    # A conditional workflow step's job that never runs: state skipped, no RunJob, outputs
    # ok and hidden (app.scheduling.skipping writes their JSON null).
    skipped: bool = False

    @property
    def key(self) -> tuple[int, int] | None:
        """The workflow key (invocation step, element index), when both are set."""
        if self.invocation_step_id is None or self.element_index is None:
            return None
        return self.invocation_step_id, self.element_index


def create_jobs(session: Session, specs: list[JobSpec], *, enqueuer: Enqueuer) -> list[CreatedJob]:
    """Create queued jobs with their outputs and RunJob messages; return one job per spec, in order.

    A spec whose (invocation_step_id, element_index) already has a job is not created again:
    the existing job is returned in its place. The jobs come back as records with their
    outputs (name, dataset id), not as ORM objects (building thousands of those costs more
    than inserting their rows).
    """
    existing = _existing_keys(session, [s.key for s in specs if s.key is not None])
    fresh: list[JobSpec] = []
    for spec in specs:
        if spec.key is not None:
            if spec.key in existing:
                continue
            existing[spec.key] = 0  # taken by this spec; its job is filled in below
        fresh.append(spec)
    created = _insert(session, fresh, enqueuer) if fresh else []
    by_spec = {id(spec): job for spec, job in zip(fresh, created)}
    by_id = {job.id: job for job in created}
    for spec, job in zip(fresh, created):
        if spec.key is not None:
            existing[spec.key] = job.id
    keyed = [existing[s.key] for s in specs if id(s) not in by_spec]  # type: ignore[index]
    by_id.update(_load_jobs(session, [job_id for job_id in keyed if job_id not in by_id]))
    return [by_spec.get(id(spec)) or by_id[existing[spec.key]] for spec in specs]  # type: ignore[index]


def _existing_keys(session: Session, keys: list[tuple[int, int]]) -> dict[tuple[int, int], int]:
    found: dict[tuple[int, int], int] = {}
    steps = sorted({step for step, _ in keys})
    for start in range(0, len(steps), _CHUNK):
        rows = session.execute(
            sa.select(Job.id, Job.invocation_step_id, Job.element_index)
            .where(Job.invocation_step_id.in_(steps[start : start + _CHUNK]), Job.element_index.is_not(None))
        )
        for job_id, step, index in rows:
            found[(step, index)] = job_id
    return found


def _load_jobs(session: Session, job_ids: list[int]) -> dict[int, CreatedJob]:
    jobs: dict[int, CreatedJob] = {}
    unique = list(dict.fromkeys(job_ids))
    for start in range(0, len(unique), _CHUNK):
        stmt = sa.select(Job).where(Job.id.in_(unique[start : start + _CHUNK])).options(selectinload(Job.outputs))
        for job in session.scalars(stmt):
            jobs[job.id] = CreatedJob.of(job)
    return jobs


def _input_datasets(session: Session, specs: list[JobSpec]) -> dict[int, tuple[int, str, str]]:
    """(hid, extension, dbkey) of every input dataset of the specs."""
    ids = sorted({d for spec in specs for ids in spec.inputs.values() for d in ids})
    found: dict[int, tuple[int, str, str]] = {}
    for start in range(0, len(ids), _CHUNK):
        rows = session.execute(sa.select(Dataset.id, Dataset.hid, Dataset.extension, Dataset.dbkey)
                               .where(Dataset.id.in_(ids[start : start + _CHUNK])))
        for dataset_id, hid, extension, dbkey in rows:
            found[dataset_id] = (hid, extension, dbkey)
    return found


@dataclass(frozen=True)
class OutputLink:
    """A job's output: its name and dataset."""

    name: str
    dataset_id: int


@dataclass
class CreatedJob:
    """A job as ``create_jobs`` returns it: what callers read, without an ORM object per row."""

    id: int
    user_id: int
    history_id: int
    tool_id: str
    tool_version: str
    state: str
    exit_code: int | None
    invocation_id: int | None
    invocation_step_id: int | None
    element_index: int | None
    create_time: Any
    update_time: Any
    outputs: list[OutputLink]

    @classmethod
    def of(cls, job: Job) -> "CreatedJob":
        """The record of a job loaded from the database."""
        return cls(job.id, job.user_id, job.history_id, job.tool_id, job.tool_version, job.state, job.exit_code,
                   job.invocation_id, job.invocation_step_id, job.element_index, job.create_time, job.update_time,
                   [OutputLink(o.name, o.dataset_id) for o in job.outputs])


def _insert(session: Session, specs: list[JobSpec], enqueuer: Enqueuer) -> list[CreatedJob]:
    """Bulk-insert jobs, outputs and links for specs known to be new; return the jobs."""
    now = utcnow()
    inputs = _input_datasets(session, specs)
    job_rows = [{
        "user_id": s.user_id, "history_id": s.history_id, "tool_id": s.tool.id, "tool_version": s.tool.version,
        "state": JobState.SKIPPED if s.skipped else JobState.QUEUED, "params": s.params, "attempts": 0,
        "invocation_id": s.invocation_id, "invocation_step_id": s.invocation_step_id, "element_index": s.element_index,
        "create_time": now, "update_time": now,
    } for s in specs]
    job_ids = insert_rows(session, Job.__table__, job_rows)

    per_history: dict[int, int] = defaultdict(int)
    for spec in specs:
        per_history[spec.history_id] += len(spec.tool.outputs)
    next_hid = {history: allocate_hids(session, history, count) for history, count in per_history.items() if count}

    dataset_rows, output_rows, input_rows = [], [], []
    for spec, job_id in zip(specs, job_ids):
        known = [inputs[d] for ids in spec.inputs.values() for d in ids if d in inputs]
        hids = [hid for hid, _, _ in known]
        extensions = {name: [inputs[d][1] for d in ids if d in inputs] for name, ids in spec.inputs.items()}
        dbkey = known[0][2] if known else "?"
        for output in spec.tool.outputs:
            hid = next_hid[spec.history_id]
            next_hid[spec.history_id] += 1
            dataset_rows.append({
                "history_id": spec.history_id, "user_id": spec.user_id, "hid": hid,
                "name": output_label(spec.tool, output, hids, spec.params), "state": DatasetState.QUEUED,
                "extension": output_format(spec.tool, output, extensions), "dbkey": dbkey,
                "visible": spec.output_visible and not output.hidden, "creating_job_id": job_id,
                "deleted": False, "purged": False, "tags": [], "metadata": {},
                "create_time": now, "update_time": now,
            })
            if spec.skipped:  # the same keys as every row: the bulk insert takes its columns from the first
                dataset_rows[-1].update(state=DatasetState.OK, extension=SKIPPED_EXTENSION, visible=False)
            output_rows.append({"job_id": job_id, "dataset_id": None, "name": output.name})
        for name, ids in spec.inputs.items():
            input_rows.extend({"job_id": job_id, "dataset_id": d, "name": name} for d in ids)
    dataset_ids = insert_rows(session, Dataset.__table__, dataset_rows)
    for row, dataset_id in zip(output_rows, dataset_ids):
        row["dataset_id"] = dataset_id
    insert_rows(session, JobOutput.__table__, output_rows, returning=False)
    insert_rows(session, JobInput.__table__, input_rows, returning=False)
    enqueuer.send_many(session, [RunJob(job_id=job_id) for spec, job_id in zip(specs, job_ids) if not spec.skipped])

    links = iter(output_rows)
    return [CreatedJob(job_id, row["user_id"], row["history_id"], row["tool_id"], row["tool_version"], row["state"],
                       None, row["invocation_id"], row["invocation_step_id"], row["element_index"], now, now,
                       [OutputLink(link["name"], link["dataset_id"]) for link in islice(links, len(spec.tool.outputs))])
            for spec, row, job_id in zip(specs, job_rows, job_ids)]


# -- reading ---------------------------------------------------------------------------------


def get_job(session: Session, user: User, job_id: int) -> Job:
    """A job of this user (any job for an admin); 404 otherwise."""
    job = session.get(Job, job_id)
    if job is None or (job.user_id != user.id and not user.is_admin):
        raise NotFound(f"job {job_id} not found")
    return job


def list_jobs(
    session: Session,
    user: User,
    *,
    states: list[str] | None = None,
    history_id: int | None = None,
    tool_ids: list[str] | None = None,
    invocation_id: int | None = None,
    limit: int = 500,
    offset: int = 0,
    newest_first: bool = True,
) -> list[Job]:
    """The user's jobs, filtered."""
    stmt = sa.select(Job).where(Job.user_id == user.id)
    if states:
        stmt = stmt.where(Job.state.in_(states))
    if history_id is not None:
        stmt = stmt.where(Job.history_id == history_id)
    if tool_ids:
        stmt = stmt.where(Job.tool_id.in_(tool_ids))
    if invocation_id is not None:
        stmt = stmt.where(Job.invocation_id == invocation_id)
    order = Job.update_time.desc() if newest_first else Job.update_time.asc()
    stmt = stmt.order_by(order, Job.id.desc() if newest_first else Job.id.asc()).offset(offset).limit(limit)
    return list(session.scalars(stmt))


def job_view(job: Job | CreatedJob, ids: IdEncoder, *, full: bool = False, session: Session | None = None) -> dict[str, Any]:
    """The API form of a job; ``full`` adds command line, stdout, stderr and exit code."""
    view: dict[str, Any] = {
        "model_class": "Job",
        "id": ids.encode(job.id),
        "tool_id": job.tool_id,
        "tool_version": job.tool_version,
        "state": job.state,
        "history_id": ids.encode(job.history_id) if job.history_id else None,
        "exit_code": job.exit_code,
        "create_time": job.create_time.isoformat(),
        "update_time": job.update_time.isoformat(),
        "galaxy_version": "26.1",
    }
    if session is not None:
        view["inputs"] = _io_view(session, JobInput, job.id, ids)
        view["outputs"] = _io_view(session, JobOutput, job.id, ids)
        view["params"] = encode_refs(job.params, ids) if job.tool_id not in ("upload1", "__DATA_FETCH__") else {}
        view["info"] = job.info
    if full:
        view.update({
            "command_line": job.command_line,
            "stdout": job.stdout or "",
            "stderr": job.stderr or "",
            "tool_stdout": job.stdout or "",
            "tool_stderr": job.stderr or "",
            "job_stdout": "",
            "job_stderr": job.info or "" if job.state == JobState.ERROR else "",
            "job_messages": [],
            "exit_code": job.exit_code,
            "start_time": job.start_time.isoformat() if job.start_time else None,
            "end_time": job.end_time.isoformat() if job.end_time else None,
            "attempts": job.attempts,
            "external_id": str(job.pid) if job.pid else None,
            "dependencies": [],
            "copied_from_job_id": None,
        })
    return view


def encode_refs(value: Any, ids: IdEncoder) -> Any:
    """Parameters with the dataset and collection ids in them encoded for the API."""
    if isinstance(value, dict):
        if value.get("src") in ("hda", "hdca", "dce") and isinstance(value.get("id"), int):
            return {**value, "id": ids.encode(value["id"])}
        return {k: encode_refs(v, ids) for k, v in value.items()}
    if isinstance(value, list):
        return [encode_refs(v, ids) for v in value]
    return value


def _io_view(session: Session, model: type, job_id: int, ids: IdEncoder) -> dict[str, Any]:
    """{name: {"id", "src"}} of a job's inputs or outputs (repeated names numbered as Galaxy does)."""
    rows = session.execute(sa.select(model.name, model.dataset_id).where(model.job_id == job_id).order_by(model.id))
    out: dict[str, Any] = {}
    counts: dict[str, int] = defaultdict(int)
    for name, dataset_id in rows:
        key = name if counts[name] == 0 else f"{name}{counts[name]}"
        counts[name] += 1
        out[key] = {"id": ids.encode(dataset_id), "src": "hda", "uuid": None}
    return out


# -- cancelling ------------------------------------------------------------------------------


def cancel_job(session: Session, job: Job, *, enqueuer: Enqueuer) -> bool:
    """Stop a job: a queued one never starts, a running one is killed by its worker.

    Outputs become discarded at once, as in Galaxy. Returns False for a job already finished.
    """
    for _ in range(3):
        state = job.state
        if state in JobState.TERMINAL or state == JobState.DELETING:
            return False
        target = JobState.DELETING if state == JobState.RUNNING else JobState.DELETED
        now = utcnow()
        # Conditional on the state read, so a worker claiming the job at this moment is noticed.
        done = session.execute(
            sa.update(Job).where(Job.id == job.id, Job.state == state)
            .values(state=target, info=DELETED_INFO, update_time=now,
                    end_time=now if target == JobState.DELETED else None)
            .execution_options(synchronize_session=False)
        ).rowcount
        session.refresh(job)
        if done:
            break
    else:
        return False
    discard_outputs(session, job.id)
    if job.state == JobState.DELETED:  # a running job's worker does this once its process is gone
        outputs = list(session.scalars(sa.select(JobOutput.dataset_id).where(JobOutput.job_id == job.id)))
        wake_jobs_waiting_on(session, outputs, enqueuer=enqueuer)  # they fail on a discarded input now
        if job.invocation_id is not None:
            enqueuer.send(session, AdvanceInvocation(invocation_id=job.invocation_id))
    return True


def discard_outputs(session: Session, job_id: int) -> None:
    """Galaxy's mark_deleted for outputs: deleted, state discarded."""
    session.execute(
        sa.update(Dataset)
        .where(Dataset.id.in_(sa.select(JobOutput.dataset_id).where(JobOutput.job_id == job_id)),
               Dataset.state.not_in([DatasetState.OK, DatasetState.EMPTY]))
        .values(deleted=True, state=DatasetState.DISCARDED, info=DELETED_INFO, blurb="deleted", peek="Job deleted",
                update_time=utcnow())
        .execution_options(synchronize_session=False)
    )


def wake_jobs_waiting_on(session: Session, dataset_ids: list[int], *, enqueuer: Enqueuer) -> int:
    """Send RunJob at once for every job in state new reading one of these datasets; return how many.

    Such a job found an input not ready and re-sends itself with a growing delay; the end
    of what makes the input (a tool job or an upload) wakes it in the same transaction.
    """
    if not dataset_ids:
        return 0
    waiting = list(session.scalars(WAITING, {"outputs": list(dataset_ids)}))
    enqueuer.send_many(session, [RunJob(job_id=job_id) for job_id in waiting])
    return len(waiting)
