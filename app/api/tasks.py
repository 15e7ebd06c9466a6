"""Tracked task state: /api/tasks/{id}/state and /result."""

from __future__ import annotations

from app.api.context import current
from app.api.routing import ApiBlueprint
from app.errors import NotFound
from app.models import Task

bp = ApiBlueprint("tasks", __name__)


def _task(task_id: str) -> Task:
    ctx = current()
    task = ctx.session.get(Task, task_id) if len(task_id) <= 64 else None
    if task is None or (task.user_id is not None and task.user_id != ctx.user.id and not ctx.user.is_admin):
        raise NotFound(f"task {task_id!r} not found")
    return task


@bp.endpoint("/api/tasks/<task_id>/state", response=str)
def task_state(task_id: str) -> str:
    """PENDING, STARTED, RETRY, FAILURE or SUCCESS."""
    return _task(task_id).state


@bp.endpoint("/api/tasks/<task_id>/result")
def task_result(task_id: str) -> dict:
    """The state, the result (or error) and the progress of a task."""
    task = _task(task_id)
    return {
        "state": task.state,
        "result": task.error if task.state == "FAILURE" else task.result,
        "progress": task.progress,
        "progress_message": task.progress_message,
    }
