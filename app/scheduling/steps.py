"""Scheduling one step, by module type: inputs, pause, subworkflow (tools: ``tool_step``).

Each function returns DONE (the step is scheduled), WAITING (not yet: inputs not ready,
a pause without its action, a sub-invocation still running) or BUDGET (the job budget ran
out part-way; the step goes on in the next iteration).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from app.models import InvocationState, StepType, WorkflowInvocation, WorkflowInvocationStep
from app.scheduling import subworkflow_mapping, subworkflow_skip
from app.scheduling.values import StepFailure
from app.schemas.tasks import AdvanceInvocation
from app.workflows import conditions
from app.workflows.plan import PlanStep, WorkflowPlan, load_plan

if TYPE_CHECKING:
    from app.scheduling.run import InvocationRun

DONE = "done"
WAITING = "waiting"
BUDGET = "budget"
OUTPUT = "output"


def schedule(run: "InvocationRun", step: PlanStep, row: WorkflowInvocationStep, job_budget: int) -> str:
    """Schedule one step whose source steps are all scheduled."""
    if step.is_input:
        return schedule_input(run, step, row)
    if step.type == StepType.PAUSE:
        return schedule_pause(run, step, row)
    if step.type == StepType.SUBWORKFLOW:
        return schedule_subworkflow(run, step, row)
    from app.scheduling.tool_step import schedule_tool

    return schedule_tool(run, step, row, job_budget)


def schedule_input(run: "InvocationRun", step: PlanStep, row: WorkflowInvocationStep) -> str:
    """An input step outputs what the invocation was given for it (or its default)."""
    value = (run.invocation.inputs or {}).get(str(step.order_index))
    if value is None and step.type == StepType.PARAMETER_INPUT and "default" in step.tool_state:
        value = {"src": "param", "value": step.tool_state["default"]}
    run.mark_scheduled(row, {OUTPUT: value})
    return DONE


def schedule_pause(run: "InvocationRun", step: PlanStep, row: WorkflowInvocationStep) -> str:
    """A pause waits (state ready, action null) once its input is done; ``action: true`` passes it on."""
    value = next((v for values in run.connected_values(step).values() for v in values), None)
    source = step.connections[0].source_index if step.connections else step.order_index
    if row.state != "ready":
        if not run.values.ready(value, source_step=source, dependent_step=step.order_index):
            return WAITING
        run.mark_ready(row)
        return WAITING
    if row.action is True:
        run.mark_scheduled(row, {OUTPUT: value})
        return DONE
    return WAITING


def schedule_subworkflow(run: "InvocationRun", step: PlanStep, row: WorkflowInvocationStep) -> str:
    """Start the subworkflow as a sub-invocation once its inputs are done; the step is scheduled when that one is."""
    if row.subworkflow_invocation_id is None:
        # Started once its inputs are done: the jobs making them wake this invocation, not the sub-invocation.
        for conn in step.connections:
            value = (run.rows[conn.source_index].outputs or {}).get(conn.output_name)
            if not run.values.ready(value, source_step=conn.source_index, dependent_step=step.order_index):
                return WAITING
        return WAITING if start_subinvocation(run, step, row) else DONE
    state = run.session.scalar(
        sa.select(WorkflowInvocation.state).where(WorkflowInvocation.id == row.subworkflow_invocation_id)
    )
    if state in (InvocationState.SCHEDULED, InvocationState.COMPLETED):
        outputs = subinvocation_outputs(run, step, row.subworkflow_invocation_id)
        run.mark_scheduled(row, subworkflow_mapping.parent_outputs(outputs, row.mapping))
        return DONE
    if state in (InvocationState.FAILED, InvocationState.CANCELLED):
        raise StepFailure("unexpected_failure", step=step.order_index,
                          details=f"the subworkflow of {step.describe()} ended {state}")
    return WAITING


def start_subinvocation(run: "InvocationRun", step: PlanStep, row: WorkflowInvocationStep) -> bool:
    """Create the sub-invocation with the connected values as its inputs, and wake it.

    False when a false ``when`` skipped the subworkflow instead: the step is then scheduled.
    """
    from app.services.invocations import create_invocation_rows

    assert step.subworkflow_id is not None
    sub_plan = load_plan(run.session, step.subworkflow_id)
    inputs = _subinvocation_inputs(run, step, sub_plan)
    mapped = subworkflow_mapping.plan_mapping(run, step, sub_plan, inputs)
    if step.when and subworkflow_skip.skips(run, step, mapped is not None):
        run.mark_scheduled(row, subworkflow_skip.skipped_outputs(run, sub_plan))
        return False
    if mapped is not None:  # a collection given to a smaller input: the subworkflow maps over it
        inputs = mapped.inputs
        row.mapping = mapped.record()
    invocation = run.invocation
    sub = create_invocation_rows(
        run.session, user_id=invocation.user_id, plan=sub_plan, history_id=invocation.history_id,
        scheduler=invocation.scheduler, inputs=inputs, parameters={}, stored_workflow_id=None,
        parent_invocation_id=invocation.id, parent_step_id=row.id,
    )
    row.subworkflow_invocation_id = sub.id
    run.mark_ready(row)
    run.enqueuer.send(run.session, AdvanceInvocation(invocation_id=sub.id))
    return True


def _subinvocation_inputs(run: "InvocationRun", step: PlanStep, sub_plan: WorkflowPlan) -> dict[str, Any]:
    """The sub-invocation's inputs, by input step index: the values connected to the subworkflow step."""
    condition_input = conditions.parse_condition(step.when).input_name if step.when else None
    inputs: dict[str, Any] = {}
    for conn in step.connections:
        value = (run.rows[conn.source_index].outputs or {}).get(conn.output_name)
        index = conn.input_subworkflow_step_index
        if index is None and conn.input_name == condition_input:
            continue  # read by the condition only
        if index is None or index >= len(sub_plan.steps):
            raise StepFailure("unexpected_failure", step=step.order_index,
                              details=f"input {conn.input_name!r} does not name an input of the subworkflow")
        inputs[str(index)] = value
    for sub_step in sub_plan.input_steps:
        if str(sub_step.order_index) not in inputs and not sub_step.optional:
            raise StepFailure("unexpected_failure", step=step.order_index,
                              details=f"subworkflow input {sub_step.label or sub_step.order_index!r} is not connected")
    return inputs


def subinvocation_outputs(run: "InvocationRun", step: PlanStep, sub_id: int) -> dict[str, Any]:
    """The sub-invocation's workflow outputs, by label and by 'index:name'."""
    assert step.subworkflow_id is not None
    sub_plan = load_plan(run.session, step.subworkflow_id)
    rows = {
        r.order_index: r.outputs or {}
        for r in run.session.scalars(
            sa.select(WorkflowInvocationStep).where(WorkflowInvocationStep.invocation_id == sub_id)
        )
    }
    outputs: dict[str, Any] = {}
    for sub_step in sub_plan.steps:
        for output in sub_step.workflow_outputs:
            value = rows.get(sub_step.order_index, {}).get(output["output_name"])
            outputs[f"{sub_step.order_index}:{output['output_name']}"] = value
            if output.get("label"):
                outputs[output["label"]] = value
    return outputs
