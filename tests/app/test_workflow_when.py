"""Conditional steps ('when'): true runs, false skips (jobs skipped, outputs null), downstream follows."""

from __future__ import annotations

import copy

import pytest

from app.workflows.conditions import ConditionError, parse_condition
from tests.app.test_invocations import dataset_text, history, invoke, make_list, paste, show
from tests.app.test_workflows import import_workflow

CONDITIONAL = {
    "class": "GalaxyWorkflow",
    "label": "Cat when asked",
    "inputs": {"data": "data", "should_run": {"type": "boolean"}},
    "outputs": {"first": {"outputSource": "first/out_file1"}, "second": {"outputSource": "second/out_file1"}},
    "steps": {
        "first": {"tool_id": "cat1", "in": {"input1": "data", "should_run": "should_run"},
                  "when": "$(inputs.should_run)"},
        "second": {"tool_id": "cat1", "in": {"input1": "first/out_file1"}},
    },
}


def native_conditional(expression: str = "$(inputs.when)") -> dict:
    """The .ga form: a boolean parameter step connected to the tool step's 'when' input."""
    def step(index: int, **fields) -> dict:
        return {"id": index, "input_connections": {}, "outputs": [], "workflow_outputs": [], "position": None,
                "post_job_actions": {}, **fields}

    return {
        "a_galaxy_workflow": "true", "format-version": "0.1", "name": "Native when",
        "steps": {
            "0": step(0, type="data_input", label="data", tool_state='{"optional": false}'),
            "1": step(1, type="parameter_input", label="flag", tool_state='{"parameter_type": "boolean"}'),
            "2": step(2, type="tool", tool_id="cat1", label="gated", when=expression,
                      tool_state='{"input1": {"__class__": "ConnectedValue"}}',
                      input_connections={"input1": {"id": 0, "output_name": "output"},
                                         "when": {"id": 1, "output_name": "output"}},
                      workflow_outputs=[{"output_name": "out_file1", "label": "gated output"}]),
        },
    }


def _setup(stack, workflow):
    api = stack.client(stack.user_key("alice"))
    wid = import_workflow(api, workflow)["id"]
    hid = history(api)
    data = paste(api, hid, "hello")
    stack.drain()
    return api, wid, hid, data


def _run(stack, api, wid, hid, inputs) -> dict:
    invocation = invoke(api, wid, inputs, history_id=hid)
    stack.drain()
    done = show(api, invocation["id"])
    assert done["state"] == "completed", done["messages"]
    return done


def _jobs(api, invocation_id: str) -> dict:
    return api.get(f"/api/invocations/{invocation_id}/jobs_summary").json["states"]


def _skipped_output(stack, api, encoded: str) -> dict:
    shown = api.get(f"/api/datasets/{encoded}").json
    assert (shown["state"], shown["extension"], shown["visible"], shown["misc_blurb"]) == \
        ("ok", "expression.json", False, "skipped"), shown
    assert dataset_text(stack, api, encoded) == "null"
    return shown


def test_true_condition_runs_the_step_and_its_dependents(stack):
    api, wid, hid, data = _setup(stack, CONDITIONAL)
    done = _run(stack, api, wid, hid, {"data": {"src": "hda", "id": data}, "should_run": True})
    assert _jobs(api, done["id"]) == {"ok": 2}
    assert dataset_text(stack, api, done["outputs"]["first"]["id"]) == "hello\n"
    assert dataset_text(stack, api, done["outputs"]["second"]["id"]) == "hello\n"


def test_false_condition_skips_the_step_and_its_dependents(stack):
    api, wid, hid, data = _setup(stack, CONDITIONAL)
    done = _run(stack, api, wid, hid, {"data": {"src": "hda", "id": data}, "should_run": False})
    assert _jobs(api, done["id"]) == {"skipped": 2}
    first = _skipped_output(stack, api, done["outputs"]["first"]["id"])
    _skipped_output(stack, api, done["outputs"]["second"]["id"])
    job = api.get(f"/api/jobs/{first['creating_job']}").json
    assert job["state"] == "skipped"
    assert [s["state"] for s in done["steps"]] == ["scheduled"] * 4
    # the history shows them only when hidden datasets are asked for
    visible = api.get(f"/api/histories/{hid}/contents?visible=true").json
    assert done["outputs"]["first"]["id"] not in {item["id"] for item in visible}


