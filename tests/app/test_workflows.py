"""Workflows: import of .ga and gxformat2, validation errors, versions, list, show, download, update, delete."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

DATA = Path(__file__).parent.parent / "data" / "workflows"


def load(name: str) -> dict:
    """A fixture workflow as a dict."""
    return yaml.safe_load((DATA / name).read_text())


def import_workflow(api, workflow, **extra) -> dict:
    response = api.post("/api/workflows/upload", json={"workflow": workflow, **extra})
    assert response.status_code == 200, response.json
    return response.json


def test_import_ga_and_show(stack):
    api = stack.client(stack.user_key("alice"))
    imported = import_workflow(api, load("pause_review.ga"))
    assert imported["name"] == "Review before continuing"
    assert imported["url"] == f"/api/workflows/{imported['id']}"
    assert imported["deleted"] is False and imported["published"] is False and imported["number_of_steps"] == 4
    shown = api.get(f"/api/workflows/{imported['id']}").json
    assert shown["version"] == 0
    assert set(shown["steps"]) == {"0", "1", "2", "3"}
    assert [shown["steps"][k]["type"] for k in "0123"] == ["data_input", "tool", "pause", "tool"]
    assert shown["steps"]["3"]["input_steps"]["input1"] == {"source_step": 2, "step_output": "output"}
    assert shown["inputs"] == {"0": {"label": "input dataset", "value": "",
                                     "uuid": "a3f1b7c2-6a7e-4c43-9b8d-2d1e0f8c7a11"}}


def test_import_format2_dict_and_yaml_text(stack):
    api = stack.client(stack.user_key("alice"))
    as_dict = import_workflow(api, load("map_over.gxwf.yml"))
    assert as_dict["name"] == "Concatenate each element"
    as_text = import_workflow(api, (DATA / "chain.gxwf.yml").read_text())
    shown = api.get(f"/api/workflows/{as_text['id']}").json
    assert shown["name"] == "Three cats in a row" and len(shown["steps"]) == 4
    # POST /api/workflows takes the same payload
    also = api.post("/api/workflows", json={"workflow": load("parameter.gxwf.yml")})
    assert also.status_code == 200, also.json


def test_download_ga_and_format2_round_trip(stack):
    api = stack.client(stack.user_key("alice"))
    imported = import_workflow(api, load("pause_review.ga"))
    ga = api.get(f"/api/workflows/{imported['id']}/download?style=ga").json
    assert ga["a_galaxy_workflow"] == "true" and ga["name"] == "Review before continuing"
    assert isinstance(ga["steps"]["1"]["tool_state"], str)
    assert ga["steps"]["3"]["input_connections"]["queries_0|input2"] == [{"id": 0, "output_name": "output"}]
    f2 = api.get(f"/api/workflows/download/{imported['id']}?style=format2").json
    assert f2["class"] == "GalaxyWorkflow"
    again = import_workflow(api, f2)
    shown = api.get(f"/api/workflows/{again['id']}").json
    assert [s["type"] for s in shown["steps"].values()] == ["data_input", "tool", "pause", "tool"]
    reimported = import_workflow(api, json.loads(json.dumps(ga)))
    assert reimported["number_of_steps"] == 4


def test_cycle_is_refused(stack):
    api = stack.client(stack.user_key("alice"))
    response = api.post("/api/workflows/upload", json={"workflow": load("cycle.ga")})
    assert response.status_code == 400
    assert "cycle" in response.json["err_msg"] and "step 1" in response.json["err_msg"]
    cycle2 = {"class": "GalaxyWorkflow", "inputs": {}, "steps": {
        "a": {"tool_id": "cat1", "in": {"input1": "b/out_file1"}},
        "b": {"tool_id": "cat1", "in": {"input1": "a/out_file1"}}}}
    response = api.post("/api/workflows", json={"workflow": cycle2})
    assert response.status_code == 400 and "cycle" in response.json["err_msg"]
    assert api.get("/api/workflows").json == []


def test_bad_connections_and_steps_are_refused(stack):
    api = stack.client(stack.user_key("alice"))
    base = load("pause_review.ga")

    def refused(mutate, needle):
        workflow = json.loads(json.dumps(base))
        mutate(workflow)
        response = api.post("/api/workflows/upload", json={"workflow": workflow})
        assert response.status_code == 400, response.json
        assert needle in response.json["err_msg"], response.json["err_msg"]

    refused(lambda w: w["steps"]["1"]["input_connections"]["input1"].update(id=9), "step 9, which does not exist")
    refused(lambda w: w["steps"]["3"]["input_connections"]["input1"].update(output_name="nope"), "no such output")
    refused(lambda w: w["steps"]["2"].update(type="magic"), "unknown module type 'magic'")
    refused(lambda w: w["steps"]["1"].update(tool_state="{not json"), "tool_state is not valid JSON")
    refused(lambda w: w["steps"]["1"].pop("tool_id") and w["steps"]["1"].pop("content_id"), "needs a tool_id")
    refused(lambda w: w["steps"]["1"]["input_connections"].update(input1="zero"), "must be a mapping")
    refused(lambda w: w["steps"]["3"].update(label="review"), "same label 'review'")
    refused(lambda w: w.update(steps=[1, 2]), "is not a mapping")
    refused(lambda w: w["steps"]["3"].update(when="$(inputs.go)"), "'when' reads inputs.go, which is not connected")
    response = api.post("/api/workflows/upload", json={"workflow": {"class": "GalaxyWorkflow", "steps": {
        "a": {"tool_id": "cat1", "in": {"input1": "missing/out"}}}}})
    assert response.status_code == 400 and "'missing/out', which is not a step" in response.json["err_msg"]
    assert api.post("/api/workflows/upload", json={}).status_code == 400
    assert api.post("/api/workflows/upload", json={"workflow": "a: [b"}).status_code == 400


def test_unknown_tool_accepted_at_import(stack):
    api = stack.client(stack.user_key("alice"))
    workflow = load("chain.gxwf.yml")
    workflow["steps"]["c2"]["tool_id"] = "not_installed_tool"
    imported = import_workflow(api, workflow)
    assert imported["number_of_steps"] == 4


def test_update_versions_publish_delete(stack):
    alice = stack.client(stack.user_key("alice"))
    bob = stack.client(stack.user_key("bob"))
    imported = import_workflow(alice, load("chain.gxwf.yml"))
    wid = imported["id"]
    changed = alice.put(f"/api/workflows/{wid}", json={"name": "Renamed", "published": True}).json
    assert changed["name"] == "Renamed" and changed["published"] is True and changed["version"] == 0
    new_version = alice.put(f"/api/workflows/{wid}", json={"workflow": load("parameter.gxwf.yml")}).json
    assert new_version["version"] == 1 and new_version["name"] == "Renamed"
    assert [v["version"] for v in alice.get(f"/api/workflows/{wid}/versions").json] == [0, 1]
    old = alice.get(f"/api/workflows/{wid}?version=0").json
    assert len(old["steps"]) == 4 and len(new_version["steps"]) == 3
    assert alice.get(f"/api/workflows/{wid}?version=7").status_code == 400
    # published: bob sees it when asking for published ones, cannot change it
    assert [w["id"] for w in bob.get("/api/workflows?show_published=True").json] == [wid]
    assert bob.get("/api/workflows").json == []
    assert bob.put(f"/api/workflows/{wid}", json={"name": "mine"}).status_code == 404
    assert bob.delete(f"/api/workflows/{wid}").status_code == 404
    deleted = alice.delete(f"/api/workflows/{wid}").json
    assert deleted["deleted"] is True
    assert alice.get("/api/workflows").json == []
    assert [w["id"] for w in alice.get("/api/workflows?show_deleted=True").json] == [wid]
    assert alice.post(f"/api/workflows/{wid}/undelete").json["deleted"] is False


def test_private_workflow_is_404_for_others(stack):
    alice = stack.client(stack.user_key("alice"))
    bob = stack.client(stack.user_key("bob"))
    wid = import_workflow(alice, load("chain.gxwf.yml"))["id"]
    assert bob.get(f"/api/workflows/{wid}").status_code == 404
    assert bob.get(f"/api/workflows/{wid}/download").status_code == 404
    assert alice.get("/api/workflows/0123456789abcdef").status_code == 404
