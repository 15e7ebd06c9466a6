"""History archives through short-term storage, the legacy export routes, and their bad input."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import zipfile

import pytest


def _history(api, name="exported") -> str:
    return api.post("/api/histories", json={"name": name}).json["id"]


def _upload(api, history_id: str, payload: bytes, name: str) -> dict:
    response = api.post(
        "/api/tools",
        data={"history_id": history_id, "tool_id": "upload1",
              "inputs": json.dumps({"file_type": "auto", "files_0|type": "upload_dataset",
                                    "files_0|to_posix_lines": False, "files_0|NAME": name}),
              "files_0|file_data": (io.BytesIO(payload), name)},
        content_type="multipart/form-data",
    )
    assert response.status_code == 200, response.json
    return response.json["outputs"][0]


def _prepare(api, history_id: str, **body) -> dict:
    response = api.post(f"/api/histories/{history_id}/prepare_store_download", json=body)
    assert response.status_code == 200, response.json
    return response.json


def _members(data: bytes, fmt: str) -> dict[str, bytes]:
    if fmt == "zip":
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            return {name: zf.read(name) for name in zf.namelist()}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}


@pytest.fixture
def filled(stack):
    """Alice's history with a text, a binary and a hidden dataset, all ok."""
    api = stack.client(stack.user_key("alice"))
    history_id = _history(api)
    contents = {
        "a.txt": b"alpha\nbeta\n",
        "b.bin": bytes(range(256)) * 400,
        "c.tsv": b"x\t1\ny\t2\n",
    }
    outputs = {name: _upload(api, history_id, data, name) for name, data in contents.items()}
    stack.drain()
    api.put(f"/api/histories/{history_id}/contents/{outputs['c.tsv']['id']}", json={"visible": False})
    return api, history_id, contents, outputs


@pytest.mark.parametrize("fmt", ["tar.gz", "tar", "zip"])
def test_archive_holds_every_dataset_byte_exact_and_a_manifest(stack, filled, fmt):
    api, history_id, contents, _ = filled
    prepared = _prepare(api, history_id, model_store_format=fmt, include_hidden=True)
    request_id, task_id = prepared["storage_request_id"], prepared["task"]["id"]
    assert api.get(f"/api/short_term_storage/{request_id}/ready").json is False
    assert api.get(f"/api/tasks/{task_id}/state").json == "PENDING"
    stack.drain()
    assert api.get(f"/api/short_term_storage/{request_id}/ready").json is True
    assert api.get(f"/api/tasks/{task_id}/state").json == "SUCCESS"
    download = api.get(f"/api/short_term_storage/{request_id}")
    assert download.status_code == 200
    assert download.headers["Content-Disposition"].startswith("attachment")
    assert download.mimetype == {"tar.gz": "application/x-gzip", "tar": "application/x-tar", "zip": "application/zip"}[fmt]
    members = _members(download.data, fmt)
    manifest = json.loads(members["manifest.json"])
    assert manifest["format"] == "nebula.history_archive" and manifest["history"]["name"] == "exported"
    by_name = {d["name"]: d for d in manifest["datasets"]}
    assert set(by_name) == set(contents)
    for name, data in contents.items():
        entry = by_name[name]
        assert members[entry["file"]["path"]] == data
        assert entry["file"]["sha256"] == hashlib.sha256(data).hexdigest()
        assert entry["creating_job"] in {j["key"] for j in manifest["jobs"]}
    assert by_name["c.tsv"]["visible"] is False
    assert {j["tool_id"] for j in manifest["jobs"]} == {"upload1"}
    assert all("stage_dir" not in j["params"] for j in manifest["jobs"])


def test_hidden_and_deleted_are_left_out_unless_asked(stack, filled):
    api, history_id, contents, outputs = filled
    api.delete(f"/api/histories/{history_id}/contents/{outputs['a.txt']['id']}")
    request_id = _prepare(api, history_id)["storage_request_id"]
    stack.drain()
    manifest = json.loads(_members(api.get(f"/api/short_term_storage/{request_id}").data, "tar.gz")["manifest.json"])
    assert [d["name"] for d in manifest["datasets"]] == ["b.bin"]
    request_id = _prepare(api, history_id, include_deleted=True, include_hidden=True, include_files=False)["storage_request_id"]
    stack.drain()
    members = _members(api.get(f"/api/short_term_storage/{request_id}").data, "tar.gz")
    manifest = json.loads(members["manifest.json"])
    assert sorted(d["name"] for d in manifest["datasets"]) == sorted(contents)
    assert list(members) == ["manifest.json"] and all(d["file"] is None for d in manifest["datasets"])


def test_progress_is_recorded(stack, filled):
    api, history_id, _, _ = filled
    task_id = _prepare(api, history_id)["task"]["id"]
    stack.drain()
    result = api.get(f"/api/tasks/{task_id}/result").json
    assert result["state"] == "SUCCESS" and result["progress"] == 1.0
    assert result["result"]["files"] == 2


