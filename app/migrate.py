"""Database migrations with Alembic: upgrade, current revision, and a drift check."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Engine

from app.db import ensure_database, make_engine
from app.models import Base
from app.settings import Settings

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config(connection=None) -> Config:
    """Alembic's config pointing at Nebula's migrations, optionally with a connection."""
    config = Config(str(MIGRATIONS / "alembic.ini"))
    config.set_main_option("script_location", str(MIGRATIONS))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def upgrade(settings: Settings, revision: str = "head", engine: Engine | None = None) -> str | None:
    """Create the database if needed and migrate it; return the revision reached."""
    ensure_database(settings.effective_database_url)
    engine = engine or make_engine(settings)
    with engine.begin() as conn:
        command.upgrade(alembic_config(conn), revision)
    return current(settings, engine)


def current(settings: Settings, engine: Engine | None = None) -> str | None:
    """The database's revision (None when it was never migrated)."""
    engine = engine or make_engine(settings)
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head() -> str | None:
    """The newest revision in the migrations folder."""
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def drift(engine: Engine) -> list:
    """Differences between the migrated database and the models (empty when in sync)."""
    with engine.connect() as conn:
        return compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)


def autogenerate(engine: Engine, message: str) -> None:
    """Write a new migration for the models' changes (a development helper)."""
    with engine.begin() as conn:
        command.revision(alembic_config(conn), message=message, autogenerate=True)
