"""Resolving an invoke request's inputs and parameters against a workflow plan.

Inputs are keyed by step order index or uuid (Galaxy's default ``inputs_by``), by step id,
or by label (``inputs_by=name``). Datasets and collections must be the user's; values
must suit the input step's type. Everything is checked with a handful of queries, however
large the workflow: the request stays O(inputs).
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from app.errors import RequestParameterInvalid, RequestParameterMissing
from app.ids import IdEncoder
from app.models import Dataset, DatasetCollection, HistoryDatasetCollection, StepType, User
from app.workflows.plan import PlanStep, WorkflowPlan

DEFAULT_INPUTS_BY = "step_index|step_uuid|name"
INPUTS_BY_KINDS = ("step_index", "step_uuid", "step_id", "name")


def find_step(plan: WorkflowPlan, key: str, inputs_by: str, ids: IdEncoder | None = None) -> PlanStep | None:
    """The step a request key names under an ``inputs_by`` rule."""
    for kind in inputs_by.split("|"):
        for step in plan.steps:
            if kind == "step_index" and key == str(step.order_index):
                return step
            if kind == "step_uuid" and key == step.uuid:
                return step
            if kind == "step_id" and (key == str(step.id) or (ids is not None and ids.decode(key) == step.id)):
                return step
            if kind == "name" and step.label is not None and key == step.label:
                return step
    return None


def check_inputs_by(inputs_by: str | None) -> str:
    """The rule to use (400 for an unknown one)."""
    if not inputs_by:
        return DEFAULT_INPUTS_BY
    kinds = inputs_by.split("|")
    unknown = [k for k in kinds if k not in INPUTS_BY_KINDS]
    if unknown:
        raise RequestParameterInvalid(f"inputs_by: unknown {unknown[0]!r} (use step_index, step_uuid, step_id or name)")
    return inputs_by


def resolve_inputs(session: Session, user: User, plan: WorkflowPlan, raw: dict[str, Any], inputs_by: str,
                   ids: IdEncoder) -> dict[str, Any]:
    """{order index: value} for the input steps; 400 for unknown, missing or ill-typed inputs."""
    chosen: dict[int, tuple[PlanStep, Any]] = {}
    for key, value in raw.items():
        step = find_step(plan, str(key), inputs_by, ids)
        if step is None or not step.is_input:
            names = ", ".join(repr(s.label or str(s.order_index)) for s in plan.input_steps) or "none"
            raise RequestParameterInvalid(f"inputs: the workflow has no input {key!r} (its inputs: {names})")
        chosen[step.order_index] = (step, value)
    resolved: dict[str, Any] = {}
    wanted_hdas: dict[int, PlanStep] = {}
    wanted_hdcas: dict[int, PlanStep] = {}
    for index, (step, value) in chosen.items():
        if value is None or value == "":
            continue
        if step.type == StepType.PARAMETER_INPUT:
            resolved[str(index)] = {"src": "param", "value": coerce_parameter(step, value)}
            continue
        src, object_id = _reference(step, value, ids)
        if src == "hda":
            if step.type != StepType.DATA_INPUT:
                raise RequestParameterInvalid(f"inputs: {_name(step)} takes a collection (src 'hdca'), not a dataset")
            wanted_hdas[object_id] = step
        else:
            if step.type != StepType.DATA_COLLECTION_INPUT:
                raise RequestParameterInvalid(f"inputs: {_name(step)} takes a dataset (src 'hda'), not a collection")
            wanted_hdcas[object_id] = step
        resolved[str(index)] = {"src": src, "id": object_id}
    _check_datasets(session, user, wanted_hdas, ids)
    _check_collections(session, user, wanted_hdcas, ids)
    for step in plan.input_steps:
        if str(step.order_index) not in resolved and not step.optional:
            raise RequestParameterMissing(f"inputs: {_name(step)} is required")
    return resolved


def _name(step: PlanStep) -> str:
    return f"input {step.label!r} (step {step.order_index})" if step.label else f"input step {step.order_index}"


def _reference(step: PlanStep, value: Any, ids: IdEncoder) -> tuple[str, int]:
    if not isinstance(value, dict) or "id" not in value:
        raise RequestParameterInvalid(f"inputs: {_name(step)} must be given as {{'src': 'hda' or 'hdca', 'id': ID}}")
    src = value.get("src", "hda")
    if src not in ("hda", "hdca"):
        raise RequestParameterInvalid(f"inputs: {_name(step)}: src {src!r} is not supported (use 'hda' or 'hdca')")
    decoded = ids.decode(str(value["id"]))
    if decoded is None:
        raise RequestParameterInvalid(f"inputs: {_name(step)}: {value['id']!r} is not a valid id")
    return src, decoded


def _check_datasets(session: Session, user: User, wanted: dict[int, PlanStep], ids: IdEncoder) -> None:
    if not wanted:
        return
    rows = {r.id: r for r in session.execute(
        sa.select(Dataset.id, Dataset.user_id, Dataset.deleted, Dataset.purged).where(Dataset.id.in_(list(wanted)))
    )}
    for dataset_id, step in wanted.items():
        row = rows.get(dataset_id)
        if row is None or row.user_id != user.id:
            raise RequestParameterInvalid(f"inputs: {_name(step)}: dataset {ids.encode(dataset_id)} not found")
        if row.deleted or row.purged:
            raise RequestParameterInvalid(f"inputs: {_name(step)}: dataset {ids.encode(dataset_id)} is deleted")


def _check_collections(session: Session, user: User, wanted: dict[int, PlanStep], ids: IdEncoder) -> None:
    if not wanted:
        return
    rows = {r.id: r for r in session.execute(
        sa.select(HistoryDatasetCollection.id, HistoryDatasetCollection.user_id, HistoryDatasetCollection.deleted,
                  DatasetCollection.collection_type)
        .join(DatasetCollection, DatasetCollection.id == HistoryDatasetCollection.collection_id)
        .where(HistoryDatasetCollection.id.in_(list(wanted)))
    )}
    for hdca_id, step in wanted.items():
        row = rows.get(hdca_id)
        if row is None or row.user_id != user.id:
            raise RequestParameterInvalid(f"inputs: {_name(step)}: collection {ids.encode(hdca_id)} not found")
        if row.deleted:
            raise RequestParameterInvalid(f"inputs: {_name(step)}: collection {ids.encode(hdca_id)} is deleted")
        accepted = [t.strip() for t in str(step.tool_state.get("collection_type") or "").split(",") if t.strip()]
        if accepted and row.collection_type not in accepted:
            raise RequestParameterInvalid(
                f"inputs: {_name(step)} takes a collection of type {' or '.join(accepted)}, "
                f"not {row.collection_type}")


def coerce_parameter(step: PlanStep, value: Any) -> Any:
    """A parameter input's value in its type (400 when it does not fit)."""
    if isinstance(value, dict) and "value" in value and "src" not in value:
        value = value["value"]
    kind = step.tool_state.get("parameter_type", "text")
    try:
        if kind == "integer":
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            value = int(value)
        elif kind == "float":
            if isinstance(value, bool):
                raise ValueError
            value = float(value)
        elif kind == "boolean":
            if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
                value = value.lower() in ("true", "1", "yes")
            elif not isinstance(value, bool):
                raise ValueError
        elif isinstance(value, dict | list):
            raise ValueError
        else:
            value = str(value)
    except (TypeError, ValueError):
        raise RequestParameterInvalid(f"inputs: {_name(step)} takes a {kind} value, not {value!r}") from None
    restrictions = step.tool_state.get("restrictions")
    if isinstance(restrictions, list) and restrictions and value not in restrictions:
        raise RequestParameterInvalid(f"inputs: {_name(step)} must be one of {restrictions}")
    return value


def resolve_parameters(plan: WorkflowPlan, raw: dict[str, Any] | None, ids: IdEncoder) -> dict[str, dict[str, Any]]:
    """Tool parameters given at invoke: {order index: {name: value}}; keys name steps or tool ids."""
    resolved: dict[str, dict[str, Any]] = {}
    for key, values in (raw or {}).items():
        if not isinstance(values, dict):
            raise RequestParameterInvalid(f"parameters: the value for {key!r} must be a mapping of parameter to value")
        step = find_step(plan, str(key), "step_index|step_uuid|step_id|name", ids)
        targets = [step] if step is not None else [s for s in plan.steps if s.tool_id == key]
        if not targets:
            raise RequestParameterInvalid(f"parameters: {key!r} names no step or tool of the workflow")
        for target in targets:
            resolved.setdefault(str(target.order_index), {}).update(values)
    return resolved
