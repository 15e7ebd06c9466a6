"""Mapping a subworkflow over a collection (Galaxy's implicit map-over of a subworkflow step).

A collection connected to a subworkflow input that takes less (a dataset input, or a
collection input of a smaller type) maps the subworkflow over it. As in Galaxy the
sub-invocation runs once, gets the whole collection as that input's value, and runs
under the map-over's *structure* S (the outer levels of the collection it maps over):
every step of the sub-invocation maps over at least S, so its outputs, and the
subworkflow step's outputs in the parent, are implicit collections whose outer levels
copy S.

Values carrying S are marked ``"map_depth": k`` (S has k levels). A step consumes a
marked value one element k levels down at a time (deeper when its input takes still
less) and never reduces those levels; a step with no marked input runs once per element
of S all the same, its inputs shared by every job. The structure is kept on the parent's
subworkflow step row (``mapping``), where the sub-invocation reads it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from app.models import StepType, WorkflowInvocation, WorkflowInvocationStep
from app.scheduling import mapping
from app.scheduling.values import StepFailure
from app.workflows.plan import PlanStep, WorkflowPlan

if TYPE_CHECKING:
    from app.scheduling.run import InvocationRun

MAP_DEPTH = "map_depth"


@dataclass(frozen=True)
class Structure:
    """What a mapped sub-invocation runs over: the outer ``collection_type`` levels of a collection."""

    collection_type: str
    hdca_id: int
    collection_id: int
    element_count: int

    @property
    def depth(self) -> int:
        """How many levels S has."""
        return len(self.collection_type.split(":"))

    def as_dict(self) -> dict[str, Any]:
        """The JSON kept on the parent step row."""
        return {"collection_type": self.collection_type, "hdca_id": self.hdca_id,
                "collection_id": self.collection_id, "element_count": self.element_count}


@dataclass
class SubworkflowMapping:
    """A subworkflow step's map-over: its structure, the sub-invocation's inputs, and the parent's depth it covers."""

    structure: Structure
    inputs: dict[str, Any]
    covers: int = 0  # the depth of the enclosing invocation's own structure these outputs carry (0: none)

    def record(self) -> dict[str, Any]:
        """The step row's ``mapping``."""
        return {"subworkflow": True, "collection_type": self.structure.collection_type,
                "element_count": self.structure.element_count, "structure": self.structure.as_dict(),
                "covers": self.covers}


def read_structure(session: Session, invocation: WorkflowInvocation) -> Structure | None:
    """The structure a sub-invocation runs under, from its parent step (None when not mapped)."""
    if invocation.parent_step_id is None:
        return None
    recorded = session.scalar(
        sa.select(WorkflowInvocationStep.mapping).where(WorkflowInvocationStep.id == invocation.parent_step_id))
    if not recorded or not recorded.get("subworkflow"):
        return None
    return Structure(**recorded["structure"])


def map_depth(value: Any) -> int:
    """The depth of the structure a value carries (0 when it carries none)."""
    return int(value.get(MAP_DEPTH) or 0) if isinstance(value, dict) else 0


def with_depth(value: Any, depth: int) -> Any:
    """The value marked as carrying ``depth`` levels of structure (unmarked for 0)."""
    if not isinstance(value, dict):
        return value
    plain = {k: v for k, v in value.items() if k != MAP_DEPTH}
    return {**plain, MAP_DEPTH: depth} if depth and plain.get("src") == "hdca" else plain


def mark_outputs(outputs: dict[str, Any], depth: int) -> dict[str, Any]:
    """Step outputs, each marked with ``depth`` (or cleared of marks)."""
    return {name: with_depth(value, depth) for name, value in outputs.items()}


def _levels(collection_type: str) -> list[str]:
    return collection_type.split(":")


def mapped_depth(collection_type: str, unit: str, element_type: str | None) -> int:
    """How many outer levels a step input maps over when it takes ``unit`` elements of a collection."""
    if unit == "dataset":
        return len(_levels(collection_type))
    return len(_levels(collection_type)) - len(_levels(element_type or ""))


def at_least(step: PlanStep, name: str, kind: str, accepted: tuple[str, ...], collection_type: str, depth: int,
             normal: tuple[str, str | None] | None) -> tuple[str, str | None]:
    """How a tool input consumes a marked collection: as usual, but never fewer than ``depth`` outer levels.

    ``normal`` is how it would consume the collection unmarked; ``kind`` is "data" (a
    multiple dataset input when it matters) or "data_collection" with its ``accepted`` types.
    """
    if normal is not None and mapped_depth(collection_type, *normal) >= depth:
        return normal
    rest = ":".join(_levels(collection_type)[depth:])
    if not rest:
        if kind == "data":
            return "dataset", None
    elif kind == "data" and ":" not in rest:
        return "leaves", rest
    elif kind == "data_collection" and (not accepted or rest in accepted):
        return "collection", rest
    takes = " or ".join(accepted) if kind == "data_collection" and accepted else \
        ("a collection" if kind == "data_collection" else "datasets")
    element = f"'{rest}' collections" if rest else "single datasets"
    raise StepFailure("unexpected_failure", step=step.order_index,
                      details=f"input {name!r} takes {takes}, but the enclosing subworkflow is mapped over "
                              f"{element} of its '{collection_type}' input")


