"""The embedded broker: Dramatiq messages in the ``queue_message`` table (SQLite or PostgreSQL).

A row is one message: ``ready`` (waiting; ``available_at`` in the future is a delay),
``claimed`` (held by a worker until ``lease_until``) or ``dead`` (dead-lettered, kept).
Consumers claim a batch with one atomic ``UPDATE … RETURNING`` and the broker writes
acks back in batches, so one short write transaction carries many messages: SQLite has
a single writer, and every extra transaction is a turn on its lock. Workers renew the
leases of what they hold; a lease that runs out (its worker died) puts the row back to
``ready``. Delays never sit in worker memory: no delay queue is declared, a delayed
message is a row whose ``available_at`` lies ahead.

This module holds the broker, its transactions and its leases; the consumer and the
claimed message live in ``workers.brokers.sql_consumer``, the threads that wake idle
consumers when another process enqueues in ``workers.brokers.sql_wakeup``. Import them
all from here.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import socket
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import sqlalchemy as sa
from dramatiq.broker import Broker, Consumer
from dramatiq.common import q_name
from dramatiq.errors import ConnectionClosed, QueueJoinTimeout
from dramatiq.message import Message
from dramatiq.middleware import Middleware
from sqlalchemy.engine import Connection, Engine

from app.messaging import insert_queue_message as insert_message
from app.models.base import Base, utcnow
from app.models.queue import CLAIMED, DEAD, READY, QueueMessage
from workers.brokers.sql_consumer import SQLConsumer, SQLMessage
from workers.brokers.sql_wakeup import WATCH_INTERVAL, listen_postgres, watch_sqlite

__all__ = ["WATCH_INTERVAL", "SQLBroker", "SQLConsumer", "SQLMessage", "ensure_queue_table", "table"]

log = logging.getLogger(__name__)
T = TypeVar("T")

table: sa.Table = QueueMessage.__table__  # type: ignore[assignment]


def ensure_queue_table(engine: Engine) -> None:
    """Create the queue_message table if missing (tests, benchmarks; deployments migrate)."""
    Base.metadata.create_all(engine, tables=[table])


class SQLBroker(Broker):
    """A Dramatiq broker storing messages in the ``queue_message`` table of ``engine``."""

    def __init__(
        self,
        engine: Engine,
        middleware: list[Middleware] | None = None,
        *,
        worker_id: str | None = None,
        lease_seconds: float = 60.0,
        poll_interval: float = 0.5,
        max_deliveries: int = 10,
        owns_engine: bool = False,
    ) -> None:
        super().__init__(middleware=middleware)
        self.engine = engine
        self.queues: set[str] = set()
        self.lease = dt.timedelta(seconds=lease_seconds)
        # Renew well before expiry so a slow heartbeat or a busy database never loses a lease.
        self.renew_interval = lease_seconds / 4
        self.min_poll = min(0.01, poll_interval)
        self.poll_interval = poll_interval
        self.ack_delay = 0.02  # an ack waits at most this long to share a transaction
        self.max_deliveries = max_deliveries
        self.owns_engine = owns_engine
        self._worker_id = worker_id
        self._postgres = engine.dialect.name == "postgresql"
        # SQLite has one writer per file: threads of this process queue on a Python lock
        # instead of on SQLite's busy handler, which sleeps in milliseconds.
        self._write_lock: contextlib.AbstractContextManager[Any] = (
            contextlib.nullcontext() if self._postgres else threading.Lock()
        )
        self._lock = threading.Lock()
        self._held: set[int] = set()  # rows claimed by this process, not yet settled
        self._acks: list[int] = []
        self._nacks: list[tuple[int, str, str]] = []
        self._pending_since: float | None = None
        self._consumers: weakref.WeakSet[SQLConsumer] = weakref.WeakSet()
        self._stop = threading.Event()  # replaced each time the threads start
        self._threads_pid: int | None = None

    @property
    def worker_id(self) -> str:
        """Who holds the claims of this process (host:pid unless given)."""
        return self._worker_id or f"{socket.gethostname()}:{os.getpid()}"

    # -- Dramatiq's broker interface ---------------------------------------------------

    def declare_queue(self, queue_name: str) -> None:
        """Declare a queue (nothing to create in the database; delay queues are never declared)."""
        queue_name = q_name(queue_name)
        if queue_name not in self.queues:
            self.emit_before("declare_queue", queue_name)
            self.queues.add(queue_name)
            self.emit_after("declare_queue", queue_name)

    def get_declared_queues(self) -> set[str]:
        """The names of the queues declared so far."""
        return self.queues.copy()

    def enqueue(self, message: Message, *, delay: int | None = None) -> Message:
        """Insert ``message`` in its own transaction, ``delay`` ms in the future."""
        queue_name = q_name(message.queue_name)
        self.declare_queue(queue_name)
        actor = self.actors.get(message.actor_name)
        priority = actor.priority if actor is not None else 0
        fields = message.asdict()
        self.emit_before("enqueue", message, delay)
        self._transact(lambda conn: insert_message(conn, queue_name, fields, delay or 0, priority))
        self.emit_after("enqueue", message, delay)
        self._wake(queue_name)
        return message

    def consume(self, queue_name: str, prefetch: int = 1, timeout: int = 5000) -> Consumer:
        """A consumer claiming up to ``prefetch`` messages; ``__next__`` idles at most ``timeout`` ms."""
        self.declare_queue(queue_name)
        self._start_threads()
        consumer = SQLConsumer(self, q_name(queue_name), prefetch, timeout)
        with self._lock:
            self._consumers.add(consumer)
        return consumer

    def flush(self, queue_name: str) -> None:
        """Delete every message of a queue, dead letters included."""
        self._transact(lambda conn: conn.execute(sa.delete(table).where(table.c.queue_name == q_name(queue_name))))

    def flush_all(self) -> None:
        """Delete every message of every declared queue."""
        for queue_name in self.get_declared_queues():
            self.flush(queue_name)

    def join(self, queue_name: str, *, timeout: int | None = None) -> None:
        """Wait until the queue has no ready (delayed included) or claimed message."""
        deadline = timeout and time.monotonic() + timeout / 1000
        pending = (
            sa.select(sa.func.count())
            .select_from(table)
            .where(table.c.queue_name == q_name(queue_name), table.c.state.in_([READY, CLAIMED]))
        )
        while self._transact(lambda conn: conn.scalar(pending)):
            if deadline and time.monotonic() >= deadline:
                raise QueueJoinTimeout(queue_name)
            time.sleep(0.05)

    def close(self) -> None:
        """Write pending acks, stop the background threads and release the engine if owned."""
        with self._lock:
            self._stop.set()
            self._threads_pid = None
        try:
            self._flush_and_claim(None, 0)
        except ConnectionClosed:
            log.warning("Could not write pending acks at close; their messages will run again.")
        if self.owns_engine:
            self.engine.dispose()

    # -- leases ------------------------------------------------------------------------

    def renew_leases(self) -> int:
        """Extend the leases of every message this process holds; return how many."""
        with self._lock:
            held = list(self._held)
        if not held:
            return 0
        stmt = (
            sa.update(table)
            .where(table.c.id.in_(held), table.c.state == CLAIMED, table.c.worker_id == self.worker_id)
            .values(lease_until=utcnow() + self.lease)
        )
        return self._transact(lambda conn: conn.execute(stmt).rowcount)

    def recover_expired_leases(self) -> int:
        """Put claimed messages whose lease ran out back to ready (dead after max_deliveries)."""
        now = utcnow()
        expired = sa.and_(table.c.state == CLAIMED, table.c.lease_until < now)
        reason = f"its worker died or lost it {self.max_deliveries} times (lease expired)"

        def work(conn: Connection) -> int:
            gone = conn.execute(
                sa.update(table)
                .where(expired, table.c.attempts >= self.max_deliveries)
                .values(state=DEAD, dead_reason=reason, worker_id=None, lease_until=None, available_at=now)
            ).rowcount
            back = conn.execute(
                sa.update(table).where(expired).values(state=READY, worker_id=None, lease_until=None)
            ).rowcount
            return gone + back

        recovered = self._transact(work)
        if recovered:
            log.warning("Recovered %d message(s) whose lease had expired.", recovered)
            self._wake(None)
        return recovered

    # -- internals -----------------------------------------------------------------------

    def _transact(self, work: Callable[[Connection], T]) -> T:
        """Run ``work`` in one short transaction; a dropped connection is retried once."""
        for attempt in (1, 2):
            try:
                with self._write_lock, self.engine.begin() as conn:
                    return work(conn)
            except sa.exc.DBAPIError as exc:
                # A connection killed under us (server restart, pg_terminate_backend) is
                # invalidated by SQLAlchemy; the retry runs on a fresh one.
                if exc.connection_invalidated and attempt == 1:
                    continue
                raise ConnectionClosed(exc) from exc
        raise AssertionError("unreachable")

    def _settle(self, consumer: SQLConsumer, message: SQLMessage, reason: str | None) -> None:
        """Record an ack (reason None) or a nack; a consumer thread writes it soon after."""
        with self._lock:
            if reason is None:
                self._acks.append(message.row_id)
            else:
                body = json.dumps({**message.asdict(), "args": list(message.args)}, separators=(",", ":"), default=str)
                self._nacks.append((message.row_id, reason, body))
            if self._pending_since is None:
                self._pending_since = time.monotonic()
        consumer.settled(message.row_id)

    def _ack_wait(self) -> float:
        """Seconds until pending acks are due to be written (poll_interval if there are none)."""
        with self._lock:
            if self._pending_since is None:
                return self.poll_interval
            return max(0.0, self._pending_since + self.ack_delay - time.monotonic())

    def _flush_and_claim(self, queue_name: str | None, limit: int) -> list[SQLMessage]:
        """Write pending acks and nacks, then claim up to ``limit`` messages, in one transaction."""
        with self._lock:
            acks, nacks = self._acks, self._nacks
            self._acks, self._nacks, self._pending_since = [], [], None
        if not (acks or nacks or limit):
            return []

        def work(conn: Connection) -> Sequence[sa.Row[Any]]:
            now = utcnow()
            if acks:
                conn.execute(sa.delete(table).where(table.c.id.in_(acks)))
            for row_id, reason, body in nacks:
                conn.execute(
                    sa.update(table)
                    .where(table.c.id == row_id, table.c.state == CLAIMED)
                    .values(state=DEAD, dead_reason=reason, message=body, worker_id=None, lease_until=None, available_at=now)
                )
            if not (queue_name and limit):
                return []
            return conn.execute(self._claim_statement(queue_name, limit, now)).all()

        try:
            rows = self._transact(work)
        except BaseException:
            with self._lock:  # keep them for the next transaction; nothing is lost
                self._acks[:0], self._nacks[:0] = acks, nacks
                self._pending_since = time.monotonic() - self.ack_delay
            raise
        with self._lock:
            self._held.difference_update(acks)
            self._held.difference_update(row_id for row_id, _, _ in nacks)
            self._held.update(row.id for row in rows)
        return self._decode(rows)

    def _decode(self, rows: Sequence[sa.Row[Any]]) -> list[SQLMessage]:
        """The claimed rows as messages, in claim order; an undecodable row is dead-lettered."""
        messages = []
        for row in sorted(rows, key=lambda row: (row.priority, row.available_at, row.id)):
            try:
                messages.append(SQLMessage(Message(**json.loads(row.message)), row.id, row.attempts))
            except (ValueError, TypeError) as exc:  # written by hand or by a foreign client
                log.error("Dead-lettering undecodable message in row %d: %s", row.id, exc)
                with self._lock:
                    self._nacks.append((row.id, f"undecodable message: {exc}", row.message))
                    self._pending_since = self._pending_since or time.monotonic()
        return messages

    def _claim_statement(self, queue_name: str, limit: int, now: dt.datetime) -> sa.Update:
        pick = (
            sa.select(table.c.id)
            .where(table.c.queue_name == queue_name, table.c.state == READY, table.c.available_at <= now)
            .order_by(table.c.priority, table.c.available_at, table.c.id)
            .limit(limit)
        )
        if self._postgres:
            # Concurrent claimers skip each other's rows instead of queueing on them.
            pick = pick.with_for_update(skip_locked=True)
        return (
            sa.update(table)
            .where(table.c.id.in_(pick))
            .values(state=CLAIMED, worker_id=self.worker_id, lease_until=now + self.lease, attempts=table.c.attempts + 1)
            .returning(table.c.id, table.c.message, table.c.attempts, table.c.priority, table.c.available_at)
        )

    def _requeue(self, row_ids: list[int]) -> None:
        """Give claimed, never-processed messages back (this delivery does not count)."""
        if not row_ids:
            return
        stmt = (
            sa.update(table)
            .where(table.c.id.in_(row_ids), table.c.state == CLAIMED)
            .values(state=READY, worker_id=None, lease_until=None, attempts=table.c.attempts - 1)
        )
        self._transact(lambda conn: conn.execute(stmt))
        with self._lock:
            self._held.difference_update(row_ids)

    def _wake(self, queue_name: str | None) -> None:
        """Wake this process's consumers of a queue (of every queue for None)."""
        with self._lock:
            consumers = list(self._consumers)
        for consumer in consumers:
            if queue_name is None or consumer.queue_name == queue_name:
                consumer.wake()

    def _forget(self, consumer: SQLConsumer) -> None:
        """Stop waking a closed consumer."""
        with self._lock:
            self._consumers.discard(consumer)

    def _consumed_queues(self) -> set[str]:
        """The queues this process's open consumers read."""
        with self._lock:
            return {consumer.queue_name for consumer in self._consumers}

    def _start_threads(self) -> None:
        """Start the heartbeat and the wake-up thread (listener or watcher) once per process."""
        with self._lock:
            if self._threads_pid == os.getpid():
                return
            self._threads_pid = os.getpid()
            # Threads get their own stop event: a fork or a close() leaves old ones behind.
            self._stop = stop = threading.Event()
        threading.Thread(target=self._heartbeat, args=(stop,), name="sql-broker-heartbeat", daemon=True).start()
        url = self.engine.url
        if self._postgres:
            conninfo = url.set(drivername="postgresql").render_as_string(hide_password=False)
            args: tuple[Any, ...] = (conninfo, self._wake, stop)
            threading.Thread(target=listen_postgres, args=args, name="sql-broker-listener", daemon=True).start()
        elif url.database not in (None, "", ":memory:"):
            args = (str(url.database), self._consumed_queues, self._wake, stop)
            threading.Thread(target=watch_sqlite, args=args, name="sql-broker-watcher", daemon=True).start()

    def _heartbeat(self, stop: threading.Event) -> None:
        """Write stray acks, renew held leases and recover expired ones, every renew_interval."""
        while not stop.wait(self.renew_interval):
            try:
                self._flush_and_claim(None, 0)
                self.renew_leases()
                self.recover_expired_leases()
            except Exception:  # noqa: BLE001 - the heartbeat must outlive a database outage
                log.exception("Lease heartbeat failed; retrying in %.1fs.", self.renew_interval)
