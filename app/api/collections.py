"""Dataset collections: create one in a history, show it, its elements, update and delete it."""

from __future__ import annotations

from typing import Any

from flask import request
from pydantic import Field

from app.api.context import current
from app.api.routing import ApiBlueprint, read_body
from app.errors import RequestParameterInvalid
from app.models import Dataset, HistoryDatasetCollection
from app.schemas.common import Query, Request
from app.schemas.tasks import PurgeDatasets
from app.services import collections, datasets, histories

bp = ApiBlueprint("collections", __name__)


class ContentCreate(Request):
    """POST /api/histories/{id}/contents (``type: dataset_collection``) and POST /api/dataset_collections."""

    type: str = "dataset"
    history_id: str | None = None
    collection_type: str | None = None
    element_identifiers: list[dict[str, Any]] | None = Field(None, max_length=100_000)
    name: str | None = Field(None, max_length=255)
    hide_source_items: bool = False
    copy_elements: bool = True
    instance_type: str = "history"


class CollectionUpdate(Request):
    """PUT /api/histories/{h}/contents/dataset_collections/{id}."""

    name: str | None = Field(None, max_length=255)
    visible: bool | None = None
    deleted: bool | None = None
    tags: list[str] | None = None


class ElementsQuery(Query):
    """GET /api/dataset_collections/{id}/contents/{collection_id}."""

    limit: int | None = Field(None, ge=0)
    offset: int = Field(0, ge=0)


def _history(history_id: str):
    ctx = current()
    return histories.get_history(ctx.session, ctx.user, ctx.decode(history_id, "history"))


def _hdca(hdca_id: str, history_id: int | None = None) -> HistoryDatasetCollection:
    ctx = current()
    return collections.get_hdca(ctx.session, ctx.user, ctx.decode(hdca_id, "dataset collection"), history_id=history_id)


@bp.endpoint("/api/histories/<history_id>/contents", "POST", body=ContentCreate)
@bp.endpoint("/api/histories/<history_id>/contents/<content_type>", "POST", body=ContentCreate)
def create_content(history_id: str, body: ContentCreate, content_type: str | None = None) -> dict[str, Any]:
    """Create a collection from datasets and collections of the user (type dataset_collection)."""
    kind = {"dataset_collections": "dataset_collection", "datasets": "dataset"}.get(content_type or "", body.type)
    if kind != "dataset_collection":
        raise RequestParameterInvalid(f"type: only 'dataset_collection' contents can be created here, not {kind!r}")
    return _create(_history(history_id), body)


@bp.endpoint("/api/dataset_collections", "POST", body=ContentCreate)
def create_collection(body: ContentCreate) -> dict[str, Any]:
    """Create a collection in the history named by ``history_id``."""
    if not body.history_id:
        raise RequestParameterInvalid("history_id: required")
    return _create(_history(body.history_id), body)


def _create(history, body: ContentCreate) -> dict[str, Any]:
    ctx = current()
    if not body.collection_type:
        raise RequestParameterInvalid("collection_type: required (list, paired, list:paired, …)")
    collections.check_collection_type(body.collection_type)
    if body.element_identifiers is None:
        raise RequestParameterInvalid("element_identifiers: required")
    sources: list[Dataset] = []
    elements = _elements(body.element_identifiers, body.collection_type, "element_identifiers", sources)
    hdca = collections.create_collection(
        ctx.session, user=ctx.user, history=history, collection_type=body.collection_type, elements=elements,
        name=body.name or "Unnamed collection",
    )
    if body.hide_source_items:
        for dataset in sources:
            dataset.visible = False
    return collections.collection_view(ctx.session, hdca, ctx.ids)


