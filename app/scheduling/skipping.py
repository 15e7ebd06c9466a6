"""Skipped tool steps (Galaxy's conditional steps): a false ``when``, or inputs that skipped steps made.

A skipped step still gets its jobs, in state ``skipped``: they never run, and each output
is a dataset holding JSON ``null`` (``expression.json``, hidden, state ok), so the
invocation completes and every later step finds the outputs it is connected to. Step
outputs made that way carry ``"skipped": true``, and a tool step fed one is skipped too,
except that an optional input that is not mapped over simply goes without it.

A map-over is skipped whole when its condition is one value (or a mapped input comes from
a skipped step), and element by element when the condition is itself a collection of
JSON values, or when a collection it maps over has skipped elements (its step output
carries ``"skipped_elements": true``); its implicit collections are hidden when every
element was skipped.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from app.models import Dataset, HistoryDatasetCollection, Job, JobState, WorkflowInvocationStep
from app.objectstore import ObjectStore
from app.scheduling import mapping
from app.scheduling.values import StepFailure
from app.workflows import conditions
from app.workflows.plan import PlanStep

if TYPE_CHECKING:
    from app.scheduling.run import InvocationRun
    from app.workflows.toolspec import ToolSpec

SKIPPED = "skipped"  # on a step output all of whose datasets are skipped outputs
SOME_SKIPPED = "skipped_elements"  # on an implicit collection some of whose elements are
NULL = b"null"
# A skipped job's outputs, as in Galaxy's set_skipped (create_jobs sets their state, datatype and visibility).
SKIPPED_DETAILS = {"blurb": "skipped", "peek": "null", "line_count": 1, "file_size": len(NULL)}
MAX_VALUE_BYTES = 4096  # a condition read from a dataset is a small JSON value
_CHUNK = 900


@dataclass
class StepSkip:
    """What skips a tool step's jobs: all of them, or those of some elements of its map-over."""

    whole: bool = False
    condition_collection: int | None = None  # the collection holding one condition value per element
    check_inputs: list[str] = field(default_factory=list)  # mapped inputs with skipped elements

    def record(self) -> dict[str, Any]:
        """The form kept in the step's mapping between iterations."""
        return {"whole": self.whole, "condition": self.condition_collection, "inputs": self.check_inputs}


def prepare(run: "InvocationRun", step: PlanStep, spec: "ToolSpec", raw: dict[str, Any],
            mapped_names: set[str | None]) -> StepSkip:
    """Decide what of the step is skipped; drop from ``raw`` what only the condition reads."""
    skip = StepSkip()
    condition = conditions.parse_condition(step.when) if step.when else None
    condition_only = condition is not None and spec.input(condition.input_name) is None
    connected = run.connected_values(step)
    for name, values in connected.items():
        if condition_only and name == condition.input_name:
            raw.pop(name, None)
            continue
        for value in values:
            if not value:
                continue
            if value.get(SKIPPED):
                tool_input = spec.input(name)
                if name not in mapped_names and tool_input is not None and tool_input.optional:
                    _drop(raw, name, value)
                else:
                    skip.whole = True
            elif value.get(SOME_SKIPPED) and name in mapped_names:
                skip.check_inputs.append(name)
    if condition is not None and not skip.whole:
        value = next((v for v in connected.get(condition.input_name, []) if v), None)
        skip.whole = _condition_skips(run, step, condition, value, bool(mapped_names), skip)
    return skip


def _drop(raw: dict[str, Any], name: str, value: dict[str, Any]) -> None:
    """Galaxy's NO_REPLACEMENT: an optional input goes without a skipped step's output."""
    given = raw.get(name)
    if isinstance(given, list):
        kept = [v for v in given if not (isinstance(v, dict) and v.get("id") == value.get("id")
                                         and v.get("src") == value.get("src"))]
        if kept:
            raw[name] = kept
            return
    raw.pop(name, None)


