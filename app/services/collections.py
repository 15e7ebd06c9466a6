"""Dataset collections: create (in bulk), look up with ownership, walk, and show.

``create_collection`` makes a collection of any nesting (``list``, ``paired``,
``list:paired`` …) and its HDCA with a handful of bulk INSERTs, whatever the size.
``leaf_datasets`` lists a collection's datasets in element order with their identifier
paths; ``elements`` and ``load_tree`` read its structure level by level (one query per
level, not per element). ``collection_view`` is the API form (Galaxy's HDCA dict).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session, aliased

from app.errors import NotFound, RequestParameterInvalid
from app.ids import IdEncoder
from app.models import (
    Dataset,
    DatasetCollection,
    DatasetCollectionElement,
    History,
    HistoryDatasetCollection,
    Job,
    JobState,
    PopulatedState,
    User,
)
from app.models.base import utcnow
from app.services.datasets import dataset_view
from app.services.histories import allocate_hids
from app.tools.params import CollectionRef, ElementRef

COLLECTION_TYPE = re.compile(r"^(list|paired)(:(list|paired))*$")
PAIRED_IDENTIFIERS = ("forward", "reverse")
_CHUNK = 900  # ids per IN (…) list, below every backend's bound-parameter limit


@dataclass
class ElementSpec:
    """An element to create: a dataset (``dataset_id``), a nested level (``elements``), or an
    existing collection reused as the nested level (``collection_id``)."""

    identifier: str
    dataset_id: int | None = None
    elements: list["ElementSpec"] | None = None
    collection_id: int | None = None


@dataclass
class TreeElement:
    """An element read back: its row id, identifier, and a dataset id or a child level."""

    id: int
    identifier: str
    dataset_id: int | None
    child_collection_id: int | None
    child_type: str | None
    children: list["TreeElement"] = field(default_factory=list)


# -- creating --------------------------------------------------------------------------------


def check_collection_type(collection_type: str, where: str = "collection_type") -> str:
    """The type, if it is list, paired or a ':' nesting of them (400 otherwise)."""
    if not isinstance(collection_type, str) or not COLLECTION_TYPE.match(collection_type):
        raise RequestParameterInvalid(
            f"{where}: unknown collection type {collection_type!r} (list, paired, list:paired, …)")
    return collection_type


def validate_elements(collection_type: str, elements: list[ElementSpec], where: str = "element_identifiers") -> None:
    """Check that the elements fit the type: identifiers, pairs, nesting depth (400 otherwise)."""
    check_collection_type(collection_type)
    kind, _, rest = collection_type.partition(":")
    names = [e.identifier for e in elements]
    for index, element in enumerate(elements):
        here = f"{where}[{index}]"
        if not isinstance(element.identifier, str) or not element.identifier or len(element.identifier) > 255:
            raise RequestParameterInvalid(f"{here}: an element needs a name of 1 to 255 characters")
        if rest:
            if element.elements is None and element.collection_id is None:
                raise RequestParameterInvalid(f"{here}: a '{collection_type}' element must be a '{rest}' collection")
            if element.elements is not None:
                validate_elements(rest, element.elements, f"{here}.element_identifiers")
        elif element.dataset_id is None:
            raise RequestParameterInvalid(f"{here}: a '{collection_type}' element must be a dataset")
    if len(set(names)) != len(names):
        duplicate = next(name for name, count in Counter(names).items() if count > 1)
        raise RequestParameterInvalid(f"{where}: element name {duplicate!r} appears twice")
    if kind == "paired" and sorted(names) != sorted(PAIRED_IDENTIFIERS):
        raise RequestParameterInvalid(f"{where}: a paired collection has exactly the elements 'forward' and 'reverse'")


def create_structure(session: Session, collection_type: str, elements: list[ElementSpec]) -> int:
    """Insert a collection and every nested level with bulk INSERTs; return the top collection's id."""
    now = utcnow()
    levels: list[list[tuple[int, str, list[ElementSpec]]]] = []  # per depth: (placeholder, type, elements)
    frontier: list[tuple[str, list[ElementSpec]]] = [(collection_type, elements)]
    while frontier:
        levels.append([(i, kind, items) for i, (kind, items) in enumerate(frontier)])
        frontier = [(kind.partition(":")[2], e.elements) for kind, items in frontier for e in items
                    if e.elements is not None]
    collection_ids: list[list[int]] = []
    for level in levels:
        rows = [{"collection_type": kind, "populated_state": PopulatedState.OK, "element_count": len(items),
                 "create_time": now, "update_time": now} for _, kind, items in level]
        collection_ids.append(_insert_returning(session, DatasetCollection, rows))
    element_rows = []
    for depth, level in enumerate(levels):
        child_iter = iter(collection_ids[depth + 1]) if depth + 1 < len(levels) else iter(())
        for (_, _, items), collection_id in zip(level, collection_ids[depth]):
            for index, element in enumerate(items):
                child = element.collection_id
                if element.elements is not None:
                    child = next(child_iter)
                element_rows.append({"collection_id": collection_id, "element_index": index,
                                     "element_identifier": element.identifier,
                                     "dataset_id": None if child is not None else element.dataset_id,
                                     "child_collection_id": child})
    if element_rows:
        session.execute(sa.insert(DatasetCollectionElement), element_rows)
    return collection_ids[0][0]


