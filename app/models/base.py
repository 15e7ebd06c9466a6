"""The declarative base shared by every model, with constraint names Alembic can diff."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> dt.datetime:
    """The current time in UTC, without tzinfo (stored naive, always UTC)."""
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


class Base(DeclarativeBase):
    """Base class of every Nebula model."""

    metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {dict: sa.JSON, list: sa.JSON}


class Timestamps:
    """create_time and update_time columns, as Galaxy's models have."""

    create_time: Mapped[dt.datetime] = mapped_column(default=utcnow)
    update_time: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)
