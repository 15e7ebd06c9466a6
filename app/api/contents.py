"""History contents listing, shared by the histories API: datasets and collections in hid order."""

from __future__ import annotations

from typing import Any

from app.api.context import RequestContext
from app.models import History
from app.schemas.histories import ContentsQuery
from app.services import collections, datasets


def list_history_contents(ctx: RequestContext, history: History, query: ContentsQuery) -> list[dict[str, Any]]:
    """Datasets and collections of a history in hid order, filtered by the query."""
    types = set(query.types or ["dataset", "dataset_collection"])
    items: list[dict[str, Any]] = []
    if "dataset" in types:
        for dataset in datasets.list_datasets(ctx.session, history.id, query, ctx.ids):
            items.append(datasets.dataset_view(dataset, ctx.ids).model_dump(mode="json"))
    if "dataset_collection" in types:
        wanted = [i for i in (ctx.ids.decode(x) for x in query.ids) if i is not None] if query.ids else None
        for hdca in collections.list_hdcas(ctx.session, history.id, deleted=query.deleted, visible=query.visible,
                                           ids=wanted):
            items.append(collections.collection_view(ctx.session, hdca, ctx.ids, detailed=False))
    items.sort(key=lambda item: item["hid"])
    end = None if query.limit is None else query.offset + query.limit
    return items[query.offset : end]
