"""Building Nebula's broker from the settings, and inspecting its queues.

``build_broker`` is a factory, never a global: only the worker entry module calls
``dramatiq.set_broker`` with what it returns, before any actor is imported. The other
functions serve ``manage queues`` / ``manage dead-letters`` and work on either backend:
the embedded SQL broker (counts from the table) or RabbitMQ (AMQP passive declares of
``q``, ``q.DQ`` and ``q.XQ``; the management plugin is not needed).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import dramatiq
import pika
import pika.exceptions
import sqlalchemy as sa
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.common import dq_name, q_name, xq_name
from dramatiq.message import Message
from dramatiq.middleware import AgeLimit, Callbacks, Middleware, Pipelines, Retries, ShutdownNotifications, TimeLimit
from sqlalchemy.engine import Engine

from app.db import make_engine
from app.models.base import utcnow
from app.models.queue import CLAIMED, DEAD, READY
from app.settings import Settings
from workers.brokers import DeadLetter, QueueStat, dead_reason
from workers.brokers.sql import SQLBroker, table

__all__ = [
    "NEBULA_QUEUES",
    "DeadLetter",
    "QueueStat",
    "build_broker",
    "default_middleware",
    "list_dead_letters",
    "purge_dead_letters",
    "queue_stats",
    "requeue_dead_letters",
]

#: Nebula's logical queues; the broker names carry ``settings.queue_prefix`` in front.
NEBULA_QUEUES = ("scheduling", "jobs", "default", "exports")


def default_middleware() -> list[Middleware]:
    """Fresh instances of Dramatiq's default middleware, listed explicitly."""
    return [AgeLimit(), TimeLimit(), ShutdownNotifications(), Callbacks(), Pipelines(), Retries()]


def build_broker(
    settings: Settings, *, engine: Engine | None = None, middleware: list[Middleware] | None = None
) -> dramatiq.Broker:
    """The configured broker: SQLBroker for broker_url 'sql', else RabbitMQ with publisher confirms.

    ``engine`` lets the embedded broker share a caller's engine (otherwise it gets one of
    its own, disposed by ``broker.close()``); ``middleware`` replaces ``default_middleware()``.
    The broker is not made global: the worker entry point calls ``dramatiq.set_broker``.
    """
    middleware = default_middleware() if middleware is None else middleware
    if settings.uses_embedded_broker:
        if engine is not None:
            return SQLBroker(engine, middleware)
        # No pre-ping: the broker retries a transaction once on a dropped connection,
        # which saves a round trip on every message.
        return SQLBroker(make_engine(settings, pool_pre_ping=False), middleware, owns_engine=True)
    # Publisher confirms: enqueue returns only once RabbitMQ has the message, and lost
    # queues are detected and re-declared.
    return RabbitmqBroker(url=settings.broker_url, confirm_delivery=True, middleware=middleware)


def _queue_names(settings: Settings, queues: Iterable[str] | None) -> list[str]:
    return [settings.queue_name(name) for name in (queues or NEBULA_QUEUES)]


def queue_stats(
    settings: Settings, *, broker: dramatiq.Broker | None = None, queues: Iterable[str] | None = None
) -> list[QueueStat]:
    """Counts for Nebula's queues (logical names, prefixed) and, on SQL, any other queue in use."""
    names = _queue_names(settings, queues)
    own = broker is None
    broker = broker or build_broker(settings, middleware=[])
    try:
        if isinstance(broker, SQLBroker):
            return _sql_stats(broker.engine, names, settings.queue_prefix if queues is None else None)
        if isinstance(broker, RabbitmqBroker):
            return _rabbitmq_stats(broker, names)
        raise TypeError(f"no queue statistics for {type(broker).__name__}")
    finally:
        if own:
            broker.close()


def _sql_stats(engine: Engine, names: list[str], prefix: str | None) -> list[QueueStat]:
    """Counts from the table; with a prefix, every queue under it is listed too."""
    now = utcnow()

    def tally(condition: sa.ColumnElement[bool]) -> sa.ColumnElement[int]:
        return sa.func.coalesce(sa.func.sum(sa.case((condition, 1), else_=0)), 0)

    ready = table.c.state == READY
    stmt = sa.select(
        table.c.queue_name,
        tally(sa.and_(ready, table.c.available_at <= now)),
        tally(sa.and_(ready, table.c.available_at > now)),
        tally(table.c.state == CLAIMED),
        tally(table.c.state == DEAD),
    ).group_by(table.c.queue_name)
    with engine.begin() as conn:
        rows = {row[0]: row[1:] for row in conn.execute(stmt)}
    if prefix is not None:
        names += sorted(name for name in rows if name.startswith(prefix) and name not in names)
    return [
        QueueStat(name, ready=r, delayed=d, unacked=c, dead=x)
        for name in names
        for r, d, c, x in [rows.get(name, (0, 0, 0, 0))]
    ]


def _rabbitmq_stats(broker: RabbitmqBroker, names: list[str]) -> list[QueueStat]:
    """Passive declares: ready counts and consumers; unacked is not visible without management."""
    connection = pika.BlockingConnection(broker.parameters)
    try:
        stats = []
        for name in names:
            (ready, consumers), (delayed, _), (dead, _) = (
                _passive_declare(connection, queue) for queue in (name, dq_name(name), xq_name(name))
            )
            stats.append(QueueStat(name, ready=ready, delayed=delayed, unacked=None, dead=dead, consumers=consumers))
        return stats
    finally:
        connection.close()


