"""Datasets: /api/datasets and the display/download routes."""

from __future__ import annotations

import re

from flask import Response, request, send_file

from app.api.context import current
from app.api.routing import ApiBlueprint, read_body
from app.schemas.histories import DatasetUpdate, DatasetView
from app.schemas.tasks import PurgeDatasets
from app.services import datasets

bp = ApiBlueprint("datasets", __name__)


def _dataset(dataset_id: str, history_id: str | None = None):
    ctx = current()
    history = ctx.decode(history_id, "history") if history_id else None
    return datasets.get_dataset(ctx.session, ctx.user, ctx.decode(dataset_id, "dataset"), history_id=history)


@bp.endpoint("/api/datasets/<dataset_id>", response=DatasetView)
def show_dataset(dataset_id: str) -> DatasetView:
    """One dataset."""
    return datasets.dataset_view(_dataset(dataset_id), current().ids)


@bp.endpoint("/api/datasets/<dataset_id>", "PUT", body=DatasetUpdate, response=DatasetView)
def update_dataset(dataset_id: str, body: DatasetUpdate) -> DatasetView:
    """Change a dataset's name, visibility, dbkey, info or tags."""
    ctx = current()
    return datasets.dataset_view(datasets.update_dataset(ctx.session, _dataset(dataset_id), body), ctx.ids)


@bp.endpoint("/api/datasets/<dataset_id>", "DELETE", response=DatasetView)
def delete_dataset(dataset_id: str) -> DatasetView:
    """Delete (``purge``: purge) a dataset."""
    ctx = current()
    dataset = _dataset(dataset_id)
    purge = bool(read_body().get("purge")) or request.args.get("purge", "").lower() in ("true", "1")
    datasets.delete_dataset(ctx.session, dataset, purge=purge)
    if purge and dataset.object_key:
        ctx.services.enqueuer.send(ctx.session, PurgeDatasets(dataset_ids=[dataset.id]))
    return datasets.dataset_view(dataset, ctx.ids)


@bp.endpoint("/api/datasets/<dataset_id>/display")
@bp.endpoint("/api/datasets/<dataset_id>/download")
def display_dataset(dataset_id: str) -> Response:
    """The dataset's bytes; with ``to_ext`` as a download attachment."""
    return _send(_dataset(dataset_id))


@bp.endpoint("/api/histories/<history_id>/contents/<dataset_id>/display")
def display_history_dataset(history_id: str, dataset_id: str) -> Response:
    """The dataset's bytes, addressed through its history (Galaxy's download_url)."""
    return _send(_dataset(dataset_id, history_id))


def _send(dataset) -> Response:
    ctx = current()
    path = datasets.dataset_file(dataset, ctx.services.object_store)
    to_ext = request.args.get("to_ext")
    if to_ext is not None or request.args.get("download", "").lower() in ("true", "1"):
        ext = re.sub(r"[^\w.-]", "", to_ext or dataset.extension) or "data"
        name = re.sub(r"[^\w. -]", "_", dataset.name)[:100]
        return send_file(path, mimetype="application/octet-stream", as_attachment=True,
                         download_name=f"Galaxy{dataset.hid}-[{name}].{ext}")
    mimetype = "application/json" if dataset.extension == "json" else "text/plain" if dataset.extension != "data" else "application/octet-stream"
    return send_file(path, mimetype=mimetype, conditional=True)
