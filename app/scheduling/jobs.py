"""Stopping an invocation's jobs in bulk (the same transitions as ``services.jobs.cancel_job``).

Queued jobs become ``deleted`` and never start; running ones become ``deleting`` and their
worker kills them; their unfinished outputs are discarded. A handful of statements,
however many jobs the invocation made.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import Session

from app.models import Dataset, DatasetState, Job, JobOutput, JobState
from app.models.base import utcnow
from app.services.jobs import DELETED_INFO


def cancel_invocation_jobs(session: Session, invocation_id: int) -> int:
    """Stop every unfinished job of an invocation; return how many were stopped."""
    now = utcnow()
    stopped = session.execute(
        sa.update(Job)
        .where(Job.invocation_id == invocation_id, Job.state.in_([JobState.NEW, JobState.QUEUED]))
        .values(state=JobState.DELETED, info=DELETED_INFO, update_time=now, end_time=now)
        .execution_options(synchronize_session=False)
    ).rowcount
    stopped += session.execute(
        sa.update(Job)
        .where(Job.invocation_id == invocation_id, Job.state == JobState.RUNNING)
        .values(state=JobState.DELETING, info=DELETED_INFO, update_time=now)
        .execution_options(synchronize_session=False)
    ).rowcount
    if stopped:
        stopped_jobs = sa.select(Job.id).where(Job.invocation_id == invocation_id,
                                               Job.state.in_([JobState.DELETED, JobState.DELETING]))
        session.execute(
            sa.update(Dataset)
            .where(Dataset.id.in_(sa.select(JobOutput.dataset_id).where(JobOutput.job_id.in_(stopped_jobs))),
                   Dataset.state.not_in([DatasetState.OK, DatasetState.EMPTY]))
            .values(deleted=True, state=DatasetState.DISCARDED, info=DELETED_INFO, blurb="deleted",
                    peek="Job deleted", update_time=now)
            .execution_options(synchronize_session=False)
        )
    return stopped