def _passive_declare(connection: pika.BlockingConnection, queue: str) -> tuple[int, int]:
    """(messages, consumers) of a queue; (0, 0) when it does not exist yet."""
    channel = connection.channel()
    try:
        frame = channel.queue_declare(queue=queue, passive=True)
        return frame.method.message_count, frame.method.consumer_count
    except pika.exceptions.ChannelClosedByBroker as exc:
        if exc.reply_code != 404:
            raise
        return 0, 0
    finally:
        if channel.is_open:
            channel.close()


def list_dead_letters(broker: dramatiq.Broker, queue_name: str, *, limit: int = 100) -> list[DeadLetter]:
    """The oldest dead letters of a queue, left in place."""
    queue_name = q_name(queue_name)
    if isinstance(broker, SQLBroker):
        stmt = (
            sa.select(table.c.message_id, table.c.dead_reason, table.c.available_at, table.c.message)
            .where(table.c.queue_name == queue_name, table.c.state == DEAD)
            .order_by(table.c.id)
            .limit(limit)
        )
        with broker.engine.begin() as conn:
            rows = conn.execute(stmt).all()
        # A row's available_at is set to the time it went dead.
        return [_dead_letter(queue_name, _fields(r.message), r.dead_reason, r.available_at) for r in rows]
    letters = []
    for body, _ in _iter_dead_rabbitmq(_rabbitmq(broker), queue_name, limit):
        fields = Message.decode(body).asdict()
        letters.append(_dead_letter(queue_name, {**fields, "args": list(fields["args"])}, None, None))
    return letters


def requeue_dead_letters(broker: dramatiq.Broker, queue_name: str, message_ids: Iterable[str] | None = None) -> int:
    """Send dead letters back to their queue (all, or those ids); return how many."""
    queue_name = q_name(queue_name)
    wanted = None if message_ids is None else set(message_ids)
    if isinstance(broker, SQLBroker):
        stmt = (
            sa.update(table)
            .where(*_sql_dead(queue_name, wanted))
            .values(state=READY, available_at=utcnow(), attempts=0, dead_reason=None)
        )
        with broker.engine.begin() as conn:
            return conn.execute(stmt).rowcount
    rabbit, count = _rabbitmq(broker), 0
    for body, ack in _iter_dead_rabbitmq(rabbit, queue_name, None):
        message = Message.decode(body)
        if wanted is None or message.message_id in wanted:
            options = {k: v for k, v in message.options.items() if k != "eta"}
            # Confirmed publish first, then the ack: a crash in between duplicates, never loses.
            rabbit.enqueue(dramatiq.Message(**{**message.asdict(), "queue_name": queue_name, "options": options}))
            ack()
            count += 1
    return count


def purge_dead_letters(broker: dramatiq.Broker, queue_name: str) -> int:
    """Delete every dead letter of a queue; return how many."""
    queue_name = q_name(queue_name)
    if isinstance(broker, SQLBroker):
        with broker.engine.begin() as conn:
            return conn.execute(sa.delete(table).where(*_sql_dead(queue_name, None))).rowcount
    connection = pika.BlockingConnection(_rabbitmq(broker).parameters)
    try:
        if _passive_declare(connection, xq_name(queue_name)) == (0, 0):
            return 0
        return connection.channel().queue_purge(xq_name(queue_name)).method.message_count
    finally:
        connection.close()


def _fields(text: str) -> dict[str, Any]:
    """A stored message as a dict; one that cannot be decoded is shown raw."""
    try:
        fields = json.loads(text)
    except ValueError:
        return {"raw": text}
    return fields if isinstance(fields, dict) else {"raw": text}


def _sql_dead(queue_name: str, message_ids: set[str] | None) -> list[Any]:
    where = [table.c.queue_name == queue_name, table.c.state == DEAD]
    if message_ids is not None:
        where.append(table.c.message_id.in_(sorted(message_ids)))
    return where


def _dead_letter(queue_name: str, fields: dict[str, Any], reason: str | None, dead_at: Any) -> DeadLetter:
    return DeadLetter(
        queue_name=queue_name,
        message_id=fields.get("message_id", "?"),
        actor_name=fields.get("actor_name", "?"),
        reason=reason or dead_reason(None, fields.get("options") or {}),
        dead_at=dead_at,
        message=fields,
    )


def _rabbitmq(broker: dramatiq.Broker) -> RabbitmqBroker:
    if not isinstance(broker, RabbitmqBroker):
        raise TypeError(f"no dead letters for {type(broker).__name__}")
    return broker


def _iter_dead_rabbitmq(broker: RabbitmqBroker, queue_name: str, limit: int | None) -> Iterable[tuple[bytes, Any]]:
    """Yield (body, ack) for messages of ``q.XQ``; the unacked ones return to it at the end."""
    connection = pika.BlockingConnection(broker.parameters)
    try:
        # Only what is there now: a requeued message that fails again comes back to q.XQ
        # while we read, and must not be picked up a second time.
        present, _ = _passive_declare(connection, xq_name(queue_name))
        channel = connection.channel()
        for _ in range(present if limit is None else min(present, limit)):
            # Fetched without ack, so closing the connection puts back whatever is not acked.
            method, _, body = channel.basic_get(xq_name(queue_name), auto_ack=False)
            if method is None:
                return
            yield body, (lambda tag=method.delivery_tag: channel.basic_ack(tag))
    finally:
        connection.close()