def _condition_skips(run: "InvocationRun", step: PlanStep, condition: conditions.Condition,
                     value: dict[str, Any] | None, is_mapped: bool, skip: StepSkip) -> bool:
    """True when a single condition value is false; a collection is left for each element."""
    if value is not None and value.get(SKIPPED):
        return True
    if value is None:
        return not evaluate(step, condition, None)
    if value.get("src") == "param":
        return not evaluate(step, condition, value.get("value"))
    if value.get("src") == "hda":
        return not evaluate(step, condition, read_values(run, [value["id"]])[value["id"]])
    if not is_mapped:
        raise StepFailure("unexpected_failure", step=step.order_index,
                          details=f"the 'when' input {condition.input_name!r} is a collection, "
                                  "but the step is not mapped over one")
    skip.condition_collection = run.values.collection(value["id"]).collection_id
    return False


def single_condition_skips(run: "InvocationRun", step: PlanStep,
                           connected: dict[str, list[dict[str, Any] | None]]) -> bool:
    """True when a step that maps over nothing has a false ``when`` (or one a skipped step made)."""
    condition = conditions.parse_condition(step.when or "")
    value = next((v for v in connected.get(condition.input_name, []) if v), None)
    return _condition_skips(run, step, condition, value, False, StepSkip())


def evaluate(step: PlanStep, condition: conditions.Condition, value: Any) -> bool:
    """The condition's value; a non-boolean fails the invocation, as in Galaxy (when_not_boolean)."""
    try:
        return condition.evaluate(value)
    except conditions.ConditionError as exc:
        raise StepFailure("when_not_boolean", step=step.order_index, details=str(exc)) from None


def record(run: "InvocationRun", step: PlanStep, row: WorkflowInvocationStep, skip: StepSkip) -> None:
    """Keep a map-over's skip decision in its mapping (checking a mapped condition's structure)."""
    plan = dict(row.mapping or {})
    if skip.condition_collection is not None:
        count = mapping.count_units(run.session, skip.condition_collection, plan["depth"])
        if count != plan["element_count"]:
            raise StepFailure("unexpected_failure", step=step.order_index,
                              details=f"the 'when' collection has {count} elements at the mapped level, "
                                      f"the step maps over {plan['element_count']}")
    plan["skip"] = skip.record()
    plan["skipped"] = 0
    row.mapping = plan


def slice_flags(run: "InvocationRun", step: PlanStep, plan: dict[str, Any],
                per_input: list[tuple[dict[str, Any], list[mapping.Unit]]], start: int, size: int) -> list[bool]:
    """Which jobs of a map-over slice are skipped."""
    info = plan.get("skip") or {}
    if info.get("whole"):
        return [True] * size
    flags = [False] * size
    if info.get("condition"):
        condition = conditions.parse_condition(step.when or "")
        units = mapping.read_units(run.session, info["condition"], plan["depth"], start, size)
        if len(units) != size:
            raise StepFailure("unexpected_failure", step=step.order_index,
                              details="the 'when' collection changed while scheduling")
        values = read_values(run, [u.dataset_id for u in units if u.dataset_id is not None])
        flags = [not evaluate(step, condition, values.get(u.dataset_id)) for u in units]
    if info.get("inputs"):
        names = set(info["inputs"])
        per_unit: list[list[int]] = [[] for _ in range(size)]
        for item, units in per_input:
            if item["name"] in names:
                children = mapping.direct_leaves(run.session, [u.child_collection_id for u in units
                                                                if u.child_collection_id is not None])
                for j, unit in enumerate(units):
                    ids = [unit.dataset_id] if unit.dataset_id else children.get(unit.child_collection_id, [])
                    per_unit[j].extend(ids)
        skipped = skipped_datasets(run.session, [d for ids in per_unit for d in ids])
        flags = [flag or any(d in skipped for d in ids) for flag, ids in zip(flags, per_unit)]
    return flags


