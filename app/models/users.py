"""Users and their API keys (stored hashed)."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.models.base import Base, Timestamps


class User(Timestamps, Base):
    """A person (or script) using Nebula."""

    __tablename__ = "galaxy_user"

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(sa.String(255), unique=True)
    email: Mapped[str] = mapped_column(sa.String(255), unique=True)
    password_hash: Mapped[str | None] = mapped_column(sa.String(255))
    is_admin: Mapped[bool] = mapped_column(default=False)
    deleted: Mapped[bool] = mapped_column(default=False)

    api_keys: Mapped[list["ApiKey"]] = relationship(back_populates="user")


class ApiKey(Timestamps, Base):
    """An API key; only its SHA-256 is stored (keys are long random strings)."""

    __tablename__ = "api_key"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(sa.ForeignKey("galaxy_user.id"), index=True)
    key_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    deleted: Mapped[bool] = mapped_column(default=False)

    user: Mapped[User] = relationship(back_populates="api_keys")
