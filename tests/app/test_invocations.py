"""Invocations end to end on the stub broker: invoke, schedule, pause actions, cancel, map-over, reading state."""

from __future__ import annotations

import sqlalchemy as sa

from app.models import Dataset, History, HistoryDatasetCollection, Job, User, WorkflowInvocation
from app.schemas.tasks import AdvanceInvocation
from app.services import collections
from tests.app.test_workflows import import_workflow, load


def paste(api, history_id: str, text: str) -> str:
    inputs = {"file_type": "txt", "dbkey": "?", "files_0|type": "upload_dataset", "files_0|url_paste": text}
    response = api.post("/api/tools", json={"history_id": history_id, "tool_id": "upload1", "inputs": inputs})
    assert response.status_code == 200, response.json
    return response.json["outputs"][0]["id"]


def history(api, name: str = "work") -> str:
    return api.post("/api/histories", json={"name": name}).json["id"]


def make_list(stack, api, history_id: str, texts: list[str], collection_type: str = "list") -> str:
    """A list (or list:paired when texts come in pairs) of pasted datasets, made through the service."""
    dataset_ids = [stack.services.ids.decode(paste(api, history_id, t)) for t in texts]
    stack.drain()
    with stack.services.session_factory() as session:
        hist = session.get(History, stack.services.ids.decode(history_id))
        owner = session.get(User, hist.user_id)
        if collection_type == "list":
            elements = [collections.ElementSpec(f"e{i}", dataset_id=d) for i, d in enumerate(dataset_ids)]
        else:
            elements = [collections.ElementSpec(f"p{i}", elements=[
                collections.ElementSpec("forward", dataset_id=dataset_ids[2 * i]),
                collections.ElementSpec("reverse", dataset_id=dataset_ids[2 * i + 1])])
                for i in range(len(dataset_ids) // 2)]
        hdca = collections.create_collection(session, user=owner, history=hist, collection_type=collection_type,
                                             elements=elements, name="the list")
        session.commit()
        return stack.services.ids.encode(hdca.id)


def dataset_text(stack, api, encoded: str) -> str:
    shown = api.get(f"/api/datasets/{encoded}").json
    assert shown["state"] == "ok", shown
    return api.get(shown["download_url"]).data.decode()


def invoke(api, workflow_id: str, inputs: dict, path: str = "invocations", **extra) -> dict:
    response = api.post(f"/api/workflows/{workflow_id}/{path}", json={"inputs": inputs, **extra})
    assert response.status_code == 200, response.json
    return response.json


def settle(stack, api, invocation_id: str, rounds: int = 6) -> dict:
    """Drain until the invocation is finished (or waits for the user)."""
    for _ in range(rounds):
        stack.drain()
        shown = show(api, invocation_id)
        if shown["state"] in ("completed", "failed", "cancelled") or any(
                s["state"] == "ready" and s["action"] is None and s.get("jobs_created") is None
                and s["workflow_step_label"] in ("review",) for s in shown["steps"]):
            return shown
    return shown


def show(api, invocation_id: str) -> dict:
    response = api.get(f"/api/invocations/{invocation_id}")
    assert response.status_code == 200, response.json
    return response.json


# -- pause -------------------------------------------------------------------------------


def _pause_setup(stack):
    api = stack.client(stack.user_key("alice"))
    wid = import_workflow(api, load("pause_review.ga"))["id"]
    hid = history(api)
    data = paste(api, hid, "hello")
    stack.drain()
    return api, wid, hid, data


def test_pause_waits_then_continues_on_action_true(stack):
    api, wid, hid, data = _pause_setup(stack)
    invocation = invoke(api, wid, {"0": {"src": "hda", "id": data}}, path="usage", history_id=hid)
    assert invocation["state"] == "new" and invocation["workflow_id"] == wid and invocation["history_id"] == hid
    assert [s["state"] for s in invocation["steps"]] == ["new"] * 4
    stack.drain()
    waiting = api.get(f"/api/workflows/{wid}/usage/{invocation['id']}").json
    assert waiting["state"] == "ready"
    pause = waiting["steps"][2]
    assert pause["state"] == "ready" and pause["action"] is None and pause["order_index"] == 2
    assert waiting["steps"][3]["state"] == "new"
    step_url = f"/api/workflows/{wid}/usage/{invocation['id']}/steps/{pause['id']}"
    assert api.get(step_url).json["action"] is None
    # acting on a step that is not waiting is refused, state unchanged
    refused = api.put(f"/api/invocations/{invocation['id']}/steps/{waiting['steps'][3]['id']}", json={"action": True})
    assert refused.status_code == 409 and "pause" in refused.json["err_msg"]
    acted = api.put(step_url, json={"action": True})
    assert acted.status_code == 200 and acted.json["action"] is True
    again = api.put(step_url, json={"action": True})
    assert again.status_code == 409 and "not waiting" in again.json["err_msg"]
    stack.drain()
    done = show(api, invocation["id"])
    assert done["state"] == "completed", done["messages"]
    assert [s["state"] for s in done["steps"]] == ["scheduled"] * 4
    output = done["outputs"]["reviewed output"]
    assert dataset_text(stack, api, output["id"]) == "hello\nhello\n"
    summary = api.get(f"/api/invocations/{invocation['id']}/jobs_summary").json
    assert summary["states"] == {"ok": 2} and summary["model"] == "WorkflowInvocation"
    per_step = api.get(f"/api/invocations/{invocation['id']}/step_jobs_summary").json
    assert [s["model"] for s in per_step] == ["Job", "Job"]


def test_pause_action_false_cancels_on_review(stack):
    api, wid, hid, data = _pause_setup(stack)
    invocation = invoke(api, wid, {"input dataset": {"src": "hda", "id": data}}, inputs_by="name", history_id=hid)
    stack.drain()
    pause = show(api, invocation["id"])["steps"][2]
    acted = api.put(f"/api/invocations/{invocation['id']}/steps/{pause['id']}", json={"action": False})
    assert acted.status_code == 200 and acted.json["action"] is False
    assert show(api, invocation["id"])["state"] == "cancelling"
    stack.drain()
    done = show(api, invocation["id"])
    assert done["state"] == "cancelled"
    assert done["messages"] == [{"reason": "cancelled_on_review", "workflow_step_id": 2}]
    assert done["steps"][3]["state"] == "new"
    cancel = api.delete(f"/api/invocations/{invocation['id']}")
    assert cancel.status_code == 409 and "already cancelled" in cancel.json["err_msg"]


# -- invoking: bad input ---------------------------------------------------------------------


def test_bad_invocations_are_refused(stack):
    api, wid, hid, data = _pause_setup(stack)
    bob = stack.client(stack.user_key("bob"))
    bob_hid = history(bob)
    bob_data = paste(bob, bob_hid, "bob's")

    def refused(status, needle, workflow=wid, **payload):
        response = api.post(f"/api/workflows/{workflow}/invocations", json=payload)
        assert response.status_code == status, response.json
        assert needle in response.json["err_msg"], response.json["err_msg"]

    good = {"0": {"src": "hda", "id": data}}
    refused(404, "not found", workflow="0123456789abcdef", inputs=good)
    refused(400, "is required", inputs={})
    refused(400, "no input 'nope'", inputs={"nope": {"src": "hda", "id": data}})
    refused(400, "not found", inputs={"0": {"src": "hda", "id": bob_data}})
    refused(400, "takes a dataset", inputs={"0": {"src": "hdca", "id": data}})
    refused(400, "unknown scheduler 'fastest'", inputs=good, scheduler="fastest")
    refused(404, "not found", inputs=good, history_id=bob_hid)
    refused(400, "src 'ldda' is not supported", inputs={"0": {"src": "ldda", "id": data}})
    missing_tool = load("chain.gxwf.yml")
    missing_tool["steps"]["c2"]["tool_id"] = "not_installed_tool"
    other = import_workflow(api, missing_tool)["id"]
    refused(400, "not installed: not_installed_tool", workflow=other, inputs={"start": {"src": "hda", "id": data}})
    with stack.services.session_factory() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(WorkflowInvocation)) == 0
    assert api.get("/api/invocations").json == []


def test_invoke_without_history_makes_one_and_lists(stack):
    api = stack.client(stack.user_key("alice"))
    wid = import_workflow(api, load("chain.gxwf.yml"))["id"]
    hid = history(api)
    data = paste(api, hid, "x")
    stack.drain()
    invocation = invoke(api, wid, {"0": {"src": "hda", "id": data}})
    assert invocation["history_id"] != hid
    made = api.get(f"/api/histories/{invocation['history_id']}").json
    assert made["name"] == "History from Three cats in a row workflow"
    named = invoke(api, wid, {"0": {"src": "hda", "id": data}}, new_history_name="named")
    assert api.get(f"/api/histories/{named['history_id']}").json["name"] == "named"
    listed = api.get("/api/invocations").json
    assert [i["id"] for i in listed] == [named["id"], invocation["id"]]
    assert api.get(f"/api/workflows/{wid}/invocations").json[0]["workflow_id"] == wid
    assert api.get(f"/api/invocations?history_id={named['history_id']}").json[0]["id"] == named["id"]
    stack.drain()
    assert api.get("/api/invocations?include_terminal=False").json == []
    assert {i["state"] for i in api.get("/api/invocations").json} == {"completed"}
    other = stack.client(stack.user_key("bob"))
    assert other.get(f"/api/invocations/{named['id']}").status_code == 404
    assert other.get("/api/invocations").json == []


# -- the scheduler at work ---------------------------------------------------------------------


def test_chain_runs_step_by_step(stack):
    api = stack.client(stack.user_key("alice"))
    wid = import_workflow(api, load("chain.gxwf.yml"))["id"]
    hid = history(api)
    data = paste(api, hid, "a")
    stack.drain()
    invocation = invoke(api, wid, {"start": {"src": "hda", "id": data}}, history_id=hid)
    stack.drain()
    done = show(api, invocation["id"])
    assert done["state"] == "completed"
    assert dataset_text(stack, api, done["outputs"]["last"]["id"]) == "a\n"
    report = api.get(f"/api/invocations/{invocation['id']}/report").json
    assert "## Workflow Inputs" in report["markdown"] and "| c3 | tool | scheduled | 1 ok |" in report["markdown"]
    assert "last" in report["markdown"]


def test_map_over_list_makes_implicit_collection(stack):
    api = stack.client(stack.user_key("alice"))
    wid = import_workflow(api, load("map_over.gxwf.yml"))["id"]
    hid = history(api)
    hdca = make_list(stack, api, hid, [f"line {i}" for i in range(5)])
    invocation = invoke(api, wid, {"the_list": {"src": "hdca", "id": hdca}}, history_id=hid)
    stack.drain()
    done = show(api, invocation["id"])
    assert done["state"] == "completed", done["messages"]
    out = done["output_collections"]["concatenated"]
    with stack.services.session_factory() as session:
        made = session.get(HistoryDatasetCollection, stack.services.ids.decode(out["id"]))
        leaves = collections.leaf_datasets(session, made.collection_id)
        assert [path for path, _ in leaves] == [(f"e{i}",) for i in range(5)]
        assert made.collection.populated_state == "ok" and made.collection.element_count == 5
        jobs = session.execute(sa.select(Job.element_index).where(Job.invocation_id == stack.services.ids.decode(invocation["id"]))).scalars().all()
        assert sorted(jobs) == [0, 1, 2, 3, 4]
        texts = [session.get(Dataset, d).state for _, d in leaves]
        assert texts == ["ok"] * 5
    step = api.get(f"/api/invocations/{invocation['id']}/steps/{done['steps'][1]['id']}").json
    assert len(step["jobs"]) == 5 and step["output_collections"]["out_file1"]["id"] == out["id"]
    assert api.get(f"/api/invocations/{invocation['id']}/step_jobs_summary").json[0]["model"] == "ImplicitCollectionJobs"


def test_map_over_nested_list_paired(stack):
    api = stack.client(stack.user_key("alice"))
    workflow = load("map_over.gxwf.yml")
    workflow["inputs"]["the_list"]["collection_type"] = "list:paired"
    wid = import_workflow(api, workflow)["id"]
    hid = history(api)
    hdca = make_list(stack, api, hid, ["f0", "r0", "f1", "r1"], collection_type="list:paired")
    invocation = invoke(api, wid, {"the_list": {"src": "hdca", "id": hdca}}, history_id=hid)
    stack.drain()
    done = show(api, invocation["id"])
    assert done["state"] == "completed", done["messages"]
    with stack.services.session_factory() as session:
        made = session.get(HistoryDatasetCollection,
                           stack.services.ids.decode(done["output_collections"]["concatenated"]["id"]))
        assert made.collection.collection_type == "list:paired"
        paths = [path for path, _ in collections.leaf_datasets(session, made.collection_id)]
        assert paths == [("p0", "forward"), ("p0", "reverse"), ("p1", "forward"), ("p1", "reverse")]


def test_parameter_input_feeds_tool_parameter(stack):
    api = stack.client(stack.user_key("alice"))
    wid = import_workflow(api, load("parameter.gxwf.yml"))["id"]
    hid = history(api)
    data = paste(api, hid, "1\n2\n3\n4\n5")
    stack.drain()
    three = invoke(api, wid, {"text": {"src": "hda", "id": data}, "how_many": 3}, history_id=hid)
    default = invoke(api, wid, {"text": {"src": "hda", "id": data}}, history_id=hid)
    bad = api.post(f"/api/workflows/{wid}/invocations", json={"inputs": {"text": {"src": "hda", "id": data},
                                                                         "how_many": "many"}})
    assert bad.status_code == 400 and "integer" in bad.json["err_msg"]
    stack.drain()
    assert dataset_text(stack, api, show(api, three["id"])["outputs"]["head"]["id"]) == "1\n2\n3\n"
    assert dataset_text(stack, api, show(api, default["id"])["outputs"]["head"]["id"]) == "1\n2\n"
    assert show(api, three["id"])["input_step_parameters"]["1"]["parameter_value"] == 3


def test_subworkflow_runs_as_subinvocation(stack):
    api = stack.client(stack.user_key("alice"))
    wid = import_workflow(api, load("subworkflow.gxwf.yml"))["id"]
    hid = history(api)
    data = paste(api, hid, "deep")
    stack.drain()
    invocation = invoke(api, wid, {"outer_input": {"src": "hda", "id": data}}, history_id=hid)
    done = settle(stack, api, invocation["id"])
    assert done["state"] == "completed", done["messages"]
    nested = done["steps"][2]
    assert nested["subworkflow_invocation_id"]
    sub = show(api, nested["subworkflow_invocation_id"])
    assert sub["state"] == "completed"
    assert dataset_text(stack, api, done["outputs"]["result"]["id"]) == "deep\n"
    assert api.get(f"/api/invocations/{invocation['id']}/jobs_summary").json["states"] == {"ok": 3}


def test_failed_job_fails_dependents_and_says_why(stack):
    api = stack.client(stack.user_key("alice"))
    wid = import_workflow(api, load("chain.gxwf.yml"))["id"]
    hid = history(api)
    data = paste(api, hid, "a")
    stack.drain()
    with stack.services.session_factory() as session:
        session.execute(sa.update(Dataset).where(Dataset.id == stack.services.ids.decode(data)).values(object_key="missing/file"))
        session.commit()
    invocation = invoke(api, wid, {"start": {"src": "hda", "id": data}}, history_id=hid)
    stack.drain()
    done = show(api, invocation["id"])
    assert done["state"] == "failed"
    message = done["messages"][0]
    assert message["reason"] == "dataset_failed" and message["workflow_step_id"] == 1
    assert message["dependent_workflow_step_id"] == 2
    assert [s["state"] for s in done["steps"]] == ["scheduled", "scheduled", "new", "new"]


def test_cancel_stops_queued_jobs(stack):
    api = stack.client(stack.user_key("alice"))
    wid = import_workflow(api, load("map_over.gxwf.yml"))["id"]
    hid = history(api)
    hdca = make_list(stack, api, hid, [f"{i}" for i in range(4)])
    invocation = invoke(api, wid, {"the_list": {"src": "hdca", "id": hdca}}, history_id=hid)
    cancelled = api.delete(f"/api/invocations/{invocation['id']}")
    assert cancelled.status_code == 200 and cancelled.json["state"] == "cancelling"
    assert api.delete(f"/api/invocations/{invocation['id']}").json["state"] == "cancelling"
    stack.drain()
    done = show(api, invocation["id"])
    assert done["state"] == "cancelled" and done["messages"] == [{"reason": "user_request"}]
    with stack.services.session_factory() as session:
        states = session.scalars(sa.select(Job.state).where(Job.invocation_id == stack.services.ids.decode(invocation["id"]))).all()
    assert set(states) <= {"deleted"}


def test_wait_returns_when_the_invocation_changes(stack):
    api = stack.client(stack.user_key("alice"))
    wid = import_workflow(api, load("chain.gxwf.yml"))["id"]
    hid = history(api)
    data = paste(api, hid, "a")
    stack.drain()
    invocation = invoke(api, wid, {"start": {"src": "hda", "id": data}}, history_id=hid)
    import time

    started = time.monotonic()
    unchanged = api.get(f"/api/invocations/{invocation['id']}?wait=0.5").json
    assert unchanged["state"] == "new" and 0.4 < time.monotonic() - started < 5


def test_multiple_input_reduces_a_list_and_maps_over_list_paired(stack):
    api = stack.client(stack.user_key("alice"))
    reduce_wf = {"class": "GalaxyWorkflow", "label": "reduce", "inputs": {"things": {"type": "data_collection",
                 "collection_type": "list"}}, "outputs": {"all": {"outputSource": "joined/out_file1"}},
                 "steps": {"joined": {"tool_id": "cat", "in": {"input1": "things"}}}}
    pairs_wf = {"class": "GalaxyWorkflow", "label": "pairs", "inputs": {"things": {"type": "data_collection",
                "collection_type": "list:paired"}}, "outputs": {"each": {"outputSource": "joined/out_file1"}},
                "steps": {"joined": {"tool_id": "cat", "in": {"input1": "things"}}}}
    hid = history(api)
    flat = make_list(stack, api, hid, ["a", "b", "c"])
    nested = make_list(stack, api, hid, ["f0", "r0", "f1", "r1"], collection_type="list:paired")
    reduced = invoke(api, import_workflow(api, reduce_wf)["id"], {"things": {"src": "hdca", "id": flat}}, history_id=hid)
    mapped = invoke(api, import_workflow(api, pairs_wf)["id"], {"things": {"src": "hdca", "id": nested}}, history_id=hid)
    done = settle(stack, api, reduced["id"])
    assert done["state"] == "completed" and dataset_text(stack, api, done["outputs"]["all"]["id"]) == "a\nb\nc\n"
    done = settle(stack, api, mapped["id"])
    assert done["state"] == "completed", done["messages"]
    with stack.services.session_factory() as session:
        made = session.get(HistoryDatasetCollection, stack.services.ids.decode(done["output_collections"]["each"]["id"]))
        assert made.collection.collection_type == "list"
        leaves = collections.leaf_datasets(session, made.collection_id)
    assert [path for path, _ in leaves] == [("p0",), ("p1",)]
    assert [dataset_text(stack, api, stack.services.ids.encode(d)) for _, d in leaves] == ["f0\nr0\n", "f1\nr1\n"]


def test_batch_invocation_makes_one_invocation_per_value(stack):
    api = stack.client(stack.user_key("alice"))
    wid = import_workflow(api, load("chain.gxwf.yml"))["id"]
    hid = history(api)
    first, second = paste(api, hid, "one"), paste(api, hid, "two")
    stack.drain()
    made = api.post(f"/api/workflows/{wid}/invocations", json={
        "batch": True, "history_id": hid,
        "inputs": {"0": {"batch": True, "values": [{"src": "hda", "id": first}, {"src": "hda", "id": second}]}}})
    assert made.status_code == 200 and len(made.json) == 2
    texts = []
    for invocation in made.json:
        done = settle(stack, api, invocation["id"])
        texts.append(dataset_text(stack, api, done["outputs"]["last"]["id"]))
    assert texts == ["one\n", "two\n"]


def test_cancel_reaches_subinvocations(stack):
    api = stack.client(stack.user_key("alice"))
    workflow = load("subworkflow.gxwf.yml")
    workflow["steps"]["nested"]["run"]["steps"]["wait"] = {"type": "pause", "in": {"input": "inner_cat/out_file1"}}
    wid = import_workflow(api, workflow)["id"]
    hid = history(api)
    data = paste(api, hid, "x")
    stack.drain()
    invocation = invoke(api, wid, {"outer_input": {"src": "hda", "id": data}}, history_id=hid)
    for _ in range(6):
        stack.drain()
        sub_id = show(api, invocation["id"])["steps"][2]["subworkflow_invocation_id"]
        if sub_id and any(s["state"] == "ready" for s in show(api, sub_id)["steps"]):
            break
    assert show(api, sub_id)["state"] == "ready"
    api.delete(f"/api/invocations/{invocation['id']}")
    stack.drain()
    assert show(api, invocation["id"])["state"] == "cancelled"
    assert show(api, sub_id)["state"] == "cancelled"


def test_wait_answers_as_soon_as_the_invocation_changes(stack):
    import threading
    import time

    api = stack.client(stack.user_key("alice"))
    wid = import_workflow(api, load("chain.gxwf.yml"))["id"]
    hid = history(api)
    data = paste(api, hid, "a")
    stack.drain()
    invocation = invoke(api, wid, {"start": {"src": "hda", "id": data}}, history_id=hid)
    later = threading.Timer(0.5, stack.drain)
    later.start()
    started = time.monotonic()
    changed = api.get(f"/api/invocations/{invocation['id']}?wait=20").json
    took = time.monotonic() - started
    later.join()
    assert changed["state"] != "new" or any(s["state"] != "new" for s in changed["steps"])
    assert took < 15


def test_deleting_the_history_cancels_the_invocation(stack):
    api, wid, hid, data = _pause_setup(stack)
    invocation = invoke(api, wid, {"0": {"src": "hda", "id": data}}, history_id=hid)
    stack.drain()
    assert show(api, invocation["id"])["state"] == "ready"
    api.delete(f"/api/histories/{hid}")
    with stack.services.session_factory() as session:  # what a job finishing or beat's sweep would send
        stack.services.enqueuer.send(session, AdvanceInvocation(invocation_id=stack.services.ids.decode(invocation["id"])))
        session.commit()
    stack.drain()
    done = show(api, invocation["id"])
    assert done["state"] == "cancelled"
    assert done["messages"] == [{"reason": "history_deleted", "details": done["messages"][0]["details"],
                                 "history_id": hid}]


def test_invoke_parameters_set_tool_parameters(stack):
    api = stack.client(stack.user_key("alice"))
    workflow = {"class": "GalaxyWorkflow", "label": "head", "inputs": {"text": "data"},
                "outputs": {"head": {"outputSource": "first/out_file1"}},
                "steps": {"first": {"tool_id": "Show beginning1", "in": {"input": "text"}, "state": {"lineNum": 1}}}}
    wid = import_workflow(api, workflow)["id"]
    hid = history(api)
    data = paste(api, hid, "1\n2\n3\n4")
    stack.drain()
    default = invoke(api, wid, {"text": {"src": "hda", "id": data}}, history_id=hid)
    by_label = invoke(api, wid, {"text": {"src": "hda", "id": data}}, history_id=hid,
                      parameters={"first": {"lineNum": 3}})
    by_tool = invoke(api, wid, {"text": {"src": "hda", "id": data}}, history_id=hid,
                     parameters={"Show beginning1": {"lineNum": 2}})
    bad = api.post(f"/api/workflows/{wid}/invocations", json={"inputs": {"text": {"src": "hda", "id": data}},
                                                               "parameters": {"nowhere": {"x": 1}}})
    assert bad.status_code == 400 and "names no step" in bad.json["err_msg"]
    texts = [dataset_text(stack, api, settle(stack, api, i["id"])["outputs"]["head"]["id"])
             for i in (default, by_label, by_tool)]
    assert texts == ["1\n", "1\n2\n3\n", "1\n2\n"]
