"""Bulk job creation on PostgreSQL (ids drawn from the sequences, pipelined inserts)."""

from __future__ import annotations

import time

import pytest
import sqlalchemy as sa

from app.migrate import upgrade
from app.models import Dataset, History, Job, JobInput, JobOutput, OutboxMessage, User
from app.services.jobs import JobSpec, create_jobs
from app.services.registry import build_services
from app.tools import toolbox
from tests.app.conftest import make_settings


@pytest.mark.postgres
def test_create_jobs_in_bulk_on_postgresql(pg_url, data_dir):
    settings = make_settings(data_dir, database_url=pg_url)
    upgrade(settings)
    services = build_services(settings)
    services.enqueuer.publisher = None  # keep the messages in the outbox: nothing to publish to
    tool = toolbox(settings).get("cat1")
    try:
        with services.session_factory.begin() as session:
            user = User(username="u", email="u@example.org")
            session.add(user)
            session.flush()
            history = History(user_id=user.id, hid_counter=2)
            session.add(history)
            session.flush()
            source = Dataset(history_id=history.id, user_id=user.id, hid=1, name="in", extension="tabular")
            session.add(source)
            session.flush()
            ids = (user.id, history.id, source.id)

        def specs(count: int) -> list[JobSpec]:
            return [JobSpec(user_id=ids[0], history_id=ids[1], tool=tool, inputs={"input1": [ids[2]]},
                            params={"input1": {"src": "hda", "id": ids[2]}, "queries": []},
                            invocation_step_id=11, element_index=i, output_visible=False) for i in range(count)]

        with services.session_factory.begin() as session:
            started = time.perf_counter()
            jobs = create_jobs(session, specs(1000), enqueuer=services.enqueuer)
            elapsed = time.perf_counter() - started
            assert len({j.id for j in jobs}) == 1000 and [j.element_index for j in jobs] == list(range(1000))
            first_output = jobs[0].outputs[0].dataset_id
        print(f"create_jobs: 1,000 jobs in {elapsed * 1000:.0f} ms")
        with services.session_factory.begin() as session:
            again = create_jobs(session, specs(1001), enqueuer=services.enqueuer)
            assert [j.id for j in again[:1000]] == [j.id for j in jobs] and len({j.id for j in again}) == 1001
        with services.session_factory() as session:
            count = lambda model: session.scalar(sa.select(sa.func.count()).select_from(model))  # noqa: E731
            assert count(Job) == 1001 and count(JobOutput) == 1001 and count(JobInput) == 1001
            assert count(OutboxMessage) == 1001
            outputs = session.execute(sa.select(Dataset.hid, Dataset.extension, Dataset.creating_job_id, Dataset.name)
                                      .where(Dataset.id != ids[2]).order_by(Dataset.id)).all()
            assert [o.hid for o in outputs] == list(range(2, 1003))
            assert {o.extension for o in outputs} == {"tabular"} and outputs[0].name == "Concatenate datasets on data 1"
            assert session.get(Dataset, first_output).creating_job_id == jobs[0].id
            link = session.scalar(sa.select(JobOutput).where(JobOutput.job_id == jobs[5].id))
            assert link.name == "out_file1" and session.get(Dataset, link.dataset_id).creating_job_id == jobs[5].id
    finally:
        services.engine.dispose()
