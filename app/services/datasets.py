"""Datasets: look-up with ownership, history contents, views, updates and display."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.orm import Session

from app.errors import Conflict, NotFound
from app.ids import IdEncoder
from app.models import Dataset, DatasetState, User
from app.objectstore import ObjectStore
from app.schemas.histories import ContentsQuery, DatasetUpdate, DatasetView


def get_dataset(session: Session, user: User, dataset_id: int, *, history_id: int | None = None) -> Dataset:
    """A dataset of this user (404 for another user's or one outside the named history)."""
    dataset = session.get(Dataset, dataset_id)
    if dataset is None or dataset.user_id != user.id or (history_id is not None and dataset.history_id != history_id):
        raise NotFound(f"dataset {dataset_id} not found")
    return dataset


def list_datasets(session: Session, history_id: int, query: ContentsQuery, ids: IdEncoder) -> list[Dataset]:
    """The datasets of a history in hid order, filtered as Galaxy's contents API filters."""
    stmt = sa.select(Dataset).where(Dataset.history_id == history_id).order_by(Dataset.hid)
    if query.deleted is not None:
        stmt = stmt.where(Dataset.deleted.is_(query.deleted))
    if query.visible is not None:
        stmt = stmt.where(Dataset.visible.is_(query.visible))
    if query.ids:
        wanted = [i for i in (ids.decode(x) for x in query.ids) if i is not None]
        stmt = stmt.where(Dataset.id.in_(wanted))
    return list(session.scalars(stmt))


def update_dataset(session: Session, dataset: Dataset, body: DatasetUpdate) -> Dataset:
    """Change the fields given (a purged dataset cannot be undeleted)."""
    changes = body.model_dump(exclude_unset=True)
    if changes.get("deleted") is False and dataset.purged:
        raise Conflict("a purged dataset cannot be undeleted")
    dbkey = changes.pop("genome_build", None) or changes.pop("dbkey", None)
    changes.pop("dbkey", None)
    if dbkey is not None:
        dataset.dbkey = dbkey
    for name, value in changes.items():
        if value is not None:
            setattr(dataset, name, value)
    session.flush()
    return dataset


def delete_dataset(session: Session, dataset: Dataset, *, purge: bool) -> Dataset:
    """Mark deleted; purging marks it purged too (its file is removed by a task)."""
    dataset.deleted = True
    if purge:
        dataset.purged = True
    session.flush()
    return dataset


def dataset_file(dataset: Dataset, store: ObjectStore) -> Path:
    """The file of a dataset that can be displayed (409 while it is not ready)."""
    if dataset.purged:
        raise Conflict("the dataset has been purged")
    if dataset.state not in (DatasetState.OK, DatasetState.EMPTY, DatasetState.FAILED_METADATA) or not dataset.object_key:
        raise Conflict(f"the dataset is not ready (state {dataset.state})")
    path = store.path(dataset.object_key)
    if not path.exists():
        raise NotFound("the dataset's file is missing")
    return path


def dataset_view(dataset: Dataset, ids: IdEncoder) -> DatasetView:
    """The API form of a dataset."""
    encoded = ids.encode(dataset.id)
    history = ids.encode(dataset.history_id)
    return DatasetView(
        id=encoded,
        hid=dataset.hid,
        name=dataset.name,
        history_id=history,
        state=dataset.state,
        extension=dataset.extension,
        file_ext=dataset.extension,
        genome_build=dataset.dbkey,
        misc_info=dataset.info,
        misc_blurb=dataset.blurb,
        peek=dataset.peek,
        file_size=dataset.file_size or 0,
        metadata_data_lines=dataset.line_count,
        metadata_columns=(dataset.metadata_ or {}).get("columns"),
        metadata_column_types=(dataset.metadata_ or {}).get("column_types"),
        metadata_column_names=(dataset.metadata_ or {}).get("column_names"),
        deleted=dataset.deleted,
        purged=dataset.purged,
        visible=dataset.visible,
        tags=list(dataset.tags or []),
        creating_job=ids.encode(dataset.creating_job_id) if dataset.creating_job_id else None,
        download_url=f"/api/histories/{history}/contents/{encoded}/display",
        url=f"/api/histories/{history}/contents/{encoded}",
        type_id=f"dataset-{encoded}",
        create_time=dataset.create_time,
        update_time=dataset.update_time,
    )
