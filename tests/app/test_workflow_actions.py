"""Post-job actions: rename (#{input}, ${param}), hide, change datatype, tags; on map-overs; bad ones refused."""

from __future__ import annotations

import copy

import pytest

from app.scheduling import driver
from app.workflows.actions import StepActions, new_name, parse_tags
from tests.app.test_invocations import dataset_text, history, invoke, make_list, paste, show
from tests.app.test_workflows import import_workflow


def _step(index: int, **fields) -> dict:
    return {"id": index, "input_connections": {}, "outputs": [], "workflow_outputs": [], "position": None,
            "post_job_actions": {}, **fields}


def _action(action_type: str, output: str = "out_file1", **arguments) -> dict:
    return {"action_type": action_type, "output_name": output, "action_arguments": arguments}


ACTIONS_GA = {
    "a_galaxy_workflow": "true", "format-version": "0.1", "name": "Post-job actions",
    "steps": {
        "0": _step(0, type="data_input", label="reads", tool_state='{"optional": false}'),
        "1": _step(1, type="tool", tool_id="cat1", label="named", tool_state="{}",
                   input_connections={"input1": {"id": 0, "output_name": "output"}},
                   workflow_outputs=[{"output_name": "out_file1", "label": "named output"}],
                   post_job_actions={
                       "RenameDatasetActionout_file1": _action("RenameDatasetAction",
                                                               newname="#{input1 | basename} for ${sample}"),
                       "TagDatasetActionout_file1": _action("TagDatasetAction", tags="#patient, group:a, extra"),
                       "RemoveTagDatasetActionout_file1": _action("RemoveTagDatasetAction", tags="extra"),
                       "ChangeDatatypeActionout_file1": _action("ChangeDatatypeAction", newtype="tabular"),
                   }),
        "2": _step(2, type="tool", tool_id="cat1", label="hidden", tool_state="{}",
                   input_connections={"input1": {"id": 1, "output_name": "out_file1"}},
                   workflow_outputs=[{"output_name": "out_file1", "label": "hidden output"}],
                   post_job_actions={
                       "HideDatasetActionout_file1": _action("HideDatasetAction"),
                       "FrobnicateActionout_file1": _action("FrobnicateAction", anything=1),
                       "DeleteIntermediatesAction": _action("DeleteIntermediatesAction", output=""),
                   }),
    },
}


def _setup(stack, workflow):
    api = stack.client(stack.user_key("alice"))
    wid = import_workflow(api, workflow)["id"]
    hid = history(api)
    return api, wid, hid


def test_rename_tag_retype_and_hide_on_a_plain_step(stack):
    api, wid, hid = _setup(stack, ACTIONS_GA)
    data = paste(api, hid, "a\tb\n")
    stack.drain()
    assert api.put(f"/api/histories/{hid}/contents/{data}", json={"name": "reads.fastq"}).status_code == 200
    invocation = invoke(api, wid, {"0": {"src": "hda", "id": data}}, history_id=hid,
                        replacement_params={"sample": "S1"})
    stack.drain()
    done = show(api, invocation["id"])
    assert done["state"] == "completed", done["messages"]
    named = api.get(f"/api/datasets/{done['outputs']['named output']['id']}").json
    assert named["name"] == "reads for S1"
    assert named["tags"] == ["name:patient", "group:a"]
    assert named["extension"] == "tabular" and named["visible"] is True  # kept after the job measured its output
    hidden = api.get(f"/api/datasets/{done['outputs']['hidden output']['id']}").json
    assert hidden["state"] == "ok" and hidden["visible"] is False
    assert dataset_text(stack, api, hidden["id"]) == "a\tb\n"
    visible = {item["id"] for item in api.get(f"/api/histories/{hid}/contents?visible=true").json}
    assert named["id"] in visible and hidden["id"] not in visible
    assert api.get(f"/api/invocations/{invocation['id']}/request").json["replacement_params"] == {"sample": "S1"}


def test_immediate_actions_apply_when_the_job_is_made(stack):
    api, wid, hid = _setup(stack, ACTIONS_GA)
    data = paste(api, hid, "x")
    stack.drain()
    invocation = invoke(api, wid, {"0": {"src": "hda", "id": data}}, history_id=hid)
    # the scheduler alone: the job is made, not run
    driver.advance_invocation(stack.services.session_factory, stack.services.ids.decode(invocation["id"]),
                              settings=stack.settings, enqueuer=stack.services.enqueuer, deferred=True)
    made = show(api, invocation["id"])
    queued = api.get(f"/api/datasets/{made['steps'][1]['outputs']['out_file1']['id']}").json
    assert queued["state"] == "queued" and queued["extension"] == "tabular"
    assert queued["name"] == "Pasted Entry for ${sample}" and queued["tags"] == ["name:patient", "group:a"]


