"""Checks of a workflow's graph: unique labels, connections to real outputs, subworkflow inputs, no cycles."""

from __future__ import annotations

from typing import TYPE_CHECKING

from app.errors import RequestParameterInvalid
from app.models.workflows import StepType
from app.workflows import conditions

if TYPE_CHECKING:
    from app.workflows.parse import ParsedConnection, ParsedStep, ToolOutputs

# The output every input and pause step has.
DEFAULT_OUTPUT = "output"


def invalid(message: str) -> RequestParameterInvalid:
    """The 400 of an invalid workflow."""
    return RequestParameterInvalid(f"invalid workflow: {message}")


def check_unique(steps: list[ParsedStep], explicit: set[int]) -> None:
    """Labels and uuids are unique; a label taken from an input's name yields to an explicit one."""
    labels: dict[str, int] = {}
    uuids: set[str] = set()
    for step in sorted(steps, key=lambda s: s.order_index not in explicit):
        if step.label and step.label in labels:
            if step.order_index in explicit:
                raise invalid(f"steps {labels[step.label]} and {step.order_index} have the same label {step.label!r}")
            step.label = None
        if step.label:
            labels[step.label] = step.order_index
        if step.uuid in uuids:
            raise invalid(f"{step.describe()}: duplicate step uuid {step.uuid}")
        uuids.add(step.uuid)


def step_output_names(step: ParsedStep, tool_outputs: ToolOutputs | None) -> set[str] | None:
    """The outputs a step offers, or None when they cannot be known (an unknown tool)."""
    if step.type in StepType.INPUTS or step.type == StepType.PAUSE:
        return {DEFAULT_OUTPUT}
    if step.type == StepType.SUBWORKFLOW:
        assert step.subworkflow is not None
        return step.subworkflow.output_labels()
    declared = {str(o["name"]) for o in step.outputs if o.get("name")}
    if declared:
        return declared
    return tool_outputs(step.tool_id) if tool_outputs and step.tool_id else None


def check_connections(steps: list[ParsedStep], tool_outputs: ToolOutputs | None) -> None:
    for step in steps:
        for conn in step.connections:
            source = steps[conn.source_index]
            names = step_output_names(source, tool_outputs)
            if names is not None and conn.output_name not in names:
                offered = ", ".join(sorted(names)) or "none"
                raise invalid(f"{step.describe()}: input {conn.input_name!r} is connected to output "
                               f"{conn.output_name!r} of {source.describe()}, which has no such output (outputs: {offered})")
            if step.type == StepType.SUBWORKFLOW:
                _resolve_subworkflow_input(step, conn)


def _resolve_subworkflow_input(step: ParsedStep, conn: ParsedConnection) -> None:
    """Point a connection into a subworkflow at the subworkflow's input step."""
    assert step.subworkflow is not None
    inputs = step.subworkflow.input_steps()
    if conn.input_subworkflow_step_index is not None:
        if any(s.order_index == conn.input_subworkflow_step_index for s in inputs):
            return
        raise invalid(f"{step.describe()}: input {conn.input_name!r} targets subworkflow step "
                       f"{conn.input_subworkflow_step_index}, which is not one of its inputs")
    for sub in inputs:
        if conn.input_name in (sub.label, str(sub.order_index)):
            conn.input_subworkflow_step_index = sub.order_index
            return
    if step.when and conditions.parse_condition(step.when).input_name == conn.input_name:
        return  # the condition's own input (Galaxy's 'when' connection) feeds no subworkflow input
    labels = ", ".join(repr(s.label or str(s.order_index)) for s in inputs) or "none"
    raise invalid(f"{step.describe()}: the subworkflow has no input {conn.input_name!r} (inputs: {labels})")


def check_workflow_outputs(steps: list[ParsedStep]) -> None:
    """Output labels are unique (outputs naming a missing output are kept: real exports have them)."""
    labels: set[str] = set()
    for step in steps:
        for output in step.workflow_outputs:
            label = output.get("label")
            if label:
                if label in labels:
                    raise invalid(f"two workflow outputs have the label {label!r}")
                labels.add(label)


def check_acyclic(steps: list[ParsedStep]) -> None:
    """Refuse cycles, naming the steps of one."""
    children: dict[int, list[int]] = {s.order_index: [] for s in steps}
    for step in steps:
        for conn in step.connections:
            children[conn.source_index].append(step.order_index)
    state: dict[int, int] = {}  # 1 = on the path, 2 = done
    for start in children:
        if state.get(start):
            continue
        stack: list[tuple[int, int]] = [(start, 0)]
        path: list[int] = []
        while stack:
            node, position = stack.pop()
            if position == 0:
                state[node] = 1
                path.append(node)
            if position < len(children[node]):
                stack.append((node, position + 1))
                child = children[node][position]
                if state.get(child) == 1:
                    cycle = path[path.index(child):] + [child]
                    raise invalid("the steps form a cycle: " + " → ".join(steps[i].describe() for i in cycle))
                if not state.get(child):
                    stack.append((child, 0))
            else:
                state[node] = 2
                path.pop()
