"""The fair-share scheduler: caps each user's queued + running jobs.

Jobs run in the order they are queued, so a user whose map-over queued 10,000 jobs at
once would make everyone else wait behind them. Under this scheduler an invocation only
creates jobs while its user has fewer than ``fair_share_max_active_jobs`` jobs new,
queued or running; the rest are created as those finish (each finished job wakes its
invocation), so other users' jobs are never more than that many places behind.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import sqlalchemy as sa

from app.models import Job, JobState
from app.scheduling.plugin import Outcome
from app.settings import Settings

if TYPE_CHECKING:
    from app.scheduling.run import InvocationRun

# When the user is at the cap, look again after this long even if no job of this
# invocation finishes (another invocation's jobs may be the ones that free room).
RETRY_AFTER_S = 1.0
ACTIVE_STATES = (JobState.NEW, JobState.QUEUED, JobState.RUNNING)


class FairShareScheduler:
    """Core scheduling under a per-user cap of active jobs."""

    name: ClassVar[str] = "fair_share"

    def __init__(self, settings: Settings):
        self.job_cap = settings.maximum_workflow_jobs_per_scheduling_iteration
        self.max_active = settings.fair_share_max_active_jobs

    def active_jobs(self, run: "InvocationRun") -> int:
        """The user's jobs that are new, queued or running."""
        return run.session.scalar(
            sa.select(sa.func.count()).select_from(Job)
            .where(Job.user_id == run.invocation.user_id, Job.state.in_(ACTIVE_STATES))
        ) or 0

    def schedule(self, run: "InvocationRun") -> Outcome:
        """Advance with a budget of the room left under the user's cap."""
        room = self.max_active - self.active_jobs(run)
        outcome = run.advance(job_budget=max(0, min(self.job_cap, room)))
        if outcome.again and room <= outcome.jobs_created:
            # Stopped by the cap, not by the iteration limit: wait for jobs to finish.
            return Outcome(jobs_created=outcome.jobs_created, retry_after=RETRY_AFTER_S)
        return outcome
