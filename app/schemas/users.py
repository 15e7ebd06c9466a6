"""Users and keys."""

from __future__ import annotations

from pydantic import Field

from app.schemas.common import Model, Request


class UserCreate(Request):
    """POST /api/users."""

    username: str = Field(min_length=1, max_length=255, pattern=r"^[a-z0-9._-]+$")
    email: str = Field(min_length=3, max_length=255, pattern=r"^[^@\s]+@[^@\s]+$")
    password: str | None = Field(None, min_length=1, max_length=1024)


class UserView(Model):
    """A user as the API shows it."""

    id: str
    username: str
    email: str
    is_admin: bool
    deleted: bool
    model_class: str = "User"
