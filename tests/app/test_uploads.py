"""Uploads as tasks: upload1 paste and multipart, the fetch API, the pipeline and its errors."""

from __future__ import annotations

import io

import sqlalchemy as sa

from app.models import Dataset, Job


def _history(api) -> str:
    return api.post("/api/histories", json={"name": "uploads"}).json["id"]


def _paste(api, history_id: str, text: str, **extra) -> dict:
    inputs = {"file_type": "auto", "dbkey": "?", "files_0|type": "upload_dataset", "files_0|url_paste": text}
    inputs.update({f"files_0|{k}": v for k, v in extra.items()})
    response = api.post("/api/tools", json={"history_id": history_id, "tool_id": "upload1", "inputs": inputs})
    assert response.status_code == 200, response.json
    return response.json


def test_paste_answers_at_once_with_queued_outputs(stack):
    api = stack.client(stack.user_key("alice"))
    hid = _history(api)
    result = _paste(api, hid, "hello\r\nworld")
    output = result["outputs"][0]
    assert output["state"] == "queued" and output["name"] == "Pasted Entry" and output["hid"] == 1
    assert result["jobs"][0]["state"] == "queued"
    stack.drain()
    shown = api.get(f"/api/datasets/{output['id']}").json
    assert shown["state"] == "ok" and shown["extension"] == "txt" and shown["metadata_data_lines"] == 2
    assert "?" not in shown["download_url"]
    body = api.get(shown["download_url"]).data
    assert body == b"hello\nworld\n"
    job = api.get(f"/api/histories/{hid}").json
    assert job["state"] == "ok" and job["count"] == 1


def test_space_to_tab_and_tabular_sniffing(stack):
    api = stack.client(stack.user_key("alice"))
    hid = _history(api)
    out = _paste(api, hid, "a 1  x\nb 3 y\n", space_to_tab=True)["outputs"][0]
    stack.drain()
    shown = api.get(f"/api/datasets/{out['id']}").json
    assert shown["extension"] == "tabular"
    assert api.get(shown["download_url"]).data == b"a\t1\tx\nb\t3\ty\n"
    attachment = api.get(shown["download_url"] + "?to_ext=tabular")
    assert attachment.headers["Content-Disposition"].startswith("attachment")


def test_hids_count_up(stack):
    api = stack.client(stack.user_key("alice"))
    hid = _history(api)
    hids = [_paste(api, hid, f"line {i}")["outputs"][0]["hid"] for i in range(3)]
    assert hids == [1, 2, 3]
    stack.drain()
    contents = api.get(f"/api/histories/{hid}/contents").json
    assert [c["hid"] for c in contents] == [1, 2, 3]
    assert {c["history_content_type"] for c in contents} == {"dataset"}


def test_multipart_file_upload_keeps_bytes(stack):
    api = stack.client(stack.user_key("alice"))
    hid = _history(api)
    payload = bytes(range(256)) * 10
    response = api.post(
        "/api/tools",
        data={"history_id": hid, "tool_id": "upload1",
              "inputs": '{"file_type": "auto", "files_0|type": "upload_dataset", "files_0|to_posix_lines": false}',
              "files_0|file_data": (io.BytesIO(payload), "../../etc/evil.bin")},
        content_type="multipart/form-data",
    )
    assert response.status_code == 200, response.json
    out = response.json["outputs"][0]
    assert out["name"] == "evil.bin"
    stack.drain()
    shown = api.get(f"/api/datasets/{out['id']}").json
    assert shown["state"] == "ok" and shown["extension"] == "data"
    assert api.get(shown["download_url"]).data == payload


