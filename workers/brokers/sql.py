"""The embedded broker: Dramatiq messages in the ``queue_message`` table (SQLite or PostgreSQL).

A row is one message: ``ready`` (waiting; ``available_at`` in the future is a delay),
``claimed`` (held by a worker until ``lease_until``) or ``dead`` (dead-lettered, kept).
Consumers claim a batch with one atomic ``UPDATE … RETURNING`` and the broker writes
acks back in batches, so one short write transaction carries many messages: SQLite has
a single writer, and every extra transaction is a turn on its lock. Workers renew the
leases of what they hold; a lease that runs out (its worker died) puts the row back to
``ready``. Delays never sit in worker memory: no delay queue is declared, a delayed
message is a row whose ``available_at`` lies ahead.
"""

from __future__ import annotations

import collections
import contextlib
import datetime as dt
import json
import logging
import os
import socket
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import sqlalchemy as sa
from dramatiq.broker import Broker, Consumer, MessageProxy
from dramatiq.common import current_millis, q_name
from dramatiq.errors import ConnectionClosed, QueueJoinTimeout
from dramatiq.message import Message
from dramatiq.middleware import Middleware
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import Session

from app.messaging import NOTIFY_CHANNEL, insert_queue_message as insert_message
from app.models.base import Base, utcnow
from app.models.queue import CLAIMED, DEAD, READY, QueueMessage
from workers.brokers import dead_reason

log = logging.getLogger(__name__)
T = TypeVar("T")

WATCH_INTERVAL = 0.005  # seconds between two looks at SQLite's data_version
_READY_SQL = "SELECT 1 FROM queue_message WHERE queue_name = ? AND state = ? AND available_at <= ? LIMIT 1"
table: sa.Table = QueueMessage.__table__  # type: ignore[assignment]


def ensure_queue_table(engine: Engine) -> None:
    """Create the queue_message table if missing (tests, benchmarks; deployments migrate)."""
    Base.metadata.create_all(engine, tables=[table])


class SQLMessage(MessageProxy):
    """A claimed message; ``row_id`` names its row, ``attempts`` counts its deliveries."""

    def __init__(self, message: Message, row_id: int, attempts: int) -> None:
        super().__init__(message)
        self.row_id = row_id
        self.attempts = attempts


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
        self._consumers: weakref.WeakSet[_SQLConsumer] = weakref.WeakSet()
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
        consumer = _SQLConsumer(self, q_name(queue_name), prefetch, timeout)
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

    def _settle(self, consumer: _SQLConsumer, message: SQLMessage, reason: str | None) -> None:
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

    def _start_threads(self) -> None:
        """Start the heartbeat (and on PostgreSQL the listener) once per process."""
        with self._lock:
            if self._threads_pid == os.getpid():
                return
            self._threads_pid = os.getpid()
            # Threads get their own stop event: a fork or a close() leaves old ones behind.
            self._stop = stop = threading.Event()
        threading.Thread(target=self._heartbeat, args=(stop,), name="sql-broker-heartbeat", daemon=True).start()
        if self._postgres:
            threading.Thread(target=self._listen, args=(stop,), name="sql-broker-listener", daemon=True).start()
        elif self.engine.url.database not in (None, "", ":memory:"):
            threading.Thread(target=self._watch_sqlite, args=(stop,), name="sql-broker-watcher", daemon=True).start()

    def _heartbeat(self, stop: threading.Event) -> None:
        """Write stray acks, renew held leases and recover expired ones, every renew_interval."""
        while not stop.wait(self.renew_interval):
            try:
                self._flush_and_claim(None, 0)
                self.renew_leases()
                self.recover_expired_leases()
            except Exception:  # noqa: BLE001 - the heartbeat must outlive a database outage
                log.exception("Lease heartbeat failed; retrying in %.1fs.", self.renew_interval)

    def _watch_sqlite(self, stop: threading.Event) -> None:
        """Wake consumers within milliseconds when another process commits a ready message.

        ``PRAGMA data_version`` changes when another connection commits; only then comes a
        read, which in WAL mode locks nobody out, so idle workers write nothing.
        """
        conn = sqlite3.connect(str(self.engine.url.database), isolation_level=None, check_same_thread=False)
        seen = None
        while not stop.wait(WATCH_INTERVAL):
            try:
                version = conn.execute("PRAGMA data_version").fetchone()[0]
                if version == seen:
                    continue
                seen = version
                now = utcnow().strftime("%Y-%m-%d %H:%M:%S.%f")  # SQLAlchemy's SQLite format
                with self._lock:
                    queue_names = {consumer.queue_name for consumer in self._consumers}
                for queue_name in queue_names:
                    if conn.execute(_READY_SQL, (queue_name, READY, now)).fetchone():
                        self._wake(queue_name)
            except sqlite3.Error as exc:  # polling still delivers meanwhile
                log.warning("SQLite watcher: %s; retrying in 1s.", exc)
                stop.wait(1.0)
        conn.close()

    def _listen(self, stop: threading.Event) -> None:
        """Wake consumers on PostgreSQL NOTIFY; polling still covers a dropped listener."""
        import psycopg

        conninfo = self.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        while not stop.is_set():
            try:
                with psycopg.connect(conninfo, autocommit=True) as conn:
                    conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
                    self._wake(None)  # whatever was sent while we were not listening
                    while not stop.is_set():
                        for notify in conn.notifies(timeout=1.0):
                            self._wake(notify.payload)
            except psycopg.Error as exc:
                log.info("Queue listener lost its connection (%s); reconnecting.", exc)
                stop.wait(1.0)


