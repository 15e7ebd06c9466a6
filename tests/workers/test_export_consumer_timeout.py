"""A long export under RabbitMQ's consumer_timeout: redelivered without the fix, run once with it.

RabbitMQ closes a channel holding a delivery unacknowledged longer than consumer_timeout
and requeues the message: a long export would run again. Nebula's answer is a time limit on
the exports queue below the timeout, and deploy/rabbitmq raising the timeout for those
queues (a policy on RabbitMQ 3.12+; on older servers, which have only the global setting,
the rabbitmq.conf line that install-services.sh writes).

The test lowers the broker's timeout to 3 s (and the channel tick that checks it to 0.5 s:
both global settings, restored afterwards), then runs an export taking ~6 s twice: first
without the fix (it is redelivered), then with deploy/rabbitmq applied (it runs once).
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
import sqlalchemy as sa
from dramatiq import Worker

from app.api import create_app
from app.exports import history as history_export
from app.migrate import upgrade
from app.models import Dataset, History, Task, TaskState, User
from app.schemas.tasks import PrepareHistoryArchive
from app.services.registry import build_services
from app.settings import Settings
from workers.runtime import build_runtime

pytestmark = [pytest.mark.rabbitmq, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
LOWERED_TIMEOUT_MS = 3000
EXPORT_SECONDS = 6.0
ADMIN_KEY = "consumer-timeout-admin"


def _eval(expression: str) -> str:
    done = subprocess.run(["rabbitmqctl", "-q", "eval", expression], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@contextlib.contextmanager
def rabbit_env(**values: int) -> Iterator[None]:
    """Set global settings of the rabbit application for the block, then put back what was there."""
    before = {key: _eval(f"application:get_env(rabbit, {key}).") for key in values}
    try:
        for key, value in values.items():
            _eval(f"application:set_env(rabbit, {key}, {value}).")
        yield
    finally:
        for key, old in before.items():
            if old == "undefined":
                _eval(f"application:unset_env(rabbit, {key}).")
            else:
                _eval(f"application:set_env(rabbit, {key}, {old.removeprefix('{ok,').removesuffix('}')}).")


def _apply_deploy_fix(vhost: str) -> str:
    """What deploy/rabbitmq does: the per-queue policy, or on RabbitMQ < 3.12 the global line."""
    done = subprocess.run(["bash", str(ROOT / "deploy/rabbitmq/consumer-timeout.sh"), vhost],
                          capture_output=True, text=True, timeout=60)
    if done.returncode == 0:
        return "policy"
    assert done.returncode == 3, done.stderr
    line = next(l for l in (ROOT / "deploy/rabbitmq/rabbitmq.conf").read_text().splitlines()
                if l.startswith("consumer_timeout"))
    _eval(f"application:set_env(rabbit, consumer_timeout, {int(line.split('=')[1])}).")
    return "global"


@pytest.fixture
def setup(amqp_vhost_url: str, queue_prefix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    if shutil.which("rabbitmqctl") is None:
        pytest.skip("needs rabbitmqctl to lower the broker's consumer_timeout")
    settings = Settings(data_dir=tmp_path / "data", broker_url=amqp_vhost_url, queue_prefix=queue_prefix,
                        bootstrap_api_key=ADMIN_KEY, log_format="console", export_time_limit=60)
    upgrade(settings)
    services = build_services(settings)
    app = create_app(settings, services)
    with services.session_factory.begin() as session:
        user = User(username="alice", email="alice@example.org")
        session.add(user)
        session.flush()
        history = History(user_id=user.id, name="long")
        session.add(history)
        session.flush()
        dataset = Dataset(history_id=history.id, user_id=user.id, hid=1, name="data", state="ok", extension="txt")
        session.add(dataset)
        session.flush()
        source = tmp_path / "payload"
        source.write_bytes(b"some bytes\n" * 1000)
        dataset.object_key = services.object_store.put(dataset.id, source)
        history.hid_counter = 2
        user_id, history_id = user.id, history.id

    slow_write = history_export._write

    def _slow(*args, **kwargs):
        time.sleep(EXPORT_SECONDS)
        return slow_write(*args, **kwargs)

    monkeypatch.setattr(history_export, "_write", _slow)
    client = app.test_client()
    key = client.post(f"/api/users/{services.ids.encode(user_id)}/api_key", headers={"x-api-key": ADMIN_KEY}).json
    yield settings, services, client, key, services.ids.encode(history_id)
    services.engine.dispose()


def _run_export(settings: Settings, services, client, key: str, history_id: str) -> Task:
    """Start a fresh worker (its channels read the broker's settings now), export, wait."""
    runtime = build_runtime(settings)
    worker = Worker(runtime.broker, worker_threads=2, worker_timeout=100)
    worker.start()
    try:
        response = client.post(f"/api/histories/{history_id}/prepare_store_download", json={},
                               headers={"x-api-key": key})
        assert response.status_code == 200, response.json
        task_id = response.json["task"]["id"]
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            with services.session_factory() as session:
                task = session.get(Task, task_id)
                if task.state in TaskState.TERMINAL:
                    break
            time.sleep(0.2)
        time.sleep(2.0)  # a redelivery would show up meanwhile
        ready = client.get(f"/api/short_term_storage/{response.json['storage_request_id']}/ready",
                           headers={"x-api-key": key}).json
        assert ready is True
        with services.session_factory() as session:
            return session.get(Task, task_id)
    finally:
        worker.stop()
        runtime.broker.close()
        runtime.services.engine.dispose()


def test_long_export_finishes_once_with_the_deploy_fix(setup, amqp_vhost_url):
    settings, services, client, key, history_id = setup
    vhost = unquote(urlparse(amqp_vhost_url).path.lstrip("/")) or "/"
    # The time limit each export message carries stays below the raised timeout.
    message = services.enqueuer.message(PrepareHistoryArchive(storage_request_id="0" * 32, history_id=1), time_limit=settings.export_time_limit * 1000)
    assert message.options["time_limit"] < 86_400_000
    with rabbit_env(consumer_timeout=LOWERED_TIMEOUT_MS, channel_tick_interval=500):
        without_fix = _run_export(settings, services, client, key, history_id)
        assert without_fix.state == TaskState.SUCCESS
        assert without_fix.attempts >= 2, "the lowered consumer_timeout should have made RabbitMQ redeliver"
        how = _apply_deploy_fix(vhost)
        with_fix = _run_export(settings, services, client, key, history_id)
    assert with_fix.state == TaskState.SUCCESS
    assert with_fix.attempts == 1, f"the export ran {with_fix.attempts} times with the deploy fix ({how})"
    with services.session_factory() as session:
        runs = session.scalar(sa.select(sa.func.count()).select_from(Task).where(Task.action == "prepare_history_archive"))
    assert runs == 2

