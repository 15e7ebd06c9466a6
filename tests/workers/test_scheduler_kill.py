"""A scheduler SIGKILLed in the middle of a map-over, then started again, creates each job exactly once.

Real processes on PostgreSQL + RabbitMQ: the scheduler pool (``python -m workers.run
scheduler``) creates the jobs of a 3,000-element map-over in iterations of 200; it is
SIGKILLed (the whole process group) once a third of them exist, and started again. Its
lease dies with its connection, its unacknowledged message comes back, and the job keys
(invocation step, element index) hold: exactly 3,000 jobs. No worker runs, so the jobs
stay queued and only their creation is tested. (``bench/workflows.py --kill`` does the
same with 10,000 elements.)
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from app.migrate import upgrade
from app.models import Job, WorkflowInvocation
from app.settings import Settings
from tests.app.test_scheduling import World

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.rabbitmq]
ELEMENTS = 3000
PER_ITERATION = 200


def _scheduler(settings: Settings, log: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEBULA_")}
    env.update(NEBULA_DATA_DIR=str(settings.data_dir), NEBULA_DATABASE_URL=settings.database_url,
               NEBULA_BROKER_URL=settings.broker_url, NEBULA_QUEUE_PREFIX=settings.queue_prefix,
               NEBULA_LOG_FORMAT="console", NEBULA_LOG_LEVEL="WARNING",
               NEBULA_MAXIMUM_WORKFLOW_JOBS_PER_SCHEDULING_ITERATION=str(PER_ITERATION))
    return subprocess.Popen([sys.executable, "-m", "workers.run", "scheduler", "--processes", "1", "--threads", "4"],
                            env=env, stdout=log.open("a"), stderr=subprocess.STDOUT, start_new_session=True)


def _stop(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
        proc.wait(30)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_sigkilled_scheduler_restarted_creates_each_job_once(data_dir, pg_url, amqp_vhost_url, queue_prefix):
    settings = Settings(data_dir=data_dir, database_url=pg_url, broker_url=amqp_vhost_url, queue_prefix=queue_prefix,
                        log_format="console", maximum_workflow_jobs_per_scheduling_iteration=PER_ITERATION)
    upgrade(settings)
    world = World(settings, elements=ELEMENTS, publisher=None)
    log = data_dir / "scheduler.log"
    scheduler = _scheduler(settings, log)
    try:
        invocation = world.invoke()
        deadline = time.monotonic() + 120
        while len(world.jobs(invocation)) < ELEMENTS // 3:
            assert time.monotonic() < deadline, f"no progress; see {log}:\n{log.read_text()[-3000:]}"
            time.sleep(0.005)
        _stop(scheduler, signal.SIGKILL)
        at_kill = len(world.jobs(invocation))
        assert at_kill < ELEMENTS, "the kill came too late to test anything"
        scheduler = _scheduler(settings, log)
        deadline = time.monotonic() + 180
        while world.state(invocation) != "scheduled":
            assert time.monotonic() < deadline, f"not scheduled after restart; see {log}:\n{log.read_text()[-3000:]}"
            time.sleep(0.1)
        time.sleep(1.0)  # a straggling duplicate iteration would show now
        with world.services.session_factory() as session:
            total = session.scalar(sa.select(sa.func.count()).select_from(Job).where(Job.invocation_id == invocation))
            assert session.get(WorkflowInvocation, invocation).state == "scheduled"
        assert total == ELEMENTS
        assert world.jobs(invocation) == list(range(ELEMENTS))
    finally:
        _stop(scheduler, signal.SIGTERM)
        world.services.engine.dispose()