class _SQLConsumer(Consumer):
    """Claims batches of one queue; ``__next__`` runs in one thread, acks come from others."""

    def __init__(self, broker: SQLBroker, queue_name: str, prefetch: int, timeout: int) -> None:
        self.broker = broker
        self.queue_name = queue_name
        self.prefetch = max(1, prefetch)
        # Refill only when half the prefetch is free: one claim then carries many messages.
        self.refill = max(1, self.prefetch // 2)
        self.timeout = timeout / 1000
        self.idle = broker.min_poll
        self.buffer: collections.deque[SQLMessage] = collections.deque()
        self.outstanding: set[int] = set()  # claimed through this consumer, not yet settled
        self.lock = threading.Lock()
        self.event = threading.Event()

    def ack(self, message: SQLMessage) -> None:  # type: ignore[override]
        """Delete the message's row (written with the next batch, within ack_delay)."""
        self.broker._settle(self, message, None)

    def nack(self, message: SQLMessage) -> None:  # type: ignore[override]
        """Dead-letter the message's row with the reason it failed."""
        self.broker._settle(self, message, dead_reason(message._exception, message.options))

    def requeue(self, messages: Iterable[SQLMessage]) -> None:  # type: ignore[override]
        """Put messages that were never processed back to ready."""
        row_ids = [message.row_id for message in messages]
        self.broker._requeue(row_ids)
        with self.lock:
            self.outstanding.difference_update(row_ids)

    def settled(self, row_id: int) -> None:
        """Free a prefetch slot and wake ``__next__`` so the ack is written soon."""
        with self.lock:
            self.outstanding.discard(row_id)
        self.event.set()

    def wake(self) -> None:
        """Stop idling: there may be new messages or acks to write."""
        self.idle = self.broker.min_poll
        self.event.set()

    def __next__(self) -> SQLMessage | None:  # type: ignore[override]
        deadline = time.monotonic() + self.timeout
        while True:
            self.event.clear()  # before looking, so a wake-up that comes after is not missed
            with self.lock:
                if self.buffer:
                    return self.buffer.popleft()
                room = self.prefetch - len(self.outstanding)
            claim = room >= self.refill
            if claim or self.broker._ack_wait() == 0:
                messages = self.broker._flush_and_claim(self.queue_name, room if claim else 0)
                if messages:
                    with self.lock:
                        self.outstanding.update(message.row_id for message in messages)
                        self.buffer.extend(messages)
                    self.idle = self.broker.min_poll
                    continue
            if claim:
                wait, self.idle = self.idle, min(self.idle * 2, self.broker.poll_interval)
            else:
                wait = self.broker._ack_wait()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            self.event.wait(min(wait, remaining))

    def close(self) -> None:
        """Write pending acks and give back claimed messages never handed out."""
        with self.lock:
            unhanded = list(self.buffer)
            self.buffer.clear()
        try:
            self.broker._flush_and_claim(None, 0)
            self.requeue(unhanded)
        except ConnectionClosed:
            log.warning("Could not give back %d message(s); they return when their lease expires.", len(unhanded))
        with self.broker._lock:
            self.broker._consumers.discard(self)
