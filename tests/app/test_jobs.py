"""Jobs: the jobs API, cancellation, redelivery, dead workers, waiting inputs, bulk creation."""

from __future__ import annotations

import socket
import subprocess
import threading
import time

import sqlalchemy as sa

from app.jobs import runner
from app.models import Dataset, History, Job, JobState, User
from app.services.jobs import JobSpec, create_jobs
from app.tools import toolbox
from tests.app.test_tools import content, hda, new_history, paste, run, tool_stack  # noqa: F401


def _job(stack, job_id: int) -> Job:
    with stack.services.session_factory() as session:
        return session.get(Job, job_id)


def _wait_for_state(api, job_id: str, state: str, timeout: float = 15.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = api.get(f"/api/jobs/{job_id}").json
        if job["state"] == state:
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} never reached {state}: {job}")


def test_list_and_show_jobs_with_filters(stack):
    api = stack.client(stack.user_key("alice"))
    h1, h2 = new_history(api), new_history(api)
    a = paste(api, h1, "a\n")
    stack.drain()
    first = run(api, h1, "cat1", {"input1": hda(a)})["jobs"][0]["id"]
    second = run(api, h2, "Show beginning1", {"input": hda(a)})["jobs"][0]["id"]
    stack.drain()
    listed = api.get("/api/jobs").json
    assert {first, second} <= {j["id"] for j in listed}
    assert [j["id"] for j in api.get(f"/api/jobs?history_id={h2}").json] == [second]
    assert [j["id"] for j in api.get("/api/jobs?tool_id=cat1").json] == [first]
    assert {j["tool_id"] for j in api.get("/api/jobs?state=ok&state=error").json} >= {"cat1", "Show beginning1"}
    assert api.get("/api/jobs?state=running").json == []
    assert len(api.get("/api/jobs?limit=1").json) == 1
    assert len(api.get("/api/jobs?limit=1&offset=1").json) == 1
    shown = api.get(f"/api/jobs/{first}").json
    assert shown["state"] == "ok" and shown["inputs"]["input1"]["id"] == a and "out_file1" in shown["outputs"]
    assert "command_line" not in shown and shown["params"]["input1"] == {"src": "hda", "id": a}
    full = api.get(f"/api/jobs/{first}?full=True").json
    assert full["command_line"].startswith("cat ") and full["exit_code"] == 0 and full["stdout"] == ""
    assert api.get(f"/api/jobs/{first}/inputs").json[0]["dataset"]["id"] == a
    assert api.get(f"/api/jobs/{first}/outputs").json[0]["name"] == "out_file1"
    other = stack.client(stack.user_key("bob"))
    assert other.get(f"/api/jobs/{first}").status_code == 404
    assert other.get("/api/jobs").json == []
    assert other.delete(f"/api/jobs/{first}").status_code == 404


def test_deleting_a_queued_job_keeps_it_from_starting(stack):
    api = stack.client(stack.user_key("alice"))
    h = new_history(api)
    a = paste(api, h, "a\n")
    stack.drain()
    result = run(api, h, "cat1", {"input1": hda(a)})
    job_id = result["jobs"][0]["id"]
    response = api.delete(f"/api/jobs/{job_id}")
    assert response.status_code == 200 and response.json is True
    stack.drain()
    assert api.get(f"/api/jobs/{job_id}").json["state"] == "deleted"
    out = api.get(f"/api/datasets/{result['outputs'][0]['id']}").json
    assert out["state"] == "discarded" and out["deleted"] is True
    assert api.delete(f"/api/jobs/{job_id}").json is False
    assert _job(stack, stack.services.ids.decode(job_id)).attempts == 0


def test_deleting_a_running_job_kills_it(tool_stack):
    stack = tool_stack
    api = stack.client(stack.user_key("alice"))
    h = new_history(api)
    result = run(api, h, "sleeper", {"seconds": 60})
    job_id = result["jobs"][0]["id"]
    worker = threading.Thread(target=stack.drain)
    started = time.monotonic()
    worker.start()
    _wait_for_state(api, job_id, "running")
    assert api.delete(f"/api/jobs/{job_id}").json is True
    assert api.get(f"/api/jobs/{job_id}").json["state"] in ("deleting", "deleted")
    worker.join(30)
    assert not worker.is_alive() and time.monotonic() - started < 20
    job = api.get(f"/api/jobs/{job_id}?full=true").json
    assert job["state"] == "deleted"
    assert api.get(f"/api/datasets/{result['outputs'][0]['id']}").json["state"] == "discarded"


def test_wall_time_limit_stops_a_job(tool_stack):
    stack = tool_stack
    api = stack.client(stack.user_key("alice"))
    result = run(api, new_history(api), "limited", {})
    started = time.monotonic()
    stack.drain()
    assert time.monotonic() - started < 15
    job = api.get(f"/api/jobs/{result['jobs'][0]['id']}?full=true").json
    assert job["state"] == "error"
    assert "wall time" in api.get(f"/api/datasets/{result['outputs'][0]['id']}").json["misc_info"]


