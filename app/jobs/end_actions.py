"""Post-job actions applied when a workflow job ends ok: HideDatasetAction, and ChangeDatatypeAction again.

Galaxy runs the actions that are not "immediate" at the end of the job, and hides nothing
of a job that failed (its error stays in sight). A changed datatype was set when the job
was made; it is set again here because the runner records the format it measured. The
actions of a step never change, so they are read once per process for each invocation
step (a 10,000-element map-over costs one read, not one per job).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable

import sqlalchemy as sa
from sqlalchemy.orm import Session

from app.models import Dataset, Job, WorkflowInvocationStep, WorkflowStep
from app.workflows.actions import StepActions

CACHE_SIZE = 1024


class _StepActionsCache:
    """A thread-safe LRU of the end actions of invocation steps (None: the step has none)."""

    def __init__(self, size: int):
        self.size = size
        self.items: OrderedDict[tuple[str, int], StepActions | None] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, key: tuple[str, int]) -> tuple[bool, StepActions | None]:
        with self.lock:
            if key not in self.items:
                return False, None
            self.items.move_to_end(key)
            return True, self.items[key]

    def put(self, key: tuple[str, int], value: StepActions | None) -> None:
        with self.lock:
            self.items[key] = value
            while len(self.items) > self.size:
                self.items.popitem(last=False)


_cache = _StepActionsCache(CACHE_SIZE)


def apply_at_job_end(session: Session, job_id: int, outputs: Iterable[tuple[str, int]]) -> None:
    """Hide and retype the outputs ((name, dataset id) pairs) of a workflow job that ended ok."""
    step_id = session.scalar(sa.select(Job.invocation_step_id).where(Job.id == job_id))
    if step_id is None:
        return
    actions = _end_actions(session, step_id)
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


def _end_actions(session: Session, invocation_step_id: int) -> StepActions | None:
    key = (str(session.get_bind().engine.url), invocation_step_id)  # a connection or an engine
    found, actions = _cache.get(key)
    if found:
        return actions
    post_job_actions = session.scalar(
        sa.select(WorkflowStep.post_job_actions)
        .join(WorkflowInvocationStep, WorkflowInvocationStep.workflow_step_id == WorkflowStep.id)
        .where(WorkflowInvocationStep.id == invocation_step_id)
    )
    actions = StepActions(post_job_actions or {})
    actions = actions if actions.at_end else None
    _cache.put(key, actions)
    return actions
