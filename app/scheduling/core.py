"""The core scheduler: schedule everything that is ready, up to the per-iteration job cap."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from app.scheduling.plugin import Outcome
from app.settings import Settings

if TYPE_CHECKING:
    from app.scheduling.run import InvocationRun


class CoreScheduler:
    """Galaxy's default behaviour: each iteration creates at most
    ``maximum_workflow_jobs_per_scheduling_iteration`` jobs, then yields to other invocations."""

    name: ClassVar[str] = "core"

    def __init__(self, settings: Settings):
        self.job_cap = settings.maximum_workflow_jobs_per_scheduling_iteration

    def schedule(self, run: "InvocationRun") -> Outcome:
        """Advance as far as the job cap allows."""
        return run.advance(job_budget=self.job_cap)
