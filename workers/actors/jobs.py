"""Job actor: run one tool job (the work is in app.jobs.runner)."""

from __future__ import annotations

from app.jobs import runner
from app.schemas.tasks import RunJob
from app.services.registry import Services
from workers.tasks import task

# The runner enforces each job's wall time itself and records failures on the job; the
# actor's own limit only stops a runner stuck beyond any job's wall time.
TWO_DAYS_MS = 2 * 24 * 3600 * 1000


@task(queue="jobs", action="run_job", max_retries=5, time_limit=TWO_DAYS_MS)
def run_job(request: RunJob, services: Services) -> str:
    """Run the job unless it finished, is held by a live worker, or waits for inputs."""
    return runner.run_job(services, request.job_id, waits=request.waits)