def _insert_returning(session: Session, model: type, rows: list[dict[str, Any]]) -> list[int]:
    """Bulk INSERT returning the new ids in the order of ``rows``."""
    if not rows:
        return []
    stmt = sa.insert(model).returning(model.id, sort_by_parameter_order=True)
    return list(session.scalars(stmt, rows))


def create_collection(
    session: Session,
    *,
    user: User,
    history: History,
    collection_type: str,
    elements: list[ElementSpec],
    name: str,
    hidden: bool = False,
    hid: int | None = None,
    implicit_output_name: str | None = None,
    job_id: int | None = None,
    invocation_id: int | None = None,
    invocation_step_id: int | None = None,
) -> HistoryDatasetCollection:
    """Create a collection and put it into the history (a new hid unless ``hid`` is given)."""
    validate_elements(collection_type, elements)
    collection_id = create_structure(session, collection_type, elements)
    if hid is None:
        hid = allocate_hids(session, history.id, 1)
    hdca = HistoryDatasetCollection(
        history_id=history.id, user_id=user.id, hid=hid, name=(name or "Unnamed collection")[:255],
        collection_id=collection_id, visible=not hidden, implicit_output_name=implicit_output_name,
        job_id=job_id, invocation_id=invocation_id, invocation_step_id=invocation_step_id,
    )
    session.add(hdca)
    session.flush()
    return hdca


def elements_from_paths(paths: list[tuple[str, ...]], dataset_ids: list[int]) -> list[ElementSpec]:
    """Element specs of a nested collection from (identifier path, dataset) pairs in order."""
    root: list[ElementSpec] = []
    index: dict[tuple[str, ...], ElementSpec] = {}
    for path, dataset_id in zip(paths, dataset_ids):
        level = root
        for depth, identifier in enumerate(path[:-1]):
            key = path[: depth + 1]
            node = index.get(key)
            if node is None:
                node = index[key] = ElementSpec(identifier, elements=[])
                level.append(node)
            level = node.elements  # type: ignore[assignment]
        level.append(ElementSpec(path[-1], dataset_id=dataset_id))
    return root


# -- reading ---------------------------------------------------------------------------------


def get_hdca(session: Session, user: User, hdca_id: int, *, history_id: int | None = None) -> HistoryDatasetCollection:
    """A collection in one of the user's histories (404 for another user's)."""
    hdca = session.get(HistoryDatasetCollection, hdca_id)
    if hdca is None or hdca.user_id != user.id or (history_id is not None and hdca.history_id != history_id):
        raise NotFound(f"dataset collection {hdca_id} not found")
    return hdca


def list_hdcas(session: Session, history_id: int, *, deleted: bool | None = None, visible: bool | None = None,
               ids: list[int] | None = None) -> list[HistoryDatasetCollection]:
    """The collections of a history in hid order, filtered as the contents API filters."""
    stmt = sa.select(HistoryDatasetCollection).where(HistoryDatasetCollection.history_id == history_id)
    if deleted is not None:
        stmt = stmt.where(HistoryDatasetCollection.deleted.is_(deleted))
    if visible is not None:
        stmt = stmt.where(HistoryDatasetCollection.visible.is_(visible))
    if ids is not None:
        stmt = stmt.where(HistoryDatasetCollection.id.in_(ids))
    return list(session.scalars(stmt.order_by(HistoryDatasetCollection.hid)))


def elements(session: Session, collection_id: int) -> list[ElementRef]:
    """The direct elements of a collection, in order."""
    return [ElementRef(e.id, e.identifier, e.dataset_id, e.child_collection_id, e.child_type)
            for e in _level(session, [collection_id]).get(collection_id, [])]


