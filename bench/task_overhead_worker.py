"""Worker module for bench/task_overhead.py: Nebula's runtime plus a bare Dramatiq actor."""

import dramatiq

from app.schemas.tasks import Noop
from workers.runtime import build_runtime
from workers.tasks import task


class TrackedNoop(Noop):
    """The same no-op, tracked."""

    route = Noop.route.__class__("bench_tracked_noop", "default")


@task(queue="default", action="bench_tracked_noop", tracked=True, max_retries=0)
def tracked_noop(request: TrackedNoop) -> int:
    """A tracked no-op."""
    return request.value


runtime = build_runtime()
broker = runtime.broker


@dramatiq.actor(broker=broker, queue_name=runtime.settings.queue_name("default"), max_retries=0)
def bare_noop(value: int) -> None:
    """A bare Dramatiq actor doing nothing."""


_engine = runtime.services.engine


@dramatiq.actor(broker=broker, queue_name=runtime.settings.queue_name("default"), max_retries=0)
def bare_update(task_id: str) -> None:
    """The reference: a bare Dramatiq actor doing one UPDATE of a task row."""
    import sqlalchemy as sa

    with _engine.begin() as conn:
        conn.execute(sa.text("UPDATE task SET state = 'SUCCESS' WHERE id = :id"), {"id": task_id})
