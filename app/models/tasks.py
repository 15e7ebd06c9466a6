"""Tracked tasks: the state, progress and result of a background task, for the API."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, Timestamps


class TaskState:
    """Celery's state names, which Galaxy's API exposes."""

    PENDING = "PENDING"
    STARTED = "STARTED"
    RETRY = "RETRY"
    FAILURE = "FAILURE"
    SUCCESS = "SUCCESS"

    TERMINAL = frozenset({FAILURE, SUCCESS})


class Task(Timestamps, Base):
    """One tracked task, keyed by its Dramatiq message id."""

    __tablename__ = "task"

    id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    action: Mapped[str] = mapped_column(sa.String(255))
    user_id: Mapped[int | None] = mapped_column(sa.ForeignKey("galaxy_user.id"), index=True)
    state: Mapped[str] = mapped_column(sa.String(16), default=TaskState.PENDING)
    progress: Mapped[float | None]
    progress_message: Mapped[str | None] = mapped_column(sa.String(255))
    result: Mapped[dict | list | str | int | float | bool | None] = mapped_column(sa.JSON)
    error: Mapped[str | None] = mapped_column(sa.Text)
    attempts: Mapped[int] = mapped_column(default=0)