def test_another_user_can_neither_prepare_nor_fetch(stack, filled):
    api, history_id, _, _ = filled
    bob = stack.client(stack.user_key("bob"))
    refused = bob.post(f"/api/histories/{history_id}/prepare_store_download", json={})
    assert refused.status_code == 404
    request_id = _prepare(api, history_id)["storage_request_id"]
    stack.drain()
    assert bob.get(f"/api/short_term_storage/{request_id}/ready").status_code == 404
    assert bob.get(f"/api/short_term_storage/{request_id}").status_code == 404
    assert stack.client(None).get(f"/api/short_term_storage/{request_id}").status_code in (401, 403)


def test_bad_input(stack, filled):
    api, history_id, _, _ = filled
    bad = api.post(f"/api/histories/{history_id}/prepare_store_download", json={"model_store_format": "rar"})
    assert bad.status_code == 400 and "rar" in bad.json["err_msg"]
    assert api.post("/api/histories/0123456789abcdef/prepare_store_download", json={}).status_code == 404
    assert api.get("/api/short_term_storage/../../etc/passwd").status_code == 404
    assert api.get("/api/short_term_storage/" + "0" * 32).status_code == 404
    too_long = api.post(f"/api/histories/{history_id}/prepare_store_download", json={"duration": 10**9})
    assert too_long.status_code == 400


def test_not_ready_answers_202_and_redelivery_does_nothing(stack, filled):
    api, history_id, _, _ = filled
    prepared = _prepare(api, history_id)
    request_id = prepared["storage_request_id"]
    assert api.get(f"/api/short_term_storage/{request_id}").status_code == 202
    stack.drain()
    first = api.get(f"/api/short_term_storage/{request_id}").data
    # The same message again (at-least-once delivery): the finished marker makes it a no-op.
    from app.exports.history import prepare_history_archive
    from app.exports.manifest import ExportOptions
    from app.shortterm import ShortTermStorage

    with stack.services.session_factory() as session:
        result = prepare_history_archive(
            session, ShortTermStorage.from_settings(stack.settings), stack.services.object_store,
            storage_request_id=request_id, history_id=stack.services.ids.decode(history_id),
            model_store_format="tar.gz", options=ExportOptions())
    assert result["already_done"] is True
    assert api.get(f"/api/short_term_storage/{request_id}").data == first


def test_failed_task_error_is_served(stack, filled, monkeypatch):
    api, history_id, _, _ = filled
    from app.exports import history as history_export
    from app.exports.errors import ExportError

    def explode(*args, **kwargs):
        raise ExportError("the disk is on fire")

    monkeypatch.setattr(history_export, "select_history", explode)
    prepared = _prepare(api, history_id)
    stack.drain()
    request_id = prepared["storage_request_id"]
    assert api.get(f"/api/short_term_storage/{request_id}/ready").json is True
    failed = api.get(f"/api/short_term_storage/{request_id}")
    assert failed.status_code == 409 and "the disk is on fire" in failed.json["err_msg"]
    assert api.get(f"/api/tasks/{prepared['task']['id']}/state").json == "FAILURE"


def test_legacy_export_202_then_200_and_a_tar(stack, filled):
    api, history_id, contents, _ = filled
    first = api.put(f"/api/histories/{history_id}/exports?gzip=False&include_hidden=True&include_deleted=False")
    assert first.status_code == 202
    again = api.put(f"/api/histories/{history_id}/exports?gzip=False&include_hidden=True&include_deleted=False")
    assert again.status_code == 202 and again.json["id"] == first.json["id"]
    stack.drain()
    ready = api.put(f"/api/histories/{history_id}/exports?gzip=False&include_hidden=True&include_deleted=False")
    assert ready.status_code == 200 and ready.json["id"] == first.json["id"]
    url = ready.json["download_url"]
    assert url.endswith("/" + ready.json["id"])
    download = api.get(url)
    assert download.status_code == 200
    with tarfile.open(fileobj=io.BytesIO(download.data), mode="r:") as tar:  # a plain tar
        names = tar.getnames()
    assert "manifest.json" in names and len(names) == len(contents) + 1
    listed = api.get(f"/api/histories/{history_id}/exports").json
    assert [e["id"] for e in listed] == [first.json["id"]]
    # A change to the history makes the export stale: the next PUT starts a new one.
    _upload(api, history_id, b"new\n", "d.txt")
    fresh = api.put(f"/api/histories/{history_id}/exports?gzip=False&include_hidden=True")
    assert fresh.status_code == 202 and fresh.json["id"] != first.json["id"]
    bob = stack.client(stack.user_key("bob"))
    assert bob.get(url).status_code == 404
    assert bob.put(f"/api/histories/{history_id}/exports").status_code == 404