def test_a_finished_job_is_not_run_again(stack):
    api = stack.client(stack.user_key("alice"))
    h = new_history(api)
    a = paste(api, h, "a\n")
    stack.drain()
    result = run(api, h, "cat1", {"input1": hda(a)})
    stack.drain()
    job_id = stack.services.ids.decode(result["jobs"][0]["id"])
    assert runner.run_job(stack.runtime.services, job_id) == "finished"
    job = _job(stack, job_id)
    assert job.state == JobState.OK and job.attempts == 1


def test_a_second_message_for_a_job_this_worker_is_starting_does_not_take_it_over(stack, monkeypatch):
    """A wake-up and a retry for one job can reach two threads of one worker: the second leaves it.

    Between its claim and the start of the command a thread's job is not yet a process the
    monitor watches; the second thread must still not see it as orphaned (taking it over
    would empty the first thread's working directory under its command).
    """
    api = stack.client(stack.user_key("alice"))
    h = new_history(api)
    a = paste(api, h, "kept\n")
    stack.drain()
    result = run(api, h, "cat1", {"input1": hda(a)})
    stack.broker.flush(stack.settings.queue_name("jobs"))  # run it here, from two threads
    job_id = stack.services.ids.decode(result["jobs"][0]["id"])
    entered, go = threading.Event(), threading.Event()
    original = runner.run_command

    def slow_start(*args, **kwargs):
        if not entered.is_set():
            entered.set()
            go.wait(10)  # the first thread: claimed, its command not started yet
        return original(*args, **kwargs)

    monkeypatch.setattr(runner, "run_command", slow_start)
    outcomes: list[str] = []
    first = threading.Thread(target=lambda: outcomes.append(runner.run_job(stack.runtime.services, job_id)))
    first.start()
    assert entered.wait(10)
    assert runner.run_job(stack.runtime.services, job_id) == "handled by another thread of this worker"
    go.set()
    first.join(20)
    assert outcomes == ["ok"]
    assert content(api, result["outputs"][0]["id"]) == b"kept\n"
    assert _job(stack, job_id).attempts == 1


def _dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def test_a_job_whose_worker_died_runs_again_from_a_clean_directory(stack):
    api = stack.client(stack.user_key("alice"))
    h = new_history(api)
    a = paste(api, h, "a\n")
    stack.drain()
    result = run(api, h, "cat1", {"input1": hda(a)})
    job_id = stack.services.ids.decode(result["jobs"][0]["id"])
    workdir = runner.job_dir(stack.runtime.services, job_id)
    (workdir / "outputs").mkdir(parents=True)
    (workdir / "outputs" / "out_file1").write_text("half-written by the dead worker")
    with stack.services.session_factory.begin() as session:
        session.execute(sa.update(Job).where(Job.id == job_id).values(
            state=JobState.RUNNING, worker_id=f"{socket.gethostname()}:{_dead_pid()}", attempts=1))
    assert runner.run_job(stack.runtime.services, job_id) == JobState.OK
    job = _job(stack, job_id)
    assert job.state == JobState.OK and job.attempts == 2
    assert content(api, result["outputs"][0]["id"]) == b"a\n"
    assert not workdir.exists()


def test_a_job_held_by_a_live_worker_is_left_alone_until_its_heartbeat_stops(stack):
    api = stack.client(stack.user_key("alice"))
    h = new_history(api)
    a = paste(api, h, "a\n")
    stack.drain()
    result = run(api, h, "cat1", {"input1": hda(a)})
    job_id = stack.services.ids.decode(result["jobs"][0]["id"])
    with stack.services.session_factory.begin() as session:
        session.execute(sa.update(Job).where(Job.id == job_id).values(
            state=JobState.RUNNING, worker_id="elsewhere.example:4242", attempts=1))
    assert runner.run_job(stack.runtime.services, job_id) == "held by a live worker"
    with stack.services.session_factory.begin() as session:
        session.execute(sa.update(Job).where(Job.id == job_id).values(
            update_time=sa.func.datetime("now", "-5 minutes")))
    assert runner.run_job(stack.runtime.services, job_id) == JobState.OK
    assert _job(stack, job_id).attempts == 2


def test_a_job_waits_for_inputs_still_being_made(stack):
    api = stack.client(stack.user_key("alice"))
    h = new_history(api)
    a = paste(api, h, "made later\n")  # not drained: still queued
    first = run(api, h, "cat1", {"input1": hda(a)})
    chained = run(api, h, "cat1", {"input1": hda(first["outputs"][0]["id"])})
    stack.drain()
    for result in (first, chained):
        assert api.get(f"/api/jobs/{result['jobs'][0]['id']}").json["state"] == "ok"
        assert content(api, result["outputs"][0]["id"]) == b"made later\n"


def test_an_input_in_error_fails_the_job(stack):
    api = stack.client(stack.user_key("alice"))
    h = new_history(api)
    a = paste(api, h, "a\n")
    stack.drain()
    with stack.services.session_factory.begin() as session:
        session.execute(sa.update(Dataset).where(Dataset.id == stack.services.ids.decode(a)).values(state="error"))
    result = run(api, h, "cat1", {"input1": hda(a)})
    stack.drain()
    job = api.get(f"/api/jobs/{result['jobs'][0]['id']}?full=true").json
    assert job["state"] == "error" and "in state error" in job["info"]
    assert api.get(f"/api/datasets/{result['outputs'][0]['id']}").json["state"] == "error"


