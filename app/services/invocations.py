"""Invocations: invoke (one transaction, one message), cancel, pause actions, reading state.

Invoking writes the invocation, one row per workflow step and one ``AdvanceInvocation``
message, whatever the size of the inputs; everything else (expanding a map-over into
jobs) happens in a scheduler process.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from app.errors import Conflict, NotFound, RequestParameterInvalid
from app.ids import IdEncoder
from app.messaging import Enqueuer
from app.models import (
    History,
    InvocationState,
    InvocationStepState,
    Job,
    StepType,
    StoredWorkflow,
    User,
    WorkflowInvocation,
    WorkflowInvocationMessage,
    WorkflowInvocationStep,
)
from app.models.base import utcnow
from app.scheduling.registry import resolve_name
from app.schemas.tasks import AdvanceInvocation
from app.services import histories
from app.settings import Settings
from app.workflows import inputs as invoke_inputs
from app.workflows import toolspec
from app.workflows.plan import WorkflowPlan, load_plan

MAX_REPLACEMENT_PARAMS = 1000


@dataclass
class InvokeRequest:
    """An invoke payload, already parsed (history ids still encoded)."""

    inputs: dict[str, Any]
    inputs_by: str | None = None
    history: str | None = None
    history_id: str | None = None
    new_history_name: str | None = None
    parameters: dict[str, Any] | None = None
    scheduler: str | None = None
    batch: bool = False
    replacement_params: dict[str, Any] | None = None  # ${name} in post-job renames


def create_invocation_rows(session: Session, *, user_id: int, plan: WorkflowPlan, history_id: int, scheduler: str,
                           inputs: dict[str, Any], parameters: dict[str, Any], stored_workflow_id: int | None,
                           parent_invocation_id: int | None = None, parent_step_id: int | None = None,
                           replacement_params: dict[str, str] | None = None) -> WorkflowInvocation:
    """Write an invocation in state new with one step row per workflow step (two INSERTs).

    The step rows are kept on ``invocation.new_steps`` so the answer needs no query.
    """
    now = utcnow()
    invocation = WorkflowInvocation(
        uuid=str(uuid.uuid4()), user_id=user_id, workflow_id=plan.workflow_id, stored_workflow_id=stored_workflow_id,
        history_id=history_id, state=InvocationState.NEW, scheduler=scheduler, inputs=inputs, parameters=parameters,
        parent_invocation_id=parent_invocation_id, parent_step_id=parent_step_id, create_time=now, update_time=now,
        last_progress_time=now, replacement_params=replacement_params or {},
    )
    session.add(invocation)
    session.flush()
    steps = [WorkflowInvocationStep(invocation_id=invocation.id, workflow_step_id=step.id, order_index=step.order_index,
                                    state=InvocationStepState.NEW, outputs={}, jobs_created=0, create_time=now,
                                    update_time=now)
             for step in plan.steps]
    session.add_all(steps)
    session.flush()
    invocation.new_steps = steps  # type: ignore[attr-defined]
    return invocation


def _tool_ids(session: Session, plan: WorkflowPlan, seen: set[int] | None = None) -> set[str]:
    """Every tool a workflow uses, subworkflows included."""
    seen = seen if seen is not None else set()
    seen.add(plan.workflow_id)
    found = {s.tool_id for s in plan.steps if s.type == StepType.TOOL and s.tool_id}
    for step in plan.steps:
        if step.subworkflow_id and step.subworkflow_id not in seen:
            found |= _tool_ids(session, load_plan(session, step.subworkflow_id), seen)
    return found


def _target_history(session: Session, user: User, request: InvokeRequest, workflow_name: str, ids: IdEncoder) -> History:
    """The history named by history_id / 'hist_id=…' / a new name, else a new one."""
    encoded = request.history_id
    new_name = request.new_history_name
    if request.history:
        if request.history.startswith("hist_id="):
            encoded = request.history.removeprefix("hist_id=")
        else:
            new_name = request.history
    if encoded:
        decoded = ids.decode(encoded)
        if decoded is None:
            raise NotFound(f"history {encoded!r} not found")
        history = histories.get_history(session, user, decoded)
        if history.deleted:
            raise RequestParameterInvalid(f"history {encoded} is deleted")
        return history
    history = History(user_id=user.id, name=(new_name or f"History from {workflow_name} workflow")[:255])
    session.add(history)
    session.flush()
    return history


def _batches(request: InvokeRequest) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(inputs, parameters) per invocation: batch values ({"batch": true, "values": [...]}) are linked."""
    inputs = dict(request.inputs or {})
    parameters = {k: dict(v) if isinstance(v, dict) else v for k, v in (request.parameters or {}).items()}
    if not request.batch:
        return [(inputs, parameters)]
    slots: list[tuple[str, str | None, list[Any]]] = []
    for key, value in inputs.items():
        if isinstance(value, dict) and value.get("batch"):
            slots.append((key, None, list(value.get("values") or [])))
    for key, values in parameters.items():
        for name, value in (values.items() if isinstance(values, dict) else []):
            if isinstance(value, dict) and value.get("batch"):
                slots.append((key, name, list(value.get("values") or [])))
    sizes = {len(values) for _, _, values in slots}
    if len(sizes) > 1:
        raise RequestParameterInvalid("batch: every batch input must have the same number of values")
    count = sizes.pop() if sizes else 1
    if count == 0:
        raise RequestParameterInvalid("batch: a batch input has no values")
    runs = []
    for i in range(count):
        run_inputs, run_params = dict(inputs), {k: dict(v) if isinstance(v, dict) else v for k, v in parameters.items()}
        for key, name, values in slots:
            if name is None:
                run_inputs[key] = values[i]
            else:
                run_params[key][name] = values[i]
        runs.append((run_inputs, run_params))
    return runs


