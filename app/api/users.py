"""Users and API keys: /api/users."""

from __future__ import annotations

from app.api.context import current
from app.api.routing import ApiBlueprint
from app.errors import Forbidden
from app.schemas.users import UserCreate, UserView
from app.services import users

bp = ApiBlueprint("users", __name__)


@bp.endpoint("/api/users", "POST", body=UserCreate, response=UserView, auth=False)
def create_user(body: UserCreate) -> UserView:
    """Create a user (admins; anyone when allow_user_creation is on)."""
    ctx = current()
    caller = ctx.user_or_none
    if not (caller and caller.is_admin) and not ctx.settings.allow_user_creation:
        raise Forbidden("only an administrator can create users")
    user = users.create_user(ctx.session, body, is_admin=body.email in ctx.settings.admin_users)
    return users.user_view(user, ctx.ids)


@bp.endpoint("/api/users/current", response=UserView)
def current_user() -> UserView:
    """The user the API key belongs to."""
    ctx = current()
    return users.user_view(ctx.user, ctx.ids)


@bp.endpoint("/api/users", response=list[UserView])
def list_users() -> list[UserView]:
    """All users for an admin; yourself otherwise."""
    ctx = current()
    if not ctx.user.is_admin:
        return [users.user_view(ctx.user, ctx.ids)]
    import sqlalchemy as sa

    from app.models import User

    rows = ctx.session.scalars(sa.select(User).where(User.deleted.is_(False)).order_by(User.id))
    return [users.user_view(u, ctx.ids) for u in rows]


@bp.endpoint("/api/users/<user_id>", response=UserView)
def show_user(user_id: str) -> UserView:
    """One user: yourself, or anyone for an admin."""
    ctx = current()
    target = _visible_user(user_id)
    return users.user_view(target, ctx.ids)


@bp.endpoint("/api/users/<user_id>/api_key", "POST", response=str)
def create_api_key(user_id: str) -> str:
    """A new API key for yourself (or, for an admin, for anyone); the old ones stop working."""
    ctx = current()
    return users.new_api_key(ctx.session, _visible_user(user_id))


def _visible_user(user_id: str):
    ctx = current()
    if user_id == "current":
        return ctx.user
    target = users.get_user(ctx.session, ctx.decode(user_id, "user"))
    if target.id != ctx.user.id and not ctx.user.is_admin:
        users.get_user(ctx.session, -1)  # the same 404 as an unknown id
    return target
