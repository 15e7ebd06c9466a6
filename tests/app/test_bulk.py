"""PUT /api/histories/{id}/contents/bulk: operations, filters, per-item errors, tasks, bad input."""

from __future__ import annotations

import pytest

from app.services import bulk


def _history_with(stack, api, count: int) -> tuple[str, list[dict]]:
    history_id = api.post("/api/histories", json={"name": "bulk"}).json["id"]
    inputs = {"file_type": "txt", "files_0|type": "upload_dataset"}
    for i in range(count):
        inputs_i = dict(inputs, **{"files_0|url_paste": f"line {i}\n"})
        response = api.post("/api/tools", json={"history_id": history_id, "tool_id": "upload1", "inputs": inputs_i})
        assert response.status_code == 200
    stack.drain()
    return history_id, api.get(f"/api/histories/{history_id}/contents").json


def _bulk(api, history_id: str, **body):
    return api.put(f"/api/histories/{history_id}/contents/bulk", json=body)


def _items(datasets: list[dict]) -> list[dict]:
    return [{"id": d["id"], "history_content_type": "dataset"} for d in datasets]


def test_bulk_hide_hides_and_unhide_unhides(stack):
    api = stack.client(stack.user_key("alice"))
    history_id, datasets = _history_with(stack, api, 3)
    result = _bulk(api, history_id, operation="hide", items=_items(datasets[:2]))
    assert result.status_code == 200 and result.json["success_count"] == 2 and result.json["errors"] == []
    shown = {d["id"]: d["visible"] for d in api.get(f"/api/histories/{history_id}/contents").json}
    assert shown == {datasets[0]["id"]: False, datasets[1]["id"]: False, datasets[2]["id"]: True}
    again = _bulk(api, history_id, operation="unhide", filters={"visible": False})
    assert again.json["success_count"] == 2
    assert all(d["visible"] for d in api.get(f"/api/histories/{history_id}/contents").json)


def test_dbkey_datatype_and_tags(stack):
    api = stack.client(stack.user_key("alice"))
    history_id, datasets = _history_with(stack, api, 2)
    assert _bulk(api, history_id, operation="change_dbkey", items=_items(datasets),
                 params={"type": "change_dbkey", "dbkey": "hg38"}).json["success_count"] == 2
    assert _bulk(api, history_id, operation="change_datatype", items=_items(datasets[:1]),
                 params={"type": "change_datatype", "datatype": "tabular"}).json["success_count"] == 1
    assert _bulk(api, history_id, operation="add_tags", filters={}, params={"tags": ["a", "name:b"]}).json["success_count"] == 2
    assert _bulk(api, history_id, operation="remove_tags", items=_items(datasets[1:]), params={"tags": ["a"]}).json["success_count"] == 1
    first, second = api.get(f"/api/histories/{history_id}/contents").json
    shown = [api.get(f"/api/datasets/{d['id']}").json for d in (first, second)]
    assert [s["genome_build"] for s in shown] == ["hg38", "hg38"]
    assert [s["extension"] for s in shown] == ["tabular", "txt"]
    assert [s["tags"] for s in shown] == [["a", "name:b"], ["name:b"]]
    tagged = api.put(f"/api/histories/{history_id}/contents/bulk?q=tag&qv=a", json={"operation": "hide"})
    assert tagged.json["success_count"] == 1


def test_delete_undelete_purge_with_per_item_errors(stack):
    api = stack.client(stack.user_key("alice"))
    history_id, datasets = _history_with(stack, api, 3)
    path = stack.services.object_store.path
    with stack.services.session_factory() as session:
        from app.models import Dataset

        keys = {d["id"]: session.get(Dataset, stack.services.ids.decode(d["id"])).object_key for d in datasets}
    assert _bulk(api, history_id, operation="purge", items=_items(datasets[:1])).json["success_count"] == 1
    assert _bulk(api, history_id, operation="delete", items=_items(datasets[1:2])).json["success_count"] == 1
    stack.drain()
    assert not path(keys[datasets[0]["id"]]).exists()  # purge removes the file from disk
    assert path(keys[datasets[1]["id"]]).exists()
    undeleted = _bulk(api, history_id, operation="undelete", filters={"deleted": True})
    assert undeleted.json["success_count"] == 1
    (error,) = undeleted.json["errors"]
    assert error["item"] == {"id": datasets[0]["id"], "history_content_type": "dataset"}
    assert "purged" in error["error"]


def test_items_of_another_history_are_refused_and_nothing_changes(stack):
    alice = stack.client(stack.user_key("alice"))
    mine, my_datasets = _history_with(stack, alice, 1)
    other, other_datasets = _history_with(stack, alice, 1)
    refused = _bulk(alice, mine, operation="hide", items=_items(my_datasets + other_datasets))
    assert refused.status_code == 400 and other_datasets[0]["id"] in refused.json["err_msg"]
    assert all(d["visible"] for d in alice.get(f"/api/histories/{mine}/contents").json)
    bob = stack.client(stack.user_key("bob"))
    bobs = bob.post("/api/histories", json={"name": "bob's"}).json["id"]
    assert _bulk(bob, bobs, operation="delete", items=_items(my_datasets)).status_code == 400
    assert _bulk(bob, mine, operation="delete", filters={}).status_code == 404
    assert not alice.get(f"/api/datasets/{my_datasets[0]['id']}").json["deleted"]


@pytest.mark.parametrize("body", [
    {"operation": "explode", "filters": {}},
    {"operation": "hide"},
    {"operation": "change_dbkey", "filters": {}},
    {"operation": "change_datatype", "filters": {}, "params": {"datatype": "../x"}},
    {"operation": "add_tags", "filters": {}, "params": {"tags": []}},
    {"operation": "hide", "filters": {"colour": "red"}},
    {"operation": "hide", "filters": {"deleted": "maybe"}},
    {"operation": "hide", "filters": {}, "items": []},
])
def test_bad_bulk_input_is_a_400(stack, body):
    api = stack.client(stack.user_key("alice"))
    history_id = api.post("/api/histories", json={"name": "x"}).json["id"]
    response = _bulk(api, history_id, **body)
    assert response.status_code == 400, response.json
    assert response.json["err_msg"]


def test_large_selection_runs_as_a_task(stack, monkeypatch):
    monkeypatch.setattr(bulk, "SYNC_LIMIT", 2)
    api = stack.client(stack.user_key("alice"))
    history_id, datasets = _history_with(stack, api, 4)
    response = _bulk(api, history_id, operation="hide", filters={"deleted": False})
    assert response.status_code == 200
    task_id = response.json["task"]["id"]
    assert response.json["task"]["items"] == 4
    assert all(d["visible"] for d in api.get(f"/api/histories/{history_id}/contents").json)
    stack.drain()
    result = api.get(f"/api/tasks/{task_id}/result").json
    assert result["state"] == "SUCCESS" and result["result"]["success_count"] == 4
    assert not any(d["visible"] for d in api.get(f"/api/histories/{history_id}/contents").json)
