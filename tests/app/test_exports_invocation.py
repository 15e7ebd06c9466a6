"""Invocation archives (zip, tar.gz, rocrate.zip) and the report PDF."""

from __future__ import annotations

import io
import json
import tarfile
import zipfile

import pytest

CHAIN = {
    "class": "GalaxyWorkflow",
    "label": "Two cats",
    "inputs": {"start": "data"},
    "outputs": {"last": {"outputSource": "c2/out_file1"}},
    "steps": {
        "c1": {"tool_id": "cat1", "in": {"input1": "start"}},
        "c2": {"tool_id": "cat1", "in": {"input1": "c1/out_file1"}},
    },
}


@pytest.fixture
def finished(stack):
    """Alice's completed invocation of a two-step chain over one pasted dataset."""
    api = stack.client(stack.user_key("alice"))
    workflow = api.post("/api/workflows/upload", json={"workflow": CHAIN})
    assert workflow.status_code == 200, workflow.json
    history_id = api.post("/api/histories", json={"name": "work"}).json["id"]
    pasted = api.post("/api/tools", json={"history_id": history_id, "tool_id": "upload1", "inputs": {
        "file_type": "txt", "files_0|type": "upload_dataset", "files_0|url_paste": "hello\n"}}).json
    stack.drain()
    invoked = api.post(f"/api/workflows/{workflow.json['id']}/invocations", json={
        "history_id": history_id, "inputs": {"0": {"src": "hda", "id": pasted["outputs"][0]["id"]}}})
    assert invoked.status_code == 200, invoked.json
    for _ in range(6):
        stack.drain()
        if api.get(f"/api/invocations/{invoked.json['id']}").json["state"] == "completed":
            break
    assert api.get(f"/api/invocations/{invoked.json['id']}").json["state"] == "completed"
    return api, invoked.json["id"]


def _prepare(stack, api, invocation_id: str, fmt: str, **flags) -> bytes:
    response = api.post(f"/api/invocations/{invocation_id}/prepare_store_download",
                        json={"model_store_format": fmt, **flags})
    assert response.status_code == 200, response.json
    stack.drain()
    request_id = response.json["storage_request_id"]
    assert api.get(f"/api/short_term_storage/{request_id}/ready").json is True
    download = api.get(f"/api/short_term_storage/{request_id}")
    assert download.status_code == 200, download.json
    return download.data


def test_zip_archive_holds_workflow_invocation_inputs_and_outputs(stack, finished):
    api, invocation_id = finished
    data = _prepare(stack, api, invocation_id, "zip")
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert zf.testzip() is None
        names = set(zf.namelist())
        workflow = json.loads(zf.read("workflow.ga"))
        record = json.loads(zf.read("invocation.json"))
        files = {d["role"]: zf.read(d["file"]["path"]) for d in record["datasets"] if d["file"]}
    assert {"workflow.ga", "invocation.json"} <= names
    assert workflow["a_galaxy_workflow"] == "true" and workflow["name"] == "Two cats"
    assert record["format"] == "nebula.invocation_archive"
    assert record["invocation"]["id"] == invocation_id and len(record["invocation"]["steps"]) == 3
    assert {d["role"] for d in record["datasets"]} == {"input", "output"}
    assert files["input"] == b"hello\n"
    assert len(record["jobs"]) == 2 and {j["tool_id"] for j in record["jobs"]} == {"cat1"}


def _archived(stack, api, invocation_id: str, **flags) -> tuple[dict, dict[str, bytes]]:
    """The invocation.json of a zip archive and the files of its datasets, by dataset id."""
    with zipfile.ZipFile(io.BytesIO(_prepare(stack, api, invocation_id, "zip", **flags))) as zf:
        record = json.loads(zf.read("invocation.json"))
        files = {d["id"]: zf.read(d["file"]["path"]) for d in record["datasets"] if d["file"]}
    return record, files


@pytest.mark.parametrize("include_hidden, include_deleted", [(False, False), (True, False), (False, True), (True, True)])
def test_hidden_and_deleted_outputs_follow_the_flags(stack, finished, include_hidden, include_deleted):
    api, invocation_id = finished
    shown = api.get(f"/api/invocations/{invocation_id}").json
    history_id = shown["history_id"]
    first, last = (shown["steps"][i]["outputs"]["out_file1"]["id"] for i in (1, 2))
    (input_id,) = [v["id"] for v in shown["inputs"].values()]
    assert api.put(f"/api/histories/{history_id}/contents/{first}", json={"visible": False}).status_code == 200
    assert api.delete(f"/api/histories/{history_id}/contents/{last}").status_code == 200
    record, files = _archived(stack, api, invocation_id, include_hidden=include_hidden,
                              include_deleted=include_deleted)
    expected = {input_id} | ({first} if include_hidden else set()) | ({last} if include_deleted else set())
    assert {d["id"] for d in record["datasets"]} == expected
    assert set(files) == expected and files[input_id] == b"hello\n"
    assert record["options"] == {"include_files": True, "include_hidden": include_hidden,
                                 "include_deleted": include_deleted}
    assert len(record["jobs"]) == 2  # the provenance stays whole


MAP_OVER = {
    "class": "GalaxyWorkflow",
    "label": "Cat each",
    "inputs": {"the_list": {"type": "data_collection", "collection_type": "list"}},
    "outputs": {"done": {"outputSource": "cat_each/out_file1"}},
    "steps": {"cat_each": {"tool_id": "cat1", "in": {"input1": "the_list"}}},
}