def count(row: WorkflowInvocationStep, flags: list[bool]) -> None:
    """Add a slice's skipped jobs to the map-over's tally."""
    if any(flags):
        row.mapping = {**(row.mapping or {}), "skipped": (row.mapping or {}).get("skipped", 0) + sum(flags)}


def finish_mapping(run: "InvocationRun", row: WorkflowInvocationStep, outputs: dict[str, Any]) -> dict[str, Any]:
    """A finished map-over's step outputs, flagged when elements were skipped (hidden when all were)."""
    plan = row.mapping or {}
    skipped, total = plan.get("skipped", 0), plan.get("element_count", 0)
    if not skipped:
        return outputs
    if skipped >= total:
        hdca_ids = [v["id"] for v in outputs.values() if v and v.get("src") == "hdca"]
        if hdca_ids:
            run.session.execute(sa.update(HistoryDatasetCollection).where(HistoryDatasetCollection.id.in_(hdca_ids))
                                .values(visible=False).execution_options(synchronize_session=False))
        return flag(outputs, SKIPPED)
    return flag(outputs, SOME_SKIPPED)


def flag(outputs: dict[str, Any], marker: str) -> dict[str, Any]:
    """Step outputs carrying a skip marker."""
    return {name: {**value, marker: True} if value else value for name, value in outputs.items()}


def write_null_outputs(run: "InvocationRun", jobs: list[Any], flags: list[bool]) -> None:
    """The outputs of skipped jobs just made (ok, hidden, expression.json): their JSON null file and details."""
    dataset_ids = [o.dataset_id for job, skipped in zip(jobs, flags) if skipped for o in job.outputs]
    if dataset_ids:
        write_nulls(run, dataset_ids)


def write_nulls(run: "InvocationRun", dataset_ids: list[int]) -> None:
    """Give these datasets a skipped output's JSON null file and details."""
    store = object_store(run)
    rows = []
    for dataset_id in dataset_ids:
        key = store.key_for(dataset_id)
        target = store.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(".partial")
        partial.write_bytes(NULL)
        os.replace(partial, target)
        rows.append({"id": dataset_id, "object_key": key, **SKIPPED_DETAILS})
    run.session.execute(sa.update(Dataset), rows)


def object_store(run: "InvocationRun") -> ObjectStore:
    """The store datasets live in (the same place as ``Services.object_store``)."""
    return ObjectStore(run.settings.resolved_data_dir / "objects")


def skipped_datasets(session: Session, dataset_ids: list[int]) -> set[int]:
    """Those of these datasets that skipped jobs made."""
    found: set[int] = set()
    unique = sorted(set(dataset_ids))
    for start in range(0, len(unique), _CHUNK):
        found.update(session.scalars(
            sa.select(Dataset.id).join(Job, Job.id == Dataset.creating_job_id)
            .where(Dataset.id.in_(unique[start : start + _CHUNK]), Job.state == JobState.SKIPPED)
        ))
    return found


def read_values(run: "InvocationRun", dataset_ids: list[int]) -> dict[int, Any]:
    """The JSON value each dataset holds (its stripped text when it is not JSON; None when it has no file)."""
    store = object_store(run)
    values: dict[int, Any] = {}
    unique = sorted(set(dataset_ids))
    for start in range(0, len(unique), _CHUNK):
        rows = run.session.execute(sa.select(Dataset.id, Dataset.object_key)
                                   .where(Dataset.id.in_(unique[start : start + _CHUNK])))
        for dataset_id, key in rows:
            values[dataset_id] = _read_value(store, key) if key else None
    return values


def _read_value(store: ObjectStore, key: str) -> Any:
    try:
        with store.path(key).open("rb") as handle:
            data = handle.read(MAX_VALUE_BYTES + 1)
    except OSError:
        return None
    if len(data) > MAX_VALUE_BYTES:
        return data[:60].decode("utf-8", errors="replace") + "..."
    text = data.decode("utf-8", errors="replace").strip()
    try:
        return json.loads(text)
    except ValueError:
        return text
