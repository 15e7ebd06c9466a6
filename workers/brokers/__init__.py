"""Broker backends and the small value types every backend reports in.

``workers.brokers.sql`` holds the embedded SQL broker (its consumer in ``sql_consumer``,
its cross-process wake-ups in ``sql_wakeup``); RabbitMQ is Dramatiq's own
``RabbitmqBroker``. ``workers.broker`` chooses between them from the settings.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any


@dataclasses.dataclass(frozen=True)
class DeadLetter:
    """A message rejected for good, kept for inspection."""

    queue_name: str
    message_id: str
    actor_name: str
    reason: str
    dead_at: dt.datetime | None
    message: dict[str, Any]


@dataclasses.dataclass(frozen=True)
class QueueStat:
    """Message counts of one queue; None where the backend cannot tell."""

    name: str
    ready: int
    delayed: int
    unacked: int | None
    dead: int
    consumers: int | None = None

    def asdict(self) -> dict[str, Any]:
        """The counts as a plain dict (for JSON output)."""
        return dataclasses.asdict(self)


def dead_reason(exception: BaseException | None, options: dict[str, Any]) -> str:
    """A one-line reason for a dead letter: the exception, else the last traceback line."""
    if exception is not None:
        return f"{type(exception).__name__}: {exception}"
    traceback = str(options.get("traceback") or "").strip()
    return traceback.splitlines()[-1] if traceback else "rejected"