def _level(session: Session, collection_ids: list[int]) -> dict[int, list[TreeElement]]:
    """The elements of several collections, grouped by collection, in order."""
    child = aliased(DatasetCollection)
    element = DatasetCollectionElement
    grouped: dict[int, list[TreeElement]] = {}
    for start in range(0, len(collection_ids), _CHUNK):
        rows = session.execute(
            sa.select(element.id, element.collection_id, element.element_identifier, element.dataset_id,
                      element.child_collection_id, child.collection_type)
            .outerjoin(child, child.id == element.child_collection_id)
            .where(element.collection_id.in_(collection_ids[start : start + _CHUNK]))
            .order_by(element.collection_id, element.element_index)
        )
        for row in rows:
            grouped.setdefault(row[1], []).append(TreeElement(row[0], row[2], row[3], row[4], row[5]))
    return grouped


def load_tree(session: Session, collection_id: int) -> list[TreeElement]:
    """The whole element tree of a collection, one query per nesting level."""
    top = _level(session, [collection_id]).get(collection_id, [])
    frontier = top
    while True:
        parents = [e for e in frontier if e.child_collection_id is not None]
        if not parents:
            return top
        below = _level(session, [e.child_collection_id for e in parents])  # type: ignore[misc]
        frontier = []
        for parent in parents:
            parent.children = below.get(parent.child_collection_id, [])  # type: ignore[arg-type]
            frontier.extend(parent.children)


def iter_leaves(tree: list[TreeElement], path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], int]]:
    """(identifier path, dataset id) of every dataset of a loaded tree, in element order."""
    for element in tree:
        here = (*path, element.identifier)
        if element.child_collection_id is not None:
            yield from iter_leaves(element.children, here)
        elif element.dataset_id is not None:
            yield here, element.dataset_id


def leaf_datasets(session: Session, collection_id: int) -> list[tuple[tuple[str, ...], int]]:
    """(identifier path, dataset id) of every dataset in a collection, in element order."""
    return list(iter_leaves(load_tree(session, collection_id)))


def collection_ref(session: Session, user: User | None, src: str, ref_id: int, where: str) -> CollectionRef:
    """Resolve an ``hdca`` or ``dce`` reference (an element holding a nested level) to a CollectionRef."""
    if src == "hdca":
        hdca = session.get(HistoryDatasetCollection, ref_id)
        if hdca is None or (user is not None and hdca.user_id != user.id):
            raise NotFound(f"parameter '{where}': dataset collection not found")
        collection = session.get(DatasetCollection, hdca.collection_id)
        assert collection is not None
        return CollectionRef("hdca", hdca.id, collection.id, collection.collection_type, hdca.hid, hdca.name)
    if src == "dce":
        element = session.get(DatasetCollectionElement, ref_id)
        if element is None or element.child_collection_id is None:
            raise NotFound(f"parameter '{where}': collection element not found")
        if user is not None and not _user_owns_collection(session, user, element.collection_id):
            raise NotFound(f"parameter '{where}': collection element not found")
        collection = session.get(DatasetCollection, element.child_collection_id)
        assert collection is not None
        return CollectionRef("dce", element.id, collection.id, collection.collection_type, None,
                             element.element_identifier)
    raise RequestParameterInvalid(f"parameter '{where}': unknown src {src!r}")


def _user_owns_collection(session: Session, user: User, collection_id: int) -> bool:
    """True when one of the user's HDCAs holds this collection, directly or as a nested level."""
    current = collection_id
    for _ in range(16):
        if session.scalar(sa.select(sa.literal(1)).where(
                HistoryDatasetCollection.collection_id == current, HistoryDatasetCollection.user_id == user.id)):
            return True
        parent = session.scalar(sa.select(DatasetCollectionElement.collection_id)
                                .where(DatasetCollectionElement.child_collection_id == current).limit(1))
        if parent is None:
            return False
        current = parent
    return False


# -- deleting --------------------------------------------------------------------------------


def delete_hdca(session: Session, hdca: HistoryDatasetCollection, *, recursive: bool = False,
                purge: bool = False) -> HistoryDatasetCollection:
    """Mark a collection deleted (``recursive``: its datasets too; ``purge``: and purged)."""
    hdca.deleted = True
    if recursive or purge:
        ids = [d for _, d in leaf_datasets(session, hdca.collection_id)]
        for start in range(0, len(ids), _CHUNK):
            values: dict[str, Any] = {"deleted": True}
            if purge:
                values["purged"] = True
            session.execute(sa.update(Dataset).where(Dataset.id.in_(ids[start : start + _CHUNK]),
                                                     Dataset.user_id == hdca.user_id).values(**values))
    session.flush()
    return hdca


