"""BioBlend 1.9 drives workflows over real HTTP: import, show, export, invoke, pause actions, cancel, summaries."""

from __future__ import annotations

import pytest

bioblend = pytest.importorskip("bioblend")
from bioblend.galaxy import GalaxyInstance  # noqa: E402
from bioblend.galaxy.objects import GalaxyInstance as ObjectsInstance  # noqa: E402

from tests.app.conftest import ADMIN_KEY  # noqa: E402
from tests.app.test_bioblend import _drain_until, served  # noqa: E402, F401 - the fixture
from tests.app.test_workflows import load  # noqa: E402


def _user(served_url: str) -> GalaxyInstance:
    admin = GalaxyInstance(served_url, key=ADMIN_KEY)
    user = admin.users.create_local_user("alice", "alice@example.org", "secret-password")
    return GalaxyInstance(served_url, key=admin.users.create_user_apikey(user["id"]))


def _paused(gi: GalaxyInstance, invocation_id: str) -> dict | None:
    steps = gi.invocations.show_invocation(invocation_id)["steps"]
    return next((s for s in steps if s["state"] == "ready" and s["action"] is None and s["order_index"] == 2), None)


def test_bioblend_pause_workflow_continue_and_cancel(stack, served):
    gi = _user(served)
    workflow = gi.workflows.import_workflow_dict(load("pause_review.ga"))
    assert workflow["name"] == "Review before continuing"
    shown = gi.workflows.show_workflow(workflow["id"])
    assert gi.workflows.get_workflow_inputs(workflow["id"], "input dataset") == ["0"]
    assert shown["steps"]["2"]["type"] == "pause"
    assert gi.workflows.export_workflow_dict(workflow["id"])["a_galaxy_workflow"] == "true"
    assert gi.workflows.export_workflow_dict(workflow["id"], style="format2")["class"] == "GalaxyWorkflow"
    history = gi.histories.create_history("pause")
    data = gi.tools.paste_content("hello", history["id"])["outputs"][0]["id"]
    _drain_until(stack, lambda: gi.datasets.show_dataset(data)["state"] == "ok")

    # action: true — scheduling continues
    invocation = gi.workflows.invoke_workflow(workflow["id"], inputs={"0": {"src": "hda", "id": data}},
                                              history_id=history["id"])
    assert invocation["state"] == "new"
    _drain_until(stack, lambda: _paused(gi, invocation["id"]) is not None)
    pause = _paused(gi, invocation["id"])
    assert gi.invocations.show_invocation_step(invocation["id"], pause["id"])["action"] is None
    gi.invocations.run_invocation_step_action(invocation["id"], pause["id"], True)
    _drain_until(stack, lambda: gi.invocations.show_invocation(invocation["id"])["state"] == "completed")
    done = gi.invocations.wait_for_invocation(invocation["id"], interval=0.1)
    assert done["state"] == "completed"
    assert gi.invocations.get_invocation_summary(invocation["id"])["states"] == {"ok": 2}
    assert len(gi.invocations.get_invocation_step_jobs_summary(invocation["id"])) == 2
    assert "Workflow Inputs" in gi.invocations.get_invocation_report(invocation["id"])["markdown"]

    # action: false, through the workflows client's /invocations paths — cancelled on review
    second = gi.workflows.invoke_workflow(workflow["id"], inputs={"0": {"src": "hda", "id": data}},
                                          history_id=history["id"])
    _drain_until(stack, lambda: _paused(gi, second["id"]) is not None)
    pause = _paused(gi, second["id"])
    gi.workflows.run_invocation_step_action(workflow["id"], second["id"], pause["id"], False)
    _drain_until(stack, lambda: gi.invocations.show_invocation(second["id"])["state"] == "cancelled")
    cancelled = gi.workflows.show_invocation(workflow["id"], second["id"])
    assert cancelled["messages"] == [{"reason": "cancelled_on_review", "workflow_step_id": 2}]
    assert [i["id"] for i in gi.workflows.get_invocations(workflow["id"])] == [second["id"], invocation["id"]]

    # cancel through the API
    third = gi.workflows.invoke_workflow(workflow["id"], inputs={"0": {"src": "hda", "id": data}},
                                         history_id=history["id"])
    assert gi.invocations.cancel_invocation(third["id"])["state"] == "cancelling"
    _drain_until(stack, lambda: gi.invocations.show_invocation(third["id"])["state"] == "cancelled")
    assert gi.invocations.get_invocations(workflow_id=workflow["id"], include_terminal=False) == []


def test_bioblend_objects_map_over_and_rerun_request(stack, served):
    gi = _user(served)
    objects = ObjectsInstance(served, gi.key)
    workflow = objects.workflows.import_new(load("chain.gxwf.yml"))
    assert workflow.name == "Three cats in a row" and workflow.missing_ids == []
    history = objects.histories.create("objects")
    dataset = history.paste_content("one\n")
    _drain_until(stack, lambda: gi.datasets.show_dataset(dataset.id)["state"] == "ok")
    invocation = workflow.invoke(inputs={"0": dataset}, history=history)
    assert invocation.state == "new" and len(invocation.steps) == 4
    _drain_until(stack, lambda: invocation.refresh().state == "completed")
    assert invocation.step_states() == {"scheduled"}
    request = gi.invocations.get_invocation_request(invocation.id)
    assert request["inputs"]["0"]["src"] == "hda"