def structure_unit(structure: Structure, collection_type: str) -> tuple[str, str | None]:
    """The (unit, element type) that reads the elements of S from the structure's collection."""
    rest = ":".join(_levels(collection_type)[structure.depth:])
    return ("collection", rest) if rest else ("dataset", None)


# -- the subworkflow step -------------------------------------------------------------------


def plan_mapping(run: "InvocationRun", step: PlanStep, sub_plan: WorkflowPlan,
                 inputs: dict[str, Any]) -> SubworkflowMapping | None:
    """The subworkflow step's map-over, given the sub-invocation's inputs by index (None: it runs once, unmapped)."""
    outer = run.map_structure
    found: list[tuple[str, Any, str, bool]] = []  # (index, collection info, map type, marked)
    for index, value in inputs.items():
        if not isinstance(value, dict) or value.get("src") != "hdca":
            continue
        target = sub_plan.step(int(index))
        info = run.values.collection(value["id"])
        marked = map_depth(value)
        map_type = _input_map_type(step, target, info.collection_type, marked)
        if map_type is not None:
            found.append((index, info, map_type, bool(marked)))
    if not found:
        if outer is None:
            return None
        # Galaxy: a step with nothing of its own to map over runs per element of the enclosing map-over.
        return SubworkflowMapping(outer, {k: with_depth(v, 0) for k, v in inputs.items()}, covers=outer.depth)
    shapes = {(map_type, mapping.count_units(run.session, info.collection_id, len(_levels(map_type))))
              for _, info, map_type, _ in found}
    if len(shapes) > 1:
        names = ", ".join(repr(_input_name(sub_plan, index)) for index, *_ in found)
        raise StepFailure("unexpected_failure", step=step.order_index,
                          details=f"subworkflow inputs {names} are mapped over collections of different structure")
    (map_type, count), = shapes
    _, info, _, _ = found[0]
    structure = Structure(map_type, info.hdca_id, info.collection_id, count)
    mapped = {index for index, *_ in found}
    sub_inputs = {k: with_depth(v, structure.depth if k in mapped else 0) for k, v in inputs.items()}
    covers = outer.depth if outer is not None and any(marked for *_, marked in found) else 0
    return SubworkflowMapping(structure, sub_inputs, covers=covers)


def _input_name(sub_plan: WorkflowPlan, index: str) -> str:
    target = sub_plan.step(int(index))
    return target.label or index


def _input_map_type(step: PlanStep, target: PlanStep, collection_type: str, marked: int) -> str | None:
    """The map-over type of a collection given to a subworkflow input step (None: taken whole)."""
    name = target.label or str(target.order_index)
    if target.type == StepType.DATA_INPUT:
        return collection_type
    if target.type != StepType.DATA_COLLECTION_INPUT:
        return None
    accepted = [t.strip() for t in str(target.tool_state.get("collection_type") or "").split(",") if t.strip()]
    map_type = None
    if accepted and collection_type not in accepted:
        for kind in accepted:
            if collection_type.endswith(":" + kind):
                map_type = collection_type[: -len(kind) - 1]
                break
        else:
            raise StepFailure("unexpected_failure", step=step.order_index,
                              details=f"subworkflow input {name!r} takes {' or '.join(accepted)} collections, "
                                      f"not '{collection_type}'")
    if marked and (map_type is None or len(_levels(map_type)) < marked):
        levels = _levels(collection_type)
        if accepted or len(levels) <= marked:
            raise StepFailure("unexpected_failure", step=step.order_index,
                              details=f"subworkflow input {name!r} takes {' or '.join(accepted) or 'a collection'}, "
                                      f"but the enclosing subworkflow is mapped over the elements of its "
                                      f"'{collection_type}' input")
        map_type = ":".join(levels[:marked])
    return map_type


def parent_outputs(outputs: dict[str, Any], recorded: dict[str, Any] | None) -> dict[str, Any]:
    """A sub-invocation's outputs as the parent step's: marked with the parent's structure when they carry it."""
    covers = int((recorded or {}).get("covers") or 0) if (recorded or {}).get("subworkflow") else 0
    return mark_outputs(outputs, covers)
