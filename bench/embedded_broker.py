"""Throughput of the embedded SQL broker: enqueue N messages, then process them with a real worker.

    python bench/embedded_broker.py                       # SQLite in a temp dir
    python bench/embedded_broker.py --url postgresql+psycopg://postgres@127.0.0.1/nebula_bench

Each round starts from an empty table, sends N no-op messages one by one (one transaction
each, as ``actor.send`` does), then starts a Dramatiq worker and waits until the queue is
empty. Prints enqueue, processing and end-to-end rates per round and their medians.
Target (DESIGN.md): ≥ 1,000 messages/s on SQLite.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import dramatiq
from dramatiq import Worker

from app.db import ensure_database, make_engine
from workers.broker import default_middleware
from workers.brokers.sql import SQLBroker, ensure_queue_table


def one_round(url: str, count: int, threads: int) -> tuple[float, float, float]:
    """(enqueue/s, processed/s, end-to-end/s) of one round on a fresh broker."""
    engine = make_engine(url, pool_pre_ping=False)
    ensure_queue_table(engine)
    broker = SQLBroker(engine, default_middleware(), owns_engine=True)
    broker.flush("bench")

    @dramatiq.actor(broker=broker, queue_name="bench")
    def noop(n: int) -> None:
        """Do nothing: measure the broker, not the work."""

    started = time.perf_counter()
    for n in range(count):
        noop.send(n)
    enqueued = time.perf_counter()
    worker = Worker(broker, worker_threads=threads, worker_timeout=100)
    worker.start()
    broker.join("bench", timeout=600_000)
    processed = time.perf_counter()
    worker.stop()
    broker.close()
    return count / (enqueued - started), count / (processed - enqueued), count / (processed - started)


def main() -> None:
    """Run the rounds and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="database URL (default: SQLite in a temporary directory)")
    parser.add_argument("-n", "--count", type=int, default=5000, help="messages per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=8, help="worker threads")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = args.url or f"sqlite:///{Path(tmp) / 'bench.sqlite'}"
        ensure_database(url)
        results = []
        for number in range(1, args.rounds + 1):
            result = one_round(url, args.count, args.threads)
            results.append(result)
            print(f"round {number}: enqueue {result[0]:,.0f}/s  process {result[1]:,.0f}/s  end-to-end {result[2]:,.0f}/s")
    medians = [statistics.median(column) for column in zip(*results)]
    backend = url.split(":", 1)[0]
    print(
        f"{backend}, {args.count} messages, {args.threads} threads, median of {args.rounds}: "
        f"enqueue {medians[0]:,.0f}/s  process {medians[1]:,.0f}/s  end-to-end {medians[2]:,.0f}/s"
    )


if __name__ == "__main__":
    main()
