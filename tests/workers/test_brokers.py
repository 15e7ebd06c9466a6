"""One behaviour suite for every broker Nebula runs on, with real Dramatiq workers.

Each test runs against the SQL broker on SQLite, the SQL broker on PostgreSQL and
RabbitMQ (with publisher confirms), so the embedded default is held to the same
contract as production. Real-service cases skip on a laptop without the service and
fail in CI (see tests/conftest.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import dramatiq
import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from dramatiq import Worker
from dramatiq.brokers.rabbitmq import RabbitmqBroker

from app.db import make_engine
from app.settings import Settings
from workers.broker import (
    build_broker,
    default_middleware,
    list_dead_letters,
    purge_dead_letters,
    queue_stats,
    requeue_dead_letters,
)
from workers.brokers.sql import SQLBroker, ensure_queue_table
from workers.cli import cli

ROOT = Path(__file__).resolve().parents[2]
WORKER_SCRIPT = Path(__file__).with_name("broker_worker.py")
LEASE_SECONDS = 2.0  # short, so a killed worker's message comes back within the test

BROKERS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
    pytest.param("rabbitmq", id="rabbitmq", marks=pytest.mark.rabbitmq),
]


@dataclasses.dataclass
class BrokerCase:
    """A broker under test, with the settings a separate process needs to reach it."""

    kind: str
    settings: Settings
    broker: dramatiq.Broker

    def queue(self, name: str) -> str:
        """The broker name of a queue of this test."""
        return self.settings.queue_name(name)

    def env(self) -> dict[str, str]:
        """Environment for a subprocess or CLI using the same broker."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("NEBULA_")}
        env.update(
            NEBULA_BROKER_URL=self.settings.broker_url,
            NEBULA_QUEUE_PREFIX=self.settings.queue_prefix,
            NEBULA_DATA_DIR=str(self.settings.data_dir),
            NEBULA_TEST_LEASE_SECONDS=str(LEASE_SECONDS),
        )
        if self.settings.database_url:
            env["NEBULA_DATABASE_URL"] = self.settings.database_url
        return env


@pytest.fixture(params=BROKERS)
def case(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BrokerCase]:
    """Each broker in turn, empty, closed after the test."""
    kind = request.param
    common = dict(data_dir=tmp_path, queue_prefix=request.getfixturevalue("queue_prefix"))
    if kind == "rabbitmq":
        settings = Settings(broker_url=request.getfixturevalue("amqp_vhost_url"), **common)
        broker = build_broker(settings)
    else:
        url = f"sqlite:///{tmp_path / 'broker.sqlite'}" if kind == "sqlite" else request.getfixturevalue("pg_url")
        settings = Settings(broker_url="sql", database_url=url, **common)
        engine = make_engine(settings, pool_pre_ping=False)  # as build_broker makes it
        ensure_queue_table(engine)
        broker = SQLBroker(engine, default_middleware(), lease_seconds=LEASE_SECONDS, owns_engine=True)
    yield BrokerCase(kind, settings, broker)
    broker.close()


@contextlib.contextmanager
def running_worker(broker: dramatiq.Broker, threads: int = 2) -> Iterator[Worker]:
    """A real Dramatiq worker on the broker, stopped at the end."""
    worker = Worker(broker, worker_threads=threads, worker_timeout=100)
    worker.start()
    try:
        yield worker
    finally:
        worker.stop(timeout=10_000)


