"""Task overhead: no-op tasks through @task (untracked, tracked) against a bare Dramatiq actor.

    .venv/bin/python bench/task_overhead.py [--messages 5000] [--rounds 5] [--backends rabbitmq-pg,sql-sqlite]

For each backend it starts one worker pool (2 processes x 8 threads, the default layout)
running Nebula's runtime plus a bare ``@dramatiq.actor``. Each measurement freezes the
pool (SIGSTOP), enqueues N messages of one kind, thaws it (SIGCONT) and times until the
queue is drained, so the producer never limits the figure. Kinds are interleaved round by
round; medians and the untracked/bare ratio are printed. Targets: untracked >= 0.9x bare,
tracked >= 1,000/s on PostgreSQL (the reference, a bare actor doing one UPDATE of a task
row, is measured too), embedded broker >= 1,000 msgs/s on SQLite.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import dramatiq
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from app.db import make_engine, make_session_factory  # noqa: E402
from app.messaging import Enqueuer  # noqa: E402
from app.migrate import upgrade  # noqa: E402
from app.models import QueueMessage, Task  # noqa: E402
from app.schemas.tasks import Noop  # noqa: E402
from app.settings import Settings  # noqa: E402

from common import cleanup, environment, settings_for  # noqa: E402

KINDS = ("bare", "untracked", "tracked", "bare_update")


def env_for(settings: Settings) -> dict[str, str]:
    """Environment passing the settings to the worker processes (which import this bench's modules)."""
    return {**environment(settings), "PYTHONPATH": f"{ROOT}:{ROOT / 'bench'}"}


class Producer:
    """Enqueues N messages of one kind as fast as the backend takes them (not timed)."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.engine = make_engine(settings)
        self.enqueuer = Enqueuer(settings, self.engine)
        self.factory = make_session_factory(self.engine)
        self.enqueuer.listen(self.factory)
        self.queue = settings.queue_name("default")

    def enqueue(self, kind: str, n: int, gate: float | None = None) -> None:
        """Put n messages of a kind on the default queue (held until ``gate``, a time.time())."""
        from task_overhead_worker import TrackedNoop

        for start in range(0, n, 1000):
            delay = max(0, int((gate - time.time()) * 1000)) if gate else 0
            with self.factory.begin() as session:
                for i in range(start, min(n, start + 1000)):
                    if kind == "bare":
                        message = dramatiq.Message(queue_name=self.queue, actor_name="bare_noop",
                                                   args=(i,), kwargs={}, options={}).asdict()
                        self.enqueuer.send_message(session, message, delay_ms=delay)
                    elif kind == "bare_update":
                        task_id = f"bare-{uuid.uuid4().hex}"
                        session.add(Task(id=task_id, action="bare_update"))
                        message = dramatiq.Message(queue_name=self.queue, actor_name="bare_update",
                                                   args=(task_id,), kwargs={}, options={}).asdict()
                        self.enqueuer.send_message(session, message, delay_ms=delay)
                    elif kind == "untracked":
                        self.enqueuer.send(session, Noop(value=i), delay_ms=delay)
                    else:
                        self.enqueuer.send(session, TrackedNoop(value=i), track=True, delay_ms=delay)

    def pending(self) -> int:
        """Messages not yet processed."""
        if self.settings.uses_embedded_broker:
            with self.engine.connect() as conn:
                return conn.scalar(sa.select(sa.func.count()).select_from(QueueMessage)
                                   .where(QueueMessage.queue_name == self.queue, QueueMessage.state != "dead"))
        import pika

        connection = pika.BlockingConnection(pika.URLParameters(self.settings.broker_url))
        try:
            channel = connection.channel()
            ok = channel.queue_declare(self.queue, passive=True)
            return ok.method.message_count
        finally:
            connection.close()

    def tracked_done(self) -> int:
        """Tracked tasks in state SUCCESS."""
        with self.engine.connect() as conn:
            return conn.scalar(sa.select(sa.func.count()).select_from(Task).where(Task.state == "SUCCESS"))


def worker_pids(master: subprocess.Popen) -> list[int]:
    """The master and its children."""
    out = subprocess.run(["pgrep", "-P", str(master.pid)], capture_output=True, text=True).stdout.split()
    return [master.pid, *map(int, out)]


def measure(producer: Producer, master: subprocess.Popen, kind: str, n: int) -> float:
    """Messages per second for one batch of a kind."""
    if producer.settings.uses_embedded_broker:
        # The embedded broker keeps delays in its table: hold every message until one
        # instant, then time the drain. (Freezing workers could freeze one holding
        # SQLite's write lock.)
        gate = time.time() + 2.0 + n / 1000
        producer.enqueue(kind, n, gate)
        if time.time() > gate:
            raise RuntimeError("enqueue took longer than the gate; raise it")
        time.sleep(max(0.0, gate - time.time()))
        start = time.perf_counter()
        return _drain(producer, kind, n, start)
    pids = worker_pids(master)
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        producer.enqueue(kind, n)
        if producer.settings.uses_embedded_broker is False:
            time.sleep(0.2)  # let publisher confirms settle
    finally:
        start = time.perf_counter()
        for pid in pids:
            os.kill(pid, signal.SIGCONT)
    return _drain(producer, kind, n, start)


def _drain(producer: Producer, kind: str, n: int, start: float) -> float:
    deadline = start + 600
    while producer.pending() > 0:
        if time.perf_counter() > deadline:
            raise TimeoutError(f"{kind}: queue not drained")
        time.sleep(0.01)
    elapsed = time.perf_counter() - start
    return n / elapsed


def run_backend(backend: str, n: int, rounds: int) -> dict[str, list[float]]:
    """All rounds for one backend."""
    prefix = f"bench{uuid.uuid4().hex[:6]}."
    db_name = f"nebula_bench_{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory() as tmp:
        settings = settings_for(backend, Path(tmp), prefix, db_name)
        upgrade(settings)
        producer = Producer(settings)
        master = subprocess.Popen(
            [sys.executable, "-m", "dramatiq", "task_overhead_worker", "--processes", "2", "--threads", "8",
             "--skip-logging", "--queues", settings.queue_name("default")],
            env=env_for(settings), cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            time.sleep(4)  # let the workers boot and declare their queues
            results: dict[str, list[float]] = {k: [] for k in KINDS}
            measure(producer, master, "bare", min(n, 500))  # warm-up
            for r in range(rounds):
                for kind in KINDS:
                    rate = measure(producer, master, kind, n)
                    results[kind].append(rate)
                    print(f"  {backend} round {r + 1} {kind:9} {rate:8.0f} msgs/s", flush=True)
            return results
        finally:
            master.send_signal(signal.SIGTERM)
            try:
                master.wait(30)
            except subprocess.TimeoutExpired:
                master.kill()
            producer.engine.dispose()
            cleanup(settings, db_name, queues=("default",))


def main() -> None:
    """Run and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--backends", default="rabbitmq-pg,sql-sqlite")
    args = parser.parse_args()
    summary = []
    for backend in args.backends.split(","):
        print(f"{backend}: {args.rounds} interleaved rounds of {args.messages} messages per kind", flush=True)
        results = run_backend(backend, args.messages, args.rounds)
        med = {k: statistics.median(v) for k, v in results.items()}
        summary.append((backend, med))
    print("\nmedians (msgs/s)        bare  untracked    tracked  bare+UPDATE  untracked/bare  tracked/(bare+UPDATE)")
    for backend, med in summary:
        print(f"{backend:18} {med['bare']:10.0f} {med['untracked']:10.0f} {med['tracked']:10.0f} {med['bare_update']:12.0f}"
              f"  {med['untracked'] / med['bare']:14.2f}  {med['tracked'] / med['bare_update']:20.2f}")
    print("targets: untracked/bare >= 0.9; tracked >= 1000/s on PostgreSQL; embedded broker >= 1000 msgs/s on SQLite")


if __name__ == "__main__":
    main()
