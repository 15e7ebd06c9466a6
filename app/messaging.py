"""How the app sends task messages: inside the caller's transaction, published after commit.

``Enqueuer.send(session, request)`` is the one way ``app`` enqueues work. It never talks to
the broker inside the transaction:

- with the embedded SQL broker the message row goes straight into ``queue_message`` in the
  same transaction, so it exists exactly when the rows it refers to do;
- with RabbitMQ the message is written to ``outbox_message`` in the same transaction and
  published after the commit; if RabbitMQ is down the row stays, and beat's relay
  publishes it later (``relay_outbox``). A message may so be published twice; every actor
  is idempotent.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import sqlalchemy as sa
from dramatiq import Message
from dramatiq.common import current_millis, q_name
from pydantic import BaseModel, ConfigDict
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import Session, sessionmaker

from app.models.base import utcnow
from app.models.queue import READY, OutboxMessage, QueueMessage
from app.models.tasks import Task, TaskState
from app.settings import Settings

log = logging.getLogger(__name__)

PENDING_KEY = "nebula_outbox_pending"
NOTIFY_CHANNEL = "nebula_queue_message"
ON_ERROR_OPTION = "nebula_on_error"


@dataclass(frozen=True)
class TaskRoute:
    """Which actor handles a request, and on which logical queue."""

    action: str
    queue: str


class TaskRequest(BaseModel):
    """Base of every task payload: ids and small values only, never rows."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    route: ClassVar[TaskRoute]


class Publisher(Protocol):
    """Something that puts a Dramatiq message on the broker."""

    def publish(self, message: dict[str, Any], delay_ms: int) -> None:
        """Publish one message (a ``Message.asdict()``)."""


class RabbitPublisher:
    """Publishes to RabbitMQ through a middleware-less Dramatiq broker, made lazily per process.

    Lazily, because pika connections must not cross a fork (gunicorn forks its workers
    after importing the app).
    """

    def __init__(self, settings: Settings):
        self.settings = settings
        self._broker = None
        self._lock = threading.Lock()

    @property
    def broker(self):
        """The process's RabbitMQ broker (thread-local connections inside)."""
        with self._lock:
            if self._broker is None:
                from dramatiq.brokers.rabbitmq import RabbitmqBroker

                self._broker = RabbitmqBroker(
                    url=self.settings.broker_url, confirm_delivery=True, middleware=[]
                )
            return self._broker

    def publish(self, message: dict[str, Any], delay_ms: int) -> None:
        """Publish with publisher confirms."""
        self.broker.enqueue(Message(**message), delay=delay_ms or None)


def insert_queue_message(
    conn: Session | Connection,
    queue_name: str,
    message: dict[str, Any],
    delay_ms: int = 0,
    priority: int = 0,
) -> None:
    """Insert a message into the embedded broker's table in the caller's transaction (no commit).

    Lower priority runs first. An ``eta`` option (a message built the Dramatiq way for a
    delay queue) becomes ``available_at``: the table is the only place delays live.
    """
    options = dict(message.get("options") or {})
    eta = options.pop("eta", None)
    if isinstance(eta, (int, float)):
        delay_ms = max(delay_ms, int(eta) - current_millis())
    queue_name = q_name(queue_name)
    fields = {**message, "queue_name": queue_name, "options": options, "args": list(message["args"])}
    now = utcnow()
    insert = sa.insert(QueueMessage).values(
        queue_name=queue_name,
        message_id=fields["message_id"],
        state=READY,
        priority=priority,
        available_at=now + dt.timedelta(milliseconds=max(delay_ms, 0)),
        message=json.dumps(fields, separators=(",", ":")),
        attempts=0,
        enqueue_time=now,
    )
    bind = conn.get_bind() if isinstance(conn, Session) else conn
    if bind.dialect.name == "postgresql":
        # Wake listening workers in the same statement (one round trip). NOTIFY is
        # delivered on commit only, so no worker wakes for a row it cannot see yet.
        inserted = insert.returning(QueueMessage.__table__.c.queue_name).cte("inserted")
        conn.execute(sa.select(sa.func.pg_notify(NOTIFY_CHANNEL, inserted.c.queue_name)))
    else:
        conn.execute(insert)