def wait_for(predicate: Callable[[], object], timeout: float = 15.0, what: str = "condition") -> None:
    """Poll until predicate() is true, failing after timeout seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def test_enqueue_and_consume(case: BrokerCase) -> None:
    seen: list[int] = []

    @dramatiq.actor(broker=case.broker, queue_name=case.queue("default"))
    def record(n: int) -> None:
        seen.append(n)

    with running_worker(case.broker):
        for n in range(50):
            record.send(n)
        wait_for(lambda: len(seen) >= 50, what="50 messages")
        time.sleep(0.2)  # nothing arrives twice
    assert sorted(seen) == list(range(50))


def test_delayed_message_runs_after_its_delay(case: BrokerCase) -> None:
    ran_at: list[float] = []

    @dramatiq.actor(broker=case.broker, queue_name=case.queue("default"))
    def stamp() -> None:
        ran_at.append(time.monotonic())

    with running_worker(case.broker):
        sent = time.monotonic()
        stamp.send_with_options(delay=1500)
        time.sleep(1.0)
        assert ran_at == [], "a delayed message ran early"
        wait_for(lambda: ran_at, timeout=10, what="the delayed message")
    assert ran_at[0] - sent >= 1.45


def test_failing_actor_is_retried_with_backoff(case: BrokerCase) -> None:
    attempts: list[float] = []

    @dramatiq.actor(broker=case.broker, queue_name=case.queue("default"), min_backoff=100, max_backoff=300)
    def flaky() -> None:
        attempts.append(time.monotonic())
        if len(attempts) < 3:
            raise RuntimeError("not yet")

    with running_worker(case.broker):
        flaky.send()
        wait_for(lambda: len(attempts) >= 3, what="three attempts")
        time.sleep(0.5)  # and no fourth
    assert len(attempts) == 3
    gaps = [later - earlier for earlier, later in zip(attempts, attempts[1:])]
    assert all(gap >= 0.09 for gap in gaps), gaps


def test_failure_without_retries_is_dead_lettered(case: BrokerCase) -> None:
    calls: list[int] = []
    queue = case.queue("default")

    @dramatiq.actor(broker=case.broker, queue_name=queue, max_retries=0)
    def doomed() -> None:
        calls.append(1)
        raise ValueError("boom")

    with running_worker(case.broker):
        message = doomed.send()
        wait_for(lambda: list_dead_letters(case.broker, queue), what="a dead letter")
        [letter] = list_dead_letters(case.broker, queue)
        assert (letter.message_id, letter.actor_name) == (message.message_id, "doomed")
        if case.kind != "rabbitmq":  # RabbitMQ keeps no reason with a rejected message
            assert letter.reason == "ValueError: boom"

        assert requeue_dead_letters(case.broker, queue) == 1
        wait_for(lambda: len(calls) == 2, what="the requeued message to run")
        wait_for(lambda: list_dead_letters(case.broker, queue), what="the dead letter again")
    assert purge_dead_letters(case.broker, queue) == 1
    assert list_dead_letters(case.broker, queue) == []


@pytest.mark.slow
def test_message_of_a_killed_worker_runs_again(case: BrokerCase, tmp_path: Path) -> None:
    markers = tmp_path / "markers"
    markers.mkdir()
    runs = markers / "runs"
    message = dramatiq.Message(
        queue_name=case.queue("kill"), actor_name="mark_and_sleep", args=(str(markers),), kwargs={}, options={}
    )
    processes: list[subprocess.Popen[bytes]] = []

    def start_worker() -> subprocess.Popen[bytes]:
        log = (tmp_path / f"worker{len(processes)}.log").open("wb")
        process = subprocess.Popen(
            [sys.executable, str(WORKER_SCRIPT)], cwd=ROOT, env=case.env(), stdout=log, stderr=subprocess.STDOUT
        )
        processes.append(process)
        return process

    try:
        first = start_worker()
        case.broker.enqueue(message)
        wait_for(lambda: runs.exists() and runs.read_text().split(), timeout=30, what="the first run")
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
        second = start_worker()
        wait_for(lambda: (markers / "done").exists(), timeout=30, what="the message to run again")
        assert runs.read_text().split() == [str(first.pid), str(second.pid)]
    finally:
        for process in processes:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()


def _restart_rabbitmq() -> None:
    try:
        subprocess.run(["rabbitmqctl", "-q", "stop_app"], check=True, capture_output=True, timeout=60)
    finally:
        subprocess.run(["rabbitmqctl", "-q", "start_app"], check=True, capture_output=True, timeout=60)
        subprocess.run(["rabbitmqctl", "-q", "await_startup"], check=True, capture_output=True, timeout=60)


def _terminate_postgres_connections(url: str) -> int:
    """Kill every other session on the test database, as a server restart would."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return len(
                conn.execute(
                    sa.text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                    )
                ).all()
            )
    finally:
        engine.dispose()


@pytest.mark.slow
def test_clients_reconnect_after_a_broker_restart(case: BrokerCase) -> None:
    if case.kind == "sqlite":
        pytest.skip("SQLite is a file: there is no server to restart")
    seen: list[int] = []

    @dramatiq.actor(broker=case.broker, queue_name=case.queue("default"))
    def record(n: int) -> None:
        seen.append(n)

    with running_worker(case.broker):
        record.send(1)
        wait_for(lambda: seen == [1], what="the first message")
        if case.kind == "rabbitmq":
            _restart_rabbitmq()
        else:
            assert _terminate_postgres_connections(case.settings.database_url or "") > 0
        record.send(2)  # the same broker object, on a new connection
        wait_for(lambda: seen == [1, 2], timeout=30, what="the message sent after the restart")


