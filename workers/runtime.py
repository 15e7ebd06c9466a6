"""Building a worker process: settings → services → broker → actors, in that order."""

from __future__ import annotations

import os
from dataclasses import dataclass

import dramatiq
from dramatiq.middleware import CurrentMessage, Retries
from sqlalchemy.orm import Session

from dramatiq.brokers.rabbitmq import RabbitmqBroker

from app.logs import configure_logging
from app.messaging import Enqueuer, RabbitPublisher
from app.objectstore import ObjectStore
from app.services.registry import Services, build_services
from app.settings import Settings, load_settings
from workers.broker import build_broker
from workers.middleware import TaskOutcomes
from workers.tasks import Container, bind_tasks

from workers.run import METRICS_ENV, TIME_LIMIT_ENV


class BrokerPublisher:
    """Publishes outbox messages one by one through a Dramatiq broker (tests' StubBroker)."""

    def __init__(self, broker: dramatiq.Broker):
        self.broker = broker

    def publish_many(self, items: list[tuple[dict, int]]) -> None:
        """Enqueue ready-made messages."""
        for message, delay_ms in items:
            self.broker.enqueue(dramatiq.Message(**message), delay=delay_ms or None)


@dataclass
class WorkerRuntime:
    """Everything a worker process holds."""

    settings: Settings
    services: Services
    broker: dramatiq.Broker
    container: Container


def build_container(services: Services) -> Container:
    """The services a task may ask for by type."""
    return Container(
        {
            Settings: lambda scope: services.settings,
            Services: lambda scope: services,
            ObjectStore: lambda scope: services.object_store,
            Enqueuer: lambda scope: services.enqueuer,
        },
        services.session_factory,
    )


def build_runtime(settings: Settings | None = None, *, broker: dramatiq.Broker | None = None) -> WorkerRuntime:
    """Settings, services, the broker with Nebula's middleware, and every task bound to it."""
    settings = settings or load_settings()
    configure_logging(settings, "worker")
    # No pre-ping: it costs a round trip per message; a connection lost to a database
    # restart fails that message, and Dramatiq retries it on a fresh connection.
    services = build_services(settings, pool_pre_ping=False)
    if broker is None:
        broker = build_broker(settings, engine=services.engine)
    if not any(isinstance(m, CurrentMessage) for m in broker.middleware):
        broker.add_middleware(CurrentMessage())
    # TaskOutcomes must run after Retries in the "after" hooks, which run in reverse order.
    has_retries = any(isinstance(m, Retries) for m in broker.middleware)
    broker.add_middleware(TaskOutcomes(services.session_factory), before=Retries if has_retries else None)
    if not settings.uses_embedded_broker:
        # Declarations through the worker's own broker; batches in AMQP transactions.
        services.publisher = RabbitPublisher(settings, broker=broker) if isinstance(broker, RabbitmqBroker) \
            else BrokerPublisher(broker)
        services.enqueuer.publisher = services.publisher
    if os.environ.get(METRICS_ENV) == "1":
        from dramatiq.middleware.prometheus import Prometheus

        broker.add_middleware(Prometheus())
    time_limit = os.environ.get(TIME_LIMIT_ENV)
    if time_limit:
        from dramatiq.middleware import TimeLimit

        for m in broker.middleware:
            if isinstance(m, TimeLimit):
                m.time_limit = int(time_limit) * 1000
    dramatiq.set_broker(broker)
    import workers.actors  # noqa: F401 - registers every @task

    container = build_container(services)
    bind_tasks(broker, container, settings.queue_name)
    return WorkerRuntime(settings, services, broker, container)
