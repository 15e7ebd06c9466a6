"""Jobs: creating them in bulk (idempotently for workflow keys), listing, showing, cancelling.

``create_jobs`` is what both the tools API and the workflow scheduler call. It writes a
whole batch with a fixed number of statements, whatever its size: one SELECT for keys
already used, one for the input datasets, one UPDATE per history for hids, then bulk
INSERTs of jobs, output datasets, job inputs and outputs, and one ``RunJob`` message per
job sent in the same transaction.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session, make_transient_to_detached, selectinload
from sqlalchemy.orm.attributes import set_committed_value

from app.errors import NotFound
from app.ids import IdEncoder
from app.messaging import Enqueuer
from app.models import Dataset, DatasetState, Job, JobInput, JobOutput, JobState, User
from app.models.base import utcnow
from app.schemas.tasks import AdvanceInvocation, RunJob
from app.services.histories import allocate_hids
from app.tools.loader import Tool
from app.tools.outputs import output_format, output_label

_CHUNK = 900
DELETED_INFO = "Job output deleted by user before job completed."


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

    @property
    def key(self) -> tuple[int, int] | None:
        """The workflow key (invocation step, element index), when both are set."""
        if self.invocation_step_id is None or self.element_index is None:
            return None
        return self.invocation_step_id, self.element_index


def create_jobs(session: Session, specs: list[JobSpec], *, enqueuer: Enqueuer) -> list[Job]:
    """Create queued jobs with their outputs and RunJob messages; return one job per spec, in order.

    A spec whose (invocation_step_id, element_index) already has a job is not created again:
    the existing job is returned in its place. The jobs returned are in the session with
    their ``outputs`` (JobOutput rows naming the output datasets) loaded.
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


def _load_jobs(session: Session, job_ids: list[int]) -> dict[int, Job]:
    jobs: dict[int, Job] = {}
    unique = list(dict.fromkeys(job_ids))
    for start in range(0, len(unique), _CHUNK):
        stmt = sa.select(Job).where(Job.id.in_(unique[start : start + _CHUNK])).options(selectinload(Job.outputs))
        for job in session.scalars(stmt):
            jobs[job.id] = job
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


def insert_rows(session: Session, model: type, rows: list[dict[str, Any]]) -> list[int]:
    """Insert rows in bulk and return their ids, in order.

    On PostgreSQL the ids are drawn from the table's sequence first and the rows sent as a
    pipelined executemany: a 1,000-row INSERT … RETURNING is one huge statement that the
    driver spends longer parsing than the server spends running. Elsewhere RETURNING.
    """
    if not rows:
        return []
    table = model.__table__
    if session.get_bind().dialect.name != "postgresql":
        stmt = sa.insert(table).returning(table.c.id, sort_by_parameter_order=True)
        return list(session.execute(stmt, rows).scalars())
    ids = sorted(session.scalars(
        sa.text("SELECT nextval(pg_get_serial_sequence(:table, 'id')) FROM generate_series(1, :n)"),
        {"table": table.name, "n": len(rows)}))
    session.execute(sa.insert(table), [{**row, "id": row_id} for row, row_id in zip(rows, ids)])
    return ids


def _loaded(model: type, values: dict[str, Any]) -> Any:
    """An object for a row just inserted, as a query would have loaded it (no events, no SELECT).

    ``session.add`` makes it persistent without an INSERT. Building 2,000 objects through
    their constructors costs more than inserting their rows.
    """
    obj = sa.inspect(model).class_manager.new_instance()
    obj.__dict__.update(values)
    make_transient_to_detached(obj)
    return obj


def _insert(session: Session, specs: list[JobSpec], enqueuer: Enqueuer) -> list[Job]:
    """Bulk-insert jobs, outputs and links for specs known to be new; return the jobs."""
    now = utcnow()
    inputs = _input_datasets(session, specs)
    job_rows = [{
        "user_id": s.user_id, "history_id": s.history_id, "tool_id": s.tool.id, "tool_version": s.tool.version,
        "state": JobState.QUEUED, "params": s.params, "command_line": None, "stdout": None, "stderr": None,
        "exit_code": None, "info": None, "worker_id": None, "attempts": 0, "pid": None,
        "invocation_id": s.invocation_id, "invocation_step_id": s.invocation_step_id,
        "element_index": s.element_index, "start_time": None, "end_time": None,
        "create_time": now, "update_time": now,
    } for s in specs]
    job_ids = insert_rows(session, Job, job_rows)

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
                "extension": output_format(spec.tool, output, extensions), "dbkey": dbkey, "info": None,
                "peek": None, "blurb": None, "line_count": None, "file_size": None, "object_key": None,
                "visible": spec.output_visible and not output.hidden, "creating_job_id": job_id,
                "deleted": False, "purged": False, "tags": [], "metadata": {},
                "create_time": now, "update_time": now,
            })
            output_rows.append({"job_id": job_id, "dataset_id": None, "name": output.name})
        for name, ids in spec.inputs.items():
            input_rows.extend({"job_id": job_id, "dataset_id": d, "name": name} for d in ids)
    dataset_ids = insert_rows(session, Dataset, dataset_rows)
    for row, dataset_id in zip(output_rows, dataset_ids):
        row["dataset_id"] = dataset_id
    output_ids = insert_rows(session, JobOutput, output_rows)
    if input_rows:
        session.execute(sa.insert(JobInput.__table__), input_rows)
    enqueuer.send_many(session, [RunJob(job_id=job_id) for job_id in job_ids])

    links = [_loaded(JobOutput, {"id": i, **row}) for row, i in zip(output_rows, output_ids)]
    jobs = []
    per_job = iter(links)
    for spec, row, job_id in zip(specs, job_rows, job_ids):
        job = _loaded(Job, {"id": job_id, **row})
        set_committed_value(job, "outputs", [next(per_job) for _ in spec.tool.outputs])
        jobs.append(job)
    session.add_all(links + jobs)
    return jobs


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


def job_view(job: Job, ids: IdEncoder, *, full: bool = False, session: Session | None = None) -> dict[str, Any]:
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
    if job.state == JobState.DELETED and job.invocation_id is not None:
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
