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
from dramatiq.common import current_millis, dq_name, q_name
from pydantic import BaseModel, ConfigDict
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import Session, sessionmaker

from app.bulk_insert import insert_rows
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
    """Something that puts Dramatiq messages on the broker."""

    def publish_many(self, items: list[tuple[dict[str, Any], int]]) -> None:
        """Publish (message dict, delay in ms) pairs, all or none; raise when the broker is down."""


class RabbitPublisher:
    """Publishes batches to RabbitMQ in AMQP transactions: one round trip per batch.

    Publisher confirms one message at a time cost a round trip each (1,000 job messages
    took seconds); a transaction commits a whole batch at once with the same guarantee —
    when ``tx_commit`` returns, RabbitMQ has every message of the batch, else none.
    Queues are declared through a Dramatiq broker (the worker's own, or a middleware-less
    one made lazily in the web), so their arguments are exactly the ones its workers
    declare. Connections are per thread and made after any fork (gunicorn forks workers
    after importing the app, and pika connections must not cross a fork).
    """

    def __init__(self, settings: Settings, broker=None):
        self.settings = settings
        self._broker = broker
        self._lock = threading.Lock()
        self._local = threading.local()

    @property
    def broker(self):
        """The Dramatiq RabbitMQ broker used for queue declarations."""
        with self._lock:
            if self._broker is None:
                from dramatiq.brokers.rabbitmq import RabbitmqBroker

                self._broker = RabbitmqBroker(url=self.settings.broker_url, confirm_delivery=True, middleware=[])
            return self._broker

    def _channel(self):
        channel = getattr(self._local, "channel", None)
        if channel is None or channel.is_closed:
            import pika

            params = pika.URLParameters(self.settings.broker_url)
            params.socket_timeout = params.blocked_connection_timeout = 10
            connection = pika.BlockingConnection(params)
            channel = connection.channel()
            channel.tx_select()
            self._local.connection, self._local.channel = connection, channel
        return channel

    def _drop(self) -> None:
        connection = getattr(self._local, "connection", None)
        self._local.connection = self._local.channel = None
        if connection is not None and connection.is_open:
            try:
                connection.close()
            except Exception:  # noqa: BLE001 - it is being thrown away
                pass

    def publish_many(self, items: list[tuple[dict[str, Any], int]]) -> None:
        """Publish a batch in one transaction (the delay-queue convention is Dramatiq's)."""
        import pika

        declared: set[str] = set()
        try:
            channel = self._channel()
            # The blocking channel flushes the socket after every publish (a poll and a send
            # per message); its underlying channel only buffers the frames, and tx_commit
            # sends them all and waits for the broker's commit-ok.
            publish = getattr(channel, "_impl", channel).basic_publish
            for message_dict, delay_ms in items:
                message = Message(**message_dict)
                canonical = message.queue_name
                if canonical not in declared:
                    self.broker.declare_queue(canonical, ensure=True)
                    declared.add(canonical)
                routing_key = canonical
                if delay_ms:
                    routing_key = dq_name(canonical)
                    message = message.copy(queue_name=routing_key, options={"eta": current_millis() + delay_ms})
                publish(
                    exchange="", routing_key=routing_key, body=message.encode(),
                    properties=pika.BasicProperties(delivery_mode=2, priority=message.options.get("broker_priority")),
                )
            channel.tx_commit()
        except Exception:
            self._drop()
            raise

    def publish(self, message: dict[str, Any], delay_ms: int = 0) -> None:
        """Publish one message."""
        self.publish_many([(message, delay_ms)])


def insert_queue_message(
    conn: Session | Connection,
    queue_name: str,
    message: dict[str, Any],
    delay_ms: int = 0,
    priority: int = 0,
) -> None:
    """Insert one message into the embedded broker's table in the caller's transaction."""
    insert_queue_messages(conn, [(message, delay_ms, priority)], queue_name=queue_name)


