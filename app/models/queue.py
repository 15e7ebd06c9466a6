"""Tables of message delivery: the outbox, and the embedded SQL broker's messages.

The outbox holds messages written in the same transaction as the rows they refer to;
they leave for RabbitMQ only after that transaction commits. With the embedded broker
the message goes straight into ``queue_message`` in the same transaction instead, so no
relay is needed at all.
"""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, utcnow

# States of a row in queue_message.
READY = "ready"  # waiting for a consumer (available_at may lie in the future: a delay)
CLAIMED = "claimed"  # held by a worker until lease_until
DEAD = "dead"  # dead-lettered: rejected for good, kept for inspection


class OutboxMessage(Base):
    """A Dramatiq message waiting to be published to RabbitMQ after its transaction committed."""

    __tablename__ = "outbox_message"

    id: Mapped[int] = mapped_column(sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True)
    queue_name: Mapped[str] = mapped_column(sa.String(255))
    message_id: Mapped[str] = mapped_column(sa.String(64), index=True)
    message: Mapped[dict] = mapped_column(sa.JSON)
    delay_ms: Mapped[int] = mapped_column(default=0)
    create_time: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)
    attempts: Mapped[int] = mapped_column(default=0)


class QueueMessage(Base):
    """A message of the embedded SQL broker."""

    __tablename__ = "queue_message"
    __table_args__ = (
        sa.Index("ix_queue_message_claim", "queue_name", "state", "priority", "available_at", "id"),
        sa.Index("ix_queue_message_lease", "state", "lease_until"),
    )

    id: Mapped[int] = mapped_column(sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True)
    queue_name: Mapped[str] = mapped_column(sa.String(255))
    message_id: Mapped[str] = mapped_column(sa.String(64), index=True)
    state: Mapped[str] = mapped_column(sa.String(16), default=READY)
    priority: Mapped[int] = mapped_column(default=0)
    available_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    message: Mapped[str] = mapped_column(sa.Text)
    worker_id: Mapped[str | None] = mapped_column(sa.String(128))
    lease_until: Mapped[dt.datetime | None]
    attempts: Mapped[int] = mapped_column(default=0)
    enqueue_time: Mapped[dt.datetime] = mapped_column(default=utcnow)
    dead_reason: Mapped[str | None] = mapped_column(sa.Text)
