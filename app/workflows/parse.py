"""Validating a native workflow description into a ``ParsedWorkflow``.

Every problem becomes a 400 naming the step: unknown module types, malformed steps and
connections, connections to missing steps or outputs, duplicate labels, cycles. Unknown
tools are accepted here, as Galaxy accepts them at import; invoking refuses them.
"""

from __future__ import annotations

import json
import uuid as uuidlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from app.errors import RequestParameterInvalid
from app.models.workflows import StepType
from app.workflows import actions, conditions, graph
from app.workflows.jsontext import json_mapping

MAX_DEPTH = 10
MAX_STEPS = 10_000
GENERIC_INPUT_NAMES = frozenset({"input dataset", "input dataset collection", "input parameter"})
PARAMETER_TYPES = frozenset({"text", "integer", "float", "boolean", "color", "directory_uri"})

# A tool's output names, or None when the tool is not known (any name is then accepted).
ToolOutputs = Callable[[str], "set[str] | None"]


@dataclass
class ParsedConnection:
    """One input connection of a step, by order indexes."""

    input_name: str
    source_index: int
    output_name: str
    input_subworkflow_step_index: int | None = None


@dataclass
class ParsedStep:
    """A validated step."""

    order_index: int
    type: str
    label: str | None
    name: str | None
    uuid: str
    annotation: str | None
    tool_id: str | None
    tool_version: str | None
    tool_state: dict[str, Any]
    outputs: list[dict[str, Any]]
    workflow_outputs: list[dict[str, Any]]
    post_job_actions: dict[str, Any]
    position: dict[str, Any] | None
    connections: list[ParsedConnection] = field(default_factory=list)
    subworkflow: "ParsedWorkflow | None" = None
    when: str | None = None  # a conditional step's expression (app.workflows.conditions)

    def describe(self) -> str:
        """'step 2 (label "x")' for messages."""
        return f"step {self.order_index}" + (f" ({self.label!r})" if self.label else "")


@dataclass
class ParsedWorkflow:
    """A validated workflow: its steps in order index order and its normalized definition."""

    name: str
    annotation: str | None
    uuid: str
    tags: list[str]
    steps: list[ParsedStep]
    definition: dict[str, Any]

    def output_labels(self) -> set[str]:
        """Names of the workflow's outputs a parent workflow can connect to.

        Labels, and Galaxy's older ``"<order index>:<output name>"`` form for every output.
        """
        names = {o["label"] for s in self.steps for o in s.workflow_outputs if o.get("label")}
        names.update(f"{s.order_index}:{o['output_name']}" for s in self.steps for o in s.workflow_outputs)
        return names

    def input_steps(self) -> list[ParsedStep]:
        """The input steps."""
        return [s for s in self.steps if s.type in StepType.INPUTS]


def parse_workflow(native: dict[str, Any], *, tool_outputs: ToolOutputs | None = None, depth: int = 0) -> ParsedWorkflow:
    """Validate a native description; raise RequestParameterInvalid naming the first problem."""
    if depth > MAX_DEPTH:
        raise _invalid(f"subworkflows nested deeper than {MAX_DEPTH} levels")
    raw_steps = _raw_steps(native.get("steps"))
    external_to_index = {}
    for index, (external_id, _) in enumerate(raw_steps):
        if external_id in external_to_index:
            raise _invalid(f"two steps have the id {external_id!r}")
        external_to_index[external_id] = index
    steps = [
        _parse_step(index, raw, external_to_index, tool_outputs, depth)
        for index, (_, raw) in enumerate(raw_steps)
    ]
    graph.check_unique(steps, {i for i, (_, raw) in enumerate(raw_steps) if raw.get("label")})
    graph.check_connections(steps, tool_outputs)
    graph.check_workflow_outputs(steps)
    graph.check_acyclic(steps)
    name = native.get("name") or "Unnamed workflow"
    if not isinstance(name, str):
        raise _invalid("'name' must be text")
    workflow_uuid = _uuid(native.get("uuid"))
    tags = native.get("tags") or []
    if isinstance(tags, str):
        tags = [t for t in tags.split(",") if t]
    parsed = ParsedWorkflow(
        name=name[:255], annotation=_text(native.get("annotation")), uuid=workflow_uuid,
        tags=[str(t) for t in tags if t], steps=steps, definition={},
    )
    parsed.definition = _normalized_definition(native, parsed, raw_steps, external_to_index)
    return parsed


_invalid = graph.invalid


