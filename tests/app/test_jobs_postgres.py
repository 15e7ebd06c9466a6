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


@pytest.fixture
def pg_stack(pg_url, data_dir, tmp_path):
    """The app and real actors on a stub broker, on PostgreSQL (the runner's fast path)."""
    from tests.app.test_tools import build_stack

    # Wake-ups one per job: a gathered one would leave after the stub broker was drained.
    yield from build_stack(data_dir, tmp_path, database_url=pg_url, job_wakeup_window=0)


@pytest.mark.postgres
def test_jobs_on_postgresql_succeed_fail_wait_and_map(pg_stack):
    from tests.app.test_tools import content, hda, new_history, paste, run

    stack = pg_stack
    api = stack.client(stack.user_key("alice"))
    h = new_history(api)
    a = paste(api, h, "x\ty\n")  # still being uploaded when the jobs below are created
    first = run(api, h, "cat1", {"input1": hda(a)})
    chained = run(api, h, "Paste1", {"input1": hda(first["outputs"][0]["id"]), "input2": hda(a), "delimiter": "C"})
    failing = run(api, h, "failing", {"input": hda(a)})
    stack.drain()
    assert content(api, first["outputs"][0]["id"]) == b"x\ty\n"
    assert content(api, chained["outputs"][0]["id"]) == b"x\ty,x\ty\n"
    job = api.get(f"/api/jobs/{failing['jobs'][0]['id']}?full=true").json
    assert job["state"] == "error" and job["exit_code"] == 3 and "it went wrong" in job["stderr"]
    assert api.get(f"/api/datasets/{failing['outputs'][0]['id']}").json["state"] == "error"
    listing = api.post(f"/api/histories/{h}/contents", json={
        "type": "dataset_collection", "collection_type": "list", "name": "l",
        "element_identifiers": [{"name": f"e{i}", "src": "hda", "id": paste(api, h, f"{i}\n")} for i in range(5)]}).json
    mapped = run(api, h, "cat1", {"input1": {"batch": True, "values": [{"src": "hdca", "id": listing["id"]}]}})
    stack.drain()
    assert [content(api, o["id"]) for o in mapped["outputs"]] == [f"{i}\n".encode() for i in range(5)]
    assert {j["state"] for j in api.get(f"/api/jobs?history_id={h}").json} == {"ok", "error"}
    assert runner_outcome(stack, first["jobs"][0]["id"]) == "finished"


def runner_outcome(stack, job_id: str) -> str:
    from app.jobs import runner

    return runner.run_job(stack.runtime.services, stack.services.ids.decode(job_id))


@pytest.mark.postgres
@pytest.mark.parametrize("scenario", [
    "test_chain_runs_step_by_step",
    "test_map_over_list_makes_implicit_collection",
    "test_failed_job_fails_dependents_and_says_why",
])
def test_workflow_jobs_end_on_the_fast_path_and_wake_their_invocation(pg_stack, scenario):
    """A workflow job's end is one autocommit statement on PostgreSQL; its invocation still hears of it."""
    from tests.app import test_invocations

    getattr(test_invocations, scenario)(pg_stack)


@pytest.mark.postgres
def test_workflow_jobs_with_end_actions_take_the_general_path(pg_stack):
    """Hide and change-datatype actions apply in the job's own end transaction on PostgreSQL too."""
    from tests.app import test_workflow_actions

    test_workflow_actions.test_rename_tag_retype_and_hide_on_a_plain_step(pg_stack)
