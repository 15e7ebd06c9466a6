"""Health checks of the database and the broker, for `manage health`."""

from __future__ import annotations

import socket
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from app.db import make_engine
from app.settings import Settings


def check_database(settings: Settings) -> dict[str, Any]:
    """Can we run a query, and is the schema migrated?"""
    from app.migrate import current, head

    engine = make_engine(settings)
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        rev = current(settings, engine)
        if rev != head():
            return {"ok": False, "detail": f"schema at {rev or 'nothing'}, expected {head()}: run `manage db upgrade`"}
        return {"ok": True, "detail": f"{engine.dialect.name} at revision {rev}"}
    except Exception as exc:  # noqa: BLE001 - any failure means down
        return {"ok": False, "detail": f"{type(exc).__name__}: {exc}".splitlines()[0]}
    finally:
        engine.dispose()


def check_broker(settings: Settings) -> dict[str, Any]:
    """The embedded broker is the database; RabbitMQ must accept an AMQP connection."""
    if settings.uses_embedded_broker:
        return {"ok": True, "detail": "embedded SQL broker (on the database)"}
    import pika

    try:
        params = pika.URLParameters(settings.broker_url)
        params.socket_timeout = 5
        params.blocked_connection_timeout = 5
        connection = pika.BlockingConnection(params)
        connection.close()
        url = make_url(settings.broker_url.replace("amqp", "postgresql", 1))
        return {"ok": True, "detail": f"RabbitMQ at {url.host}:{url.port or 5672}"}
    except (pika.exceptions.AMQPError, socket.error) as exc:
        return {"ok": False, "detail": f"RabbitMQ unreachable: {type(exc).__name__} {exc}"}