def _raw_steps(steps: Any) -> list[tuple[Any, dict[str, Any]]]:
    """Steps as (external id, dict) in order of their keys."""
    if isinstance(steps, list):
        items = [(step.get("id", i) if isinstance(step, dict) else i, step) for i, step in enumerate(steps)]
    elif isinstance(steps, dict):
        try:
            keys = sorted(steps, key=lambda k: int(k))
        except (TypeError, ValueError):
            raise _invalid("step keys must be integers ('0', '1', ...)") from None
        items = []
        for key in keys:
            step = steps[key]
            items.append((step.get("id", key) if isinstance(step, dict) else key, step))
    else:
        raise _invalid("'steps' must be a mapping of step index to step")
    if len(items) > MAX_STEPS:
        raise _invalid(f"more than {MAX_STEPS} steps")
    result = []
    for external_id, step in items:
        if not isinstance(step, dict):
            raise _invalid(f"step {external_id!r} is not a mapping")
        try:
            result.append((int(external_id), step))
        except (TypeError, ValueError):
            raise _invalid(f"step id {external_id!r} is not an integer") from None
    return result


def _parse_step(index: int, raw: dict[str, Any], external_to_index: dict[int, int],
                tool_outputs: ToolOutputs | None, depth: int) -> ParsedStep:
    where = f"step {index}"
    step_type = raw.get("type") or (StepType.TOOL if raw.get("tool_id") else None)
    if step_type not in StepType.ALL:
        known = ", ".join(sorted(StepType.ALL))
        raise _invalid(f"{where}: unknown module type {step_type!r} (known: {known})")
    state = decode_tool_state(raw.get("tool_state"), where)
    label = _text(raw.get("label"))
    name = _text(raw.get("name"))
    if step_type in StepType.INPUTS and not label:
        default = _text(state.get("name")) or _first_input_name(raw)
        if default and default.lower() not in GENERIC_INPUT_NAMES:
            label = default
    step = ParsedStep(
        order_index=index, type=step_type, label=label, name=name, uuid=_uuid(raw.get("uuid")),
        annotation=_text(raw.get("annotation")), tool_id=None, tool_version=None, tool_state=state,
        outputs=_list_of_dicts(raw.get("outputs"), f"{where}: outputs"),
        workflow_outputs=_workflow_outputs(raw.get("workflow_outputs"), where),
        post_job_actions=raw.get("post_job_actions") if isinstance(raw.get("post_job_actions"), dict) else {},
        position=raw.get("position") if isinstance(raw.get("position"), dict) else None,
        connections=_connections(raw.get("input_connections"), external_to_index, where),
    )
    if step_type == StepType.TOOL:
        tool_id = raw.get("tool_id") or raw.get("content_id")
        if not isinstance(tool_id, str) or not tool_id.strip():
            raise _invalid(f"{where}: a tool step needs a tool_id")
        step.tool_id = tool_id.strip()[:255]
        version = raw.get("tool_version")
        step.tool_version = str(version)[:64] if version not in (None, "") else None
        try:
            step.post_job_actions = actions.normalize_actions(raw.get("post_job_actions"), step.describe())
        except actions.ActionError as exc:
            raise _invalid(f"{step.describe()}: {exc}") from None
    elif step_type == StepType.SUBWORKFLOW:
        embedded = raw.get("subworkflow")
        if not isinstance(embedded, dict):
            raise _invalid(f"{where}: a subworkflow step must embed its workflow under 'subworkflow'")
        try:
            step.subworkflow = parse_workflow(embedded, tool_outputs=tool_outputs, depth=depth + 1)
        except RequestParameterInvalid as exc:
            inner = exc.message.removeprefix("invalid workflow: ")
            raise _invalid(f"{where} (subworkflow): {inner}") from None
    elif step_type == StepType.PARAMETER_INPUT:
        ptype = state.get("parameter_type", "text")
        if ptype not in PARAMETER_TYPES:
            raise _invalid(f"{where}: unknown parameter_type {ptype!r}")
    step.when = _when(step, raw.get("when"))
    if step_type in StepType.INPUTS and step.connections:
        raise _invalid(f"{where}: an input step cannot have input connections")
    if step_type == StepType.PAUSE and len(step.connections) > 1:
        raise _invalid(f"{where}: a pause step takes one input")
    return step


def _when(step: ParsedStep, when: Any) -> str | None:
    """A conditional step's expression, checked: a supported form reading one of the step's inputs."""
    if when in (None, "", "null"):
        return None
    where = step.describe()
    if step.type not in (StepType.TOOL, StepType.SUBWORKFLOW):
        raise _invalid(f"{where}: only tool and subworkflow steps can be conditional ('when')")
    if not isinstance(when, str):
        raise _invalid(f"{where}: 'when' must be an expression such as $(inputs.should_run)")
    try:
        condition = conditions.parse_condition(when)
    except conditions.ConditionError as exc:
        raise _invalid(f"{where}: {exc}") from None
    connected = {conn.input_name for conn in step.connections}
    if condition.input_name not in connected:
        known = ", ".join(sorted(connected)) or "none"
        raise _invalid(f"{where}: 'when' reads inputs.{condition.input_name}, which is not connected "
                       f"(connect a boolean parameter to an input of that name; connected: {known})")
    return when.strip()


