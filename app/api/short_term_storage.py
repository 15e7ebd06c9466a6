"""Short-term storage downloads: /api/short_term_storage/{id}/ready and /api/short_term_storage/{id}."""

from __future__ import annotations

import json
from dataclasses import dataclass

from flask import Response, send_file

from app.api.context import RequestContext, current
from app.api.routing import ApiBlueprint
from app.errors import Conflict
from app.models import Task, TaskState
from app.shortterm import ShortTermStorage, StorageRequest

bp = ApiBlueprint("short_term_storage", __name__)


class PreparationFailed(Conflict):
    """The task preparing a download failed; the message says why."""

    err_code = 409002


@dataclass
class Outcome:
    """Where a request stands: done (with the file or an error) or still being prepared."""

    ready: bool
    error: str | None = None


def storage(ctx: RequestContext) -> ShortTermStorage:
    """The installation's short-term storage."""
    return ShortTermStorage.from_settings(ctx.settings)


def outcome(ctx: RequestContext, sts: ShortTermStorage, meta: StorageRequest) -> Outcome:
    """Finished, failed (the task recorded an error, or its tracked task failed for good), or pending."""
    if sts.is_finalized(meta.request_id):
        return Outcome(True)
    error = sts.error(meta.request_id)
    if error is not None:
        return Outcome(True, error)
    if meta.task_id:
        task = ctx.session.get(Task, meta.task_id)
        if task is not None and task.state == TaskState.FAILURE:
            return Outcome(True, task.error or "the task failed")
    return Outcome(False)


def send_prepared(ctx: RequestContext, sts: ShortTermStorage, meta: StorageRequest) -> Response:
    """The prepared file as an attachment; 202 while it is prepared; the task's error if it failed."""
    state = outcome(ctx, sts, meta)
    if not state.ready:
        body = {"ready": False, "message": "the file is still being prepared; poll "
                f"/api/short_term_storage/{meta.request_id}/ready"}
        return Response(json.dumps(body), status=202, mimetype="application/json")
    if state.error is not None:
        raise PreparationFailed(f"preparing {meta.file_name} failed: {state.error}")
    return send_file(sts.target_path(meta.request_id), mimetype=meta.mime_type, as_attachment=True,
                     download_name=meta.file_name, conditional=True, max_age=0)


@bp.endpoint("/api/short_term_storage/<storage_request_id>/ready", response=bool)
def is_ready(storage_request_id: str) -> bool:
    """True once the file is prepared (or its preparation failed), else false."""
    ctx = current()
    sts = storage(ctx)
    meta = sts.load_for(storage_request_id, ctx.user.id)
    return outcome(ctx, sts, meta).ready


@bp.endpoint("/api/short_term_storage/<storage_request_id>")
def serve(storage_request_id: str) -> Response:
    """The prepared file, or the error of the task that failed to prepare it."""
    ctx = current()
    sts = storage(ctx)
    return send_prepared(ctx, sts, sts.load_for(storage_request_id, ctx.user.id))
