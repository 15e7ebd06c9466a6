"""An upload's end wakes the jobs waiting on its datasets at once, whether it succeeded or failed."""

from __future__ import annotations

import sqlalchemy as sa
from dramatiq.common import dq_name

from app.jobs import runner
from app.models import Job
from app.services import uploads
from tests.app.test_tools import content, hda, new_history, paste, run
from tests.app.test_uploads import break_uploads


def _job_waiting_on_a_paste(stack, api, history_id: str, text: str) -> tuple[dict, int]:
    """A cat1 job on a paste still queued, gone back to 'new' with its own retry lost."""
    pasted = paste(api, history_id, text)  # not drained: the upload has not run yet
    result = run(api, history_id, "cat1", {"input1": hda(pasted)})
    job_id = stack.services.ids.decode(result["jobs"][0]["id"])
    jobs_queue = stack.settings.queue_name("jobs")
    stack.broker.flush(jobs_queue)  # the job's first RunJob: run it here instead
    assert runner.run_job(stack.runtime.services, job_id) == "waiting"
    # Its delayed retry is dropped: only the upload's end can make the job run now.
    stack.broker.flush(dq_name(jobs_queue))
    return result, job_id


def _record_enqueues(stack, monkeypatch) -> list[tuple[str, dict, int | None]]:
    """(actor, request, delay) of every message put on the stub broker from now on."""
    sent: list[tuple[str, dict, int | None]] = []
    enqueue = stack.broker.enqueue

    def recording(message, *, delay=None):
        sent.append((message.actor_name, message.kwargs.get("request", {}), delay))
        return enqueue(message, delay=delay)

    monkeypatch.setattr(stack.broker, "enqueue", recording)
    return sent


def test_a_finished_upload_runs_the_jobs_waiting_on_it_at_once(stack, monkeypatch):
    api = stack.client(stack.user_key("alice"))
    h = new_history(api)
    result, job_id = _job_waiting_on_a_paste(stack, api, h, "uploaded late\n")
    sent = _record_enqueues(stack, monkeypatch)
    stack.drain()
    assert ("run_job", {"job_id": job_id, "waits": 0}, None) in sent, sent
    assert api.get(f"/api/jobs/{result['jobs'][0]['id']}").json["state"] == "ok"
    assert content(api, result["outputs"][0]["id"]) == b"uploaded late\n"


def test_a_failed_upload_fails_the_jobs_waiting_on_it_at_once(stack, monkeypatch):
    break_uploads(stack, monkeypatch)
    api = stack.client(stack.user_key("alice"))
    h = new_history(api)
    result, job_id = _job_waiting_on_a_paste(stack, api, h, "never stored\n")
    sent = _record_enqueues(stack, monkeypatch)
    stack.drain()
    assert ("run_job", {"job_id": job_id, "waits": 0}, None) in sent, sent
    job = api.get(f"/api/jobs/{result['jobs'][0]['id']}?full=true").json
    assert job["state"] == "error"
    assert "input dataset 1 (Pasted Entry) of parameter 'input1' is in state error" in job["info"]
    assert api.get(f"/api/datasets/{result['outputs'][0]['id']}").json["state"] == "error"


def test_an_upload_wakes_only_jobs_that_wait(stack, monkeypatch):
    api = stack.client(stack.user_key("alice"))
    h = new_history(api)
    pasted = paste(api, h, "a\n")
    queued = run(api, h, "cat1", {"input1": hda(pasted)})  # queued, its own RunJob pending: no wake-up
    services = stack.runtime.services
    sent = _record_enqueues(stack, monkeypatch)
    with services.session_factory.begin() as session:
        upload_id = session.scalar(sa.select(Job.id).where(Job.tool_id == "upload1"))
        assert uploads.setup_fetch_data(session, upload_id)
        uploads.fetch_data(session, upload_id, services.object_store)
        uploads.set_job_metadata(session, upload_id, services.object_store, enqueuer=services.enqueuer)
    assert [actor for actor, _, _ in sent] == []
    stack.drain()
    assert content(api, queued["outputs"][0]["id"]) == b"a\n"


def test_cancelling_a_queued_job_fails_the_jobs_waiting_on_it_at_once(stack, monkeypatch):
    api = stack.client(stack.user_key("alice"))
    h = new_history(api)
    first = run(api, h, "cat1", {"input1": hda(paste(api, h, "a\n"))})  # queued behind its upload
    second = run(api, h, "cat1", {"input1": hda(first["outputs"][0]["id"])})
    jobs_queue = stack.settings.queue_name("jobs")
    stack.broker.flush(jobs_queue)  # neither job has run: run the second here, it waits on the first
    second_id = stack.services.ids.decode(second["jobs"][0]["id"])
    assert runner.run_job(stack.runtime.services, second_id) == "waiting"
    stack.broker.flush(dq_name(jobs_queue))  # its retry dropped: only the cancel can wake it
    sent = _record_enqueues(stack, monkeypatch)
    assert api.delete(f"/api/jobs/{first['jobs'][0]['id']}").status_code == 200
    assert ("run_job", {"job_id": second_id, "waits": 0}, None) in sent, sent
    stack.drain()
    job = api.get(f"/api/jobs/{second['jobs'][0]['id']}?full=true").json
    assert job["state"] == "error" and "parameter 'input1' is in state discarded" in job["info"], job["info"]