def decode_tool_state(value: Any, where: str) -> dict[str, Any]:
    """A step's tool state as a dict, undoing Galaxy's legacy JSON-in-JSON encoding."""
    if value in (None, ""):
        return {}
    try:
        value = json_mapping(value, f"{where}: tool_state")
    except ValueError as exc:
        raise _invalid(str(exc)) from None
    return {str(k): _decode_nested(v) for k, v in value.items()}


def _decode_nested(value: Any) -> Any:
    """Legacy exports JSON-encode each value once more: decode those that are objects or lists."""
    if isinstance(value, str) and value[:1] in ("{", "[", '"'):
        try:
            decoded = json.loads(value)
        except ValueError:
            return value
        return _decode_nested(decoded) if isinstance(decoded, str) else decoded
    if isinstance(value, dict):
        return {k: _decode_nested(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode_nested(v) for v in value]
    return value


def _connections(value: Any, external_to_index: dict[int, int], where: str) -> list[ParsedConnection]:
    if value in (None, {}, []):
        return []
    if not isinstance(value, dict):
        raise _invalid(f"{where}: input_connections must be a mapping of input name to connection(s)")
    result = []
    for input_name, conns in value.items():
        for conn in conns if isinstance(conns, list) else [conns]:
            if not isinstance(conn, dict) or "id" not in conn or "output_name" not in conn:
                raise _invalid(f"{where}: connection {input_name!r} must be a mapping with 'id' and 'output_name'")
            try:
                source = int(conn["id"])
            except (TypeError, ValueError):
                raise _invalid(f"{where}: connection {input_name!r} names step {conn['id']!r}, not a step id") from None
            if source not in external_to_index:
                raise _invalid(f"{where}: input {input_name!r} is connected to step {source}, which does not exist")
            sub_index = conn.get("input_subworkflow_step_id")
            result.append(ParsedConnection(
                input_name=str(input_name), source_index=external_to_index[source],
                output_name=str(conn["output_name"]),
                input_subworkflow_step_index=int(sub_index) if isinstance(sub_index, int | str) and str(sub_index).isdigit() else None,
            ))
    return result


def _workflow_outputs(value: Any, where: str) -> list[dict[str, Any]]:
    outputs = []
    for item in value or []:
        if isinstance(item, str):
            item = {"output_name": item}
        if not isinstance(item, dict) or not item.get("output_name"):
            raise _invalid(f"{where}: each workflow output needs an output_name")
        outputs.append({"output_name": str(item["output_name"]), "label": _text(item.get("label")),
                        "uuid": _text(item.get("uuid"))})
    return outputs


def _list_of_dicts(value: Any, where: str) -> list[dict[str, Any]]:
    if value in (None, ""):
        return []
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise _invalid(f"{where} must be a list of mappings")
    return value


def _first_input_name(raw: dict[str, Any]) -> str | None:
    inputs = raw.get("inputs")
    if isinstance(inputs, list) and inputs and isinstance(inputs[0], dict):
        return _text(inputs[0].get("name"))
    return None


def _normalized_definition(native: dict[str, Any], parsed: ParsedWorkflow,
                           raw_steps: list[tuple[int, dict[str, Any]]], external_to_index: dict[int, int]) -> dict[str, Any]:
    """The native dict with steps keyed by order index, uuids filled and subworkflows normalized."""
    definition = {k: v for k, v in native.items() if k != "steps"}
    definition.update({"a_galaxy_workflow": "true", "format-version": native.get("format-version", "0.1"),
                       "name": parsed.name, "uuid": parsed.uuid})
    steps: dict[str, Any] = {}
    for (_, raw), step in zip(raw_steps, parsed.steps, strict=True):
        out = dict(raw)
        out.update({"id": step.order_index, "uuid": step.uuid, "type": step.type, "label": step.label})
        connections: dict[str, list[dict[str, Any]]] = {}
        for conn in step.connections:
            item: dict[str, Any] = {"id": conn.source_index, "output_name": conn.output_name}
            if conn.input_subworkflow_step_index is not None:
                item["input_subworkflow_step_id"] = conn.input_subworkflow_step_index
            connections.setdefault(conn.input_name, []).append(item)
        out["input_connections"] = connections
        if step.subworkflow is not None:
            out["subworkflow"] = step.subworkflow.definition
        steps[str(step.order_index)] = out
    definition["steps"] = steps
    return definition


def _uuid(value: Any) -> str:
    if isinstance(value, str) and value not in ("", "None"):
        try:
            return str(uuidlib.UUID(value))
        except ValueError:
            raise _invalid(f"{value!r} is not a valid uuid") from None
    return str(uuidlib.uuid4())


def _text(value: Any) -> str | None:
    if value is None or value == "":
        return None
    return str(value)
