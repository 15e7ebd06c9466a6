"""Fast tier: the Flask app and the real actors on Dramatiq's StubBroker, SQLite per test."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dramatiq
import pytest
from dramatiq.brokers.stub import StubBroker
from flask import Flask
from flask.testing import FlaskClient

from app.api import create_app
from app.migrate import upgrade
from app.services.registry import Services, build_services
from app.settings import Settings
from workers.runtime import BrokerPublisher, WorkerRuntime, build_runtime

ADMIN_KEY = "bootstrap-secret-key"


@dataclass
class Stack:
    """An app, its services, and a worker runtime sharing one database and stub broker."""

    settings: Settings
    app: Flask
    services: Services
    runtime: WorkerRuntime
    broker: StubBroker

    def client(self, key: str | None = ADMIN_KEY) -> "ApiClient":
        """A test client sending ``key`` as x-api-key."""
        return ApiClient(self.app.test_client(), key)

    def drain(self, timeout_ms: int = 20_000) -> None:
        """Run every queued message (and what they enqueue) to completion."""
        worker = dramatiq.Worker(self.broker, worker_timeout=50, worker_threads=2)
        worker.start()
        try:
            for _ in range(5):
                for queue in list(self.broker.queues):
                    self.broker.join(queue, timeout=timeout_ms)
                worker.join()
        finally:
            worker.stop()

    def user_key(self, username: str) -> str:
        """Create a user through the API and return a key for it."""
        admin = self.client()
        user = admin.post("/api/users", json={"username": username, "email": f"{username}@example.org"})
        assert user.status_code == 200, user.json
        return admin.post(f"/api/users/{user.json['id']}/api_key").json


class ApiClient:
    """A thin wrapper adding the API key to every request."""

    def __init__(self, client: FlaskClient, key: str | None):
        self.client = client
        self.key = key

    def _headers(self, headers: dict | None) -> dict:
        out = dict(headers or {})
        if self.key:
            out.setdefault("x-api-key", self.key)
        return out

    def get(self, url, **kw):
        return self.client.get(url, headers=self._headers(kw.pop("headers", None)), **kw)

    def post(self, url, **kw):
        return self.client.post(url, headers=self._headers(kw.pop("headers", None)), **kw)

    def put(self, url, **kw):
        return self.client.put(url, headers=self._headers(kw.pop("headers", None)), **kw)

    def delete(self, url, **kw):
        return self.client.delete(url, headers=self._headers(kw.pop("headers", None)), **kw)


def make_settings(data_dir: Path, **overrides) -> Settings:
    """Settings for a test: its own data dir and SQLite file; messages through the outbox."""
    values = dict(
        data_dir=data_dir,
        broker_url="amqp://stub.invalid/",
        bootstrap_api_key=ADMIN_KEY,
        id_secret="test-secret",
        log_format="console",
        max_json_size=1024 * 1024,
        max_request_size=8 * 1024 * 1024,
    )
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def stack(data_dir: Path) -> Iterator[Stack]:
    """The whole app on a stub broker."""
    settings = make_settings(data_dir)
    upgrade(settings)
    broker = StubBroker(fail_fast_default=False)
    broker.emit_after("process_boot")
    runtime = build_runtime(settings, broker=broker)
    services = build_services(settings, publisher=BrokerPublisher(broker))
    app = create_app(settings, services)
    yield Stack(settings, app, services, runtime, broker)
    broker.close()
    services.engine.dispose()
    runtime.services.engine.dispose()
    dramatiq.set_broker(StubBroker())
