"""A collection connected to a subworkflow's input maps the subworkflow over it (Galaxy's implicit map-over).

The sub-invocation gets the whole collection; each of its steps maps over it, so its
outputs, and the subworkflow step's outputs in the parent, are implicit collections of
the mapped structure.
"""

from __future__ import annotations

import copy

import pytest
import sqlalchemy as sa

from app.migrate import upgrade
from app.models import Dataset, HistoryDatasetCollection, Job, User, WorkflowInvocation
from app.scheduling import mapping
from app.services import collections, invocations, workflows
from tests.app.conftest import make_settings
from tests.app.test_invocations import dataset_text, history, invoke, make_list, paste, settle, show
from tests.app.test_scheduling import Killed, World
from tests.app.test_workflows import import_workflow, load


def subworkflow(inputs: dict, steps: dict, outputs: dict) -> dict:
    """An embedded gxformat2 workflow."""
    return {"class": "GalaxyWorkflow", "inputs": inputs, "steps": steps,
            "outputs": {name: {"outputSource": source} for name, source in outputs.items()}}


def outer(inputs: dict, steps: dict, outputs: dict, label: str = "outer") -> dict:
    """A top-level gxformat2 workflow."""
    return {**subworkflow(inputs, steps, outputs), "label": label}


def contents(stack, api, encoded_hdca: str) -> tuple[str, list[tuple[tuple[str, ...], str]]]:
    """An output collection's type and its (identifier path, text) leaves."""
    with stack.services.session_factory() as session:
        made = session.get(HistoryDatasetCollection, stack.services.ids.decode(encoded_hdca))
        assert made.collection.populated_state == "ok"
        kind = made.collection.collection_type
        leaves = collections.leaf_datasets(session, made.collection_id)
    return kind, [(path, dataset_text(stack, api, stack.services.ids.encode(d))) for path, d in leaves]


def job_indexes(stack, encoded_invocation: str) -> list[int]:
    with stack.services.session_factory() as session:
        return sorted(session.scalars(sa.select(Job.element_index).where(
            Job.invocation_id == stack.services.ids.decode(encoded_invocation))))


def run(stack, api, workflow: dict, inputs: dict, hid: str) -> dict:
    wid = import_workflow(api, workflow)["id"]
    invocation = invoke(api, wid, inputs, history_id=hid)
    return settle(stack, api, invocation["id"], rounds=10)


def test_list_over_one_step_subworkflow_gives_an_implicit_list(stack):
    api = stack.client(stack.user_key("alice"))
    hid = history(api)
    hdca = make_list(stack, api, hid, ["a", "b", "c"])
    done = run(stack, api, load("subworkflow_map.gxwf.yml"), {"the_list": {"src": "hdca", "id": hdca}}, hid)
    assert done["state"] == "completed", done["messages"]
    kind, leaves = contents(stack, api, done["output_collections"]["each"]["id"])
    assert kind == "list"
    assert leaves == [(("e0",), "a\n"), (("e1",), "b\n"), (("e2",), "c\n")]
    nested = done["steps"][1]
    assert nested["element_count"] == 3
    sub_id = nested["subworkflow_invocation_id"]
    assert show(api, sub_id)["state"] == "completed"
    assert job_indexes(stack, sub_id) == [0, 1, 2]  # one job per element, in the sub-invocation
    assert job_indexes(stack, done["id"]) == []
    assert api.get(f"/api/invocations/{done['id']}/jobs_summary").json["states"] == {"ok": 3}


def test_two_step_subworkflow_with_a_shared_input(stack):
    """Steps reading the mapped input map over it; a step reading only the shared input runs per element too."""
    api = stack.client(stack.user_key("alice"))
    inner = subworkflow(
        {"item": "data", "reference": "data"},
        {"first": {"tool_id": "cat1", "in": {"input1": "item"}},
         "second": {"tool_id": "cat1", "in": {"input1": "first/out_file1", "queries_0|input2": "reference"}},
         "header": {"tool_id": "cat1", "in": {"input1": "reference"}}},
        {"joined": "second/out_file1", "header": "header/out_file1"})
    workflow = outer({"the_list": {"type": "data_collection", "collection_type": "list"}, "ref": "data"},
                     {"nested": {"run": inner, "in": {"item": "the_list", "reference": "ref"}}},
                     {"joined": "nested/joined", "headers": "nested/header"})
    hid = history(api)
    hdca = make_list(stack, api, hid, ["a", "b"])
    ref = paste(api, hid, "REF")
    stack.drain()
    done = run(stack, api, workflow, {"the_list": {"src": "hdca", "id": hdca}, "ref": {"src": "hda", "id": ref}}, hid)
    assert done["state"] == "completed", done["messages"]
    assert contents(stack, api, done["output_collections"]["joined"]["id"]) == (
        "list", [(("e0",), "a\nREF\n"), (("e1",), "b\nREF\n")])
    assert contents(stack, api, done["output_collections"]["headers"]["id"]) == (
        "list", [(("e0",), "REF\n"), (("e1",), "REF\n")])
    assert job_indexes(stack, done["steps"][2]["subworkflow_invocation_id"]) == [0, 0, 0, 1, 1, 1]


