"""The RabbitMQ publisher: batches in one AMQP transaction, queues declared as workers declare them."""

from __future__ import annotations

import threading
import time

import dramatiq
import pytest
from dramatiq.brokers.rabbitmq import RabbitmqBroker

from app.messaging import RabbitPublisher
from app.settings import Settings

pytestmark = pytest.mark.rabbitmq


def test_batch_with_delays_reaches_a_dramatiq_worker(amqp_vhost_url, queue_prefix, data_dir):
    settings = Settings(data_dir=data_dir, broker_url=amqp_vhost_url, queue_prefix=queue_prefix)
    queue = settings.queue_name("default")
    worker_broker = RabbitmqBroker(url=amqp_vhost_url, confirm_delivery=True)
    seen: list[int] = []
    lock = threading.Lock()

    @dramatiq.actor(broker=worker_broker, queue_name=queue, actor_name="record")
    def record(value: int) -> None:
        with lock:
            seen.append(value)

    publisher = RabbitPublisher(settings)  # its own broker object, as in the web process
    messages = [(dramatiq.Message(queue_name=queue, actor_name="record", args=(i,), kwargs={}, options={}).asdict(),
                 1500 if i == 0 else 0) for i in range(600)]
    started = time.monotonic()
    publisher.publish_many(messages)
    publish_time = time.monotonic() - started
    worker = dramatiq.Worker(worker_broker, worker_threads=4, worker_timeout=100)
    worker.start()
    try:
        deadline = time.monotonic() + 30
        while len(seen) < 600 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sorted(seen) == list(range(600)), f"{len(seen)} of 600"
        assert seen[-1] == 0 or 0 in seen[-50:], "the delayed message came late"
    finally:
        worker.stop()
        channel = worker_broker.channel
        for name in (queue, queue + ".DQ", queue + ".XQ"):
            channel.queue_delete(name)
        worker_broker.close()
    assert publish_time < 5, f"600 messages took {publish_time:.1f} s to publish"


def test_publishing_to_a_stopped_broker_raises_and_recovers(data_dir):
    settings = Settings(data_dir=data_dir, broker_url="amqp://guest:guest@127.0.0.1:1/%2F")
    publisher = RabbitPublisher(settings)
    message = dramatiq.Message(queue_name="x", actor_name="y", args=(), kwargs={}, options={}).asdict()
    with pytest.raises(Exception):
        publisher.publish_many([(message, 0)])
