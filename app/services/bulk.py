"""Bulk operations over the contents of one history: PUT /api/histories/{id}/contents/bulk.

The selection is either explicit ``items`` ({id, history_content_type}) or ``filters``
(Galaxy's ``q``/``qv`` pairs, or a ``filters`` object with the same keys). The request
resolves the selection to (content type, id) pairs of this history — an item of another
history (or user) rejects the whole request with a 400 and changes nothing — and then
either applies the operation at once (small selections) or sends it as a tracked task.
Each item succeeds or reports its own error (e.g. undeleting a purged dataset).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import sqlalchemy as sa
from pydantic import Field
from sqlalchemy.orm import Session

from app.errors import RequestParameterInvalid, RequestParameterMissing
from app.ids import IdEncoder
from app.messaging import Enqueuer
from app.models import Dataset, History
from app.models.collections import DatasetCollectionElement, HistoryDatasetCollection
from app.schemas.common import Model, Request
from app.schemas.tasks import BulkHistoryOperation, PurgeDatasets

DATASET = "dataset"
COLLECTION = "dataset_collection"
#: Selections larger than this run as a task.
SYNC_LIMIT = 500
_CHUNK = 500
_EXTENSION = re.compile(r"^[\w.-]{1,64}$")

Operation = Literal["delete", "undelete", "purge", "hide", "unhide", "change_dbkey", "change_datatype",
                    "add_tags", "remove_tags"]


class BulkItem(Request):
    """One item named in the request."""

    id: str
    history_content_type: Literal["dataset", "dataset_collection"] = DATASET


class BulkPayload(Request):
    """PUT /api/histories/{id}/contents/bulk."""

    operation: Operation
    items: list[BulkItem] | None = Field(None, max_length=100_000)
    filters: dict[str, Any] | list[str] | None = None
    params: dict[str, Any] | None = None


class BulkItemError(Model):
    """Why one item failed."""

    item: dict[str, str]
    error: str


class BulkResult(Model):
    """How many items succeeded and which failed; ``task`` when it runs in the background."""

    success_count: int = 0
    errors: list[BulkItemError] = Field(default_factory=list)
    task: dict[str, Any] | None = None


@dataclass
class Outcome:
    """Per-item results, in database ids."""

    success_count: int = 0
    errors: list[tuple[str, int, str]] = field(default_factory=list)
    purged: list[int] = field(default_factory=list)


# --- parameters and filters --------------------------------------------------------------


def check_params(operation: str, params: dict[str, Any] | None) -> dict[str, Any]:
    """The parameters an operation needs, validated (400 when missing or wrong)."""
    params = dict(params or {})
    params.pop("type", None)
    if operation == "change_dbkey":
        dbkey = params.get("dbkey")
        if not isinstance(dbkey, str) or not dbkey or len(dbkey) > 64:
            raise RequestParameterInvalid("change_dbkey needs params.dbkey, a string of at most 64 characters")
        return {"dbkey": dbkey}
    if operation == "change_datatype":
        datatype = params.get("datatype")
        if not isinstance(datatype, str) or not _EXTENSION.match(datatype) or datatype == "auto":
            raise RequestParameterInvalid("change_datatype needs params.datatype, a datatype extension such as 'tabular'")
        return {"datatype": datatype}
    if operation in ("add_tags", "remove_tags"):
        tags = params.get("tags")
        if not isinstance(tags, list) or not tags or not all(isinstance(t, str) and 0 < len(t) <= 255 for t in tags):
            raise RequestParameterInvalid(f"{operation} needs params.tags, a non-empty list of tags")
        return {"tags": tags[:1000]}
    return {}


_BOOL_FILTERS = {"deleted", "visible", "purged"}
_EQ_FILTERS = {"state", "extension", "name", "hid", "history_content_type"}
_RANGE = {"hid-ge": ">=", "hid-le": "<=", "hid-gt": ">", "hid-lt": "<"}


def parse_filters(filters: dict[str, Any] | list[str] | None, q: list[str], qv: list[str]) -> dict[str, Any]:
    """One dict of filters from the body (object or ``["key-op:value", ...]``) and ``q``/``qv``."""
    found: dict[str, Any] = {}
    if isinstance(filters, dict):
        found.update(filters)
    elif isinstance(filters, list):
        for entry in filters:
            key, sep, value = str(entry).partition(":")
            if not sep:
                raise RequestParameterInvalid(f"filter {entry!r} must look like key:value")
            found[key] = value
    if len(q) != len(qv):
        raise RequestParameterInvalid("q and qv must come in pairs")
    found.update(zip(q, qv, strict=True))
    normalised: dict[str, Any] = {}
    for key, value in found.items():
        key = key.replace("_", "-") if key not in ("history_content_type",) else key
        key = key.removesuffix("-eq") if key.endswith("-eq") else key
        if key in _BOOL_FILTERS:
            normalised[key] = _boolean(key, value)
        elif key in ("hid", *_RANGE):
            normalised[key] = _integer(key, value)
        elif key in _EQ_FILTERS or key in ("name-contains", "tag"):
            normalised[key] = str(value)
        else:
            raise RequestParameterInvalid(
                f"unknown filter {key!r}; use deleted, visible, purged, state, extension, name, name-contains, "
                "tag, hid, hid-ge, hid-le, hid-gt, hid-lt or history_content_type")
    return normalised


def _boolean(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no"):
        return False
    raise RequestParameterInvalid(f"filter {key} needs true or false, not {value!r}")


def _integer(key: str, value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise RequestParameterInvalid(f"filter {key} needs a number, not {value!r}") from None


# --- selection ----------------------------------------------------------------------------


def select_by_filters(session: Session, history: History, filters: dict[str, Any]) -> list[tuple[str, int]]:
    """The (content type, id) pairs of the history matching every filter, in hid order."""
    wanted_type = filters.get("history_content_type")
    if wanted_type not in (None, DATASET, COLLECTION):
        raise RequestParameterInvalid("history_content_type must be dataset or dataset_collection")
    found: list[tuple[int, str, int]] = []
    for kind, model in ((DATASET, Dataset), (COLLECTION, HistoryDatasetCollection)):
        if wanted_type not in (None, kind):
            continue
        where = [model.history_id == history.id]
        # for … else: a filter no row of this kind can match (e.g. state on collections) skips the kind.
        for key, value in filters.items():
            clause = _clause(kind, model, key, value)
            if clause is False:
                break
            if clause is not None:
                where.append(clause)
        else:
            found += [(hid, kind, row_id) for row_id, hid in session.execute(sa.select(model.id, model.hid).where(*where))]
    return [(kind, row_id) for _, kind, row_id in sorted(found)]


def _clause(kind: str, model, key: str, value: Any):
    """A WHERE clause for a filter; False when no row of this kind can match; None to ignore."""
    if key == "history_content_type":
        return None
    if key in ("deleted", "visible"):
        return getattr(model, key).is_(value)
    if key == "purged":
        return model.purged.is_(value) if kind == DATASET else (None if value is False else False)
    if key == "hid":
        return model.hid == value
    if key in _RANGE:
        return model.hid.op(_RANGE[key])(value)
    if key == "name":
        return model.name == value
    if key == "name-contains":
        return sa.func.lower(model.name).contains(value.lower(), autoescape=True)
    if key == "tag":
        # Tags are a JSON list; a LIKE on its text form is portable across SQLite and PostgreSQL.
        return sa.cast(model.tags, sa.Text).contains(f'"{value}"', autoescape=True)
    if key in ("state", "extension"):
        return getattr(model, key) == value if kind == DATASET else False
    raise RequestParameterInvalid(f"unknown filter {key!r}")


def select_items(session: Session, history: History, items: list[BulkItem], ids: IdEncoder) -> list[tuple[str, int]]:
    """The items named, which must all be in this history (400 naming those that are not)."""
    wanted: dict[str, list[tuple[str, int | None]]] = {DATASET: [], COLLECTION: []}
    for item in items:
        wanted[item.history_content_type].append((item.id, ids.decode(item.id)))
    foreign: list[str] = []
    selected: list[tuple[str, int]] = []
    for kind, model in ((DATASET, Dataset), (COLLECTION, HistoryDatasetCollection)):
        numbers = sorted({n for _, n in wanted[kind] if n is not None})
        present: set[int] = set()
        for start in range(0, len(numbers), _CHUNK):
            present |= set(session.scalars(sa.select(model.id).where(
                model.id.in_(numbers[start : start + _CHUNK]), model.history_id == history.id)))
        for opaque, number in wanted[kind]:
            if number in present:
                selected.append((kind, number))
            else:
                foreign.append(opaque)
    if foreign:
        shown = ", ".join(foreign[:10]) + (" …" if len(foreign) > 10 else "")
        raise RequestParameterInvalid(
            f"{len(foreign)} item(s) are not in history {ids.encode(history.id)}: {shown}; nothing was changed")
    return list(dict.fromkeys(selected))


def resolve_selection(session: Session, history: History, body: BulkPayload, q: list[str], qv: list[str],
                      ids: IdEncoder) -> list[tuple[str, int]]:
    """Items or filters → (content type, id) pairs of this history."""
    if body.items is not None:
        if body.filters is not None or q:
            raise RequestParameterInvalid("give either items or filters, not both")
        return select_items(session, history, body.items, ids)
    if body.filters is None and not q:
        raise RequestParameterMissing("a bulk operation needs items or filters (use filters: {} for every item)")
    return select_by_filters(session, history, parse_filters(body.filters, q, qv))


# --- applying -----------------------------------------------------------------------------


def apply(session: Session, history_id: int, operation: str, params: dict[str, Any],
          items: list[tuple[str, int]]) -> Outcome:
    """Apply an operation to items of one history (items elsewhere are left alone)."""
    outcome = Outcome()
    datasets = [i for kind, i in items if kind == DATASET]
    collections = [i for kind, i in items if kind == COLLECTION]
    for dataset in _rows(session, Dataset, datasets, history_id):
        _one(outcome, DATASET, dataset.id, lambda d=dataset: _dataset_op(d, operation, params, outcome))
    for hdca in _rows(session, HistoryDatasetCollection, collections, history_id):
        _one(outcome, COLLECTION, hdca.id, lambda h=hdca: _collection_op(session, h, operation, params, outcome))
    session.flush()
    return outcome


def _rows(session: Session, model, ids: list[int], history_id: int | None = None) -> Iterator[Any]:
    for start in range(0, len(ids), _CHUNK):
        query = sa.select(model).where(model.id.in_(ids[start : start + _CHUNK])).order_by(model.id)
        if history_id is not None:
            query = query.where(model.history_id == history_id)
        yield from session.scalars(query)


def _one(outcome: Outcome, kind: str, row_id: int, action) -> None:
    try:
        action()
    except ItemError as exc:
        outcome.errors.append((kind, row_id, str(exc)))
    else:
        outcome.success_count += 1


class ItemError(Exception):
    """The operation cannot be applied to this item."""


def _dataset_op(dataset: Dataset, operation: str, params: dict[str, Any], outcome: Outcome) -> None:
    if operation == "delete":
        dataset.deleted = True
    elif operation == "undelete":
        if dataset.purged:
            raise ItemError("a purged dataset cannot be undeleted")
        dataset.deleted = False
    elif operation == "purge":
        dataset.deleted = True
        if not dataset.purged:
            dataset.purged = True
        if dataset.object_key:
            outcome.purged.append(dataset.id)
    elif operation in ("hide", "unhide"):
        dataset.visible = operation == "unhide"
    elif operation == "change_dbkey":
        dataset.dbkey = params["dbkey"]
    elif operation == "change_datatype":
        if dataset.purged:
            raise ItemError("the datatype of a purged dataset cannot be changed")
        dataset.extension = params["datatype"]
    elif operation == "add_tags":
        dataset.tags = _merge_tags(dataset.tags, params["tags"], add=True)
    elif operation == "remove_tags":
        dataset.tags = _merge_tags(dataset.tags, params["tags"], add=False)
    else:  # pragma: no cover - the payload model allows only the operations above
        raise ItemError(f"unknown operation {operation!r}")


def _collection_op(session: Session, hdca: HistoryDatasetCollection, operation: str, params: dict[str, Any],
                   outcome: Outcome) -> None:
    if operation in ("delete", "undelete"):
        hdca.deleted = operation == "delete"
    elif operation in ("hide", "unhide"):
        hdca.visible = operation == "unhide"
    elif operation in ("add_tags", "remove_tags"):
        hdca.tags = _merge_tags(hdca.tags, params["tags"], add=operation == "add_tags")
    elif operation in ("purge", "change_dbkey", "change_datatype"):
        if operation == "purge":
            hdca.deleted = True
        for dataset in _rows(session, Dataset, sorted(_element_datasets(session, hdca.collection_id))):
            _dataset_op(dataset, operation, params, outcome)
    else:  # pragma: no cover
        raise ItemError(f"unknown operation {operation!r}")


def _element_datasets(session: Session, collection_id: int) -> set[int]:
    found: set[int] = set()
    level, seen = {collection_id}, set()
    while level:
        seen |= level
        rows = session.execute(sa.select(DatasetCollectionElement.dataset_id, DatasetCollectionElement.child_collection_id)
                               .where(DatasetCollectionElement.collection_id.in_(sorted(level)))).all()
        found |= {d for d, _ in rows if d}
        level = {c for _, c in rows if c and c not in seen}
    return found


def _merge_tags(current: Iterable[str] | None, tags: list[str], *, add: bool) -> list[str]:
    existing = list(current or [])
    if add:
        return existing + [t for t in dict.fromkeys(tags) if t not in existing]
    return [t for t in existing if t not in set(tags)]


def result_view(outcome: Outcome, ids: IdEncoder) -> BulkResult:
    """The API answer for an outcome."""
    return BulkResult(success_count=outcome.success_count, errors=[
        BulkItemError(item={"id": ids.encode(row_id), "history_content_type": kind}, error=message)
        for kind, row_id, message in outcome.errors])


def run(session: Session, enqueuer: Enqueuer, history: History, operation: str, params: dict[str, Any],
        items: list[tuple[str, int]]) -> Outcome:
    """Apply the operation and send the purge of removed datasets' files (same transaction)."""
    outcome = apply(session, history.id, operation, params, items)
    for start in range(0, len(outcome.purged), 5000):
        enqueuer.send(session, PurgeDatasets(dataset_ids=outcome.purged[start : start + 5000]))
    return outcome


def run_task(session: Session, enqueuer: Enqueuer, ids: IdEncoder, request: BulkHistoryOperation) -> dict[str, Any]:
    """The task form of ``run``, for a large selection the request resolved and checked."""
    history = session.get(History, request.history_id)
    if history is None or history.user_id != request.user_id:
        return {"success_count": 0, "errors": [], "error": "the history no longer exists"}
    items = [(kind, row_id) for kind, row_id in request.items]
    outcome = run(session, enqueuer, history, request.operation, request.params, items)
    return result_view(outcome, ids).model_dump(mode="json")
