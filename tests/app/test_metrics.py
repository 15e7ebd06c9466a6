"""Prometheus metrics: the web's request counters and beat's queue and state gauges."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from app.migrate import upgrade
from app.settings import Settings


def test_web_counts_requests_by_route(stack):
    api = stack.client(stack.user_key("alice"))
    api.get("/api/histories")
    api.get("/api/histories/0000000000000000")
    text = stack.client(key=None).get("/metrics").data.decode()
    assert 'nebula_http_requests_total{method="GET",route="/api/histories",status="200"}' in text
    assert 'route="/api/histories/<history_id>",status="404"' in text
    assert "nebula_http_request_duration_seconds_bucket" in text


def test_beat_collector_reports_queues_and_states(data_dir):
    from workers.metrics import NebulaCollector
    from workers.runtime import build_runtime

    settings = Settings(data_dir=data_dir, log_format="console")
    upgrade(settings)
    rt = build_runtime(settings)
    try:
        with rt.services.session_factory.begin() as session:
            from app.schemas.tasks import Noop

            rt.services.enqueuer.send(session, Noop(value=1), track=True)
        registry = CollectorRegistry()
        registry.register(NebulaCollector(rt))
        text = generate_latest(registry).decode()
        assert 'nebula_queue_messages{kind="ready",queue="default"} 1.0' in text
        assert 'nebula_tasks{state="PENDING"} 1.0' in text
    finally:
        rt.broker.close()
        rt.services.engine.dispose()
