"""What the job runner keeps per process for each Services object.

The job monitor (wall times, cancels, heartbeats), the PostgreSQL fast path's per-thread
connections, and the gathering of invocation wake-ups: made on first use, held weakly
so a test's discarded Services never hands its helpers to a new object with the same id.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass

from app.jobs import monitor as monitoring
from app.jobs import pgfast
from app.jobs.wakeups import InvocationWakeups
from app.schemas.tasks import AdvanceInvocation
from app.services.registry import Services


@dataclass
class Helpers:
    """What the runner keeps per Services object: the monitor and the fast-path connections."""

    services: weakref.ref
    monitor: monitoring.JobMonitor
    fast: pgfast.ThreadConnections | None
    wakeups: InvocationWakeups


_helpers: dict[int, Helpers] = {}
_helpers_lock = threading.Lock()


def helpers_for(services: Services) -> Helpers:
    """The helpers of these services (made on first use; never those of a gone object with the same id)."""
    entry = _helpers.get(id(services))
    if entry is None or entry.services() is not services:
        with _helpers_lock:
            entry = _helpers.get(id(services))
            if entry is None or entry.services() is not services:
                postgres = services.engine.dialect.name == "postgresql"
                entry = _helpers[id(services)] = Helpers(
                    weakref.ref(services), monitoring.JobMonitor(services.session_factory),
                    pgfast.ThreadConnections(services.engine) if postgres else None,
                    InvocationWakeups(_advance_sender(weakref.ref(services)), services.settings.job_wakeup_window))
    return entry


def _advance_sender(services: weakref.ref) -> Callable[[list[int]], None]:
    """Sends AdvanceInvocation for invocation ids (nothing once the services are gone)."""
    def send(invocation_ids: list[int]) -> None:
        live = services()
        if live is not None:
            live.enqueuer.send_now([AdvanceInvocation(invocation_id=i) for i in invocation_ids])
    return send
