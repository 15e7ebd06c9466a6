"""The task layer: @task with injected services, tracking, progress, outbox and relay."""

from __future__ import annotations

from typing import ClassVar

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from app.messaging import TaskRequest, TaskRoute, publish_outbox_rows, relay_outbox
from app.models import OutboxMessage, Task
from app.objectstore import ObjectStore
from app.settings import Settings
from workers.tasks import REGISTRY, Progress, bind_tasks, task


class Square(TaskRequest):
    route: ClassVar[TaskRoute] = TaskRoute("test_square", "default")
    value: int


class Explode(TaskRequest):
    route: ClassVar[TaskRoute] = TaskRoute("test_explode", "default")


CALLS: list[tuple] = []


@pytest.fixture
def test_tasks(stack):
    """Two test tasks bound to the stack's stub broker."""

    @task(queue="default", action="test_square", tracked=True)
    def square(request: Square, session: Session, settings: Settings, store: ObjectStore, progress: Progress) -> int:
        CALLS.append((type(session).__name__, settings.data_dir == stack.settings.data_dir, type(store).__name__))
        progress.update(0.5, "half way", force=True)
        return request.value * request.value

    @task(queue="default", action="test_explode", tracked=True, max_retries=0)
    def explode(request: Explode) -> None:
        raise ValueError("boom")

    CALLS.clear()
    bind_tasks(stack.broker, stack.runtime.container, stack.settings.queue_name)
    yield
    REGISTRY.pop("test_square")
    REGISTRY.pop("test_explode")


def _send(stack, request, user_id=None) -> str:
    with stack.services.session_factory.begin() as session:
        return stack.services.enqueuer.send(session, request, tracked_for=user_id, track=True)


def test_tracked_task_runs_with_injected_services(stack, test_tasks):
    task_id = _send(stack, Square(value=7))
    with stack.services.session_factory() as session:
        assert session.get(Task, task_id).state == "PENDING"
    stack.drain()
    assert CALLS == [("Session", True, "ObjectStore")]
    with stack.services.session_factory() as session:
        row = session.get(Task, task_id)
        assert (row.state, row.result, row.progress) == ("SUCCESS", 49, 1.0)


def test_task_state_api_is_owner_only(stack, test_tasks):
    alice = stack.client(stack.user_key("alice"))
    bob = stack.client(stack.user_key("bob"))
    alice_id = stack.services.ids.decode(alice.get("/api/users/current").json["id"])
    task_id = _send(stack, Square(value=3), user_id=alice_id)
    assert alice.get(f"/api/tasks/{task_id}/state").json == "PENDING"
    stack.drain()
    assert alice.get(f"/api/tasks/{task_id}/state").json == "SUCCESS"
    assert alice.get(f"/api/tasks/{task_id}/result").json["result"] == 9
    assert bob.get(f"/api/tasks/{task_id}/state").status_code == 404
    assert alice.get("/api/tasks/not-a-task/state").status_code == 404


def test_failed_task_records_failure(stack, test_tasks):
    task_id = _send(stack, Explode())
    stack.drain()
    with stack.services.session_factory() as session:
        row = session.get(Task, task_id)
        assert row.state == "FAILURE" and "boom" in row.error


def test_task_decorator_checks_its_request():
    with pytest.raises(TypeError):

        @task(queue="default", action="bad")
        def bad(request: dict) -> None:
            pass

    with pytest.raises(TypeError):

        @task(queue="jobs", action="test_square")
        def misrouted(request: Square) -> None:
            pass


def test_every_task_request_has_an_actor():
    import app.schemas.tasks as contracts

    requests = [obj for obj in vars(contracts).values()
                if isinstance(obj, type) and issubclass(obj, TaskRequest) and "route" in vars(obj)]
    assert requests
    for request in requests:
        spec = REGISTRY.get(request.route.action)
        assert spec is not None, f"{request.__name__}: no @task for {request.route.action!r}"
        assert spec.queue == request.route.queue


class FlakyPublisher:
    """Fails while ``down`` is set, like a stopped RabbitMQ."""

    def __init__(self, broker):
        self.broker = broker
        self.down = True

    def publish_many(self, items):
        if self.down:
            raise ConnectionError("broker down")
        import dramatiq

        for message, _ in items:
            self.broker.enqueue(dramatiq.Message(**message))


def test_outbox_keeps_messages_while_broker_is_down(stack, test_tasks):
    flaky = FlakyPublisher(stack.broker)
    stack.services.enqueuer.publisher = flaky
    task_id = _send(stack, Square(value=5))
    with stack.services.engine.connect() as conn:
        assert conn.scalar(sa.select(sa.func.count()).select_from(OutboxMessage)) == 1
    assert relay_outbox(stack.services.engine, flaky, older_than_s=0) == 0
    flaky.down = False
    assert relay_outbox(stack.services.engine, flaky, older_than_s=0) == 1
    with stack.services.engine.connect() as conn:
        assert conn.scalar(sa.select(sa.func.count()).select_from(OutboxMessage)) == 0
    stack.drain()
    with stack.services.session_factory() as session:
        assert session.get(Task, task_id).state == "SUCCESS"


def test_rolled_back_transaction_sends_nothing(stack, test_tasks):
    with pytest.raises(RuntimeError):
        with stack.services.session_factory.begin() as session:
            stack.services.enqueuer.send(session, Square(value=1), track=True)
            raise RuntimeError("abort")
    with stack.services.engine.connect() as conn:
        assert conn.scalar(sa.select(sa.func.count()).select_from(OutboxMessage)) == 0
        assert conn.scalar(sa.select(sa.func.count()).select_from(Task)) == 0
    assert sum(len(q.queue) if hasattr(q, "queue") else q.qsize() for q in stack.broker.queues.values()) == 0


def test_publish_outbox_rows_stops_at_first_failed_batch(stack, monkeypatch):
    import app.messaging

    class HalfDown:
        def __init__(self):
            self.batches = []

        def publish_many(self, items):
            if len(self.batches) == 1:
                raise ConnectionError("gone")
            self.batches.append(items)

    monkeypatch.setattr(app.messaging, "BATCH", 2)
    with stack.services.session_factory.begin() as session:
        rows = [OutboxMessage(queue_name="default", message_id=str(i), message={"i": i}) for i in range(5)]
        session.add_all(rows)
    publisher = HalfDown()
    done = publish_outbox_rows(stack.services.engine, publisher, [(r.id, r.message, 0) for r in rows])
    assert done == 2 and [len(b) for b in publisher.batches] == [2]
    with stack.services.engine.connect() as conn:
        assert conn.scalar(sa.select(sa.func.count()).select_from(OutboxMessage)) == 3


def test_send_many_is_one_bulk_insert_per_transaction(stack, test_tasks):
    ids = []
    with stack.services.session_factory.begin() as session:
        ids = stack.services.enqueuer.send_many(session, [Square(value=i) for i in range(50)])
    assert len(set(ids)) == 50
    stack.drain()
    assert len(CALLS) == 50


def test_send_and_delay_enqueue_on_the_bound_broker(stack, test_tasks):
    from workers.tasks import REGISTRY

    fn = REGISTRY["test_square"].fn
    message = fn.delay(Square(value=2), broker=stack.broker)
    fn.send(Square(value=3), broker=stack.broker)
    stack.drain()
    assert len(CALLS) == 2
    assert message.queue_name == stack.settings.queue_name("default")
