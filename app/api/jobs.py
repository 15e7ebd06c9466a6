"""Jobs: /api/jobs (list with filters, show, cancel, inputs and outputs)."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from app.api.context import current
from app.api.routing import ApiBlueprint
from app.schemas.common import Query
from app.services import jobs

bp = ApiBlueprint("jobs", __name__)


class JobListQuery(Query):
    """GET /api/jobs."""

    state: list[str] | None = None
    history_id: str | None = None
    tool_id: list[str] | None = None
    invocation_id: str | None = None
    workflow_id: str | None = None
    limit: int = Field(500, ge=0, le=100_000)
    offset: int = Field(0, ge=0)
    order_by: str = Field("update_time", pattern="^(update_time|create_time)$")
    sort_desc: bool = True
    view: str | None = None


class JobShowQuery(Query):
    """GET /api/jobs/{id}."""

    full: bool = False


@bp.endpoint("/api/jobs", query=JobListQuery)
def list_jobs(query: JobListQuery) -> list[dict[str, Any]]:
    """The user's jobs, newest first, filtered by state, history, tool or invocation."""
    ctx = current()
    rows = jobs.list_jobs(
        ctx.session, ctx.user,
        states=query.state,
        history_id=ctx.decode(query.history_id, "history") if query.history_id else None,
        tool_ids=query.tool_id,
        invocation_id=ctx.decode(query.invocation_id, "invocation") if query.invocation_id else None,
        limit=query.limit, offset=query.offset, newest_first=query.sort_desc,
    )
    return [jobs.job_view(job, ctx.ids) for job in rows]


def _job(job_id: str):
    ctx = current()
    return jobs.get_job(ctx.session, ctx.user, ctx.decode(job_id, "job"))


@bp.endpoint("/api/jobs/<job_id>", query=JobShowQuery)
def show_job(job_id: str, query: JobShowQuery) -> dict[str, Any]:
    """One job with its inputs and outputs; full=true adds command line, stdout, stderr, exit code."""
    ctx = current()
    return jobs.job_view(_job(job_id), ctx.ids, full=query.full, session=ctx.session)


@bp.endpoint("/api/jobs/<job_id>", "DELETE")
def cancel_job(job_id: str) -> bool:
    """Cancel a job: a queued one never starts, a running one is killed. False if it had finished."""
    ctx = current()
    return jobs.cancel_job(ctx.session, _job(job_id), enqueuer=ctx.services.enqueuer)


@bp.endpoint("/api/jobs/<job_id>/inputs")
def job_inputs(job_id: str) -> list[dict[str, Any]]:
    """The job's input datasets: [{name, dataset: {src, id}}]."""
    ctx = current()
    view = jobs.job_view(_job(job_id), ctx.ids, session=ctx.session)
    return [{"name": name, "dataset": ref} for name, ref in view["inputs"].items()]


@bp.endpoint("/api/jobs/<job_id>/outputs")
def job_outputs(job_id: str) -> list[dict[str, Any]]:
    """The job's output datasets: [{name, dataset: {src, id}}]."""
    ctx = current()
    view = jobs.job_view(_job(job_id), ctx.ids, session=ctx.session)
    return [{"name": name, "dataset": ref} for name, ref in view["outputs"].items()]
