"""Values flowing between steps, and whether they are ready to be consumed.

A step output is ``{"src": "hda", "id": n}`` (a dataset), ``{"src": "hdca", "id": n}`` (a
collection in the history), ``{"src": "param", "value": v}`` (a parameter) or None (an
optional input left out). A tool step runs once the datasets it reads are done; a failed
one fails the invocation, naming the step that made it and the step that needed it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session, aliased

from app.models import (
    Dataset,
    DatasetCollection,
    DatasetCollectionElement,
    DatasetState,
    HistoryDatasetCollection,
    Job,
    JobState,
)
from app.models.collections import PopulatedState

# Dataset states a consumer can use, and states that mean it never will be.
USABLE_STATES = frozenset({DatasetState.OK, DatasetState.EMPTY, DatasetState.FAILED_METADATA, DatasetState.DEFERRED})
FAILED_STATES = frozenset({DatasetState.ERROR, DatasetState.DISCARDED, DatasetState.PAUSED})
ACTIVE_JOB_STATES = (JobState.NEW, JobState.QUEUED, JobState.RUNNING, JobState.DELETING)


class StepFailure(Exception):
    """The invocation cannot go on; carries Galaxy's typed failure reason."""

    def __init__(self, reason: str, *, step: int | None = None, dependent_step: int | None = None,
                 job_id: int | None = None, hda_id: int | None = None, hdca_id: int | None = None,
                 output_name: str | None = None, details: str | None = None):
        super().__init__(f"{reason}: {details or ''}")
        self.reason = reason
        self.step = step
        self.dependent_step = dependent_step
        self.job_id = job_id
        self.hda_id = hda_id
        self.hdca_id = hdca_id
        self.output_name = output_name
        self.details = details

    def message_fields(self) -> dict[str, Any]:
        """Columns of the WorkflowInvocationMessage row."""
        return {
            "workflow_step_index": self.step, "dependent_workflow_step_index": self.dependent_step,
            "job_id": self.job_id, "hda_id": self.hda_id, "hdca_id": self.hdca_id,
            "output_name": self.output_name, "details": self.details,
        }


@dataclass(frozen=True)
class CollectionInfo:
    """An HDCA and the structure it names."""

    hdca_id: int
    collection_id: int
    collection_type: str
    populated_state: str
    element_count: int
    name: str
    hid: int
    # Set for a map-over's implicit output: the invocation and step whose jobs fill it.
    invocation_id: int | None = None
    invocation_step_id: int | None = None

    @property
    def depth(self) -> int:
        """Levels of nesting: 1 for list or paired, 2 for list:paired…"""
        return len(self.collection_type.split(":"))


def element_levels(depth: int) -> list[Any]:
    """Aliases of the element table, one per level from the top of a collection to its leaves."""
    return [aliased(DatasetCollectionElement, name=f"level{i}") for i in range(depth)]


def through_levels(stmt: sa.Select, collection_id: int, levels: list[Any]) -> sa.Select:
    """``stmt`` over the elements at the deepest of ``levels`` under a collection."""
    stmt = stmt.select_from(levels[0]).where(levels[0].collection_id == collection_id)
    for parent, child in zip(levels, levels[1:]):
        stmt = stmt.join(child, child.collection_id == parent.child_collection_id)
    return stmt


class ValueReader:
    """Reads the state of values for one iteration, caching what it read."""

    def __init__(self, session: Session, invocation_id: int | None = None):
        self.session = session
        self.invocation_id = invocation_id
        self._collections: dict[int, CollectionInfo] = {}

    def collection(self, hdca_id: int) -> CollectionInfo:
        """The HDCA's collection."""
        info = self._collections.get(hdca_id)
        if info is None:
            row = self.session.execute(
                sa.select(HistoryDatasetCollection.id, DatasetCollection.id, DatasetCollection.collection_type,
                          DatasetCollection.populated_state, DatasetCollection.element_count,
                          HistoryDatasetCollection.name, HistoryDatasetCollection.hid,
                          HistoryDatasetCollection.invocation_id, HistoryDatasetCollection.invocation_step_id)
                .join(DatasetCollection, DatasetCollection.id == HistoryDatasetCollection.collection_id)
                .where(HistoryDatasetCollection.id == hdca_id)
            ).one()
            info = self._collections[hdca_id] = CollectionInfo(*row)
        return info

    def ready(self, value: dict[str, Any] | None, *, source_step: int, dependent_step: int) -> bool:
        """True when the value can be consumed now, False to wait; StepFailure when it never can."""
        if not value or value.get("src") == "param":
            return True
        if value["src"] == "hda":
            state = self.session.scalar(sa.select(Dataset.state).where(Dataset.id == value["id"]))
            if state in FAILED_STATES:
                raise StepFailure("dataset_failed", step=source_step, dependent_step=dependent_step, hda_id=value["id"])
            return state in USABLE_STATES
        info = self.collection(value["id"])
        if info.populated_state == PopulatedState.FAILED:
            raise StepFailure("collection_failed", step=source_step, dependent_step=dependent_step, hdca_id=info.hdca_id)
        if info.populated_state != PopulatedState.OK:
            return False
        if info.invocation_step_id is not None and self._step_has_active_jobs(info):
            return False  # cheap: no need to read the states of every element yet
        levels = element_levels(info.depth)
        counts = self.session.execute(
            through_levels(sa.select(Dataset.state, sa.func.count()), info.collection_id, levels)
            .join(Dataset, Dataset.id == levels[-1].dataset_id)
            .group_by(Dataset.state)
        ).all()
        states = {state for state, _ in counts}
        if states & FAILED_STATES:
            failed = self.session.scalar(
                through_levels(sa.select(Dataset.id), info.collection_id, levels)
                .join(Dataset, Dataset.id == levels[-1].dataset_id)
                .where(Dataset.state.in_(FAILED_STATES)).limit(1)
            )
            raise StepFailure("dataset_failed", step=source_step, dependent_step=dependent_step, hda_id=failed,
                              hdca_id=info.hdca_id)
        return states <= USABLE_STATES

    def _step_has_active_jobs(self, info: CollectionInfo) -> bool:
        """Whether the step filling an implicit collection still has unfinished jobs."""
        return self.session.scalar(
            sa.select(Job.id).where(Job.invocation_id == info.invocation_id, Job.state.in_(ACTIVE_JOB_STATES),
                                    Job.invocation_step_id == info.invocation_step_id).limit(1)
        ) is not None
