"""A real Dramatiq worker process for the broker fault tests (killed with SIGKILL there).

Usage: ``python tests/workers/broker_worker.py``, with the broker chosen by ``NEBULA_*``
as in production, and ``NEBULA_TEST_LEASE_SECONDS`` for a short SQL broker lease. Its one
actor, ``mark_and_sleep(marker_dir)`` on queue ``kill``, appends its pid to
``marker_dir/runs``; the first run then sleeps (to be killed), any later run writes
``marker_dir/done``. SIGTERM stops the worker gracefully.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import dramatiq
from dramatiq import Worker

from app.db import make_engine
from app.settings import Settings, load_settings
from workers.broker import build_broker, default_middleware
from workers.brokers.sql import SQLBroker


def make_broker(settings: Settings) -> dramatiq.Broker:
    """The production broker, with the test's short lease on the SQL broker."""
    lease = os.environ.get("NEBULA_TEST_LEASE_SECONDS")
    if settings.uses_embedded_broker and lease:
        engine = make_engine(settings)
        return SQLBroker(engine, default_middleware(), lease_seconds=float(lease), owns_engine=True)
    return build_broker(settings)


def mark_and_sleep(marker_dir: str) -> None:
    """Record this run; sleep on the first one, finish on any later one."""
    runs = Path(marker_dir) / "runs"
    with runs.open("a") as handle:
        handle.write(f"{os.getpid()}\n")
    if len(runs.read_text().split()) == 1:
        time.sleep(120)
    (Path(marker_dir) / "done").write_text(str(os.getpid()))


def main() -> None:
    """Run one worker until SIGTERM."""
    settings = load_settings()
    broker = make_broker(settings)
    dramatiq.actor(mark_and_sleep, broker=broker, queue_name=settings.queue_name("kill"), max_retries=0)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    worker = Worker(broker, worker_threads=1, worker_timeout=100)
    worker.start()
    print("worker ready", flush=True)
    stop.wait()
    worker.stop(timeout=5000)
    broker.close()


if __name__ == "__main__":
    main()