class Enqueuer:
    """Builds Dramatiq messages for task requests and sends them transactionally."""

    def __init__(self, settings: Settings, engine: Engine, publisher: Publisher | None = None):
        self.settings = settings
        self.engine = engine
        if publisher is None and not settings.uses_embedded_broker:
            publisher = RabbitPublisher(settings)
        self.publisher = publisher

    def message(self, request: TaskRequest, **options: Any) -> Message:
        """The Dramatiq message for a request (not sent)."""
        return Message(
            queue_name=self.settings.queue_name(request.route.queue),
            actor_name=request.route.action,
            args=(),
            kwargs={"request": request.model_dump(mode="json")},
            options=options,
        )

    def send(
        self,
        session: Session,
        request: TaskRequest,
        *,
        delay_ms: int = 0,
        tracked_for: int | None = None,
        track: bool = False,
        options: dict[str, Any] | None = None,
    ) -> str:
        """Send a request within the session's transaction; return the message (= task) id.

        With ``track`` (or ``tracked_for=user_id``) a task row in state PENDING is written in
        the same transaction, readable at /api/tasks/{id}/state. ``options`` are Dramatiq
        message options (e.g. ``time_limit`` in ms, known only from the settings).
        """
        message = self.message(request, **(options or {}))
        if track or tracked_for is not None:
            session.add(Task(id=message.message_id, action=request.route.action, user_id=tracked_for, state=TaskState.PENDING))
        self.send_message(session, message.asdict(), delay_ms=delay_ms)
        return message.message_id

    def send_pipeline(
        self, session: Session, requests: list[TaskRequest], *, on_error: TaskRequest | None = None
    ) -> str:
        """Send requests to run one after another; ``on_error`` runs if any of them fails for good."""
        error_target = self.message(on_error).asdict() if on_error else None
        next_target: dict[str, Any] | None = None
        for request in reversed(requests):
            options: dict[str, Any] = {"pipe_ignore": True}
            if next_target is not None:
                options["pipe_target"] = next_target
            if error_target is not None:
                options[ON_ERROR_OPTION] = error_target
            next_target = self.message(request, **options).asdict()
        assert next_target is not None, "a pipeline needs at least one request"
        self.send_message(session, next_target)
        return next_target["message_id"]

    def send_message(self, session: Session, message: dict[str, Any], *, delay_ms: int = 0) -> None:
        """Send a ready-made message dict transactionally."""
        if self.settings.uses_embedded_broker:
            insert_queue_message(session, message["queue_name"], message, delay_ms=delay_ms)
            return
        row = OutboxMessage(
            queue_name=message["queue_name"],
            message_id=message["message_id"],
            message=message,
            delay_ms=delay_ms,
        )
        session.add(row)
        session.info.setdefault(PENDING_KEY, []).append(row)

    def listen(self, factory: sessionmaker[Session]) -> None:
        """Publish each session's outbox rows right after it commits."""
        event.listen(factory, "after_commit", self._after_commit)
        event.listen(factory, "after_rollback", self._after_rollback)

    def _after_rollback(self, session: Session) -> None:
        session.info.pop(PENDING_KEY, None)

    def _after_commit(self, session: Session) -> None:
        pending: list[OutboxMessage] = session.info.pop(PENDING_KEY, [])
        if pending and self.publisher is not None:
            publish_outbox_rows(self.engine, self.publisher, [(r.id, r.message, r.delay_ms) for r in pending])


def publish_outbox_rows(
    engine: Engine, publisher: Publisher, rows: list[tuple[int, dict[str, Any], int]]
) -> int:
    """Publish outbox rows and delete those published; return how many were."""
    done: list[int] = []
    try:
        for row_id, message, delay_ms in rows:
            publisher.publish(message, delay_ms)
            done.append(row_id)
    except Exception:  # noqa: BLE001 - the broker is down: the relay publishes the rest later
        log.warning("broker unavailable; %d message(s) left in the outbox", len(rows) - len(done), exc_info=True)
    if done:
        with engine.begin() as conn:
            for start in range(0, len(done), 500):
                conn.execute(sa.delete(OutboxMessage).where(OutboxMessage.id.in_(done[start : start + 500])))
    return len(done)


def relay_outbox(engine: Engine, publisher: Publisher, *, older_than_s: float = 2.0, batch: int = 500) -> int:
    """Publish outbox rows left behind (broker down, process died); return how many went out.

    Only rows older than ``older_than_s`` are taken, so the committing process normally
    publishes its own; on PostgreSQL rows are locked with SKIP LOCKED so several relays
    never publish the same row at once.
    """
    cutoff = utcnow() - dt.timedelta(seconds=older_than_s)
    total = 0
    while True:
        with engine.begin() as conn:
            query = (
                sa.select(OutboxMessage.id, OutboxMessage.message, OutboxMessage.delay_ms)
                .where(OutboxMessage.create_time <= cutoff)
                .order_by(OutboxMessage.id)
                .limit(batch)
            )
            if engine.dialect.name == "postgresql":
                query = query.with_for_update(skip_locked=True)
            rows = [(r.id, r.message, r.delay_ms) for r in conn.execute(query)]
            if not rows:
                return total
            published: list[int] = []
            failed = False
            for row_id, message, delay_ms in rows:
                try:
                    publisher.publish(message, delay_ms)
                except Exception:  # noqa: BLE001 - broker down: keep the rest for next time
                    log.warning("outbox relay: broker unavailable", exc_info=True)
                    failed = True
                    break
                published.append(row_id)
            if published:
                conn.execute(sa.delete(OutboxMessage).where(OutboxMessage.id.in_(published)))
            total += len(published)
            if failed or len(rows) < batch:
                return total
