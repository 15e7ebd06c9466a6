"""Resumable (tus) uploads: protocol, ownership, and use from the fetch API."""

from __future__ import annotations

import base64


def _create(api, length: int, name: str = "data.txt"):
    meta = f"filename {base64.b64encode(name.encode()).decode()}"
    return api.post("/api/upload/resumable_upload/", headers={"Upload-Length": str(length), "Upload-Metadata": meta,
                                                              "Tus-Resumable": "1.0.0"})


def _patch(api, location: str, offset: int, data: bytes):
    return api.client.patch(location, data=data, headers={
        "x-api-key": api.key, "Upload-Offset": str(offset), "Tus-Resumable": "1.0.0",
        "Content-Type": "application/offset+octet-stream"})


def test_chunks_then_fetch(stack):
    api = stack.client(stack.user_key("alice"))
    created = _create(api, 10)
    assert created.status_code == 201
    location = created.headers["Location"]
    assert _patch(api, location, 0, b"hello").status_code == 204
    assert api.client.head(location, headers={"x-api-key": api.key}).headers["Upload-Offset"] == "5"
    assert _patch(api, location, 3, b"xx").status_code == 409
    assert _patch(api, location, 5, b"world!").status_code == 413
    assert _patch(api, location, 5, b"world").status_code == 204
    session = location.rsplit("/", 1)[1]
    history = api.post("/api/histories", json={"name": "tus"}).json["id"]
    fetched = api.post("/api/tools/fetch", json={
        "history_id": history, "targets": [{"destination": {"type": "hdas"}, "elements": [
            {"src": "files", "ext": "auto", "name": "data.txt", "to_posix_lines": False}]}],
        "files_0|file_data": {"session_id": session, "name": "data.txt"}})
    assert fetched.status_code == 200, fetched.json
    stack.drain()
    dataset = api.get(f"/api/datasets/{fetched.json['outputs'][0]['id']}").json
    assert dataset["state"] == "ok" and api.get(dataset["download_url"]).data == b"helloworld"
    again = api.post("/api/tools/fetch", json={
        "history_id": history, "targets": [{"destination": {"type": "hdas"}, "elements": [{"src": "files"}]}],
        "files_0|file_data": {"session_id": session}})
    assert again.status_code == 404, "a consumed upload cannot be used twice"


def test_uploads_belong_to_their_user(stack):
    alice = stack.client(stack.user_key("alice"))
    bob = stack.client(stack.user_key("bob"))
    location = _create(alice, 3).headers["Location"]
    assert _patch(bob, location, 0, b"abc").status_code == 404
    assert bob.client.head(location, headers={"x-api-key": bob.key}).status_code == 404
    assert _patch(alice, location, 0, b"ab").status_code == 204
    history = bob.post("/api/histories", json={}).json["id"]
    session = location.rsplit("/", 1)[1]
    stolen = bob.post("/api/tools/fetch", json={
        "history_id": history, "targets": [{"destination": {"type": "hdas"}, "elements": [{"src": "files"}]}],
        "files_0|file_data": {"session_id": session}})
    assert stolen.status_code == 404
    mine = alice.post("/api/histories", json={}).json["id"]
    unfinished = alice.post("/api/tools/fetch", json={
        "history_id": mine, "targets": [{"destination": {"type": "hdas"}, "elements": [{"src": "files"}]}],
        "files_0|file_data": {"session_id": session}})
    assert unfinished.status_code == 409


def test_bad_tus_requests(stack):
    api = stack.client(stack.user_key("alice"))
    assert api.post("/api/upload/resumable_upload/", headers={"Upload-Length": "x"}).status_code == 400
    assert api.post("/api/upload/resumable_upload/", headers={"Upload-Length": str(10**15)}).status_code == 413
    assert _patch(api, "/api/upload/resumable_upload/../../etc", 0, b"x").status_code == 404
    assert _patch(api, "/api/upload/resumable_upload/" + "0" * 32, 0, b"x").status_code == 404
    assert stack.client(key=None).post("/api/upload/resumable_upload/", headers={"Upload-Length": "1"}).status_code == 403
