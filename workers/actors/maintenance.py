"""Housekeeping actors: purging files, no-op for health checks and benchmarks."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import Session

from app.models import Dataset
from app.objectstore import ObjectStore
from app.schemas.tasks import Noop, PurgeDatasets
from workers.tasks import task


@task(queue="default", action="purge_datasets")
def purge_datasets(request: PurgeDatasets, session: Session, store: ObjectStore) -> int:
    """Remove the files of purged datasets; return how many were removed."""
    rows = session.scalars(
        sa.select(Dataset).where(Dataset.id.in_(request.dataset_ids), Dataset.purged.is_(True))
    )
    removed = 0
    for dataset in rows:
        if dataset.object_key:
            store.delete(dataset.object_key)
            dataset.object_key = None
            dataset.file_size = 0
            removed += 1
    return removed


@task(queue="default", action="noop", max_retries=0)
def noop(request: Noop) -> int:
    """Do nothing and return the value."""
    return request.value