def test_native_when_input_and_negation(stack):
    api, wid, hid, data = _setup(stack, native_conditional("$(!inputs.when)"))
    ran = _run(stack, api, wid, hid, {"0": {"src": "hda", "id": data}, "1": False})
    assert _jobs(api, ran["id"]) == {"ok": 1}
    assert dataset_text(stack, api, ran["outputs"]["gated output"]["id"]) == "hello\n"
    skipped = _run(stack, api, wid, hid, {"0": {"src": "hda", "id": data}, "1": True})
    assert _jobs(api, skipped["id"]) == {"skipped": 1}
    _skipped_output(stack, api, skipped["outputs"]["gated output"]["id"])
    exported = api.get(f"/api/workflows/{wid}/download?style=ga").json
    assert exported["steps"]["2"]["when"] == "$(!inputs.when)"
    assert api.get(f"/api/workflows/{wid}").json["steps"]["2"]["when"] == "$(!inputs.when)"
    format2 = api.get(f"/api/workflows/{wid}/download?style=format2").json
    again = api.get(f"/api/workflows/{import_workflow(api, format2)['id']}").json
    assert [step["when"] for step in again["steps"].values() if step["type"] == "tool"] == ["$(!inputs.when)"]


def test_comparison_with_a_literal(stack):
    workflow = native_conditional("$(inputs.when == 'go')")
    workflow["steps"]["1"]["tool_state"] = '{"parameter_type": "text"}'
    api, wid, hid, data = _setup(stack, workflow)
    ran = _run(stack, api, wid, hid, {"0": {"src": "hda", "id": data}, "1": "go"})
    stopped = _run(stack, api, wid, hid, {"0": {"src": "hda", "id": data}, "1": "stop"})
    assert _jobs(api, ran["id"]) == {"ok": 1} and _jobs(api, stopped["id"]) == {"skipped": 1}


def test_a_value_that_is_not_boolean_fails_the_invocation(stack):
    workflow = native_conditional()
    workflow["steps"]["1"]["tool_state"] = '{"parameter_type": "text"}'
    api, wid, hid, data = _setup(stack, workflow)
    invocation = invoke(api, wid, {"0": {"src": "hda", "id": data}, "1": "yes"}, history_id=hid)
    stack.drain()
    failed = show(api, invocation["id"])
    assert failed["state"] == "failed"
    assert failed["messages"][0]["reason"] == "when_not_boolean"
    assert "inputs.when" in failed["messages"][0]["details"] and failed["messages"][0]["workflow_step_id"] == 2


@pytest.mark.parametrize("expression, message", [
    ("$(inputs.when > 2)", "unsupported 'when' expression"),
    ("$(inputs.when && inputs.other)", "unsupported 'when' expression"),
    ("$(!inputs.when == true)", "negate the comparison"),
    ("$(inputs.missing)", "inputs.missing, which is not connected"),
    ("${return inputs.when}", "unsupported 'when' expression"),
])
def test_unsupported_expressions_are_refused_at_import(stack, expression, message):
    api = stack.client(stack.user_key("alice"))
    response = api.post("/api/workflows/upload", json={"workflow": native_conditional(expression)})
    assert response.status_code == 400, response.json
    assert message in response.json["err_msg"] and "step 2 ('gated')" in response.json["err_msg"]


def test_when_on_other_step_types_is_refused(stack):
    api = stack.client(stack.user_key("alice"))
    workflow = native_conditional()
    workflow["steps"]["0"]["when"] = "$(inputs.when)"
    response = api.post("/api/workflows/upload", json={"workflow": workflow})
    assert response.status_code == 400 and "only tool and subworkflow steps can be conditional" in response.json["err_msg"]


def test_legacy_expression_and_literals_parse():
    assert parse_condition("${inputs.when}").input_name == "when"
    assert parse_condition("$(inputs['my input'] != 3)").literal == 3
    condition = parse_condition('$( inputs.mode === "fast" )')
    assert condition.evaluate("fast") is True and condition.evaluate("slow") is False
    assert parse_condition("$(inputs.n == 1)").evaluate("1") is True  # JavaScript's loose equality
    assert parse_condition("$(!inputs.x)").evaluate(None) is True
    with pytest.raises(ConditionError):
        parse_condition("$(inputs.x)").evaluate("true")


def test_map_over_with_a_single_false_condition_skips_every_element(stack):
    workflow = copy.deepcopy(CONDITIONAL)
    workflow["inputs"]["data"] = {"type": "data_collection", "collection_type": "list"}
    api = stack.client(stack.user_key("alice"))
    wid = import_workflow(api, workflow)["id"]
    hid = history(api)
    hdca = make_list(stack, api, hid, ["a", "b", "c"])
    done = _run(stack, api, wid, hid, {"data": {"src": "hdca", "id": hdca}, "should_run": False})
    assert _jobs(api, done["id"]) == {"skipped": 6}
    for label in ("first", "second"):
        made = api.get(f"/api/dataset_collections/{done['output_collections'][label]['id']}").json
        assert made["visible"] is False and made["populated_state"] == "ok" and made["element_count"] == 3
        assert {e["object"]["state"] for e in made["elements"]} == {"ok"}


