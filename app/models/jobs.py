"""Jobs: one run of a tool, with the datasets it reads and writes."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.models.base import Base, Timestamps


class JobState:
    """States of a job, as Galaxy names them."""

    NEW = "new"
    QUEUED = "queued"
    RUNNING = "running"
    OK = "ok"
    ERROR = "error"
    DELETING = "deleting"
    DELETED = "deleted"
    # A conditional workflow step whose condition was false (or whose inputs were skipped):
    # never run, its outputs are JSON null.
    SKIPPED = "skipped"

    TERMINAL = frozenset({OK, ERROR, DELETED, SKIPPED})


class Job(Timestamps, Base):
    """A tool run; a workflow's jobs are keyed by (invocation step, element index)."""

    __tablename__ = "job"
    __table_args__ = (
        sa.UniqueConstraint("invocation_step_id", "element_index", name="uq_job_invocation_step_element"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(sa.ForeignKey("galaxy_user.id"), index=True)
    history_id: Mapped[int | None] = mapped_column(sa.ForeignKey("history.id"), index=True)
    tool_id: Mapped[str] = mapped_column(sa.String(255), index=True)
    tool_version: Mapped[str] = mapped_column(sa.String(64), default="1.0.0")
    state: Mapped[str] = mapped_column(sa.String(32), default=JobState.NEW, index=True)
    params: Mapped[dict] = mapped_column(default=dict)
    command_line: Mapped[str | None] = mapped_column(sa.Text)
    stdout: Mapped[str | None] = mapped_column(sa.Text)
    stderr: Mapped[str | None] = mapped_column(sa.Text)
    exit_code: Mapped[int | None]
    info: Mapped[str | None] = mapped_column(sa.Text)
    worker_id: Mapped[str | None] = mapped_column(sa.String(128))
    attempts: Mapped[int] = mapped_column(default=0)
    # Process group of the running command (recorded by the runner's monitor), so that a
    # re-run after a worker's death can stop what the dead worker left running.
    pid: Mapped[int | None]
    # Set for jobs a workflow invocation created; the tables they point to belong to the
    # workflow models, so these are plain indexed integers.
    invocation_id: Mapped[int | None] = mapped_column(index=True)
    invocation_step_id: Mapped[int | None]
    element_index: Mapped[int | None]
    start_time: Mapped[dt.datetime | None]
    end_time: Mapped[dt.datetime | None]

    inputs: Mapped[list["JobInput"]] = relationship(cascade="all, delete-orphan")
    outputs: Mapped[list["JobOutput"]] = relationship(cascade="all, delete-orphan")


class JobInput(Base):
    """A dataset a job reads, under the parameter name it was given to."""

    __tablename__ = "job_input"

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(sa.ForeignKey("job.id"), index=True)
    dataset_id: Mapped[int] = mapped_column(sa.ForeignKey("dataset.id"), index=True)
    name: Mapped[str] = mapped_column(sa.String(255))


class JobOutput(Base):
    """A dataset a job writes, under the tool's output name."""

    __tablename__ = "job_output"

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(sa.ForeignKey("job.id"), index=True)
    dataset_id: Mapped[int] = mapped_column(sa.ForeignKey("dataset.id"), index=True)
    name: Mapped[str] = mapped_column(sa.String(255))
