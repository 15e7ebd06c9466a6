"""Map-over mechanics: the elements a step maps over, read in slices, and its implicit output collections.

A map-over of a collection of type ``T`` at depth ``k`` (the map-over type ``P`` has ``k``
levels) runs one job per element ``k`` levels down, numbered 0…N-1 in element order
(that number is the job's ``element_index``). Each tool output gets an implicit
collection of type ``P`` whose structure copies the mapped collection's; its leaves are
filled slice by slice as jobs are created, and it is marked populated at the end.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from app.bulk_insert import insert_rows
from app.models import DatasetCollection, DatasetCollectionElement, HistoryDatasetCollection
from app.models.base import utcnow
from app.models.collections import PopulatedState
from app.scheduling.values import element_levels, through_levels
from app.services.histories import allocate_hids

_CHUNK = 900


@dataclass(frozen=True)
class Unit:
    """One element a map-over runs a job for."""

    element_id: int
    dataset_id: int | None
    child_collection_id: int | None
    identifiers: tuple[str, ...]
    indexes: tuple[int, ...]


def count_units(session: Session, collection_id: int, depth: int) -> int:
    """How many elements lie ``depth`` levels under a collection."""
    levels = element_levels(depth)
    return session.scalar(through_levels(sa.select(sa.func.count()), collection_id, levels)) or 0


def read_units(session: Session, collection_id: int, depth: int, offset: int, limit: int) -> list[Unit]:
    """Elements ``offset`` to ``offset + limit`` at ``depth``, in element order."""
    levels = element_levels(depth)
    leaf = levels[-1]
    stmt = through_levels(
        sa.select(leaf.id, leaf.dataset_id, leaf.child_collection_id,
                  *[level.element_identifier for level in levels], *[level.element_index for level in levels]),
        collection_id, levels,
    ).order_by(*[level.element_index for level in levels]).offset(offset).limit(limit)
    units = []
    for row in session.execute(stmt):
        units.append(Unit(row[0], row[1], row[2], tuple(row[3 : 3 + depth]), tuple(row[3 + depth : 3 + 2 * depth])))
    return units


def direct_leaves(session: Session, collection_ids: list[int]) -> dict[int, list[int]]:
    """The datasets directly in each of these collections, in element order."""
    found: dict[int, list[int]] = {cid: [] for cid in collection_ids}
    for start in range(0, len(collection_ids), _CHUNK):
        rows = session.execute(
            sa.select(DatasetCollectionElement.collection_id, DatasetCollectionElement.dataset_id)
            .where(DatasetCollectionElement.collection_id.in_(collection_ids[start : start + _CHUNK]),
                   DatasetCollectionElement.dataset_id.is_not(None))
            .order_by(DatasetCollectionElement.collection_id, DatasetCollectionElement.element_index)
        )
        for collection_id, dataset_id in rows:
            found[collection_id].append(dataset_id)
    return found


def create_output_collections(session: Session, *, user_id: int, history_id: int, collection_type: str,
                              element_count: int, outputs: list[str], name: str, invocation_id: int,
                              invocation_step_id: int) -> dict[str, dict[str, int]]:
    """One empty, unpopulated HDCA per tool output: {output name: {"hdca_id", "collection_id"}}."""
    if not outputs:
        return {}
    now = utcnow()
    first_hid = allocate_hids(session, history_id, len(outputs))
    collection_ids = list(session.scalars(
        sa.insert(DatasetCollection).returning(DatasetCollection.id, sort_by_parameter_order=True),
        [{"collection_type": collection_type, "populated_state": PopulatedState.NEW, "element_count": element_count,
          "create_time": now, "update_time": now} for _ in outputs],
    ))
    hdca_ids = list(session.scalars(
        sa.insert(HistoryDatasetCollection).returning(HistoryDatasetCollection.id, sort_by_parameter_order=True),
        [{"history_id": history_id, "user_id": user_id, "hid": first_hid + i, "name": name[:255],
          "collection_id": collection_id, "visible": True, "deleted": False, "tags": [],
          "implicit_output_name": output, "invocation_id": invocation_id, "invocation_step_id": invocation_step_id,
          "create_time": now, "update_time": now}
         for i, (output, collection_id) in enumerate(zip(outputs, collection_ids))],
    ))
    return {output: {"hdca_id": hdca_id, "collection_id": collection_id}
            for output, hdca_id, collection_id in zip(outputs, hdca_ids, collection_ids)}


def _children(session: Session, parent_ids: list[int]) -> dict[tuple[int, str], int]:
    """(parent collection, identifier) → child collection, for nested levels."""
    found: dict[tuple[int, str], int] = {}
    for start in range(0, len(parent_ids), _CHUNK):
        rows = session.execute(
            sa.select(DatasetCollectionElement.collection_id, DatasetCollectionElement.element_identifier,
                      DatasetCollectionElement.child_collection_id)
            .where(DatasetCollectionElement.collection_id.in_(parent_ids[start : start + _CHUNK]),
                   DatasetCollectionElement.child_collection_id.is_not(None))
        )
        for parent, identifier, child in rows:
            found[(parent, identifier)] = child
    return found


def add_leaves(session: Session, top_collection_id: int, collection_type: str, units: list[Unit],
               dataset_ids: list[int]) -> None:
    """Put one slice's output datasets into an implicit collection, creating nested levels as needed."""
    depth = len(units[0].identifiers) if units else 0
    parents = [top_collection_id] * len(units)
    kinds = collection_type.split(":")
    now = utcnow()
    for level in range(depth - 1):
        existing = _children(session, sorted(set(parents)))
        missing: dict[tuple[int, str], int] = {}
        for parent, unit in zip(parents, units):
            key = (parent, unit.identifiers[level])
            if key not in existing and key not in missing:
                missing[key] = unit.indexes[level]
        if missing:
            keys = list(missing)
            child_type = ":".join(kinds[level + 1:])
            new_ids = insert_rows(session, DatasetCollection.__table__, [
                {"collection_type": child_type, "populated_state": PopulatedState.NEW, "element_count": 0,
                 "create_time": now, "update_time": now} for _ in keys])
            insert_rows(session, DatasetCollectionElement.__table__, [
                {"collection_id": parent, "element_index": missing[(parent, identifier)],
                 "element_identifier": identifier, "dataset_id": None, "child_collection_id": child}
                for (parent, identifier), child in zip(keys, new_ids)
            ], returning=False)
            existing.update(zip(keys, new_ids))
        parents = [existing[(parent, unit.identifiers[level])] for parent, unit in zip(parents, units)]
    if units:
        insert_rows(session, DatasetCollectionElement.__table__, [
            {"collection_id": parent, "element_index": unit.indexes[-1], "element_identifier": unit.identifiers[-1],
             "dataset_id": dataset_id, "child_collection_id": None}
            for parent, unit, dataset_id in zip(parents, units, dataset_ids)
        ], returning=False)


