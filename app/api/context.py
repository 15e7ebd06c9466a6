"""The per-request context: settings, the request's session, the authenticated user."""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from flask import current_app, g, request
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.errors import AuthenticationFailed, AuthenticationRequired, Forbidden, NotFound
from app.ids import IdEncoder
from app.models import ApiKey, User
from app.services.registry import Services
from app.services.users import hash_api_key
from app.settings import Settings

BOOTSTRAP_USERNAME = "admin"
BOOTSTRAP_EMAIL = "admin@nebula.invalid"


@dataclass
class RequestContext:
    """What a view needs: one session, the user, and the app's services."""

    services: Services
    _session: Session | None = None
    _user: User | None = None

    @property
    def settings(self) -> Settings:
        """The app's settings."""
        return self.services.settings

    @property
    def ids(self) -> IdEncoder:
        """The id encoder."""
        return self.services.ids

    @property
    def session(self) -> Session:
        """The request's session, opened on first use."""
        if self._session is None:
            self._session = self.services.session_factory()
        return self._session

    def decode(self, opaque: str, what: str = "object") -> int:
        """The database id behind an opaque id, or a 404 naming what was looked for."""
        value = self.ids.decode(opaque)
        if value is None:
            raise NotFound(f"{what} {opaque!r} not found")
        return value

    def commit(self) -> None:
        """Commit the request's work (nothing happens when the session was never used)."""
        if self._session is not None:
            self._session.commit()

    def close(self) -> None:
        """Roll back anything uncommitted and release the connection."""
        if self._session is not None:
            self._session.close()
            self._session = None

    @property
    def user(self) -> User:
        """The authenticated user (403 when there is none)."""
        return self.require_user()

    @property
    def user_or_none(self) -> User | None:
        """The authenticated user, or None for an anonymous request."""
        if self._user is None and api_key_of_request():
            self._user = self._authenticate(api_key_of_request())
        return self._user

    def require_user(self) -> User:
        """Authenticate the request's key; raise when there is none or it is wrong."""
        user = self.user_or_none
        if user is None:
            raise AuthenticationRequired("API authentication required for this request")
        return user

    def require_admin(self) -> User:
        """The user, who must be an admin."""
        user = self.require_user()
        if not user.is_admin:
            raise Forbidden("only an administrator can do this")
        return user

    def _authenticate(self, key: str) -> User:
        if self.settings.bootstrap_api_key and key == self.settings.bootstrap_api_key:
            return self._bootstrap_admin()
        user = self.session.scalar(
            sa.select(User)
            .join(ApiKey, ApiKey.user_id == User.id)
            .where(ApiKey.key_hash == hash_api_key(key), ApiKey.deleted.is_(False), User.deleted.is_(False))
        )
        if user is None:
            raise AuthenticationFailed("Provided API key is not valid")
        if user.email in self.settings.admin_users and not user.is_admin:
            user.is_admin = True
        return user

    def _bootstrap_admin(self) -> User:
        """The admin user the bootstrap key acts as, created on first use."""
        query = sa.select(User).where(User.username == BOOTSTRAP_USERNAME)
        user = self.session.scalar(query)
        if user is None:
            try:
                with self.session.begin_nested():
                    user = User(username=BOOTSTRAP_USERNAME, email=BOOTSTRAP_EMAIL, is_admin=True)
                    self.session.add(user)
            except IntegrityError:  # another request created it first
                user = self.session.scalar(query)
        assert user is not None
        if not user.is_admin:
            raise AuthenticationFailed("the bootstrap key's user is not an admin")
        return user


def api_key_of_request() -> str | None:
    """The API key from the x-api-key header or the ?key= parameter."""
    return request.headers.get("x-api-key") or request.args.get("key") or None


def current() -> RequestContext:
    """The context of the request being served."""
    ctx = g.get("nebula")
    if ctx is None:
        ctx = g.nebula = RequestContext(services=current_app.extensions["nebula"])
    return ctx
