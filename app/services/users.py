"""Users and API keys."""

from __future__ import annotations

import hashlib
import secrets

import sqlalchemy as sa
from sqlalchemy.orm import Session

from app.errors import Conflict, NotFound
from app.ids import IdEncoder
from app.models import ApiKey, User
from app.schemas.users import UserCreate, UserView


def hash_password(password: str) -> str:
    """A salted PBKDF2 hash of a password."""
    salt = secrets.token_hex(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), bytes.fromhex(salt), 200_000)
    return f"pbkdf2_sha256${salt}${digest.hex()}"


def hash_api_key(key: str) -> str:
    """The stored form of an API key (keys are random, so a plain SHA-256 suffices)."""
    return hashlib.sha256(key.encode()).hexdigest()


def create_user(session: Session, body: UserCreate, *, is_admin: bool = False) -> User:
    """Create a user; 409 when the name or e-mail is taken."""
    taken = session.scalar(
        sa.select(User.id).where(sa.or_(User.username == body.username, User.email == body.email))
    )
    if taken is not None:
        raise Conflict("a user with that username or email already exists")
    user = User(
        username=body.username,
        email=body.email,
        password_hash=hash_password(body.password) if body.password else None,
        is_admin=is_admin,
    )
    session.add(user)
    session.flush()
    return user


def new_api_key(session: Session, user: User) -> str:
    """Issue a fresh key for a user, retiring the previous ones (as Galaxy does)."""
    session.execute(sa.update(ApiKey).where(ApiKey.user_id == user.id).values(deleted=True))
    key = secrets.token_hex(16)
    session.add(ApiKey(user_id=user.id, key_hash=hash_api_key(key)))
    session.flush()
    return key


def get_user(session: Session, user_id: int) -> User:
    """A user by id (404 when absent)."""
    user = session.get(User, user_id)
    if user is None or user.deleted:
        raise NotFound("user not found")
    return user


def find_user(session: Session, name_or_email: str) -> User:
    """A user by username or e-mail (404 when absent)."""
    user = session.scalar(
        sa.select(User).where(sa.or_(User.username == name_or_email, User.email == name_or_email))
    )
    if user is None:
        raise NotFound(f"no user named {name_or_email!r}")
    return user


def user_view(user: User, ids: IdEncoder) -> UserView:
    """The API form of a user."""
    return UserView(
        id=ids.encode(user.id),
        username=user.username,
        email=user.email,
        is_admin=user.is_admin,
        deleted=user.deleted,
    )