def _elements(items: list[Any], collection_type: str, where: str, sources: list[Dataset]) -> list[collections.ElementSpec]:
    """Element specs from Galaxy's element_identifiers (src hda, hdca or new_collection)."""
    ctx = current()
    _, _, rest = collection_type.partition(":")
    out = []
    for index, item in enumerate(items):
        here = f"{where}[{index}]"
        if not isinstance(item, dict):
            raise RequestParameterInvalid(f"{here}: expected an object")
        name, src = item.get("name"), item.get("src")
        if not isinstance(name, str) or not name:
            raise RequestParameterInvalid(f"{here}.name: required")
        if src == "hda":
            if rest:
                raise RequestParameterInvalid(f"{here}: a '{collection_type}' collection holds '{rest}' collections, not datasets")
            dataset = datasets.get_dataset(ctx.session, ctx.user, ctx.decode(str(item.get("id")), "dataset"))
            sources.append(dataset)
            out.append(collections.ElementSpec(name, dataset_id=dataset.id))
        elif src == "new_collection":
            inner = item.get("collection_type") or rest
            if not rest or inner != rest:
                raise RequestParameterInvalid(f"{here}: a nested collection of type {inner!r} does not fit a {collection_type!r}")
            children = item.get("element_identifiers")
            if not isinstance(children, list):
                raise RequestParameterInvalid(f"{here}.element_identifiers: required for a new_collection")
            out.append(collections.ElementSpec(name, elements=_elements(children, rest, f"{here}.element_identifiers", sources)))
        elif src == "hdca":
            child = _hdca(str(item.get("id")))
            if child.collection.collection_type != rest:
                raise RequestParameterInvalid(
                    f"{here}: a '{child.collection.collection_type}' collection does not fit a '{collection_type}'")
            out.append(collections.ElementSpec(name, collection_id=child.collection_id))
        else:
            raise RequestParameterInvalid(f"{here}.src: must be hda, hdca or new_collection, not {src!r}")
    return out


@bp.endpoint("/api/histories/<history_id>/contents/dataset_collections/<hdca_id>")
def show_history_collection(history_id: str, hdca_id: str) -> dict[str, Any]:
    """A collection of a history, with its elements."""
    ctx = current()
    return collections.collection_view(ctx.session, _hdca(hdca_id, _history(history_id).id), ctx.ids)


@bp.endpoint("/api/dataset_collections/<hdca_id>")
def show_collection(hdca_id: str) -> dict[str, Any]:
    """A collection, with its elements."""
    ctx = current()
    return collections.collection_view(ctx.session, _hdca(hdca_id), ctx.ids)


@bp.endpoint("/api/dataset_collections/<hdca_id>/contents/<collection_id>", query=ElementsQuery)
def collection_contents(hdca_id: str, collection_id: str, query: ElementsQuery) -> list[dict[str, Any]]:
    """The elements of a collection or of one of its nested levels, paged."""
    ctx = current()
    hdca = _hdca(hdca_id)
    view = collections.collection_view(ctx.session, hdca, ctx.ids)
    wanted = ctx.decode(collection_id, "collection")
    elements = _find_level(view["elements"], ctx.ids.encode(wanted)) if wanted != hdca.collection_id else view["elements"]
    if elements is None:
        raise RequestParameterInvalid(f"collection {collection_id!r} is not part of dataset collection {hdca_id!r}")
    end = None if query.limit is None else query.offset + query.limit
    return elements[query.offset : end]


def _find_level(elements: list[dict[str, Any]], encoded: str) -> list[dict[str, Any]] | None:
    for element in elements:
        obj = element["object"]
        if element["element_type"] == "dataset_collection":
            if obj["id"] == encoded:
                return obj["elements"]
            found = _find_level(obj["elements"], encoded)
            if found is not None:
                return found
    return None


@bp.endpoint("/api/histories/<history_id>/contents/dataset_collections/<hdca_id>", "PUT", body=CollectionUpdate)
def update_collection(history_id: str, hdca_id: str, body: CollectionUpdate) -> dict[str, Any]:
    """Rename, hide/unhide, delete/undelete or retag a collection."""
    ctx = current()
    hdca = _hdca(hdca_id, _history(history_id).id)
    for name, value in body.model_dump(exclude_unset=True).items():
        if value is not None:
            setattr(hdca, name, value)
    ctx.session.flush()
    return collections.collection_view(ctx.session, hdca, ctx.ids)


@bp.endpoint("/api/histories/<history_id>/contents/dataset_collections/<hdca_id>", "DELETE")
@bp.endpoint("/api/dataset_collections/<hdca_id>", "DELETE")
def delete_collection(hdca_id: str, history_id: str | None = None) -> dict[str, Any]:
    """Delete a collection (``recursive``: its datasets too; ``purge``: and purge them)."""
    ctx = current()
    hdca = _hdca(hdca_id, _history(history_id).id if history_id else None)
    body = read_body()
    flag = lambda key: bool(body.get(key)) or request.args.get(key, "").lower() in ("true", "1")  # noqa: E731
    purge = flag("purge")
    collections.delete_hdca(ctx.session, hdca, recursive=flag("recursive"), purge=purge)
    if purge:
        stored = [d for _, d in collections.leaf_datasets(ctx.session, hdca.collection_id)]
        if stored:
            ctx.services.enqueuer.send(ctx.session, PurgeDatasets(dataset_ids=stored))
    return collections.collection_view(ctx.session, hdca, ctx.ids, detailed=False)
