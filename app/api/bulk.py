"""Bulk operations: PUT /api/histories/{id}/contents/bulk."""

from __future__ import annotations

from flask import request

from app.api.context import current
from app.api.routing import ApiBlueprint
from app.schemas.tasks import BulkHistoryOperation
from app.services import bulk, histories

bp = ApiBlueprint("bulk", __name__)


@bp.endpoint("/api/histories/<history_id>/contents/bulk", "PUT", body=bulk.BulkPayload, response=bulk.BulkResult)
def bulk_operation(history_id: str, body: bulk.BulkPayload) -> bulk.BulkResult:
    """Apply an operation to items (or every item matching filters); large selections run as a task."""
    ctx = current()
    history = histories.get_history(ctx.session, ctx.user, ctx.decode(history_id, "history"))
    params = bulk.check_params(body.operation, body.params)
    items = bulk.resolve_selection(ctx.session, history, body, request.args.getlist("q"), request.args.getlist("qv"),
                                   ctx.ids)
    if len(items) <= bulk.SYNC_LIMIT:
        outcome = bulk.run(ctx.session, ctx.services.enqueuer, history, body.operation, params, items)
        return bulk.result_view(outcome, ctx.ids)
    task_id = ctx.services.enqueuer.send(ctx.session, BulkHistoryOperation(
        user_id=ctx.user.id, history_id=history.id, operation=body.operation, params=params, items=items),
        tracked_for=ctx.user.id)
    return bulk.BulkResult(task={"id": task_id, "name": BulkHistoryOperation.route.action, "queue": "default",
                                 "items": len(items)})
