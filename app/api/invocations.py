"""Invocations: invoke (/api/workflows/{id}/invocations and the /usage alias), read, cancel, pause actions."""

from __future__ import annotations

import threading
import time
from typing import Any

import sqlalchemy as sa
from pydantic import Field

from app.api.context import current
from app.api.routing import ApiBlueprint
from app.errors import NotFound, RequestParameterInvalid
from app.models import InvocationState, Job, StoredWorkflow, WorkflowInvocation, WorkflowInvocationStep
from app.schemas.common import Query, Request
from app.services import invocations, workflows
from app.workflows import invocation_views as views
from app.workflows.plan import load_plan
from app.workflows.report import invocation_report

bp = ApiBlueprint("invocations", __name__)

# The longest a GET may be held by ?wait=, and how often it looks for a change meanwhile.
MAX_WAIT_S = 60.0
WAIT_POLL_S = 0.2
# Requests of one web process that may be held at once: each holds a server thread, so the
# rest answer at once (the client simply asks again) and other requests are never starved.
_waiters = threading.BoundedSemaphore(2)


class InvokeBody(Request):
    """POST /api/workflows/{id}/invocations: Galaxy's invoke payload."""

    inputs: dict[str, Any] | None = None
    ds_map: dict[str, Any] | None = None
    inputs_by: str | None = Field(None, max_length=64)
    history: str | None = Field(None, max_length=255)
    history_id: str | None = Field(None, max_length=64)
    new_history_name: str | None = Field(None, max_length=255)
    parameters: dict[str, Any] | None = None
    parameters_normalized: bool = False
    replacement_params: dict[str, Any] | None = None
    scheduler: str | None = Field(None, max_length=64)
    batch: bool = False
    version: int | None = Field(None, ge=0)
    instance: bool = False


class InvocationListQuery(Query):
    """GET /api/invocations."""

    workflow_id: str | None = None
    history_id: str | None = None
    job_id: str | None = None
    user_id: str | None = None
    include_terminal: bool = True
    limit: int | None = Field(None, ge=0, le=10_000)
    offset: int = Field(0, ge=0)
    view: str = "collection"
    step_details: bool = False
    instance: bool = False


class InvocationShowQuery(Query):
    """GET /api/invocations/{id}; ``wait`` holds the request until the invocation changes."""

    view: str = "element"
    step_details: bool = False
    wait: float | None = Field(None, ge=0)


class StepAction(Request):
    """PUT …/steps/{step_id}."""

    action: Any = None


def _invocation(invocation_id: str) -> WorkflowInvocation:
    ctx = current()
    return invocations.get_invocation(ctx.session, ctx.user, ctx.decode(invocation_id, "invocation"))


def _show(invocation: WorkflowInvocation, query: InvocationShowQuery | None = None) -> dict[str, Any]:
    ctx = current()
    query = query or InvocationShowQuery()
    return views.invocation_view(ctx.session, invocation, ctx.ids, view=query.view, step_details=query.step_details)


# -- invoke -------------------------------------------------------------------------------


@bp.endpoint("/api/workflows/<workflow_id>/invocations", "POST", body=InvokeBody)
@bp.endpoint("/api/workflows/<workflow_id>/usage", "POST", body=InvokeBody)
def invoke_workflow(workflow_id: str, body: InvokeBody) -> dict[str, Any] | list[dict[str, Any]]:
    """Invoke a workflow: the invocation answers in state new; schedulers do the rest."""
    ctx = current()
    decoded = ctx.decode(workflow_id, "workflow")
    if body.instance:
        stored, workflow = workflows.get_workflow_by_version_id(ctx.session, ctx.user, decoded)
        workflow_id = workflow.id
    else:
        stored = workflows.get_stored_workflow(ctx.session, ctx.user, decoded)
        workflow_id = workflows.version_id(ctx.session, stored, body.version)
    inputs = body.inputs if body.inputs is not None else (body.ds_map or {})
    inputs_by = body.inputs_by or ("step_id" if body.inputs is None and body.ds_map else None)
    request = invocations.InvokeRequest(
        inputs=inputs, inputs_by=inputs_by, history=body.history, history_id=body.history_id,
        new_history_name=body.new_history_name, parameters=body.parameters, scheduler=body.scheduler,
        batch=body.batch, replacement_params=body.replacement_params,
    )
    created = invocations.invoke(ctx.session, ctx.user, stored, workflow_id, request, settings=ctx.settings,
                                 enqueuer=ctx.services.enqueuer, ids=ctx.ids)
    shown = [_show(invocation) for invocation in created]
    return shown if body.batch else shown[0]


# -- lists and views --------------------------------------------------------------------