def test_mapped_condition_skips_element_by_element(stack):
    workflow = copy.deepcopy(CONDITIONAL)
    workflow["inputs"]["data"] = {"type": "data_collection", "collection_type": "list"}
    workflow["inputs"]["should_run"] = {"type": "data_collection", "collection_type": "list"}
    api = stack.client(stack.user_key("alice"))
    wid = import_workflow(api, workflow)["id"]
    hid = history(api)
    data = make_list(stack, api, hid, ["a", "b", "c"])
    flags = make_list(stack, api, hid, ["true", "false", "true"])
    done = _run(stack, api, wid, hid, {"data": {"src": "hdca", "id": data},
                                       "should_run": {"src": "hdca", "id": flags}})
    assert _jobs(api, done["id"]) == {"ok": 4, "skipped": 2}
    for label in ("first", "second"):
        made = api.get(f"/api/dataset_collections/{done['output_collections'][label]['id']}").json
        assert made["visible"] is True
        elements = [e["object"] for e in made["elements"]]
        assert [e["extension"] for e in elements] == ["txt", "expression.json", "txt"]
        assert dataset_text(stack, api, elements[0]["id"]) == "a\n"
        assert dataset_text(stack, api, elements[1]["id"]) == "null"


CONDITIONAL_SUBWORKFLOW = {
    "class": "GalaxyWorkflow",
    "label": "Subworkflow when asked",
    "inputs": {"data": "data", "run_it": {"type": "boolean"}},
    "outputs": {"inner": {"outputSource": "nested/inner_out"}, "after": {"outputSource": "after/out_file1"}},
    "steps": {
        "nested": {
            "run": {"class": "GalaxyWorkflow", "inputs": {"item": "data"},
                    "outputs": {"inner_out": {"outputSource": "inner_cat/out_file1"}},
                    "steps": {"inner_cat": {"tool_id": "cat1", "in": {"input1": "item"}}}},
            "in": {"item": "data", "run_it": "run_it"},
            "when": "$(inputs.run_it)",
        },
        "after": {"tool_id": "cat1", "in": {"input1": "nested/inner_out"}},
    },
}


def _subinvocation_jobs(api, done: dict) -> dict | None:
    nested = [s for s in done["steps"] if s.get("subworkflow_invocation_id")]
    return _jobs(api, nested[0]["subworkflow_invocation_id"]) if nested else None


@pytest.mark.parametrize("style", ["format2", "ga"])
def test_conditional_subworkflow_true_runs_it(stack, style):
    api, wid, hid, data = _setup(stack, CONDITIONAL_SUBWORKFLOW)
    if style == "ga":
        ga = api.get(f"/api/workflows/{wid}/download?style=ga").json
        assert any(step.get("when") == "$(inputs.run_it)" for step in ga["steps"].values())
        wid = import_workflow(api, ga)["id"]
    done = _run(stack, api, wid, hid, {"data": {"src": "hda", "id": data}, "run_it": True})
    assert _subinvocation_jobs(api, done) == {"ok": 1}
    assert dataset_text(stack, api, done["outputs"]["inner"]["id"]) == "hello\n"
    assert dataset_text(stack, api, done["outputs"]["after"]["id"]) == "hello\n"


@pytest.mark.parametrize("style", ["format2", "ga"])
def test_conditional_subworkflow_false_skips_it_and_its_dependents(stack, style):
    api, wid, hid, data = _setup(stack, CONDITIONAL_SUBWORKFLOW)
    if style == "ga":
        wid = import_workflow(api, api.get(f"/api/workflows/{wid}/download?style=ga").json)["id"]
    done = _run(stack, api, wid, hid, {"data": {"src": "hda", "id": data}, "run_it": False})
    assert _subinvocation_jobs(api, done) is None  # no sub-invocation, so none of its jobs
    assert _jobs(api, done["id"]) == {"skipped": 1}  # the downstream tool step
    _skipped_output(stack, api, done["outputs"]["inner"]["id"])
    _skipped_output(stack, api, done["outputs"]["after"]["id"])
    assert {s["state"] for s in done["steps"]} == {"scheduled"}


def test_conditional_subworkflow_mapped_over_a_collection_is_refused(stack):
    workflow = copy.deepcopy(CONDITIONAL_SUBWORKFLOW)
    workflow["inputs"]["data"] = {"type": "collection", "collection_type": "list"}
    api, wid, hid, _ = _setup(stack, workflow)
    listed = make_list(stack, api, hid, ["a", "b"])
    invocation = invoke(api, wid, {"data": {"src": "hdca", "id": listed}, "run_it": True}, history_id=hid)
    stack.drain()
    done = show(api, invocation["id"])
    assert done["state"] == "failed"
    assert "maps the subworkflow over a collection and has a 'when'" in str(done["messages"])
