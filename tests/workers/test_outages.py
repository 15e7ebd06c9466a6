"""Outages with real processes: a RabbitMQ stop and a PostgreSQL restart lose nothing.

A worker pool and beat run as real processes on PostgreSQL + RabbitMQ; the web app runs
in-process. These tests stop shared services for a few seconds, so they are `slow` and
restart what they stop in a `finally`.
"""

from __future__ import annotations

import glob
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from app.api import create_app
from app.migrate import upgrade
from app.models import Dataset, Job, OutboxMessage
from app.settings import Settings

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.rabbitmq]
KEY = "outage-key"


def _env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEBULA_")}
    env.update(NEBULA_DATA_DIR=str(settings.data_dir), NEBULA_DATABASE_URL=settings.database_url,
               NEBULA_BROKER_URL=settings.broker_url, NEBULA_QUEUE_PREFIX=settings.queue_prefix,
               NEBULA_LOG_FORMAT="console")
    return env


@pytest.fixture
def system(data_dir: Path, pg_url: str, amqp_vhost_url: str, queue_prefix: str) -> Iterator[tuple]:
    """Worker pool + beat as processes; the web app in-process."""
    settings = Settings(data_dir=data_dir, database_url=pg_url, broker_url=amqp_vhost_url,
                        queue_prefix=queue_prefix, bootstrap_api_key=KEY, log_format="console")
    upgrade(settings)
    env = _env(settings)
    logs = data_dir / "logs"
    logs.mkdir()
    procs = [
        subprocess.Popen([sys.executable, "-m", "workers.run", "worker", "--processes", "1", "--threads", "4"],
                         env=env, stdout=(logs / "worker.log").open("w"), stderr=subprocess.STDOUT,
                         start_new_session=True),
        subprocess.Popen([sys.executable, "-m", "workers.beat"], env=env,
                         stdout=(logs / "beat.log").open("w"), stderr=subprocess.STDOUT, start_new_session=True),
    ]
    app = create_app(settings)
    try:
        yield settings, app
    finally:
        for proc in procs:
            os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        app.extensions["nebula"].engine.dispose()


def _alice(app):
    client = app.test_client()
    admin = {"x-api-key": KEY}
    user = client.post("/api/users", json={"username": "alice", "email": "alice@example.org"}, headers=admin).json
    key = client.post(f"/api/users/{user['id']}/api_key", headers=admin).json
    headers = {"x-api-key": key}
    history = client.post("/api/histories", json={"name": "outage"}, headers=headers).json["id"]
    return client, headers, history


def _paste(client, headers, history, text: str) -> str:
    response = client.post("/api/tools", headers=headers, json={
        "history_id": history, "tool_id": "upload1", "inputs": {"files_0|url_paste": text}})
    assert response.status_code == 200, response.json
    return response.json["outputs"][0]["id"]


def _wait_state(app, dataset_id: str, timeout: float) -> str:
    engine = app.extensions["nebula"].engine
    real_id = app.extensions["nebula"].ids.decode(dataset_id)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with engine.connect() as conn:
            state = conn.scalar(sa.select(Dataset.state).where(Dataset.id == real_id))
        if state in ("ok", "error"):
            return state
        time.sleep(0.25)
    return state


def _counts(app) -> tuple[int, int, int]:
    with app.extensions["nebula"].engine.connect() as conn:
        return tuple(conn.scalar(sa.select(sa.func.count()).select_from(t)) for t in (Job, Dataset, OutboxMessage))


def test_upload_accepted_while_rabbitmq_is_down_runs_when_it_is_back(system):
    settings, app = system
    client, headers, history = _alice(app)
    assert _wait_state(app, _paste(client, headers, history, "before"), 60) == "ok"
    subprocess.run(["rabbitmqctl", "-q", "stop_app"], check=True, capture_output=True, timeout=120)
    try:
        started = time.monotonic()
        dataset = _paste(client, headers, history, "during the outage")
        assert time.monotonic() - started < 5, "the request must not wait for the broker"
        assert _counts(app)[2] == 1, "the message waits in the outbox"
    finally:
        subprocess.run(["rabbitmqctl", "-q", "start_app"], check=True, capture_output=True, timeout=120)
    assert _wait_state(app, dataset, 120) == "ok"
    assert _counts(app) == (2, 2, 0), "exactly one job per upload, nothing left in the outbox"


def test_postgres_restart_loses_nothing(system):
    settings, app = system
    client, headers, history = _alice(app)
    assert _wait_state(app, _paste(client, headers, history, "before"), 60) == "ok"
    cluster = os.path.basename(glob.glob("/etc/postgresql/*")[0]) if glob.glob("/etc/postgresql/*") else None
    if cluster is None:
        pytest.skip("no local PostgreSQL cluster to restart")
    subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", cluster, "main", "restart"],
                   check=True, capture_output=True, timeout=120)
    datasets = [_paste(client, headers, history, f"after {i}") for i in range(3)]
    assert [_wait_state(app, d, 120) for d in datasets] == ["ok"] * 3
    assert _counts(app)[:2] == (4, 4)