def _list(query: InvocationListQuery, stored_workflow_id: int | None = None) -> list[dict[str, Any]]:
    ctx = current()
    if stored_workflow_id is None and query.workflow_id:
        decoded = ctx.decode(query.workflow_id, "workflow")
        if query.instance:
            stored, _ = workflows.get_workflow_by_version_id(ctx.session, ctx.user, decoded)
            decoded = stored.id
        stored_workflow_id = decoded
    rows = invocations.list_invocations(
        ctx.session, ctx.user, stored_workflow_id=stored_workflow_id,
        history_id=ctx.decode(query.history_id, "history") if query.history_id else None,
        job_id=ctx.decode(query.job_id, "job") if query.job_id else None,
        user_id=ctx.decode(query.user_id, "user") if query.user_id else None,
        include_terminal=query.include_terminal, limit=query.limit, offset=query.offset,
    )
    return [views.invocation_view(ctx.session, row, ctx.ids, view=query.view, step_details=query.step_details)
            for row in rows]


@bp.endpoint("/api/invocations", query=InvocationListQuery)
def list_invocations(query: InvocationListQuery) -> list[dict[str, Any]]:
    """The user's invocations (filters: workflow_id, history_id, job_id, include_terminal, limit, offset)."""
    return _list(query)


@bp.endpoint("/api/workflows/<workflow_id>/invocations", query=InvocationListQuery)
@bp.endpoint("/api/workflows/<workflow_id>/usage", query=InvocationListQuery)
def list_workflow_invocations(workflow_id: str, query: InvocationListQuery) -> list[dict[str, Any]]:
    """The invocations of one workflow."""
    ctx = current()
    stored = workflows.get_stored_workflow(ctx.session, ctx.user, ctx.decode(workflow_id, "workflow"))
    return _list(query, stored_workflow_id=stored.id)


@bp.endpoint("/api/invocations/<invocation_id>", query=InvocationShowQuery)
def show_invocation(invocation_id: str, query: InvocationShowQuery) -> dict[str, Any]:
    """An invocation with its steps; ``?wait=S`` answers as soon as it changes (at most S seconds)."""
    invocation = _invocation(invocation_id)
    finished = invocation.state in InvocationState.TERMINAL
    if query.wait and not finished and _waiters.acquire(blocking=False):
        try:
            invocation = _wait_for_change(invocation, min(query.wait, MAX_WAIT_S))
        finally:
            _waiters.release()
    return _show(invocation, query)


@bp.endpoint("/api/workflows/<workflow_id>/invocations/<invocation_id>", query=InvocationShowQuery)
@bp.endpoint("/api/workflows/<workflow_id>/usage/<invocation_id>", query=InvocationShowQuery)
def show_workflow_invocation(workflow_id: str, invocation_id: str, query: InvocationShowQuery) -> dict[str, Any]:
    """An invocation, under its workflow's path."""
    return show_invocation(invocation_id, query)


def _fingerprint(session, invocation_id: int) -> tuple:
    """What changes when anything about the invocation does: its row, its steps, its jobs."""
    row = session.execute(sa.select(WorkflowInvocation.state, WorkflowInvocation.update_time)
                          .where(WorkflowInvocation.id == invocation_id)).one()
    steps = session.scalar(sa.select(sa.func.max(WorkflowInvocationStep.update_time))
                           .where(WorkflowInvocationStep.invocation_id == invocation_id))
    jobs = tuple(sorted(session.execute(sa.select(Job.state, sa.func.count())
                                        .where(Job.invocation_id == invocation_id).group_by(Job.state)).all()))
    return (*row, steps, jobs)


def _wait_for_change(invocation: WorkflowInvocation, seconds: float) -> WorkflowInvocation:
    """Hold until the invocation changes or ``seconds`` pass; polls in short transactions of its own."""
    ctx = current()
    invocation_id = invocation.id
    factory = ctx.services.session_factory
    # Never hold the request's transaction while waiting: on SQLite it is the write lock.
    ctx.session.rollback()
    with factory() as session:
        before = _fingerprint(session, invocation_id)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(min(WAIT_POLL_S, max(0.0, deadline - time.monotonic())))
        with factory() as session:
            if _fingerprint(session, invocation_id) != before:
                break
    return _invocation(ctx.ids.encode(invocation_id))


# -- acting ---------------------------------------------------------------------------


@bp.endpoint("/api/invocations/<invocation_id>", "DELETE")
@bp.endpoint("/api/workflows/<workflow_id>/invocations/<invocation_id>", "DELETE")
@bp.endpoint("/api/workflows/<workflow_id>/usage/<invocation_id>", "DELETE")
def cancel_invocation(invocation_id: str, workflow_id: str | None = None) -> dict[str, Any]:
    """Cancel: the invocation becomes cancelling, then cancelled once its scheduler has stopped everything."""
    ctx = current()
    invocation = _invocation(invocation_id)
    invocations.request_cancel(ctx.session, invocation, ctx.services.enqueuer, reason="user_request")
    return _show(invocation)