def test_list_paired_over_a_dataset_input_keeps_the_nesting(stack):
    api = stack.client(stack.user_key("alice"))
    workflow = copy.deepcopy(load("subworkflow_map.gxwf.yml"))
    workflow["inputs"]["the_list"]["collection_type"] = "list:paired"
    hid = history(api)
    hdca = make_list(stack, api, hid, ["f0", "r0", "f1", "r1"], collection_type="list:paired")
    done = run(stack, api, workflow, {"the_list": {"src": "hdca", "id": hdca}}, hid)
    assert done["state"] == "completed", done["messages"]
    assert contents(stack, api, done["output_collections"]["each"]["id"]) == ("list:paired", [
        (("p0", "forward"), "f0\n"), (("p0", "reverse"), "r0\n"),
        (("p1", "forward"), "f1\n"), (("p1", "reverse"), "r1\n")])


def test_list_paired_over_a_paired_input_maps_over_the_list(stack):
    api = stack.client(stack.user_key("alice"))
    inner = subworkflow({"pair": {"type": "data_collection", "collection_type": "paired"}},
                        {"joined": {"tool_id": "cat", "in": {"input1": "pair"}},
                         "again": {"tool_id": "cat1", "in": {"input1": "joined/out_file1"}}},
                        {"joined": "again/out_file1"})
    workflow = outer({"pairs": {"type": "data_collection", "collection_type": "list:paired"}},
                     {"nested": {"run": inner, "in": {"pair": "pairs"}}}, {"joined": "nested/joined"})
    hid = history(api)
    hdca = make_list(stack, api, hid, ["f0", "r0", "f1", "r1"], collection_type="list:paired")
    done = run(stack, api, workflow, {"pairs": {"src": "hdca", "id": hdca}}, hid)
    assert done["state"] == "completed", done["messages"]
    assert contents(stack, api, done["output_collections"]["joined"]["id"]) == (
        "list", [(("p0",), "f0\nr0\n"), (("p1",), "f1\nr1\n")])


def test_multiple_input_inside_a_mapped_subworkflow_does_not_reduce_the_list(stack):
    """The subworkflow's input is one dataset per element: a multiple input gets that one, not the whole list."""
    api = stack.client(stack.user_key("alice"))
    workflow = copy.deepcopy(load("subworkflow_map.gxwf.yml"))
    workflow["steps"]["nested"]["run"]["steps"]["inner_cat"]["tool_id"] = "cat"
    hid = history(api)
    hdca = make_list(stack, api, hid, ["a", "b"])
    done = run(stack, api, workflow, {"the_list": {"src": "hdca", "id": hdca}}, hid)
    assert done["state"] == "completed", done["messages"]
    assert contents(stack, api, done["output_collections"]["each"]["id"]) == ("list", [(("e0",), "a\n"), (("e1",), "b\n")])