def test_fetch_api_pasted_elements(stack):
    api = stack.client(stack.user_key("alice"))
    hid = _history(api)
    response = api.post("/api/tools/fetch", json={"history_id": hid, "targets": [{
        "destination": {"type": "hdas"},
        "elements": [{"src": "pasted", "paste_content": "x\ty\n", "ext": "tabular", "name": "one"},
                     {"src": "pasted", "paste_content": ">s\nACGT\n", "name": "two"}]}]})
    assert response.status_code == 200, response.json
    outputs = response.json["outputs"]
    assert [o["name"] for o in outputs] == ["one", "two"]
    stack.drain()
    shown = [api.get(f"/api/datasets/{o['id']}").json for o in outputs]
    assert [s["extension"] for s in shown] == ["tabular", "fasta"]
    assert all(s["state"] == "ok" for s in shown)


def break_uploads(stack, monkeypatch) -> None:
    """Every upload fails for good at its fetch step ("disk on fire"), with no retries."""
    from app.services import uploads

    def broken(*args, **kwargs):
        raise OSError("disk on fire")

    monkeypatch.setattr(uploads, "normalize", broken)
    for actor in ("fetch_data", "setup_fetch_data", "set_job_metadata"):
        stack.broker.get_actor(actor).options["max_retries"] = 0


def test_failed_fetch_marks_outputs_error(stack, monkeypatch):
    break_uploads(stack, monkeypatch)
    api = stack.client(stack.user_key("alice"))
    hid = _history(api)
    out = _paste(api, hid, "data")["outputs"][0]
    stack.drain()
    shown = api.get(f"/api/datasets/{out['id']}").json
    assert shown["state"] == "error"
    assert "disk on fire" in shown["misc_info"]
    job = api.get(f"/api/histories/{hid}").json
    assert job["state"] == "error"


def test_redelivered_steps_do_nothing_twice(stack):
    from app.services import uploads

    api = stack.client(stack.user_key("alice"))
    hid = _history(api)
    out = _paste(api, hid, "once")["outputs"][0]
    stack.drain()
    with stack.services.session_factory() as session:
        job_id = session.scalar(sa.select(Job.id))
        assert uploads.setup_fetch_data(session, job_id) is False
        uploads.fetch_data(session, job_id, stack.services.object_store)
        uploads.set_job_metadata(session, job_id, stack.services.object_store, enqueuer=stack.services.enqueuer)
        uploads.finish_job_with_error(session, job_id, "late failure", enqueuer=stack.services.enqueuer)
        session.commit()
    shown = api.get(f"/api/datasets/{out['id']}").json
    assert shown["state"] == "ok" and api.get(shown["download_url"]).data == b"once\n"


def test_bad_uploads_write_nothing(stack):
    api = stack.client(stack.user_key("alice"))
    bob = stack.client(stack.user_key("bob"))
    hid = _history(api)
    cases = [
        {"history_id": hid, "tool_id": "upload1", "inputs": {}},
        {"history_id": hid, "tool_id": "upload1", "inputs": {"files_0|url_paste": "ftp://example.org/x"}} ,
        {"history_id": hid, "tool_id": "upload1", "inputs": "not a dict"},
        {"tool_id": "upload1", "inputs": {"files_0|url_paste": "x"}},
        {"history_id": "0123456789abcdef", "tool_id": "upload1", "inputs": {"files_0|url_paste": "x"}},
    ]
    for body in cases:
        response = api.post("/api/tools", json=body)
        assert 400 <= response.status_code < 500, (body, response.json)
    foreign = bob.post("/api/tools", json={"history_id": hid, "tool_id": "upload1", "inputs": {"files_0|url_paste": "x"}})
    assert foreign.status_code == 404
    bad_fetch = api.post("/api/tools/fetch", json={"history_id": hid, "targets": [
        {"destination": {"type": "hdas"}, "elements": [{"src": "pasted", "paste_content": "x", "ext": "../bad"}]}]})
    assert bad_fetch.status_code == 400
    with stack.services.engine.connect() as conn:
        assert conn.scalar(sa.select(sa.func.count()).select_from(Dataset)) == 0
        assert conn.scalar(sa.select(sa.func.count()).select_from(Job)) == 0
    assert not any((stack.settings.resolved_data_dir / "staging").glob("*/*"))


