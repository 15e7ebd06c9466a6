"""The scheduler's actor: one scheduling iteration of an invocation per message."""

from __future__ import annotations

from app.schemas.tasks import AdvanceInvocation
from app.scheduling.driver import advance_invocation as advance
from app.scheduling.driver import sweep
from app.services.registry import Services
from workers.tasks import task


@task(queue="scheduling", action="advance_invocation", max_retries=20, time_limit=10 * 60 * 1000,
      min_backoff=200, max_backoff=10_000)
def advance_invocation(request: AdvanceInvocation, services: Services) -> str:
    """Take the invocation's lease, run one iteration of its scheduler plugin, commit."""
    return advance(services.session_factory, request.invocation_id, settings=services.settings,
                   enqueuer=services.enqueuer, deferred=request.deferred, follow_on=request.follow_on)


# Invocations that have not moved for this long are woken by beat's sweep.
SWEEP_STALE_AFTER_S = 30.0


def scheduling_sweep(rt) -> int:
    """Beat: re-send advance_invocation for active invocations that have not progressed lately."""
    return sweep(rt.services.session_factory, rt.services.enqueuer, stale_after_s=SWEEP_STALE_AFTER_S)
