"""Histories and the datasets in them."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.models.base import Base, Timestamps


class DatasetState:
    """States of a dataset, as Galaxy names them."""

    NEW = "new"
    UPLOAD = "upload"
    QUEUED = "queued"
    RUNNING = "running"
    OK = "ok"
    EMPTY = "empty"
    ERROR = "error"
    PAUSED = "paused"
    SETTING_METADATA = "setting_metadata"
    FAILED_METADATA = "failed_metadata"
    DEFERRED = "deferred"
    DISCARDED = "discarded"

    TERMINAL = frozenset({OK, EMPTY, ERROR, FAILED_METADATA, DEFERRED, DISCARDED})


class History(Timestamps, Base):
    """A user's history: an ordered list of datasets and collections."""

    __tablename__ = "history"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(sa.ForeignKey("galaxy_user.id"), index=True)
    name: Mapped[str] = mapped_column(sa.String(255), default="Unnamed history")
    hid_counter: Mapped[int] = mapped_column(default=1)
    deleted: Mapped[bool] = mapped_column(default=False)
    purged: Mapped[bool] = mapped_column(default=False)
    published: Mapped[bool] = mapped_column(default=False)
    annotation: Mapped[str | None] = mapped_column(sa.Text)
    tags: Mapped[list] = mapped_column(default=list)

    datasets: Mapped[list["Dataset"]] = relationship(back_populates="history", order_by="Dataset.hid")


class Dataset(Timestamps, Base):
    """A dataset in a history (Galaxy's HistoryDatasetAssociation and Dataset in one)."""

    __tablename__ = "dataset"
    __table_args__ = (sa.UniqueConstraint("history_id", "hid", name="uq_dataset_history_hid"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    history_id: Mapped[int] = mapped_column(sa.ForeignKey("history.id"), index=True)
    user_id: Mapped[int] = mapped_column(sa.ForeignKey("galaxy_user.id"), index=True)
    hid: Mapped[int]
    name: Mapped[str] = mapped_column(sa.String(255))
    state: Mapped[str] = mapped_column(sa.String(32), default=DatasetState.NEW, index=True)
    extension: Mapped[str] = mapped_column(sa.String(64), default="auto")
    dbkey: Mapped[str] = mapped_column(sa.String(64), default="?")
    info: Mapped[str | None] = mapped_column(sa.Text)
    peek: Mapped[str | None] = mapped_column(sa.Text)
    blurb: Mapped[str | None] = mapped_column(sa.String(255))
    line_count: Mapped[int | None]
    file_size: Mapped[int | None] = mapped_column(sa.BigInteger)
    object_key: Mapped[str | None] = mapped_column(sa.String(255))
    visible: Mapped[bool] = mapped_column(default=True)
    deleted: Mapped[bool] = mapped_column(default=False)
    purged: Mapped[bool] = mapped_column(default=False)
    tags: Mapped[list] = mapped_column(default=list)
    # No foreign key: job and dataset refer to each other (job_output holds the real link).
    creating_job_id: Mapped[int | None] = mapped_column(index=True)
    metadata_: Mapped[dict] = mapped_column("metadata", default=dict)

    history: Mapped[History] = relationship(back_populates="datasets")