def test_queue_stats_and_cli(case: BrokerCase, monkeypatch: pytest.MonkeyPatch) -> None:
    @dramatiq.actor(broker=case.broker, queue_name=case.queue("jobs"))
    def job() -> None:
        pass

    job.send()
    job.send()
    job.send_with_options(delay=60_000)

    def jobs_stat() -> dict[str, object]:
        return next(s.asdict() for s in queue_stats(case.settings, broker=case.broker) if s.name == case.queue("jobs"))

    wait_for(lambda: (jobs_stat()["ready"], jobs_stat()["delayed"]) == (2, 1), what="2 ready, 1 delayed")
    for name, value in case.env().items():
        monkeypatch.setenv(name, value)
    result = CliRunner().invoke(cli, ["queues", "--json"])
    assert result.exit_code == 0, result.output
    stats = {stat["name"]: stat for stat in json.loads(result.output)}
    assert {case.queue(q) for q in ("scheduling", "jobs", "default", "exports")} <= set(stats)
    assert (stats[case.queue("jobs")]["ready"], stats[case.queue("jobs")]["dead"]) == (2, 0)
    result = CliRunner().invoke(cli, ["dead-letters", "list", "jobs"])
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("kind", [BROKERS[0], BROKERS[1]])
def test_sql_claims_are_exclusive_between_processes(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """Two brokers on one database (as two worker processes) never deliver one message twice."""
    url = f"sqlite:///{tmp_path / 'broker.sqlite'}" if kind == "sqlite" else request.getfixturevalue("pg_url")
    engine = make_engine(url)
    ensure_queue_table(engine)
    brokers = [SQLBroker(engine, default_middleware(), worker_id=f"w{i}") for i in range(2)]
    seen: list[int] = []
    lock = threading.Lock()

    def record(n: int) -> None:
        with lock:
            seen.append(n)

    for broker in brokers:
        dramatiq.actor(record, broker=broker, queue_name="q")
    for n in range(300):
        brokers[0].enqueue(brokers[0].get_actor("record").message(n))
    workers = [Worker(broker, worker_threads=4, worker_timeout=100) for broker in brokers]
    for worker in workers:
        worker.start()
    try:
        brokers[0].join("q", timeout=30_000)
    finally:
        for worker in workers:
            worker.stop()
        for broker in brokers:
            broker.close()
        engine.dispose()
    assert sorted(seen) == list(range(300))


def test_sql_expired_lease_comes_back_and_dead_letters_at_the_limit(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'broker.sqlite'}")
    ensure_queue_table(engine)
    survivor = SQLBroker(engine, [], lease_seconds=0.3, max_deliveries=2)
    survivor.enqueue(dramatiq.Message(queue_name="q", actor_name="a", args=(), kwargs={}, options={}))

    def claim_and_die() -> int:
        dying = SQLBroker(engine, [], lease_seconds=0.3, worker_id="dying")
        message = next(dying.consume("q", prefetch=1, timeout=1000))
        dying.close()  # stops renewing its lease, as a killed process would
        assert message is not None
        return message.attempts

    try:
        assert claim_and_die() == 1
        time.sleep(0.4)
        assert survivor.recover_expired_leases() == 1
        assert claim_and_die() == 2
        time.sleep(0.4)
        assert survivor.recover_expired_leases() == 1  # the second expiry is the last
        assert [letter.actor_name for letter in list_dead_letters(survivor, "q")] == ["a"]
    finally:
        survivor.close()
        engine.dispose()


@pytest.mark.parametrize("kind", [BROKERS[0], BROKERS[1]])
def test_sql_graceful_stop_gives_back_prefetched_messages(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'broker.sqlite'}" if kind == "sqlite" else request.getfixturevalue("pg_url")
    engine = make_engine(url)
    ensure_queue_table(engine)
    broker = SQLBroker(engine, default_middleware())
    ran: list[int] = []

    @dramatiq.actor(broker=broker, queue_name="q")
    def slow(n: int) -> None:
        ran.append(n)
        time.sleep(0.3)

    for n in range(10):
        slow.send(n)
    with running_worker(broker, threads=1):  # prefetches 2 while one runs
        wait_for(lambda: ran, what="the first message")
    with engine.begin() as conn:
        rows = conn.execute(sa.text("SELECT state, attempts, count(*) FROM queue_message GROUP BY state, attempts"))
        left = [tuple(row) for row in rows]
    broker.close()
    engine.dispose()
    # What was done is gone; the rest is ready again, and its aborted delivery not counted.
    assert left == [("ready", 0, 10 - len(ran))]


def test_sql_undecodable_message_is_dead_lettered(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'broker.sqlite'}")
    ensure_queue_table(engine)
    broker = SQLBroker(engine, [])
    with engine.begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO queue_message (queue_name, message_id, state, priority, available_at, message, "
            "attempts, enqueue_time) VALUES ('q', 'm1', 'ready', 0, '2000-01-01 00:00:00', 'not json', 0, "
            "'2000-01-01 00:00:00')"
        ))
    consumer = broker.consume("q", prefetch=1, timeout=200)
    assert next(consumer) is None
    consumer.close()
    [letter] = list_dead_letters(broker, "q")
    assert letter.reason.startswith("undecodable message")
    broker.close()
    engine.dispose()


def test_build_broker_follows_the_settings(tmp_path: Path) -> None:
    embedded = build_broker(Settings(data_dir=tmp_path))
    rabbit = build_broker(Settings(data_dir=tmp_path, broker_url="amqp://guest:guest@127.0.0.1:5672/%2F"))
    try:
        assert isinstance(embedded, SQLBroker) and isinstance(rabbit, RabbitmqBroker)
        assert rabbit.confirm_delivery
        assert [type(m).__name__ for m in embedded.middleware] == [
            "AgeLimit", "TimeLimit", "ShutdownNotifications", "Callbacks", "Pipelines", "Retries"
        ]
    finally:
        embedded.close()
        rabbit.close()