def _specs(session, tool, user, history, dataset_id, count, step=None):
    return [JobSpec(user_id=user.id, history_id=history.id, tool=tool, params={"input1": {"src": "hda", "id": dataset_id},
                                                                                   "queries": []},
                    inputs={"input1": [dataset_id]}, invocation_step_id=step, element_index=i if step else None,
                    output_visible=False)
            for i in range(count)]


def test_create_jobs_in_bulk_is_idempotent_for_workflow_keys(stack):
    api = stack.client(stack.user_key("alice"))
    h = new_history(api)
    a = paste(api, h, "a\n")
    stack.drain()
    tool = toolbox(stack.settings).get("cat1")
    with stack.services.session_factory.begin() as session:
        user = session.scalar(sa.select(User).where(User.username == "alice"))
        history = session.get(History, stack.services.ids.decode(h))
        dataset_id = stack.services.ids.decode(a)
        jobs = create_jobs(session, _specs(session, tool, user, history, dataset_id, 50, step=7),
                           enqueuer=stack.services.enqueuer)
        ids = [j.id for j in jobs]
        assert len(set(ids)) == 50 and [j.element_index for j in jobs] == list(range(50))
        assert all(j.state == JobState.QUEUED and len(j.outputs) == 1 for j in jobs)
        # A scheduler re-running the same iteration (and more) creates only what is new.
        again = create_jobs(session, _specs(session, tool, user, history, dataset_id, 60, step=7),
                            enqueuer=stack.services.enqueuer)
        assert [j.id for j in again[:50]] == ids and len({j.id for j in again}) == 60
        # The same key twice in one call is one job.
        twice = create_jobs(session, _specs(session, tool, user, history, dataset_id, 61, step=7)[-1:] * 2,
                            enqueuer=stack.services.enqueuer)
        assert twice[0].id == twice[1].id and twice[0].id not in {j.id for j in again}
        hids = session.scalars(sa.select(Dataset.hid).where(Dataset.history_id == history.id)).all()
        assert len(hids) == len(set(hids)) == 62
    stack.drain()
    assert len(api.get(f"/api/jobs?history_id={h}&tool_id=cat1&state=ok&limit=1000").json) == 61


def test_output_tails_are_capped_and_a_flood_is_stopped(tool_stack, monkeypatch):
    from app.jobs import monitor

    stack = tool_stack
    api = stack.client(stack.user_key("alice"))
    h = new_history(api)
    capped = run(api, h, "noisy", {"forever": False})
    monkeypatch.setattr(monitor, "CAPTURE_LIMIT", 1 << 20)
    flood = run(api, h, "noisy", {"forever": True})
    stack.drain()
    job = api.get(f"/api/jobs/{capped['jobs'][0]['id']}?full=true").json
    assert job["state"] == "error" and job["stderr"].startswith("[… ")
    assert len(job["stderr"].encode()) < stack.settings.job_output_cap + 100
    flooded = api.get(f"/api/jobs/{flood['jobs'][0]['id']}?full=true").json
    assert flooded["state"] == "error"
    assert "more than 1 MiB" in api.get(f"/api/datasets/{flood['outputs'][0]['id']}").json["misc_info"]


def _scheduling_messages(stack) -> list[int]:
    """The invocation ids of the AdvanceInvocation messages sent so far (taken off the queue)."""
    queue = stack.broker.queues.get(stack.settings.queue_name("scheduling"))
    messages = []
    while queue is not None and not queue.empty():
        import dramatiq

        messages.append(dramatiq.Message.decode(queue.get()).kwargs["request"]["invocation_id"])
    return messages


def test_a_workflow_job_advances_its_invocation_when_it_ends(stack):
    api = stack.client(stack.user_key("alice"))
    h = new_history(api)
    a = paste(api, h, "a\n")
    stack.drain()
    tool = toolbox(stack.settings).get("cat1")
    with stack.services.session_factory.begin() as session:
        user = session.scalar(sa.select(User).where(User.username == "alice"))
        history = session.get(History, stack.services.ids.decode(h))
        specs = _specs(session, tool, user, history, stack.services.ids.decode(a), 2, step=3)
        for spec in specs:
            spec.invocation_id = 42
        ok, cancelled = create_jobs(session, specs, enqueuer=stack.services.enqueuer)
        ok_id, cancelled_id = ok.id, cancelled.id
    _scheduling_messages(stack)
    assert runner.run_job(stack.runtime.services, ok_id) == JobState.OK
    assert _scheduling_messages(stack) == [42]
    assert api.delete(f"/api/jobs/{stack.services.ids.encode(cancelled_id)}").json is True
    assert _scheduling_messages(stack) == [42]
    assert runner.run_job(stack.runtime.services, cancelled_id) == "finished"
