"""Enqueuer.send_now: wake-ups with no transaction to join go straight to the broker, else the outbox."""

from __future__ import annotations

import sqlalchemy as sa

from app.db import make_engine
from app.messaging import Enqueuer
from app.migrate import upgrade
from app.models import OutboxMessage
from app.schemas.tasks import AdvanceInvocation, RunJob
from tests.app.conftest import make_settings


class Recording:
    def __init__(self, fail: bool = False):
        self.fail, self.batches = fail, []

    def publish_many(self, items):
        if self.fail:
            raise ConnectionError("broker down")
        self.batches.append([message["kwargs"]["request"] for message, _ in items])


def test_send_now_publishes_at_once_and_falls_back_to_the_outbox(data_dir):
    settings = make_settings(data_dir)
    upgrade(settings)
    engine = make_engine(settings)
    try:
        up = Recording()
        Enqueuer(settings, engine, up).send_now([RunJob(job_id=3), AdvanceInvocation(invocation_id=9)])
        assert up.batches == [[{"job_id": 3, "waits": 0}, {"invocation_id": 9, "deferred": False, "follow_on": False}]]
        Enqueuer(settings, engine, Recording()).send_now([])  # nothing to send: no batch, no row
        Enqueuer(settings, engine, Recording(fail=True)).send_now([RunJob(job_id=4)])
        with engine.connect() as conn:
            rows = conn.execute(sa.select(OutboxMessage.message)).scalars().all()
        assert [row["kwargs"]["request"]["job_id"] for row in rows] == [4]  # beat's relay publishes it later
    finally:
        engine.dispose()