def _step(invocation_id: str, step_id: str) -> tuple[WorkflowInvocation, WorkflowInvocationStep]:
    ctx = current()
    invocation = _invocation(invocation_id)
    return invocation, invocations.get_step(ctx.session, invocation, ctx.decode(step_id, "invocation step"))


def _step_view(invocation: WorkflowInvocation, step: WorkflowInvocationStep) -> dict[str, Any]:
    ctx = current()
    jobs = list(ctx.session.execute(
        sa.select(Job.id, Job.state, Job.tool_id, Job.exit_code, Job.create_time, Job.update_time)
        .where(Job.invocation_step_id == step.id).order_by(Job.element_index).limit(views.MAX_STEP_JOBS_IN_VIEW)
    ))
    plan = load_plan(ctx.session, invocation.workflow_id)
    return views.step_view(step, plan, ctx.ids, jobs=jobs)


@bp.endpoint("/api/invocations/<invocation_id>/steps/<step_id>")
@bp.endpoint("/api/workflows/<workflow_id>/invocations/<invocation_id>/steps/<step_id>")
@bp.endpoint("/api/workflows/<workflow_id>/usage/<invocation_id>/steps/<step_id>")
def show_step(invocation_id: str, step_id: str, workflow_id: str | None = None) -> dict[str, Any]:
    """One invocation step with its jobs."""
    return _step_view(*_step(invocation_id, step_id))


@bp.endpoint("/api/invocations/steps/<step_id>")
def show_step_by_id(step_id: str) -> dict[str, Any]:
    """One invocation step, by its id alone."""
    ctx = current()
    step = ctx.session.get(WorkflowInvocationStep, ctx.decode(step_id, "invocation step"))
    if step is None:
        raise NotFound(f"invocation step {step_id!r} not found")
    invocation = invocations.get_invocation(ctx.session, ctx.user, step.invocation_id)
    return _step_view(invocation, step)


@bp.endpoint("/api/invocations/<invocation_id>/steps/<step_id>", "PUT", body=StepAction)
@bp.endpoint("/api/workflows/<workflow_id>/invocations/<invocation_id>/steps/<step_id>", "PUT", body=StepAction)
@bp.endpoint("/api/workflows/<workflow_id>/usage/<invocation_id>/steps/<step_id>", "PUT", body=StepAction)
def act_on_step(invocation_id: str, step_id: str, body: StepAction, workflow_id: str | None = None) -> dict[str, Any]:
    """A pause step's decision: ``{"action": true}`` continues, ``false`` cancels (cancelled_on_review)."""
    ctx = current()
    if body.action is None:
        raise RequestParameterInvalid("action: give true (continue) or false (cancel the invocation)")
    invocation, step = _step(invocation_id, step_id)
    invocations.act_on_step(ctx.session, invocation, step, body.action, ctx.services.enqueuer)
    return _step_view(invocation, step)


# -- summaries ----------------------------------------------------------------------------


@bp.endpoint("/api/invocations/<invocation_id>/jobs_summary")
@bp.endpoint("/api/workflows/<workflow_id>/invocations/<invocation_id>/jobs_summary")
def jobs_summary(invocation_id: str, workflow_id: str | None = None) -> dict[str, Any]:
    """Job counts by state (subworkflows included)."""
    ctx = current()
    invocation = _invocation(invocation_id)
    return views.jobs_summary(ctx.session, invocations.descendant_ids(ctx.session, invocation.id),
                              ctx.ids.encode(invocation.id))


@bp.endpoint("/api/invocations/<invocation_id>/step_jobs_summary")
@bp.endpoint("/api/workflows/<workflow_id>/invocations/<invocation_id>/step_jobs_summary")
def step_jobs_summary(invocation_id: str, workflow_id: str | None = None) -> list[dict[str, Any]]:
    """Job counts by state for each job-producing step."""
    ctx = current()
    return views.step_jobs_summary(ctx.session, _invocation(invocation_id), ctx.ids)


@bp.endpoint("/api/invocations/<invocation_id>/report")
@bp.endpoint("/api/workflows/<workflow_id>/invocations/<invocation_id>/report")
def report(invocation_id: str, workflow_id: str | None = None) -> dict[str, Any]:
    """A markdown report of inputs, steps and outputs."""
    ctx = current()
    return invocation_report(ctx.session, _invocation(invocation_id), ctx.ids)


@bp.endpoint("/api/invocations/<invocation_id>/request")
def invocation_request(invocation_id: str) -> dict[str, Any]:
    """The invoke payload that reruns this invocation."""
    ctx = current()
    invocation = _invocation(invocation_id)
    stored = ctx.session.get(StoredWorkflow, invocation.stored_workflow_id) if invocation.stored_workflow_id else None
    return views.request_view(invocation, stored, ctx.ids)
