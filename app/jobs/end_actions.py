"""Post-job actions applied when a workflow job ends ok: HideDatasetAction, and ChangeDatatypeAction again.

Galaxy runs the actions that are not "immediate" at the end of the job, and hides nothing
of a job that failed (its error stays in sight). A changed datatype was set when the job
was made; it is set again here because the runner records the format it measured. The
actions of a step never change, so they are read once per process for each invocation (a
10,000-element map-over costs one read, not one per job, and a workflow without such
actions no query per job at all).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from app.models import Dataset, Job, StepType, WorkflowInvocationStep, WorkflowStep
from app.workflows.actions import StepActions

CACHE_SIZE = 1024


class _InvocationActionsCache:
    """A thread-safe LRU: per invocation, its steps' end actions by invocation step id."""

    def __init__(self, size: int):
        self.size = size
        self.items: OrderedDict[tuple[str, int], dict[int, StepActions]] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, key: tuple[str, int]) -> dict[int, StepActions] | None:
        with self.lock:
            found = self.items.get(key)
            if found is not None:
                self.items.move_to_end(key)
            return found

    def put(self, key: tuple[str, int], value: dict[int, StepActions]) -> None:
        with self.lock:
            self.items[key] = value
            while len(self.items) > self.size:
                self.items.popitem(last=False)


_cache = _InvocationActionsCache(CACHE_SIZE)


def apply_at_job_end(session: Session, job_id: int, invocation_id: int, outputs: Iterable[tuple[str, int]]) -> None:
    """Hide and retype the outputs ((name, dataset id) pairs) of a workflow job that ended ok."""
    by_step = _end_actions(session, invocation_id)
    if not by_step:  # the usual case: no query at all
        return
    actions = by_step.get(session.scalar(sa.select(Job.invocation_step_id).where(Job.id == job_id)))
    if actions is None:
        return
    groups: dict[tuple, list[int]] = {}
    for name, dataset_id in outputs:
        columns = actions.end_columns(name)
        if columns:
            groups.setdefault(tuple(sorted(columns.items())), []).append(dataset_id)
    for columns, dataset_ids in groups.items():
        session.execute(sa.update(Dataset).where(Dataset.id.in_(dataset_ids)).values(**dict(columns))
                        .execution_options(synchronize_session=False))


def any_at_end(session_factory: sessionmaker[Session], invocation_id: int) -> bool:
    """Whether jobs of this invocation have actions to apply when they end (read once per process)."""
    key = (str(session_factory.kw["bind"].url), invocation_id)
    found = _cache.get(key)
    if found is None:
        with session_factory() as session:
            found = _end_actions(session, invocation_id)
    return bool(found)


def _end_actions(session: Session, invocation_id: int) -> dict[int, StepActions]:
    """The invocation's steps that have end actions, read once per process."""
    key = (str(session.get_bind().engine.url), invocation_id)  # bound to a connection or an engine
    found = _cache.get(key)
    if found is not None:
        return found
    rows = session.execute(
        sa.select(WorkflowInvocationStep.id, WorkflowStep.post_job_actions)
        .join(WorkflowStep, WorkflowStep.id == WorkflowInvocationStep.workflow_step_id)
        .where(WorkflowInvocationStep.invocation_id == invocation_id, WorkflowStep.type == StepType.TOOL)
    )
    by_step = {step_id: actions for step_id, pjas in rows if (actions := StepActions(pjas or {})).at_end}
    _cache.put(key, by_step)
    return by_step