def finish_collections(session: Session, top_collection_ids: list[int]) -> None:
    """Mark implicit collections (and their nested levels) populated, with their element counts."""
    now = utcnow()
    frontier, nested = list(top_collection_ids), []
    while frontier:
        frontier = list(set(_children(session, frontier).values()))
        nested.extend(frontier)
    element = DatasetCollectionElement
    for start in range(0, len(nested), _CHUNK):
        chunk = nested[start : start + _CHUNK]
        session.execute(
            sa.update(DatasetCollection).where(DatasetCollection.id.in_(chunk))
            .values(element_count=sa.select(sa.func.count()).where(element.collection_id == DatasetCollection.id)
                    .scalar_subquery(), populated_state=PopulatedState.OK, update_time=now)
            .execution_options(synchronize_session=False)
        )
    session.execute(
        sa.update(DatasetCollection).where(DatasetCollection.id.in_(top_collection_ids))
        .values(element_count=sa.select(sa.func.count()).where(element.collection_id == DatasetCollection.id)
                .scalar_subquery(), populated_state=PopulatedState.OK, update_time=now)
        .execution_options(synchronize_session=False)
    )


def output_values(outputs: dict[str, dict[str, int]]) -> dict[str, Any]:
    """Step outputs of a map-over: its implicit collections."""
    return {name: {"src": "hdca", "id": info["hdca_id"]} for name, info in outputs.items()}
