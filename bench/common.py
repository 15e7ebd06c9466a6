"""What the benchmarks share: the local services, settings per backend, the processes' environment."""

from __future__ import annotations

import os
from pathlib import Path

from app.db import make_engine
from app.ids import IdEncoder
from app.settings import Settings

PG = "postgresql+psycopg://postgres@127.0.0.1:5432"
AMQP = "amqp://guest:guest@127.0.0.1:5672/%2F"
KEY = "bench-admin-key"
BACKENDS = ("rabbitmq-pg", "sql-pg", "sql-sqlite")
QUEUES = ("default", "jobs", "exports", "scheduling")


def settings_for(backend: str, data_dir: Path, prefix: str, db_name: str) -> Settings:
    """Settings of one backend: RabbitMQ + PostgreSQL, the embedded broker on PostgreSQL, or SQLite."""
    database = None if backend == "sql-sqlite" else f"{PG}/{db_name}"
    broker = AMQP if backend == "rabbitmq-pg" else "sql"
    return Settings(data_dir=data_dir, database_url=database, broker_url=broker, queue_prefix=prefix,
                    bootstrap_api_key=KEY, log_level="WARNING", id_secret="bench")


def cleanup(settings: Settings, db_name: str, queues: tuple[str, ...] = QUEUES) -> None:
    """Drop a run's database and its queues (with their delay and dead-letter queues)."""
    if settings.database_url:
        import sqlalchemy as sa

        admin = sa.create_engine(f"{PG}/postgres", isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')
        admin.dispose()
    if not settings.uses_embedded_broker:
        import pika

        connection = pika.BlockingConnection(pika.URLParameters(settings.broker_url))
        channel = connection.channel()
        for name in queues:
            for suffix in ("", ".DQ", ".XQ"):
                channel.queue_delete(settings.queue_name(name) + suffix)
        connection.close()


def environment(settings: Settings) -> dict[str, str]:
    """The environment passing these settings to Nebula processes."""
    env = {**os.environ, "NEBULA_DATA_DIR": str(settings.data_dir), "NEBULA_BROKER_URL": settings.broker_url,
           "NEBULA_QUEUE_PREFIX": settings.queue_prefix, "NEBULA_LOG_LEVEL": "WARNING", "NEBULA_ID_SECRET": "bench",
           "NEBULA_BOOTSTRAP_API_KEY": KEY}
    env.pop("NEBULA_CONFIG", None)
    env.pop("NEBULA_DATABASE_URL", None)
    if settings.database_url:
        env["NEBULA_DATABASE_URL"] = settings.database_url
    return env


class ApiBench:
    """The web app in this process (its own code path, without HTTP), and the database."""

    def __init__(self, settings: Settings):
        from app.api import create_app

        self.settings = settings
        self.client = create_app(settings).test_client()
        self.engine = make_engine(settings)
        self.ids = IdEncoder(settings.id_secret)

    def call(self, method: str, url: str, **kw):
        """An API call as the bench admin; anything but 200 stops the bench."""
        response = getattr(self.client, method)(url, headers={"x-api-key": KEY}, **kw)
        if response.status_code != 200:
            raise RuntimeError(f"{method.upper()} {url}: {response.status_code} {response.get_data(as_text=True)[:500]}")
        return response.json
