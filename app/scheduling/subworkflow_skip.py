"""Conditional subworkflow steps: a false ``when`` skips the whole subworkflow, as in Galaxy.

The condition is evaluated once, in the parent, before any sub-invocation exists; when it
is false (or the value it reads was made by a skipped step) no sub-invocation is started
and none of its jobs run. Each of the subworkflow's outputs becomes what a skipped tool
step's output is: a hidden dataset holding JSON ``null`` (``expression.json``, state ok),
flagged ``"skipped"`` on the step, so later steps connected to it are skipped in turn.

A subworkflow mapped over a collection gets one sub-invocation for every element, which
a single condition cannot gate element by element; such a step with ``when`` fails the
invocation with a reason saying so, rather than running some elements it should not.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from app.models import Dataset, DatasetState
from app.scheduling import skipping
from app.scheduling.values import StepFailure
from app.services.histories import allocate_hids
from app.workflows.plan import PlanStep, WorkflowPlan

if TYPE_CHECKING:
    from app.scheduling.run import InvocationRun

NULL_EXTENSION = "expression.json"


def skips(run: "InvocationRun", step: PlanStep, mapped: bool) -> bool:
    """True when the conditional subworkflow step is skipped; a mapped one is refused."""
    if mapped:
        raise StepFailure("unexpected_failure", step=step.order_index,
                          details=f"{step.describe()} maps the subworkflow over a collection and has a 'when'; "
                                  "conditional subworkflow steps that map over a collection are not supported "
                                  "(put the condition on the subworkflow's steps instead)")
    return skipping.single_condition_skips(run, step, run.connected_values(step))


def skipped_outputs(run: "InvocationRun", sub_plan: WorkflowPlan) -> dict[str, Any]:
    """The skipped step's outputs: one hidden JSON-null dataset per subworkflow output, by label and 'index:name'."""
    wanted = [(sub_step, output) for sub_step in sub_plan.steps for output in sub_step.workflow_outputs]
    if not wanted:
        return {}
    invocation = run.invocation
    first_hid = allocate_hids(run.session, invocation.history_id, len(wanted))
    datasets = [
        Dataset(history_id=invocation.history_id, user_id=invocation.user_id, hid=first_hid + offset,
                name=output.get("label") or output["output_name"], state=DatasetState.OK,
                extension=NULL_EXTENSION, visible=False)
        for offset, (_, output) in enumerate(wanted)
    ]
    run.session.add_all(datasets)
    run.session.flush()
    skipping.write_nulls(run, [d.id for d in datasets])
    outputs: dict[str, Any] = {}
    for (sub_step, output), dataset in zip(wanted, datasets):
        value = {"src": "hda", "id": dataset.id, skipping.SKIPPED: True}
        outputs[f"{sub_step.order_index}:{output['output_name']}"] = value
        if output.get("label"):
            outputs[output["label"]] = value
    return outputs

