"""The API shapes of invocations and their steps, as Galaxy (and BioBlend) know them."""

from __future__ import annotations

from collections import Counter
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from app.ids import IdEncoder
from app.models import Job, StoredWorkflow, WorkflowInvocation, WorkflowInvocationMessage, WorkflowInvocationStep
from app.models.workflows import StepType
from app.workflows.plan import WorkflowPlan, load_plan

MAX_STEP_JOBS_IN_VIEW = 10_000


def _encode_value(value: dict[str, Any] | None, ids: IdEncoder) -> dict[str, Any] | None:
    if not value or value.get("src") not in ("hda", "hdca"):
        return None
    return {"src": value["src"], "id": ids.encode(value["id"])}


def workflow_id_of(session: Session, invocation: WorkflowInvocation, ids: IdEncoder) -> str:
    """The workflow id the API shows: the stored workflow's (what import returned)."""
    if invocation.stored_workflow_id is not None:
        return ids.encode(invocation.stored_workflow_id)
    return ids.encode(invocation.workflow_id)


def job_view(job: Any, ids: IdEncoder) -> dict[str, Any]:
    """A short job description for step views."""
    return {"model_class": "Job", "id": ids.encode(job.id), "state": job.state, "tool_id": job.tool_id,
            "exit_code": job.exit_code, "create_time": job.create_time.isoformat(),
            "update_time": job.update_time.isoformat()}


def step_view(step: WorkflowInvocationStep, plan: WorkflowPlan, ids: IdEncoder, *,
              jobs: list[Any] | None = None) -> dict[str, Any]:
    """One invocation step: state, action, outputs, and (when given) its jobs."""
    plan_step = plan.step(step.order_index)
    outputs, collections = {}, {}
    if plan_step.type != StepType.SUBWORKFLOW:
        for name, value in (step.outputs or {}).items():
            encoded = _encode_value(value, ids)
            if encoded and encoded["src"] == "hda":
                outputs[name] = encoded
            elif encoded:
                collections[name] = encoded
    view = {
        "model_class": "WorkflowInvocationStep",
        "id": ids.encode(step.id),
        "update_time": step.update_time.isoformat(),
        "job_id": ids.encode(step.job_id) if step.job_id else None,
        "workflow_step_id": ids.encode(plan_step.id),
        "subworkflow_invocation_id": ids.encode(step.subworkflow_invocation_id) if step.subworkflow_invocation_id else None,
        "state": step.state,
        "action": step.action,
        "order_index": step.order_index,
        "workflow_step_label": plan_step.label,
        "workflow_step_uuid": plan_step.uuid,
        "outputs": outputs,
        "output_collections": collections,
        "jobs": [job_view(j, ids) for j in jobs] if jobs is not None else [],
    }
    if step.mapping:
        view["element_count"] = step.mapping.get("element_count")
        view["jobs_created"] = step.jobs_created
    return view


def message_view(message: WorkflowInvocationMessage, ids: IdEncoder, history_id: int | None = None) -> dict[str, Any]:
    """A typed reason, with Galaxy's field names (step ids are order indexes)."""
    view: dict[str, Any] = {"reason": message.reason}
    fields = {
        "workflow_step_id": message.workflow_step_index,
        "dependent_workflow_step_id": message.dependent_workflow_step_index,
        "job_id": ids.encode(message.job_id) if message.job_id else None,
        "hda_id": ids.encode(message.hda_id) if message.hda_id else None,
        "hdca_id": ids.encode(message.hdca_id) if message.hdca_id else None,
        "output_name": message.output_name,
        "details": message.details,
    }
    if message.reason == "history_deleted" and history_id is not None:
        fields["history_id"] = ids.encode(history_id)
    view.update({k: v for k, v in fields.items() if v is not None})
    return view


def invocation_view(session: Session, invocation: WorkflowInvocation, ids: IdEncoder, *, view: str = "element",
                    step_details: bool = False) -> dict[str, Any]:
    """An invocation: summary (view=collection) or with steps, inputs, outputs and messages."""
    result: dict[str, Any] = {
        "model_class": "WorkflowInvocation",
        "id": ids.encode(invocation.id),
        "uuid": invocation.uuid,
        "history_id": ids.encode(invocation.history_id),
        "workflow_id": workflow_id_of(session, invocation, ids),
        "state": invocation.state,
        "scheduler": invocation.scheduler,
        "create_time": invocation.create_time.isoformat(),
        "update_time": invocation.update_time.isoformat(),
    }
    if view == "collection":
        return result
    plan = load_plan(session, invocation.workflow_id)
    # A just-created invocation carries its step rows, and has no messages yet: no query.
    fresh = getattr(invocation, "new_steps", None)
    steps = fresh if fresh is not None else list(session.scalars(
        sa.select(WorkflowInvocationStep).where(WorkflowInvocationStep.invocation_id == invocation.id)
        .order_by(WorkflowInvocationStep.order_index)
    ))
    jobs_by_step: dict[int, list[Any]] = {}
    if step_details:
        for job in session.execute(
            sa.select(Job.id, Job.state, Job.tool_id, Job.exit_code, Job.create_time, Job.update_time,
                      Job.invocation_step_id)
            .where(Job.invocation_id == invocation.id).order_by(Job.invocation_step_id, Job.element_index)
            .limit(MAX_STEP_JOBS_IN_VIEW)
        ):
            jobs_by_step.setdefault(job.invocation_step_id, []).append(job)
    result["steps"] = [step_view(s, plan, ids, jobs=jobs_by_step.get(s.id, []) if step_details else None)
                       for s in steps]
    result.update(_inputs_and_outputs(invocation, plan, steps, ids))
    result["messages"] = [] if fresh is not None else [message_view(m, ids, invocation.history_id) for m in session.scalars(
        sa.select(WorkflowInvocationMessage).where(WorkflowInvocationMessage.invocation_id == invocation.id)
        .order_by(WorkflowInvocationMessage.id))]
    return result