def _replacement_params(value: Any) -> dict[str, str]:
    """The payload's replacement_params as text by name (``${name}`` in post-job renames), or a 400."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise RequestParameterInvalid("replacement_params must be a mapping of name to text")
    if len(value) > MAX_REPLACEMENT_PARAMS:
        raise RequestParameterInvalid(f"replacement_params: more than {MAX_REPLACEMENT_PARAMS} names")
    params = {}
    for name, text in value.items():
        if isinstance(text, bool | int | float) or text is None:
            text = "" if text is None else str(text)
        if not isinstance(text, str) or len(text) > 1024:
            raise RequestParameterInvalid(f"replacement_params: the value of {name!r} must be text "
                                          "(at most 1024 characters)")
        params[str(name)] = text
    return params


def invoke(session: Session, user: User, stored: StoredWorkflow, workflow_id: int, request: InvokeRequest, *,
           settings: Settings, enqueuer: Enqueuer, ids: IdEncoder) -> list[WorkflowInvocation]:
    """Validate the request and write the invocation(s) of a version in state new, each with one message."""
    if stored.deleted:
        raise RequestParameterInvalid("this workflow is deleted")
    plan = load_plan(session, workflow_id)
    scheduler = resolve_name(request.scheduler, settings)
    missing = toolspec.missing_tools(settings, _tool_ids(session, plan))
    if missing:
        raise RequestParameterInvalid(f"the workflow uses tools that are not installed: {', '.join(missing)}")
    inputs_by = invoke_inputs.check_inputs_by(request.inputs_by)
    replacements = _replacement_params(request.replacement_params)
    prepared = [
        (invoke_inputs.resolve_inputs(session, user, plan, run_inputs, inputs_by, ids),
         invoke_inputs.resolve_parameters(plan, run_params, ids))
        for run_inputs, run_params in _batches(request)
    ]
    created = []
    for inputs, parameters in prepared:
        history = _target_history(session, user, request, stored.name, ids)
        invocation = create_invocation_rows(
            session, user_id=user.id, plan=plan, history_id=history.id, scheduler=scheduler, inputs=inputs,
            parameters=parameters, stored_workflow_id=stored.id, replacement_params=replacements,
        )
        enqueuer.send(session, AdvanceInvocation(invocation_id=invocation.id))
        created.append(invocation)
    return created


# -- reading ----------------------------------------------------------------------------


def get_invocation(session: Session, user: User, invocation_id: int) -> WorkflowInvocation:
    """An invocation of this user (404 for another user's)."""
    invocation = session.get(WorkflowInvocation, invocation_id)
    if invocation is None or (invocation.user_id != user.id and not user.is_admin):
        raise NotFound(f"invocation {invocation_id} not found")
    return invocation


def get_step(session: Session, invocation: WorkflowInvocation, step_id: int) -> WorkflowInvocationStep:
    """A step of the invocation (404 otherwise)."""
    step = session.get(WorkflowInvocationStep, step_id)
    if step is None or step.invocation_id != invocation.id:
        raise NotFound(f"invocation step {step_id} not found")
    return step


def list_invocations(session: Session, user: User, *, stored_workflow_id: int | None = None,
                     history_id: int | None = None, job_id: int | None = None, user_id: int | None = None,
                     include_terminal: bool = True, limit: int | None = None, offset: int = 0) -> list[WorkflowInvocation]:
    """The user's invocations, newest first (subworkflow invocations only when asked for by job)."""
    owner = user_id if (user_id is not None and user.is_admin) else user.id
    stmt = sa.select(WorkflowInvocation).where(WorkflowInvocation.user_id == owner)
    if job_id is not None:
        stmt = stmt.where(WorkflowInvocation.id == sa.select(Job.invocation_id).where(Job.id == job_id).scalar_subquery())
    else:
        stmt = stmt.where(WorkflowInvocation.parent_invocation_id.is_(None))
    if stored_workflow_id is not None:
        stmt = stmt.where(WorkflowInvocation.stored_workflow_id == stored_workflow_id)
    if history_id is not None:
        stmt = stmt.where(WorkflowInvocation.history_id == history_id)
    if not include_terminal:
        stmt = stmt.where(WorkflowInvocation.state.in_(InvocationState.ACTIVE))
    stmt = stmt.order_by(WorkflowInvocation.id.desc()).offset(offset)
    if limit is not None:
        stmt = stmt.limit(limit)
    return list(session.scalars(stmt))


# -- acting -----------------------------------------------------------------------------

_CANCELLABLE = tuple(InvocationState.ACTIVE - {InvocationState.CANCELLING})


def request_cancel(session: Session, invocation: WorkflowInvocation, enqueuer: Enqueuer, *, reason: str,
                   workflow_step_index: int | None = None) -> None:
    """active → cancelling (409 for a finished invocation); the scheduler finishes the cancel."""
    if invocation.state == InvocationState.CANCELLING:
        return
    # Conditional, so a scheduler that finished the invocation meanwhile is never overwritten.
    changed = session.execute(
        sa.update(WorkflowInvocation)
        .where(WorkflowInvocation.id == invocation.id, WorkflowInvocation.state.in_(_CANCELLABLE))
        .values(state=InvocationState.CANCELLING, update_time=utcnow())
        .returning(WorkflowInvocation.id)
    ).first()
    session.refresh(invocation)
    if changed is None:
        if invocation.state == InvocationState.CANCELLING:
            return
        raise Conflict(f"the invocation is already {invocation.state}; only an active invocation can be cancelled")
    session.add(WorkflowInvocationMessage(invocation_id=invocation.id, reason=reason,
                                          workflow_step_index=workflow_step_index))
    enqueuer.send(session, AdvanceInvocation(invocation_id=invocation.id))


def act_on_step(session: Session, invocation: WorkflowInvocation, step: WorkflowInvocationStep, action: Any,
                enqueuer: Enqueuer) -> WorkflowInvocationStep:
    """A pause step's decision: true continues, false cancels the invocation (cancelled_on_review)."""
    if not isinstance(action, bool):
        raise RequestParameterInvalid("action: must be true (continue) or false (cancel the invocation)")
    plan = load_plan(session, invocation.workflow_id)
    plan_step = plan.step(step.order_index)
    if plan_step.type != StepType.PAUSE:
        raise Conflict(f"step {step.order_index} is a {plan_step.type} step; only pause steps take an action")
    if invocation.state not in _CANCELLABLE:
        raise Conflict(f"the invocation is {invocation.state}; its steps take no more actions")
    changed = session.execute(
        sa.update(WorkflowInvocationStep)
        .where(WorkflowInvocationStep.id == step.id, WorkflowInvocationStep.state == InvocationStepState.READY,
               WorkflowInvocationStep.action.is_(None))
        .values(action=action, update_time=utcnow())
        .returning(WorkflowInvocationStep.id)
    ).first()
    session.refresh(step)
    if changed is None:
        detail = f"action already set to {step.action}" if step.action is not None else f"state {step.state}"
        raise Conflict(f"step {step.order_index} is not waiting for an action ({detail})")
    if action:
        enqueuer.send(session, AdvanceInvocation(invocation_id=invocation.id))
    else:
        request_cancel(session, invocation, enqueuer, reason="cancelled_on_review",
                       workflow_step_index=step.order_index)
    return step


def descendant_ids(session: Session, invocation_id: int) -> list[int]:
    """The invocation and all its sub-invocations, at any depth."""
    found, frontier = [invocation_id], [invocation_id]
    while frontier:
        frontier = list(session.scalars(
            sa.select(WorkflowInvocation.id).where(WorkflowInvocation.parent_invocation_id.in_(frontier))))
        found.extend(frontier)
    return found
