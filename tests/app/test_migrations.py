"""Migrations build exactly the schema the models describe, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from app.db import make_engine
from app.migrate import current, drift, head, upgrade
from app.settings import Settings


def test_sqlite_upgrade_matches_models(data_dir):
    settings = Settings(data_dir=data_dir)
    assert upgrade(settings) == head()
    engine = make_engine(settings)
    assert drift(engine) == [], "models changed without a migration: run scripts/regen_initial_migration.sh"
    assert upgrade(settings) == head(), "upgrading twice is a no-op"


@pytest.mark.postgres
def test_postgres_upgrade_matches_models(pg_url, data_dir):
    settings = Settings(data_dir=data_dir, database_url=pg_url)
    upgrade(settings)
    engine = make_engine(settings)
    try:
        assert current(settings, engine) == head()
        assert drift(engine) == []
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_missing_postgres_database_is_created(postgres_server, data_dir):
    import uuid

    from tests.conftest import drop_pg_database

    from sqlalchemy.engine import make_url

    name = f"nebula_test_new_{uuid.uuid4().hex[:8]}"
    url = make_url(postgres_server).set(database=name).render_as_string(hide_password=False)
    try:
        assert upgrade(Settings(data_dir=data_dir, database_url=url)) == head()
    finally:
        drop_pg_database(postgres_server, name)