def _inputs_and_outputs(invocation: WorkflowInvocation, plan: WorkflowPlan, steps: list[WorkflowInvocationStep],
                        ids: IdEncoder) -> dict[str, Any]:
    inputs, parameters = {}, {}
    for plan_step in plan.input_steps:
        value = (invocation.inputs or {}).get(str(plan_step.order_index))
        label = plan_step.label or str(plan_step.order_index)
        if plan_step.type == StepType.PARAMETER_INPUT:
            parameters[str(plan_step.order_index)] = {
                "parameter_value": value.get("value") if value else None, "label": label,
                "workflow_step_id": ids.encode(plan_step.id)}
        elif value:
            inputs[str(plan_step.order_index)] = {**_encode_value(value, ids), "label": label,
                                                  "workflow_step_id": ids.encode(plan_step.id)}
    by_index = {s.order_index: s for s in steps}
    outputs, collections, values = {}, {}, {}
    for label, (index, output_name) in plan.output_sources().items():
        row = by_index.get(index)
        value = (row.outputs or {}).get(output_name) if row is not None else None
        if not value:
            continue
        if value.get("src") == "param":
            values[label] = value.get("value")
            continue
        entry = {**_encode_value(value, ids), "workflow_step_id": ids.encode(plan.step(index).id)}
        (outputs if value["src"] == "hda" else collections)[label] = entry
    return {"inputs": inputs, "input_step_parameters": parameters, "outputs": outputs,
            "output_collections": collections, "output_values": values}


def jobs_summary(session: Session, invocation_ids: list[int], encoded_id: str) -> dict[str, Any]:
    """Job counts by state over an invocation and its sub-invocations."""
    counts = dict(session.execute(
        sa.select(Job.state, sa.func.count()).where(Job.invocation_id.in_(invocation_ids)).group_by(Job.state)
    ).all())
    return {"id": encoded_id, "model": "WorkflowInvocation", "states": counts, "populated_state": "ok"}


def step_jobs_summary(session: Session, invocation: WorkflowInvocation, ids: IdEncoder) -> list[dict[str, Any]]:
    """One entry per job-producing step: a map-over as ImplicitCollectionJobs, else its Job."""
    counts: dict[int, Counter[str]] = {}
    for step_id, state, count in session.execute(
        sa.select(Job.invocation_step_id, Job.state, sa.func.count())
        .where(Job.invocation_id == invocation.id).group_by(Job.invocation_step_id, Job.state)
    ):
        counts.setdefault(step_id, Counter())[state] += count
    summaries = []
    for step in session.scalars(
        sa.select(WorkflowInvocationStep).where(WorkflowInvocationStep.invocation_id == invocation.id)
        .order_by(WorkflowInvocationStep.order_index)
    ):
        states = counts.get(step.id)
        if not states:
            continue
        if step.mapping is not None:
            summaries.append({"id": ids.encode(step.id), "model": "ImplicitCollectionJobs",
                              "states": dict(states), "populated_state": "ok"})
        else:
            summaries.append({"id": ids.encode(step.job_id) if step.job_id else ids.encode(step.id), "model": "Job",
                              "states": dict(states), "populated_state": "ok"})
    return summaries


def request_view(invocation: WorkflowInvocation, stored: StoredWorkflow | None, ids: IdEncoder) -> dict[str, Any]:
    """The invoke payload that would run this invocation again (``GET …/request``)."""
    inputs = {}
    for key, value in (invocation.inputs or {}).items():
        if value and value.get("src") == "param":
            inputs[key] = value.get("value")
        elif value:
            inputs[key] = _encode_value(value, ids)
    return {
        "workflow_id": ids.encode(stored.id) if stored is not None else ids.encode(invocation.workflow_id),
        "history_id": ids.encode(invocation.history_id),
        "history": f"hist_id={ids.encode(invocation.history_id)}",
        "inputs": inputs,
        "inputs_by": "step_index",
        "parameters": invocation.parameters or {},
        "parameters_normalized": True,
        "replacement_params": invocation.replacement_params or {},
        "scheduler": invocation.scheduler,
        "instance": False,
    }
