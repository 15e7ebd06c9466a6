"""The consumer side of the embedded SQL broker: claimed messages and the batches they come in.

A consumer claims up to ``prefetch`` rows of one queue at a time and hands them out one by
one; acks and nacks go to its broker, which writes them with the next claim (see
``workers.brokers.sql``).
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from dramatiq.broker import Consumer, MessageProxy
from dramatiq.errors import ConnectionClosed
from dramatiq.message import Message

from workers.brokers import dead_reason

if TYPE_CHECKING:
    from workers.brokers.sql import SQLBroker

log = logging.getLogger(__name__)


class SQLMessage(MessageProxy):
    """A claimed message; ``row_id`` names its row, ``attempts`` counts its deliveries."""

    def __init__(self, message: Message, row_id: int, attempts: int) -> None:
        super().__init__(message)
        self.row_id = row_id
        self.attempts = attempts


class SQLConsumer(Consumer):
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
        self.broker._forget(self)
