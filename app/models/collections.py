"""Dataset collections: lists, pairs and their nestings, and their place in a history.

A ``DatasetCollection`` is a structure only: a type (``list``, ``paired``,
``list:paired`` …) and ordered ``DatasetCollectionElement`` rows, each naming a dataset
(a leaf) or a child collection (a nested level). A ``HistoryDatasetCollection`` (Galaxy's
HDCA) puts a collection into a history under a hid and a name; a map-over's implicit
output collection is one too, and records which tool output and invocation made it.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.models.base import Base, Timestamps


class PopulatedState:
    """Whether a collection's elements are all known (Galaxy's populated_state)."""

    NEW = "new"
    OK = "ok"
    FAILED = "failed"


class DatasetCollection(Timestamps, Base):
    """A collection's structure: its type and its elements."""

    __tablename__ = "dataset_collection"

    id: Mapped[int] = mapped_column(primary_key=True)
    collection_type: Mapped[str] = mapped_column(sa.String(255))
    populated_state: Mapped[str] = mapped_column(sa.String(64), default=PopulatedState.OK)
    populated_state_message: Mapped[str | None] = mapped_column(sa.Text)
    element_count: Mapped[int] = mapped_column(default=0)

    elements: Mapped[list["DatasetCollectionElement"]] = relationship(
        order_by="DatasetCollectionElement.element_index",
        foreign_keys="DatasetCollectionElement.collection_id",
        viewonly=True,
    )


class DatasetCollectionElement(Base):
    """One element of a collection: a dataset, or a child collection of a nested type."""

    __tablename__ = "dataset_collection_element"
    __table_args__ = (
        sa.UniqueConstraint("collection_id", "element_index", name="uq_dataset_collection_element_index"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    collection_id: Mapped[int] = mapped_column(sa.ForeignKey("dataset_collection.id"))
    element_index: Mapped[int]
    element_identifier: Mapped[str] = mapped_column(sa.String(255))
    dataset_id: Mapped[int | None] = mapped_column(sa.ForeignKey("dataset.id"), index=True)
    child_collection_id: Mapped[int | None] = mapped_column(sa.ForeignKey("dataset_collection.id"), index=True)


class HistoryDatasetCollection(Timestamps, Base):
    """A collection in a history (Galaxy's HistoryDatasetCollectionAssociation)."""

    __tablename__ = "history_dataset_collection"
    __table_args__ = (sa.UniqueConstraint("history_id", "hid", name="uq_history_dataset_collection_history_hid"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    history_id: Mapped[int] = mapped_column(sa.ForeignKey("history.id"), index=True)
    user_id: Mapped[int] = mapped_column(sa.ForeignKey("galaxy_user.id"), index=True)
    hid: Mapped[int]
    name: Mapped[str] = mapped_column(sa.String(255))
    collection_id: Mapped[int] = mapped_column(sa.ForeignKey("dataset_collection.id"), index=True)
    visible: Mapped[bool] = mapped_column(default=True)
    deleted: Mapped[bool] = mapped_column(default=False)
    tags: Mapped[list] = mapped_column(default=list)
    # Set for the implicit output collection of a map-over: the tool output it gathers,
    # and (for a workflow's map-over) the invocation and step that made it. Plain
    # integers: the tables they point to belong to other models.
    implicit_output_name: Mapped[str | None] = mapped_column(sa.String(255))
    job_id: Mapped[int | None]
    invocation_id: Mapped[int | None] = mapped_column(index=True)
    invocation_step_id: Mapped[int | None]

    collection: Mapped[DatasetCollection] = relationship()