def test_downstream_steps_consume_the_mapped_output(stack):
    """Mapped again by a tool, reduced by a multiple input, taken whole by a subworkflow's collection input."""
    api = stack.client(stack.user_key("alice"))
    workflow = copy.deepcopy(load("subworkflow_map.gxwf.yml"))
    whole = subworkflow({"things": {"type": "data_collection", "collection_type": "list"}},
                        {"joined": {"tool_id": "cat", "in": {"input1": "things"}}}, {"all": "joined/out_file1"})
    workflow["steps"].update({
        "again": {"tool_id": "cat1", "in": {"input1": "nested/inner_output", "queries_0|input2": "nested/inner_output"}},
        "reduced": {"tool_id": "cat", "in": {"input1": "again/out_file1"}},
        "whole": {"run": whole, "in": {"things": "nested/inner_output"}},
    })
    workflow["outputs"].update({"doubled": {"outputSource": "again/out_file1"},
                                "reduced": {"outputSource": "reduced/out_file1"},
                                "whole": {"outputSource": "whole/all"}})
    hid = history(api)
    hdca = make_list(stack, api, hid, ["a", "b"])
    done = run(stack, api, workflow, {"the_list": {"src": "hdca", "id": hdca}}, hid)
    assert done["state"] == "completed", done["messages"]
    assert contents(stack, api, done["output_collections"]["doubled"]["id"]) == (
        "list", [(("e0",), "a\na\n"), (("e1",), "b\nb\n")])
    assert dataset_text(stack, api, done["outputs"]["reduced"]["id"]) == "a\na\nb\nb\n"
    assert dataset_text(stack, api, done["outputs"]["whole"]["id"]) == "a\nb\n"


def test_nested_mapped_subworkflows(stack):
    """A subworkflow inside a mapped subworkflow maps again, over the same elements."""
    api = stack.client(stack.user_key("alice"))
    workflow = copy.deepcopy(load("subworkflow_map.gxwf.yml"))
    innermost = copy.deepcopy(workflow["steps"]["nested"]["run"])
    middle = subworkflow({"x": "data"}, {"deeper": {"run": innermost, "in": {"inner_input": "x"}},
                                         "after": {"tool_id": "cat1", "in": {"input1": "deeper/inner_output",
                                                                             "queries_0|input2": "x"}}},
                         {"inner_output": "after/out_file1"})
    workflow["steps"]["nested"]["run"] = middle
    workflow["steps"]["nested"]["in"] = {"x": "the_list"}
    hid = history(api)
    hdca = make_list(stack, api, hid, ["a", "b"])
    done = run(stack, api, workflow, {"the_list": {"src": "hdca", "id": hdca}}, hid)
    assert done["state"] == "completed", done["messages"]
    assert contents(stack, api, done["output_collections"]["each"]["id"]) == (
        "list", [(("e0",), "a\na\n"), (("e1",), "b\nb\n")])


def test_a_failing_element_fails_the_invocation_with_a_reason(stack):
    api = stack.client(stack.user_key("alice"))
    hid = history(api)
    hdca = make_list(stack, api, hid, ["a", "b", "c"])
    with stack.services.session_factory() as session:
        made = session.get(HistoryDatasetCollection, stack.services.ids.decode(hdca))
        _, broken = collections.leaf_datasets(session, made.collection_id)[1]
        session.execute(sa.update(Dataset).where(Dataset.id == broken).values(object_key="missing/file"))
        session.commit()
    done = run(stack, api, load("subworkflow_map.gxwf.yml"), {"the_list": {"src": "hdca", "id": hdca}}, hid)
    assert done["state"] == "failed"
    [message] = done["messages"]
    assert message["reason"] == "unexpected_failure" and message["workflow_step_id"] == 1
    assert "did not complete" in message["details"]
    sub = show(api, done["steps"][1]["subworkflow_invocation_id"])
    assert sub["state"] == "failed"
    assert sub["messages"][0]["reason"] == "job_failed" and sub["messages"][0]["workflow_step_id"] == 1


def test_mismatched_structures_fail_with_a_reason(stack):
    api = stack.client(stack.user_key("alice"))
    inner = subworkflow({"one": "data", "two": "data"},
                        {"both": {"tool_id": "cat1", "in": {"input1": "one", "queries_0|input2": "two"}}},
                        {"both": "both/out_file1"})
    workflow = outer({"a": {"type": "data_collection", "collection_type": "list"},
                      "b": {"type": "data_collection", "collection_type": "list"}},
                     {"nested": {"run": inner, "in": {"one": "a", "two": "b"}}}, {"both": "nested/both"})
    hid = history(api)
    first, second = make_list(stack, api, hid, ["a", "b"]), make_list(stack, api, hid, ["a", "b", "c"])
    done = run(stack, api, workflow, {"a": {"src": "hdca", "id": first}, "b": {"src": "hdca", "id": second}}, hid)
    assert done["state"] == "failed"
    assert done["messages"][0]["workflow_step_id"] == 2
    assert "different structure" in done["messages"][0]["details"]