def insert_queue_messages(
    conn: Session | Connection,
    items: list[tuple[dict[str, Any], int, int]],
    *,
    queue_name: str | None = None,
) -> None:
    """Insert (message, delay ms, priority) rows in one statement, in the caller's transaction.

    Lower priority runs first. An ``eta`` option (a message built the Dramatiq way for a
    delay queue) becomes ``available_at``: the table is the only place delays live. On
    PostgreSQL each queue written to is NOTIFYed (delivered on commit, so no worker wakes
    for a row it cannot see yet).
    """
    now = utcnow()
    rows = []
    for message, delay_ms, priority in items:
        options = dict(message.get("options") or {})
        eta = options.pop("eta", None)
        if isinstance(eta, (int, float)):
            delay_ms = max(delay_ms, int(eta) - current_millis())
        name = q_name(queue_name or message["queue_name"])
        fields = {**message, "queue_name": name, "options": options, "args": list(message["args"])}
        rows.append({
            "queue_name": name, "message_id": fields["message_id"], "state": READY, "priority": priority,
            "available_at": now + dt.timedelta(milliseconds=max(delay_ms, 0)),
            "message": json.dumps(fields, separators=(",", ":")), "attempts": 0, "enqueue_time": now,
        })
    if not rows:
        return
    insert_rows(conn, QueueMessage.__table__, rows, returning=False)
    bind = conn.get_bind() if isinstance(conn, Session) else conn
    if bind.dialect.name == "postgresql":
        for name in sorted({row["queue_name"] for row in rows}):
            conn.execute(sa.select(sa.func.pg_notify(NOTIFY_CHANNEL, name)))


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
        self.send_messages(session, [message.asdict()], delay_ms=delay_ms)
        return message.message_id

    def send_many(self, session: Session, requests: list[TaskRequest], *, delay_ms: int = 0) -> list[str]:
        """Send many untracked requests with one bulk insert; return their message ids."""
        messages = [self.message(request).asdict() for request in requests]
        self.send_messages(session, messages, delay_ms=delay_ms)
        return [m["message_id"] for m in messages]

    def send_now(self, requests: list[TaskRequest]) -> None:
        """Send untracked requests that have no transaction to join, at once.

        For wake-ups after a change already committed on its own (a job's end on the
        PostgreSQL fast path): published straight to RabbitMQ, through the outbox only when
        the broker cannot take them; on the embedded broker one INSERT. A process dying
        between that change and this call loses the wake-up, so only send here what a
        periodic check also finds (beat's scheduling sweep, a waiting job's own retry).
        """
        if not requests:
            return
        messages = [self.message(request).asdict() for request in requests]
        if self.publisher is not None and not self.settings.uses_embedded_broker:
            try:
                self.publisher.publish_many([(message, 0) for message in messages])
                return
            except Exception:  # noqa: BLE001 - the broker is down: the outbox keeps them
                log.warning("broker unavailable; %d wake-up(s) go to the outbox", len(messages), exc_info=True)
        with Session(self.engine) as session:
            self.send_messages(session, messages)
            session.commit()

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
        self.send_messages(session, [message], delay_ms=delay_ms)

    def send_messages(self, session: Session, messages: list[dict[str, Any]], *, delay_ms: int = 0) -> None:
        """Send ready-made message dicts transactionally, with one bulk insert."""
        if not messages:
            return
        if self.settings.uses_embedded_broker:
            insert_queue_messages(session, [(m, delay_ms, 0) for m in messages])
            return
        now = utcnow()
        rows = [{"queue_name": m["queue_name"], "message_id": m["message_id"], "message": m,
                 "delay_ms": delay_ms, "create_time": now, "attempts": 0} for m in messages]
        ids = insert_rows(session, OutboxMessage.__table__, rows)
        pending = session.info.setdefault(PENDING_KEY, [])
        pending.extend((row_id, m, delay_ms) for row_id, m in zip(ids, messages))

    def listen(self, factory: sessionmaker[Session]) -> None:
        """Publish each session's outbox rows right after it commits."""
        event.listen(factory, "after_commit", self._after_commit)
        event.listen(factory, "after_rollback", self._after_rollback)

    def _after_rollback(self, session: Session) -> None:
        session.info.pop(PENDING_KEY, None)

    def _after_commit(self, session: Session) -> None:
        pending: list[tuple[int, dict[str, Any], int]] = session.info.pop(PENDING_KEY, [])
        if pending and self.publisher is not None:
            publish_outbox_rows(self.engine, self.publisher, pending)


BATCH = 500


def _publish_batches(publisher: Publisher, rows: list[tuple[int, dict[str, Any], int]]) -> list[int]:
    """Publish rows batch by batch; return the ids of those published (a failure stops it)."""
    done: list[int] = []
    for start in range(0, len(rows), BATCH):
        batch = rows[start : start + BATCH]
        try:
            publisher.publish_many([(message, delay_ms) for _, message, delay_ms in batch])
        except Exception:  # noqa: BLE001 - the broker is down: the relay publishes the rest later
            log.warning("broker unavailable; %d message(s) left in the outbox", len(rows) - len(done), exc_info=True)
            break
        done.extend(row_id for row_id, _, _ in batch)
    return done


def _delete_rows(conn: Connection, ids: list[int]) -> None:
    if conn.dialect.name == "postgresql":
        # A lost delete only means a second publish, which every actor tolerates: no need
        # to wait for this commit's WAL flush (it would add a disk sync to every request).
        conn.exec_driver_sql("SET LOCAL synchronous_commit = off")
    for start in range(0, len(ids), BATCH):
        conn.execute(sa.delete(OutboxMessage).where(OutboxMessage.id.in_(ids[start : start + BATCH])))


def publish_outbox_rows(engine: Engine, publisher: Publisher, rows: list[tuple[int, dict[str, Any], int]]) -> int:
    """Publish outbox rows and delete those published; return how many were."""
    done = _publish_batches(publisher, rows)
    if done:
        with engine.begin() as conn:
            _delete_rows(conn, done)
    return len(done)


def relay_outbox(engine: Engine, publisher: Publisher, *, older_than_s: float = 2.0, batch: int = BATCH) -> int:
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
            published = _publish_batches(publisher, rows)
            _delete_rows(conn, published)
            if len(published) < len(rows):
                conn.execute(sa.update(OutboxMessage)
                             .where(OutboxMessage.id.in_([r[0] for r in rows if r[0] not in set(published)]))
                             .values(attempts=OutboxMessage.attempts + 1))
            total += len(published)
            if len(published) < len(rows) or len(rows) < batch:
                return total
