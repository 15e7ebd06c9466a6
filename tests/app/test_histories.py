"""Histories and their contents, ownership and bad input."""

from __future__ import annotations

import pytest
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


def test_counts_take_in_datasets_and_collections_in_two_queries(stack):
    from app.services.histories import contents_tally, history_view, nice_size
    from tests.app.test_invocations import make_list, paste

    api = stack.client(stack.user_key("alice"))
    hid = api.post("/api/histories", json={"name": "counted"}).json["id"]
    shown, hidden, deleted, purged, both = (paste(api, hid, t) for t in ("a\n", "bb\n", "ccc\n", "dddd\n", "e\n"))
    stack.drain()
    for item, change in ((hidden, {"visible": False}), (both, {"visible": False})):
        assert api.put(f"/api/histories/{hid}/contents/{item}", json=change).status_code == 200
    assert api.delete(f"/api/histories/{hid}/contents/{deleted}").status_code == 200
    assert api.delete(f"/api/histories/{hid}/contents/{both}").status_code == 200
    assert api.delete(f"/api/histories/{hid}/contents/{purged}", json={"purge": True}).status_code == 200
    lists = (["x\n", "y\n"], ["z\n"], ["w\n"])
    kept, hidden_list, deleted_list = (make_list(stack, api, hid, texts) for texts in lists)
    collection_url = f"/api/histories/{hid}/contents/dataset_collections"
    assert api.put(f"{collection_url}/{hidden_list}", json={"visible": False}).status_code == 200
    assert api.delete(f"{collection_url}/{deleted_list}").status_code == 200

    view = api.get(f"/api/histories/{hid}").json
    assert view["count"] == 12  # 9 datasets, 3 collections, deleted ones included (Galaxy: hid_counter - 1)
    assert view["contents_active"] == {"active": 6, "deleted": 4, "hidden": 3}  # 'both' counts twice
    assert view["contents_states"] == {"ok": 6}  # a, x, y, z, w and the kept list
    assert view["size"] == 19 and view["nice_size"] == "19 bytes"  # all but the purged 'dddd\n'
    assert [h["contents_active"] for h in api.get("/api/histories").json] == [view["contents_active"]]

    statements: list[str] = []
    listen = lambda *args: statements.append(args[2])  # noqa: E731
    sa.event.listen(stack.services.engine, "before_cursor_execute", listen)
    try:
        with stack.services.session_factory() as session:
            history = session.get(History, stack.services.ids.decode(hid))
            statements.clear()
            assert history_view(session, history, stack.services.ids).contents_active == view["contents_active"]
            assert len(statements) == 2  # the datasets' states and one aggregate over all contents
            empty = History(user_id=history.user_id, name="empty")
            session.add(empty)
            session.flush()
            assert contents_tally(session, empty.id).active == {"active": 0, "deleted": 0, "hidden": 0}
    finally:
        sa.event.remove(stack.services.engine, "before_cursor_execute", listen)
    assert [nice_size(n) for n in (0, 1023, 10000, 1000000, 100000000)] == [
        "0 bytes", "1023 bytes", "9.8 KB", "976.6 KB", "95.4 MB"]


@pytest.mark.postgres
def test_contents_tally_on_postgresql(pg_url, data_dir):
    from app.migrate import upgrade
    from app.models import Dataset, User
    from app.services import collections
    from app.services.histories import contents_tally
    from app.services.registry import build_services
    from tests.app.conftest import make_settings

    settings = make_settings(data_dir, database_url=pg_url)
    upgrade(settings)
    services = build_services(settings)
    try:
        with services.session_factory.begin() as session:
            user = User(username="u", email="u@example.org")
            session.add(user)
            session.flush()
            history = History(user_id=user.id, hid_counter=4)
            session.add(history)
            session.flush()
            rows = [Dataset(history_id=history.id, user_id=user.id, hid=i, name=str(i), state="ok",
                            file_size=10 * i, visible=i != 2) for i in (1, 2)]
            session.add_all(rows)
            session.flush()
            collections.create_collection(session, user=user, history=history, collection_type="list", name="l",
                                          elements=[collections.ElementSpec("e", dataset_id=rows[0].id)], hid=3)
            session.flush()
            tally = contents_tally(session, history.id)
    finally:
        services.engine.dispose()
    assert tally.active == {"active": 2, "deleted": 0, "hidden": 1}
    assert tally.states == {"ok": 2} and tally.size == 30
