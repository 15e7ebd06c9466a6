"""Upload pipeline actors: setup_fetch_data | fetch_data | set_job_metadata, finish_job on error."""

from __future__ import annotations

from sqlalchemy.orm import Session

from app.messaging import Enqueuer
from app.objectstore import ObjectStore
from app.schemas.tasks import FetchData, FinishJob, SetJobMetadata, SetupFetchData
from app.services import uploads
from workers.tasks import TaskFailure, task


@task(queue="default", action="setup_fetch_data", max_retries=3)
def setup_fetch_data(request: SetupFetchData, session: Session) -> None:
    """Mark the upload job running."""
    uploads.setup_fetch_data(session, request.job_id)


@task(queue="default", action="fetch_data", max_retries=3, time_limit=60 * 60 * 1000)
def fetch_data(request: FetchData, session: Session, store: ObjectStore) -> None:
    """Bring the targets' bytes into the object store."""
    uploads.fetch_data(session, request.job_id, store)


@task(queue="default", action="set_job_metadata", max_retries=3)
def set_job_metadata(request: SetJobMetadata, session: Session, store: ObjectStore, enqueuer: Enqueuer) -> None:
    """Sniff and measure the outputs; the job becomes ok; jobs waiting on them are woken."""
    uploads.set_job_metadata(session, request.job_id, store, enqueuer=enqueuer)


@task(queue="default", action="finish_job", max_retries=10)
def finish_job(request: FinishJob, session: Session, failure: TaskFailure, enqueuer: Enqueuer) -> None:
    """The upload failed for good: job and outputs become error with the reason; waiting jobs are woken."""
    reason = f"{failure.type}: {failure.message}" if failure else "the upload failed"
    uploads.finish_job_with_error(session, request.job_id, reason, enqueuer=enqueuer)