def test_a_labelled_parameter_input_fills_a_replacement(stack):
    workflow = copy.deepcopy(ACTIONS_GA)
    workflow["steps"]["3"] = _step(3, type="parameter_input", label="sample", tool_state='{"parameter_type": "text"}')
    api, wid, hid = _setup(stack, workflow)
    data = paste(api, hid, "x")
    stack.drain()
    from_input = invoke(api, wid, {"0": {"src": "hda", "id": data}, "3": "P7"}, history_id=hid)
    from_payload = invoke(api, wid, {"0": {"src": "hda", "id": data}, "3": "P7"}, history_id=hid,
                          replacement_params={"sample": "S9"})
    stack.drain()
    for invocation, expected in ((from_input, "P7"), (from_payload, "S9")):
        done = show(api, invocation["id"])
        assert done["state"] == "completed", done["messages"]
        named = api.get(f"/api/datasets/{done['outputs']['named output']['id']}").json
        assert named["name"].endswith(f" for {expected}")


def test_map_over_applies_to_elements_and_the_implicit_collection(stack):
    workflow = {
        "class": "GalaxyWorkflow", "label": "Map with actions",
        "inputs": {"the_list": {"type": "data_collection", "collection_type": "list"}},
        "outputs": {"done": {"outputSource": "cat_each/out_file1"}},
        "steps": {"cat_each": {
            "tool_id": "cat1", "in": {"input1": "the_list"},
            "out": {"out_file1": {"rename": "#{input1} done", "hide": True, "add_tags": ["name:batch", "qc"],
                                  "change_datatype": "tabular"}},
        }},
    }
    api, wid, hid = _setup(stack, workflow)
    hdca = make_list(stack, api, hid, ["one", "two"])
    invocation = invoke(api, wid, {"the_list": {"src": "hdca", "id": hdca}}, history_id=hid)
    stack.drain()
    done = show(api, invocation["id"])
    assert done["state"] == "completed", done["messages"]
    made = api.get(f"/api/dataset_collections/{done['output_collections']['done']['id']}").json
    source_name = api.get(f"/api/dataset_collections/{hdca}").json["name"]
    assert made["name"] == f"{source_name} done"
    assert made["visible"] is False and made["tags"] == ["name:batch", "qc"]
    elements = [e["object"] for e in made["elements"]]
    element_inputs = [api.get(f"/api/datasets/{e['object']['id']}").json["name"]
                      for e in api.get(f"/api/dataset_collections/{hdca}").json["elements"]]
    for element, input_name in zip(elements, element_inputs):
        shown = api.get(f"/api/datasets/{element['id']}").json
        assert shown["name"] == f"{input_name} done" and shown["extension"] == "tabular"
        assert shown["tags"] == ["name:batch", "qc"]
    assert [dataset_text(stack, api, e["id"]) for e in elements] == ["one\n", "two\n"]


@pytest.mark.parametrize("action, message", [
    (_action("ChangeDatatypeAction", newtype="nonsense"), "unknown datatype 'nonsense'"),
    (_action("ChangeDatatypeAction"), "newtype must name a datatype"),
    (_action("RenameDatasetAction", newname=7), "newname must be text"),
    (_action("RenameDatasetAction", newname="#{input1 done"), "without its '}'"),
    (_action("TagDatasetAction", tags=3), "tags must be text"),
    ({"output_name": "out_file1"}, "needs an action_type"),
    ("HideDatasetAction", "must be a mapping"),
])
def test_bad_actions_are_refused_at_import_naming_the_step(stack, action, message):
    workflow = copy.deepcopy(ACTIONS_GA)
    workflow["steps"]["1"]["post_job_actions"] = {"bad": action}
    api = stack.client(stack.user_key("alice"))
    response = api.post("/api/workflows/upload", json={"workflow": workflow})
    assert response.status_code == 400, response.json
    assert message in response.json["err_msg"] and "step 1 ('named')" in response.json["err_msg"]


def test_bad_replacement_params_are_refused(stack):
    api, wid, hid = _setup(stack, ACTIONS_GA)
    data = paste(api, hid, "x")
    stack.drain()
    for bad, message in (([1, 2], "replacement_params"), ({"sample": {"nested": 1}}, "'sample' must be text")):
        response = api.post(f"/api/workflows/{wid}/invocations",
                            json={"inputs": {"0": {"src": "hda", "id": data}}, "replacement_params": bad})
        assert response.status_code == 400 and message in response.json["err_msg"], response.json


def test_names_and_tags_follow_galaxys_rules():
    inputs = {"input1": "reads.fastq.gz", "queries_0|input2": "other.txt"}
    assert new_name("#{input1 | basename}", inputs, {}) == "reads.fastq"
    assert new_name("#{queries_0.input2 | upper}-#{input2}", inputs, {}) == "OTHER.TXT-other.txt"
    assert new_name("#{missing} ${a} ${b}", inputs, {"a": "A"}) == " A ${b}"
    assert parse_tags(" #x, y ,, name:z") == ["name:x", "y", "name:z"]
    actions = StepActions({"t": _action("TagDatasetAction", output="", tags="a"),
                           "d": _action("ChangeDatatypeAction", newtype="tabular"),
                           "h": _action("HideDatasetAction", output="other")})
    assert actions.creation_columns("out_file1", {}, {}) == {"tags": ["a"], "extension": "tabular"}
    assert actions.creation_columns("out_file1", {}, {}, skipped=True) == {"tags": ["a"]}
    assert actions.end_columns("out_file1") == {"extension": "tabular"}
    assert actions.end_columns("other") == {"visible": False}
