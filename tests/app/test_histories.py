"""Histories and their contents, ownership and bad input."""

from __future__ import annotations

import sqlalchemy as sa

from app.models import History


def test_create_show_list_update(stack):
    api = stack.client(stack.user_key("alice"))
    created = api.post("/api/histories", json={"name": "first"})
    assert created.status_code == 200
    history = created.json
    assert history["name"] == "first" and history["state"] == "new" and history["url"].endswith(history["id"])
    shown = api.get(f"/api/histories/{history['id']}").json
    assert shown["id"] == history["id"] and shown["count"] == 0
    renamed = api.put(f"/api/histories/{history['id']}", json={"name": "renamed", "tags": ["a"]})
    assert renamed.json["name"] == "renamed" and renamed.json["tags"] == ["a"]
    listed = api.get("/api/histories").json
    assert [h["id"] for h in listed] == [history["id"]]


def test_delete_and_purge(stack):
    api = stack.client(stack.user_key("alice"))
    hid = api.post("/api/histories", json={"name": "x"}).json["id"]
    deleted = api.delete(f"/api/histories/{hid}", json={})
    assert deleted.status_code == 200 and deleted.json["deleted"] is True and deleted.json["purged"] is False
    assert api.get("/api/histories").json == []
    assert [h["id"] for h in api.get("/api/histories?deleted=True").json] == [hid]
    undeleted = api.post(f"/api/histories/deleted/{hid}/undelete")
    assert undeleted.json["deleted"] is False
    purged = api.delete(f"/api/histories/{hid}", json={"purge": True})
    assert purged.json["purged"] is True


def test_another_users_history_is_404_and_unchanged(stack):
    alice = stack.client(stack.user_key("alice"))
    bob = stack.client(stack.user_key("bob"))
    hid = alice.post("/api/histories", json={"name": "mine"}).json["id"]
    assert bob.get(f"/api/histories/{hid}").status_code == 404
    assert bob.put(f"/api/histories/{hid}", json={"name": "stolen"}).status_code == 404
    assert bob.delete(f"/api/histories/{hid}").status_code == 404
    assert bob.get(f"/api/histories/{hid}/contents").status_code == 404
    assert bob.get("/api/histories").json == []
    assert alice.get(f"/api/histories/{hid}").json["name"] == "mine"


def test_bad_input_is_4xx_and_writes_nothing(stack):
    api = stack.client(stack.user_key("alice"))
    malformed = api.post("/api/histories", data="{not json", headers={"Content-Type": "application/json"})
    assert malformed.status_code == 400 and "malformed JSON" in malformed.json["err_msg"]
    wrong_type = api.post("/api/histories", json={"name": ["a", "list"]})
    assert wrong_type.status_code == 400 and "name" in wrong_type.json["err_msg"]
    too_long = api.post("/api/histories", json={"name": "x" * 300})
    assert too_long.status_code == 400
    huge = api.post("/api/histories", data="{" + " " * (2 * 1024 * 1024) + "}", headers={"Content-Type": "application/json"})
    assert huge.status_code == 413
    not_object = api.post("/api/histories", json=[1, 2])
    assert not_object.status_code == 400
    for bad_id in ("nope", "0000000000000000", "../../etc/passwd", "ffffffffffffffff"):
        response = api.get(f"/api/histories/{bad_id}")
        assert response.status_code == 404, bad_id
        assert "err_msg" in response.json
    with stack.services.engine.connect() as conn:
        assert conn.scalar(sa.select(sa.func.count()).select_from(History)) == 0


def test_get_with_json_content_type_and_no_body(stack):
    api = stack.client(stack.user_key("alice"))
    response = api.get("/api/histories", headers={"Content-Type": "application/json"})
    assert response.status_code == 200
    hid = api.post("/api/histories", json={}).json["id"]
    assert api.delete(f"/api/histories/{hid}", headers={"Content-Type": "application/json"}).status_code == 200


def test_unknown_route_and_method_are_json(stack):
    api = stack.client(stack.user_key("alice"))
    assert api.get("/api/nothing-here").json["err_code"] == 404001
    assert api.put("/api/version").status_code == 405


def test_openapi_document_lists_endpoints(stack):
    doc = stack.client(key=None).get("/api/openapi.json").json
    assert doc["openapi"].startswith("3.")
    assert "post" in doc["paths"]["/api/histories"]
    assert "HistoryView" in doc["components"]["schemas"]


def test_json_sent_as_form_content_type_is_read(stack):
    api = stack.client(stack.user_key("alice"))
    response = api.post("/api/histories", data='{"name": "curl style"}',
                        headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert response.status_code == 200 and response.json["name"] == "curl style"
