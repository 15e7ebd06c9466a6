"""Histories and their contents: /api/histories."""

from __future__ import annotations

from flask import request

from app.api import exports
from app.api.context import current
from app.api.routing import ApiBlueprint, read_body
from app.schemas.histories import (
    ContentsQuery,
    DatasetUpdate,
    DatasetView,
    HistoryCreate,
    HistoryDelete,
    HistoryListQuery,
    HistoryUpdate,
    HistoryView,
)
from app.schemas.tasks import PurgeDatasets
from app.services import datasets, histories

bp = ApiBlueprint("histories", __name__)


def _history(history_id: str):
    ctx = current()
    return histories.get_history(ctx.session, ctx.user, ctx.decode(history_id, "history"))


@bp.endpoint("/api/histories", "POST", body=HistoryCreate, response=HistoryView)
def create_history(body: HistoryCreate) -> HistoryView | dict:
    """Create a history (with ``archive_file`` or ``archive_source``: import one, as a task)."""
    ctx = current()
    if exports.archive_import_requested():
        return exports.import_history_archive()
    history = histories.create_history(ctx.session, ctx.user, body)
    return histories.history_view(ctx.session, history, ctx.ids)


@bp.endpoint("/api/histories", query=HistoryListQuery, response=list[HistoryView])
def list_histories(query: HistoryListQuery) -> list[HistoryView]:
    """The user's histories."""
    ctx = current()
    rows = histories.list_histories(ctx.session, ctx.user, query)
    return [histories.history_view(ctx.session, h, ctx.ids) for h in rows]


@bp.endpoint("/api/histories/<history_id>", response=HistoryView)
def show_history(history_id: str) -> HistoryView:
    """One history with its state summary."""
    ctx = current()
    return histories.history_view(ctx.session, _history(history_id), ctx.ids)


@bp.endpoint("/api/histories/<history_id>", "PUT", body=HistoryUpdate, response=HistoryView)
def update_history(history_id: str, body: HistoryUpdate) -> HistoryView:
    """Change name, annotation, tags, published or deleted."""
    ctx = current()
    history = histories.update_history(ctx.session, _history(history_id), body)
    return histories.history_view(ctx.session, history, ctx.ids)


@bp.endpoint("/api/histories/<history_id>", "DELETE", response=HistoryView)
def delete_history(history_id: str) -> HistoryView:
    """Delete a history; with {"purge": true} (or ?purge=true) its files are removed too."""
    ctx = current()
    body = HistoryDelete.model_validate(read_body())
    purge = body.purge or request.args.get("purge", "").lower() in ("true", "1")
    history = histories.delete_history(ctx.session, _history(history_id), purge=purge)
    if purge:
        ids = [d.id for d in history.datasets if d.object_key]
        if ids:
            ctx.services.enqueuer.send(ctx.session, PurgeDatasets(dataset_ids=ids))
    return histories.history_view(ctx.session, history, ctx.ids)


@bp.endpoint("/api/histories/deleted/<history_id>/undelete", "POST", response=HistoryView)
def undelete_history(history_id: str) -> HistoryView:
    """Undelete a deleted (not purged) history."""
    ctx = current()
    history = _history(history_id)
    if not history.purged:
        history.deleted = False
    return histories.history_view(ctx.session, history, ctx.ids)


@bp.endpoint("/api/histories/<history_id>/contents", query=ContentsQuery, response=list[DatasetView])
def list_contents(history_id: str, query: ContentsQuery) -> list[dict]:
    """The datasets (and collections) of a history, in hid order."""
    ctx = current()
    history = _history(history_id)
    from app.api.contents import list_history_contents

    return list_history_contents(ctx, history, query)


@bp.endpoint("/api/histories/<history_id>/contents/<item_id>", response=DatasetView)
@bp.endpoint("/api/histories/<history_id>/contents/datasets/<item_id>", response=DatasetView)
def show_content(history_id: str, item_id: str) -> DatasetView:
    """One dataset of a history."""
    ctx = current()
    history = _history(history_id)
    dataset = datasets.get_dataset(ctx.session, ctx.user, ctx.decode(item_id, "dataset"), history_id=history.id)
    return datasets.dataset_view(dataset, ctx.ids)


@bp.endpoint("/api/histories/<history_id>/contents/<item_id>", "PUT", body=DatasetUpdate, response=DatasetView)
def update_content(history_id: str, item_id: str, body: DatasetUpdate) -> DatasetView:
    """Rename, hide/unhide, delete/undelete, change dbkey or tags of a dataset."""
    ctx = current()
    history = _history(history_id)
    dataset = datasets.get_dataset(ctx.session, ctx.user, ctx.decode(item_id, "dataset"), history_id=history.id)
    return datasets.dataset_view(datasets.update_dataset(ctx.session, dataset, body), ctx.ids)


@bp.endpoint("/api/histories/<history_id>/contents/<item_id>", "DELETE", response=DatasetView)
def delete_content(history_id: str, item_id: str) -> DatasetView:
    """Delete (``purge=true``: purge) a dataset."""
    ctx = current()
    history = _history(history_id)
    dataset = datasets.get_dataset(ctx.session, ctx.user, ctx.decode(item_id, "dataset"), history_id=history.id)
    body = read_body()
    purge = bool(body.get("purge")) or request.args.get("purge", "").lower() in ("true", "1")
    datasets.delete_dataset(ctx.session, dataset, purge=purge)
    if purge and dataset.object_key:
        ctx.services.enqueuer.send(ctx.session, PurgeDatasets(dataset_ids=[dataset.id]))
    return datasets.dataset_view(dataset, ctx.ids)
