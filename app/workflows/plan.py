"""The immutable view of a stored workflow version that invoking and scheduling work from.

Workflow versions never change once written, so a plan is read from the database once per
process and kept in a small LRU cache; a scheduling pass then costs no query for the
workflow's shape.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from app.errors import NotFound
from app.models.workflows import StepType, Workflow, WorkflowStep, WorkflowStepConnection

CACHE_SIZE = 256


@dataclass(frozen=True)
class PlanConnection:
    """An input connection, by order index."""

    input_name: str
    source_index: int
    output_name: str
    input_subworkflow_step_index: int | None


@dataclass(frozen=True)
class PlanStep:
    """One step of a plan."""

    id: int
    order_index: int
    type: str
    label: str | None
    name: str | None
    uuid: str
    tool_id: str | None
    tool_version: str | None
    tool_state: dict[str, Any]
    subworkflow_id: int | None
    connections: tuple[PlanConnection, ...]
    workflow_outputs: tuple[dict[str, Any], ...]
    when: str | None = None  # a conditional step's ``when`` expression
    post_job_actions: dict[str, Any] = field(default_factory=dict)  # normalized (app.workflows.actions)

    @property
    def is_input(self) -> bool:
        """True for data, collection and parameter inputs."""
        return self.type in StepType.INPUTS

    @property
    def optional(self) -> bool:
        """An input step that may be left out."""
        return bool(self.tool_state.get("optional")) or "default" in self.tool_state

    def describe(self) -> str:
        """'step 2 ("label")' for messages."""
        return f"step {self.order_index}" + (f" ({self.label!r})" if self.label else "")


@dataclass(frozen=True)
class WorkflowPlan:
    """A workflow version's steps, in order index order, with a topological order."""

    workflow_id: int
    name: str
    uuid: str
    steps: tuple[PlanStep, ...]
    order: tuple[int, ...]

    def step(self, order_index: int) -> PlanStep:
        """The step with this order index."""
        return self.steps[order_index]

    @property
    def input_steps(self) -> list[PlanStep]:
        """Input steps in order."""
        return [s for s in self.steps if s.is_input]

    def output_sources(self) -> dict[str, tuple[int, str]]:
        """Workflow output label → (order index, output name)."""
        return {o["label"]: (s.order_index, o["output_name"])
                for s in self.steps for o in s.workflow_outputs if o.get("label")}


class _PlanCache:
    """A thread-safe LRU of plans, keyed by database URL and workflow id."""

    def __init__(self, size: int):
        self.size = size
        self.items: OrderedDict[tuple[str, int], WorkflowPlan] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, key: tuple[str, int]) -> WorkflowPlan | None:
        with self.lock:
            plan = self.items.get(key)
            if plan is not None:
                self.items.move_to_end(key)
            return plan

    def put(self, key: tuple[str, int], plan: WorkflowPlan) -> None:
        with self.lock:
            self.items[key] = plan
            while len(self.items) > self.size:
                self.items.popitem(last=False)


_cache = _PlanCache(CACHE_SIZE)


def load_plan(session: Session, workflow_id: int) -> WorkflowPlan:
    """The plan of a workflow version (404 when it does not exist)."""
    key = (str(session.get_bind().url), workflow_id)
    plan = _cache.get(key)
    if plan is None:
        plan = _read_plan(session, workflow_id)
        _cache.put(key, plan)
    return plan


def _read_plan(session: Session, workflow_id: int) -> WorkflowPlan:
    workflow = session.get(Workflow, workflow_id)
    if workflow is None:
        raise NotFound(f"workflow {workflow_id} not found")
    rows = session.scalars(
        sa.select(WorkflowStep).where(WorkflowStep.workflow_id == workflow_id).order_by(WorkflowStep.order_index)
    ).all()
    index_of = {row.id: row.order_index for row in rows}
    connections: dict[int, list[PlanConnection]] = {row.id: [] for row in rows}
    if rows:
        for conn in session.scalars(
            sa.select(WorkflowStepConnection)
            .where(WorkflowStepConnection.input_step_id.in_(list(index_of)))
            .order_by(WorkflowStepConnection.id)
        ):
            connections[conn.input_step_id].append(PlanConnection(
                conn.input_name, index_of[conn.output_step_id], conn.output_name, conn.input_subworkflow_step_index))
    steps = tuple(
        PlanStep(
            id=row.id, order_index=row.order_index, type=row.type, label=row.label, name=row.name,
            uuid=row.uuid, tool_id=row.tool_id, tool_version=row.tool_version,
            tool_state=dict(row.tool_state or {}), subworkflow_id=row.subworkflow_id,
            connections=tuple(connections[row.id]), workflow_outputs=tuple(row.workflow_outputs or ()),
            when=row.when_expression, post_job_actions=dict(row.post_job_actions or {}),
        )
        for row in rows
    )
    return WorkflowPlan(workflow_id, workflow.name, workflow.uuid, steps, _topological(steps))


def _topological(steps: tuple[PlanStep, ...]) -> tuple[int, ...]:
    remaining = {s.order_index: {c.source_index for c in s.connections} for s in steps}
    order: list[int] = []
    while remaining:
        ready = sorted(i for i, deps in remaining.items() if not deps)
        if not ready:  # cannot happen: cycles are refused at import
            raise ValueError("workflow has a cycle")
        order.extend(ready)
        for i in ready:
            del remaining[i]
        for deps in remaining.values():
            deps.difference_update(ready)
    return tuple(order)