def test_other_users_dataset_is_404(stack):
    api = stack.client(stack.user_key("alice"))
    bob = stack.client(stack.user_key("bob"))
    hid = _history(api)
    out = _paste(api, hid, "secret")["outputs"][0]
    stack.drain()
    assert bob.get(f"/api/datasets/{out['id']}").status_code == 404
    assert bob.get(f"/api/datasets/{out['id']}/display").status_code == 404
    assert bob.get(out["download_url"]).status_code == 404
    assert bob.put(f"/api/datasets/{out['id']}", json={"name": "mine"}).status_code == 404
    assert api.get(f"/api/datasets/{out['id']}").json["name"] == "Pasted Entry"


def test_dataset_update_and_purge_removes_file(stack):
    api = stack.client(stack.user_key("alice"))
    hid = _history(api)
    out = _paste(api, hid, "bye")["outputs"][0]
    stack.drain()
    updated = api.put(f"/api/histories/{hid}/contents/{out['id']}", json={"name": "renamed", "visible": False})
    assert updated.json["name"] == "renamed" and updated.json["visible"] is False
    with stack.services.session_factory() as session:
        key = session.get(Dataset, stack.services.ids.decode(out["id"])).object_key
    path = stack.services.object_store.path(key)
    assert path.exists()
    purged = api.delete(f"/api/histories/{hid}/contents/{out['id']}", json={"purge": True})
    assert purged.json["purged"] is True
    stack.drain()
    assert not path.exists()
    assert api.put(f"/api/histories/{hid}/contents/{out['id']}", json={"deleted": False}).status_code == 409


def test_normalize_streams_across_chunk_boundaries(tmp_path):
    """Chunked normalising gives the same bytes whatever the chunk size."""
    from app.services.uploads import normalize

    text = b"a  b\r\nc \t d\re   f\r\n\r\nlast  line  "
    expected = {
        (True, True): b"a\tb\nc\td\ne\tf\n\nlast\tline\t\n",
        (True, False): b"a  b\nc \t d\ne   f\n\nlast  line  \n",
        (False, True): b"a\tb\r\nc\td\re\tf\r\n\r\nlast\tline\t",
    }
    source = tmp_path / "in"
    source.write_bytes(text)
    for (posix, tabs), want in expected.items():
        for chunk in (1, 2, 3, 5, 7, 1 << 20):
            target = tmp_path / "out"
            normalize(source, target, to_posix_lines=posix, space_to_tab=tabs, chunk_size=chunk)
            assert target.read_bytes() == want, (posix, tabs, chunk)
    binary = tmp_path / "bin"
    binary.write_bytes(b"\x00\r\n  x")
    normalize(binary, tmp_path / "out", to_posix_lines=True, space_to_tab=True)
    assert (tmp_path / "out").read_bytes() == b"\x00\r\n  x"


def test_an_upload_whose_pipeline_was_lost_is_finished_by_the_resend(stack):
    import datetime as dt

    from app.models.base import utcnow
    from app.services.uploads import resend_stalled_uploads

    api = stack.client(stack.user_key("alice"))
    hid = _history(api)
    lost = _paste(api, hid, "lost")["outputs"][0]
    stack.broker.flush_all()  # the pipeline's message never arrives
    done = _paste(api, hid, "done")["outputs"][0]
    stack.drain()
    assert api.get(f"/api/datasets/{lost['id']}").json["state"] == "queued"
    with stack.services.session_factory.begin() as session:
        assert resend_stalled_uploads(session, stack.services.enqueuer, stalled_after_s=60) == 0, "not stalled yet"
        session.execute(sa.update(Job).values(update_time=utcnow() - dt.timedelta(hours=1)))
    with stack.services.session_factory.begin() as session:
        assert resend_stalled_uploads(session, stack.services.enqueuer, stalled_after_s=60) == 1, "only the lost one"
    stack.drain()
    shown = api.get(f"/api/datasets/{lost['id']}").json
    assert shown["state"] == "ok" and api.get(shown["download_url"]).data == b"lost\n"
    assert api.get(f"/api/datasets/{done['id']}").json["state"] == "ok"