# -- views -----------------------------------------------------------------------------------


def job_state_summary(session: Session, dataset_ids: Iterable[int]) -> dict[str, Any]:
    """Counts of the states of the jobs that made these datasets (Galaxy's job_state_summary)."""
    ids = list(dataset_ids)
    counts: Counter[str] = Counter()
    for start in range(0, len(ids), _CHUNK):
        job_ids = sa.select(Dataset.creating_job_id).where(Dataset.id.in_(ids[start : start + _CHUNK]))
        rows = session.execute(sa.select(Job.id, Job.state).where(Job.id.in_(job_ids)))
        counts.update({job_id: state for job_id, state in rows}.values())
    states = [JobState.NEW, JobState.QUEUED, JobState.RUNNING, JobState.OK, JobState.ERROR,
              JobState.DELETING, JobState.DELETED, "paused", "waiting", "upload", "failed", "skipped"]
    summary: dict[str, Any] = {state: counts.get(state, 0) for state in states}
    summary["all_jobs"] = sum(counts.values())
    return summary


def collection_view(session: Session, hdca: HistoryDatasetCollection, ids: IdEncoder, *,
                    detailed: bool = True) -> dict[str, Any]:
    """The API form of an HDCA; ``detailed`` adds the elements (nested levels included)."""
    collection = hdca.collection
    encoded, history = ids.encode(hdca.id), ids.encode(hdca.history_id)
    view: dict[str, Any] = {
        "id": encoded,
        "name": hdca.name,
        "hid": hdca.hid,
        "history_id": history,
        "history_content_type": "dataset_collection",
        "type": "collection",
        "type_id": f"dataset_collection-{encoded}",
        "collection_type": collection.collection_type,
        "collection_id": ids.encode(collection.id),
        "populated_state": collection.populated_state,
        "populated_state_message": collection.populated_state_message,
        "populated": collection.populated_state == PopulatedState.OK,
        "element_count": collection.element_count,
        "deleted": hdca.deleted,
        "visible": hdca.visible,
        "tags": list(hdca.tags or []),
        "url": f"/api/histories/{history}/contents/dataset_collections/{encoded}",
        "contents_url": f"/api/dataset_collections/{encoded}/contents/{ids.encode(collection.id)}",
        "implicit_output_name": hdca.implicit_output_name,
        "job_source_id": ids.encode(hdca.job_id) if hdca.job_id else None,
        "job_source_type": "Job" if hdca.job_id else None,
        "model_class": "HistoryDatasetCollectionAssociation",
        "create_time": hdca.create_time.isoformat(),
        "update_time": hdca.update_time.isoformat(),
    }
    if detailed:
        tree = load_tree(session, collection.id)
        leaves = [d for _, d in iter_leaves(tree)]
        datasets = _datasets_by_id(session, leaves)
        view["elements"] = [_element_view(e, datasets, ids, i) for i, e in enumerate(tree)]
        view["job_state_summary"] = job_state_summary(session, leaves)
        view["elements_datatypes"] = sorted({d.extension for d in datasets.values()})
        view["elements_states"] = dict(Counter(d.state for d in datasets.values()))
    return view


def _datasets_by_id(session: Session, dataset_ids: list[int]) -> dict[int, Dataset]:
    found: dict[int, Dataset] = {}
    for start in range(0, len(dataset_ids), _CHUNK):
        for dataset in session.scalars(sa.select(Dataset).where(Dataset.id.in_(dataset_ids[start : start + _CHUNK]))):
            found[dataset.id] = dataset
    return found


def _element_view(element: TreeElement, datasets: dict[int, Dataset], ids: IdEncoder, index: int) -> dict[str, Any]:
    if element.child_collection_id is not None:
        obj: dict[str, Any] = {
            "id": ids.encode(element.child_collection_id),
            "model_class": "DatasetCollection",
            "collection_type": element.child_type,
            "populated_state": PopulatedState.OK,
            "populated": True,
            "element_count": len(element.children),
            "elements": [_element_view(child, datasets, ids, i) for i, child in enumerate(element.children)],
        }
        kind = "dataset_collection"
    else:
        dataset = datasets.get(element.dataset_id)  # type: ignore[arg-type]
        obj = dataset_view(dataset, ids).model_dump(mode="json") if dataset is not None else {}
        kind = "hda"
    return {
        "id": ids.encode(element.id),
        "element_index": index,
        "element_identifier": element.identifier,
        "element_type": kind,
        "model_class": "DatasetCollectionElement",
        "object": obj,
    }