def test_a_mapped_over_steps_hidden_elements_go_in_with_their_collection(stack):
    from tests.app.test_invocations import history, invoke, make_list, settle

    api = stack.client(stack.user_key("alice"))
    workflow = api.post("/api/workflows/upload", json={"workflow": MAP_OVER})
    assert workflow.status_code == 200, workflow.json
    history_id = history(api)
    the_list = make_list(stack, api, history_id, ["one", "two"])
    invocation = invoke(api, workflow.json["id"], {"the_list": {"src": "hdca", "id": the_list}},
                        history_id=history_id)
    done = settle(stack, api, invocation["id"])
    assert done["state"] == "completed", done["messages"]
    made = done["output_collections"]["done"]["id"]
    elements = [e["object"]["id"] for e in api.get(f"/api/dataset_collections/{made}").json["elements"]]
    assert all(api.get(f"/api/datasets/{e}").json["visible"] is False for e in elements)

    record, files = _archived(stack, api, invocation["id"])
    assert {c["id"] for c in record["collections"]} == {the_list, made}
    assert set(elements) <= set(files) and sorted(files[e] for e in elements) == [b"one\n", b"two\n"]
    assert {d["id"]: d["role"] for d in record["datasets"]}[elements[0]] == "output"

    hidden = api.put(f"/api/histories/{history_id}/contents/dataset_collections/{made}", json={"visible": False})
    assert hidden.status_code == 200, hidden.json
    record, files = _archived(stack, api, invocation["id"])
    assert {c["id"] for c in record["collections"]} == {the_list}
    assert not set(elements) & {d["id"] for d in record["datasets"]}
    record, files = _archived(stack, api, invocation["id"], include_hidden=True)
    assert {c["id"] for c in record["collections"]} == {the_list, made} and set(elements) <= set(files)


def test_tar_gz_archive(stack, finished):
    api, invocation_id = finished
    with tarfile.open(fileobj=io.BytesIO(_prepare(stack, api, invocation_id, "tar.gz")), mode="r:gz") as tar:
        assert {"workflow.ga", "invocation.json"} <= set(tar.getnames())


def test_rocrate_zip_is_an_ro_crate(stack, finished):
    from rocrate.rocrate import ROCrate

    api, invocation_id = finished
    data = _prepare(stack, api, invocation_id, "rocrate.zip")
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        metadata = json.loads(zf.read("ro-crate-metadata.json"))
        assert "workflow.ga" in zf.namelist()
    graph = {e["@id"]: e for e in metadata["@graph"]}
    assert "ComputationalWorkflow" in graph["workflow.ga"]["@type"]
    assert graph["./"]["mainEntity"] == {"@id": "workflow.ga"}
    (action,) = [e for e in metadata["@graph"] if e["@type"] == "CreateAction"]
    assert action["instrument"] == {"@id": "workflow.ga"} and action["object"] and action["result"]
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "crate.zip").write_bytes(data)
        crate = ROCrate(Path(tmp) / "crate.zip")
        assert crate.mainEntity["name"] == "Two cats"


def test_report_pdf_and_prepare_pdf(stack, finished):
    api, invocation_id = finished
    direct = api.get(f"/api/invocations/{invocation_id}/report.pdf")
    assert direct.status_code == 200 and direct.mimetype == "application/pdf"
    assert direct.data.startswith(b"%PDF-") and b"%%EOF" in direct.data[-64:]
    prepared = api.post(f"/api/invocations/{invocation_id}/prepare_pdf", json={})
    assert prepared.status_code == 200
    stack.drain()
    pdf = api.get(f"/api/short_term_storage/{prepared.json['storage_request_id']}")
    assert pdf.status_code == 200 and pdf.mimetype == "application/pdf" and pdf.data.startswith(b"%PDF-")


def test_another_user_and_bad_formats(stack, finished):
    api, invocation_id = finished
    bob = stack.client(stack.user_key("bob"))
    assert bob.post(f"/api/invocations/{invocation_id}/prepare_store_download", json={}).status_code == 404
    assert bob.post(f"/api/invocations/{invocation_id}/prepare_pdf", json={}).status_code == 404
    assert bob.get(f"/api/invocations/{invocation_id}/report.pdf").status_code == 404
    bad = api.post(f"/api/invocations/{invocation_id}/prepare_store_download", json={"model_store_format": "bco.json"})
    assert bad.status_code == 400 and "rocrate.zip" in bad.json["err_msg"]


def test_workflow_drawing_layout_and_colours():
    from collections import Counter

    from app.exports.report_pdf import StepInfo, layout, workflow_drawing

    steps = [StepInfo(0, "in", "data_input", "scheduled", "ok", Counter(), []),
             StepInfo(1, "a", "tool", "scheduled", "error", Counter(error=1), [0]),
             StepInfo(2, "b", "tool", "scheduled", "running", Counter(running=2), [0]),
             StepInfo(3, "c", "tool", "new", "waiting", Counter(), [1, 2])]
    assert layout(steps) == {0: (0, 0), 1: (1, 0), 2: (1, 1), 3: (2, 0)}
    drawing = workflow_drawing(steps, 400, 300)
    assert drawing.width == 400 and len(drawing.contents) > 8