def test_an_inner_collection_input_cannot_take_a_single_element(stack):
    """Inside a subworkflow mapped over a list, a nested subworkflow's list input gets one dataset: refused, saying why."""
    api = stack.client(stack.user_key("alice"))
    workflow = copy.deepcopy(load("subworkflow_map.gxwf.yml"))
    whole = subworkflow({"things": {"type": "data_collection", "collection_type": "list"}},
                        {"joined": {"tool_id": "cat", "in": {"input1": "things"}}}, {"all": "joined/out_file1"})
    workflow["steps"]["nested"]["run"]["steps"]["whole"] = {"run": whole, "in": {"things": "inner_input"}}
    hid = history(api)
    hdca = make_list(stack, api, hid, ["a", "b"])
    done = run(stack, api, workflow, {"the_list": {"src": "hdca", "id": hdca}}, hid)
    assert done["state"] == "failed"
    sub = show(api, done["steps"][1]["subworkflow_invocation_id"])
    [message] = sub["messages"]
    assert message["workflow_step_id"] == 2 and "'things' takes list" in message["details"]
    assert "mapped over the elements" in message["details"]


def test_cancel_reaches_a_mapped_subinvocation_and_a_cancelled_one_fails_its_parent(stack):
    api = stack.client(stack.user_key("alice"))
    workflow = copy.deepcopy(load("subworkflow_map.gxwf.yml"))
    workflow["steps"]["nested"]["run"]["steps"]["wait"] = {"type": "pause", "in": {"input": "inner_cat/out_file1"}}
    wid = import_workflow(api, workflow)["id"]
    hid = history(api)
    hdca = make_list(stack, api, hid, ["a", "b"])
    started = []
    for _ in range(2):
        invocation = invoke(api, wid, {"the_list": {"src": "hdca", "id": hdca}}, history_id=hid)
        for _ in range(8):
            stack.drain()
            sub_id = show(api, invocation["id"])["steps"][1]["subworkflow_invocation_id"]
            if sub_id and show(api, sub_id)["steps"][2]["state"] == "ready":
                break
        assert show(api, sub_id)["state"] == "ready"
        started.append((invocation["id"], sub_id))
    (parent, sub), (other_parent, other_sub) = started
    api.delete(f"/api/invocations/{parent}")
    api.delete(f"/api/invocations/{other_sub}")
    stack.drain()
    stack.drain()
    assert show(api, parent)["state"] == "cancelled" and show(api, sub)["state"] == "cancelled"
    assert show(api, other_sub)["state"] == "cancelled"
    failed = show(api, other_parent)
    assert failed["state"] == "failed" and "ended cancelled" in failed["messages"][0]["details"]


# -- the scheduler driven by hand: budgets and crashes --------------------------------------


@pytest.fixture
def world(data_dir):
    settings = make_settings(data_dir)
    upgrade(settings)
    made = World(settings)
    with made.services.session_factory() as session:
        user = session.get(User, made.user_id)
        made.stored_id = workflows.create_workflow(
            session, user, workflows.parse_description(load("subworkflow_map.gxwf.yml"))).id
        session.commit()
    yield made
    made.services.engine.dispose()


def test_mapped_subinvocation_respects_the_budget_and_never_makes_a_job_twice(world, monkeypatch):
    capped = world.settings.model_copy(update={"maximum_workflow_jobs_per_scheduling_iteration": 2})
    parent = world.invoke()
    real_start = invocations.create_invocation_rows

    def start_then_die(*args, **kwargs):
        real_start(*args, **kwargs)
        raise Killed()

    monkeypatch.setattr(invocations, "create_invocation_rows", start_then_die)
    with pytest.raises(Killed):
        world.advance(parent, capped)
    monkeypatch.setattr(invocations, "create_invocation_rows", real_start)
    world.advance(parent, capped)
    world.advance(parent, capped)
    with world.services.session_factory() as session:
        [sub] = session.scalars(sa.select(WorkflowInvocation.id).where(WorkflowInvocation.parent_invocation_id == parent))
    real = mapping.add_leaves

    def die(*args, **kwargs):
        real(*args, **kwargs)
        raise Killed()

    monkeypatch.setattr(mapping, "add_leaves", die)
    with pytest.raises(Killed):
        world.advance(sub, capped)
    assert world.jobs(sub) == []
    monkeypatch.setattr(mapping, "add_leaves", real)
    world.advance(sub, capped)
    assert world.jobs(sub) == [0, 1]
    for _ in range(4):
        world.advance(sub, capped)
    assert world.jobs(sub) == [0, 1, 2, 3, 4]
    assert world.state(sub) == "scheduled"
