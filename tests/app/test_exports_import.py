"""Importing history archives: export then import is byte-exact; hostile archives fail cleanly."""

from __future__ import annotations

import io
import json
import tarfile
import zipfile

import pytest
import sqlalchemy as sa

from app.exports import importer
from app.exports.reader import ArchiveLimits
from app.models import Dataset, History
from app.models.collections import DatasetCollection, DatasetCollectionElement, HistoryDatasetCollection
from test_exports_history import _history, _prepare, _upload


def _import(api, data: bytes, filename: str = "history.tar.gz", **form) -> dict:
    response = api.post("/api/histories", data={"archive_file": (io.BytesIO(data), filename), **form},
                        content_type="multipart/form-data")
    assert response.status_code == 200, response.json
    return response.json


def _task(api, task_id: str) -> dict:
    return api.get(f"/api/tasks/{task_id}/result").json


def _add_collection(stack, history_id: str, dataset_ids: list[str]) -> None:
    """A list:paired-ish nested collection over the datasets, written straight into the database."""
    ids = stack.services.ids
    with stack.services.session_factory.begin() as session:
        history = session.get(History, ids.decode(history_id))
        inner = DatasetCollection(collection_type="paired", element_count=2)
        outer = DatasetCollection(collection_type="list:paired", element_count=1)
        session.add_all([inner, outer])
        session.flush()
        for index, (ident, dataset_id) in enumerate(zip(["forward", "reverse"], dataset_ids, strict=True)):
            session.add(DatasetCollectionElement(collection_id=inner.id, element_index=index,
                                                 element_identifier=ident, dataset_id=ids.decode(dataset_id)))
        session.add(DatasetCollectionElement(collection_id=outer.id, element_index=0, element_identifier="sample1",
                                             child_collection_id=inner.id))
        hid = history.hid_counter
        history.hid_counter += 1
        session.add(HistoryDatasetCollection(history_id=history.id, user_id=history.user_id, hid=hid,
                                             name="pairs", collection_id=outer.id))


@pytest.mark.parametrize("fmt", ["tar.gz", "zip"])
def test_export_then_import_gives_the_same_datasets_and_collections(stack, fmt):
    api = stack.client(stack.user_key("alice"))
    history_id = _history(api, "round trip")
    contents = {"f.txt": b"forward\n", "r.txt": b"reverse\n", "blob.bin": bytes(range(256)) * 300}
    outputs = {name: _upload(api, history_id, data, name) for name, data in contents.items()}
    stack.drain()
    _add_collection(stack, history_id, [outputs["f.txt"]["id"], outputs["r.txt"]["id"]])
    request_id = _prepare(api, history_id, model_store_format=fmt)["storage_request_id"]
    stack.drain()
    archive = api.get(f"/api/short_term_storage/{request_id}").data

    started = _import(api, archive, f"history.{fmt}")
    stack.drain()
    result = _task(api, started["id"])
    assert result["state"] == "SUCCESS", result
    new_id = result["result"]["history_id"]
    assert new_id != history_id
    assert api.get(f"/api/histories/{new_id}").json["name"] == "round trip"
    old = {d["name"]: d for d in api.get(f"/api/histories/{history_id}/contents").json if d["history_content_type"] == "dataset"}
    new = {d["name"]: d for d in api.get(f"/api/histories/{new_id}/contents").json if d["history_content_type"] == "dataset"}
    assert set(new) == set(old) == set(contents)
    for name, data in contents.items():
        assert new[name]["hid"] == old[name]["hid"]
        assert new[name]["state"] == "ok" and new[name]["extension"] == old[name]["extension"]
        assert api.get(new[name]["download_url"]).data == data
    with stack.services.session_factory() as session:
        hdca = session.scalar(sa.select(HistoryDatasetCollection).where(
            HistoryDatasetCollection.history_id == stack.services.ids.decode(new_id)))
        assert hdca.name == "pairs" and hdca.collection.collection_type == "list:paired"
        (outer,) = hdca.collection.elements
        inner = session.get(DatasetCollection, outer.child_collection_id)
        names = [(e.element_identifier, session.get(Dataset, e.dataset_id).name) for e in inner.elements]
        assert names == [("forward", "f.txt"), ("reverse", "r.txt")]
        assert all(session.get(Dataset, e.dataset_id).history_id == hdca.history_id for e in inner.elements)
        new_history = session.get(History, stack.services.ids.decode(new_id))
        assert new_history.hid_counter > max(d["hid"] for d in new.values())


def test_import_from_a_url(stack, tmp_path):
    import http.server
    import threading

    api = stack.client(stack.user_key("alice"))
    history_id = _history(api, "from url")
    _upload(api, history_id, b"hello\n", "hello.txt")
    stack.drain()
    request_id = _prepare(api, history_id)["storage_request_id"]
    stack.drain()
    (tmp_path / "h.tar.gz").write_bytes(api.get(f"/api/short_term_storage/{request_id}").data)

    handler = lambda *a, **k: http.server.SimpleHTTPRequestHandler(*a, directory=str(tmp_path), **k)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        started = api.post("/api/histories", json={"archive_source": f"http://127.0.0.1:{server.server_port}/h.tar.gz",
                                                   "archive_type": "url"})
        assert started.status_code == 200, started.json
        stack.drain()
    finally:
        server.shutdown()
    result = _task(api, started.json["id"])
    assert result["state"] == "SUCCESS", result
    contents = api.get(f"/api/histories/{result['result']['history_id']}/contents").json
    assert [api.get(c["download_url"]).data for c in contents] == [b"hello\n"]


def _tar(members: list[tarfile.TarInfo | tuple[str, bytes]]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for member in members:
            if isinstance(member, tarfile.TarInfo):
                tar.addfile(member)
            else:
                name, data = member
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def _link(name: str, target: str, kind=tarfile.SYMTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info


MANIFEST = json.dumps({"format": "nebula.history_archive", "version": 1, "history": {"name": "evil"},
                       "datasets": [], "collections": [], "jobs": []}).encode()


def _zip_bomb() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        with zf.open("manifest.json", "w") as member:
            member.write(MANIFEST)
        with zf.open("datasets/zeros.bin", "w") as member:
            chunk = b"\0" * (1 << 20)
            for _ in range(64):
                member.write(chunk)
    return out.getvalue()


HOSTILE = {
    "dotdot": (lambda: _tar([("manifest.json", MANIFEST), ("../../evil.txt", b"pwned")]), "'..'"),
    "absolute": (lambda: _tar([("manifest.json", MANIFEST), ("/tmp/evil.txt", b"pwned")]), "absolute"),
    "symlink": (lambda: _tar([_link("datasets/x", "/etc/passwd"), ("manifest.json", MANIFEST)]), "link"),
    "hardlink": (lambda: _tar([("manifest.json", MANIFEST), _link("x", "manifest.json", tarfile.LNKTYPE)]), "link"),
    "zip bomb": (_zip_bomb, "bomb"),
    "not an archive": (lambda: b"this is not an archive at all" * 100, "not a tar"),
    "truncated": (lambda: _tar([("manifest.json", MANIFEST), ("d", b"x" * 100_000)])[:200], "corrupt"),
    "no manifest": (lambda: _tar([("hello.txt", b"hi")]), "manifest.json"),
    "bad manifest": (lambda: _tar([("manifest.json", b'{"format": "nebula.history_archive", "version": 7}')]), "not valid"),
    "checksum": (lambda: _tar([("manifest.json", json.dumps({
        "format": "nebula.history_archive", "version": 1, "history": {"name": "x"},
        "datasets": [{"key": "d1", "hid": 1, "name": "a", "file": {"path": "datasets/a", "size": 2, "sha256": "0" * 64}}],
    }).encode()), ("datasets/a", b"hi")]), "checksum"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_or_corrupt_archives_fail_with_a_clear_message(stack, tmp_path, monkeypatch, case):
    monkeypatch.setattr(importer, "LIMITS", ArchiveLimits(max_total_bytes=8 << 20, ratio_floor=4 << 20))
    make, expected = HOSTILE[case]
    api = stack.client(stack.user_key("alice"))
    before = api.get("/api/histories").json
    started = _import(api, make(), "evil.tar.gz")
    stack.drain()
    result = _task(api, started["id"])
    assert result["state"] == "FAILURE"
    assert expected in result["result"], result["result"]
    assert api.get("/api/histories").json == before
    data_dir = stack.settings.resolved_data_dir
    assert not list(data_dir.parent.rglob("evil.txt")) and not (tmp_path.parent / "evil.txt").exists()
    assert not any((data_dir / "imports").iterdir())  # staging removed


def test_import_needs_a_source(stack):
    api = stack.client(stack.user_key("alice"))
    bad = api.post("/api/histories", json={"archive_source": "file:///etc/passwd"})
    assert bad.status_code == 400
    plain = api.post("/api/histories", json={"name": "still works"})
    assert plain.status_code == 200 and plain.json["name"] == "still works"


def test_reader_refuses_too_many_zip_members_before_parsing(tmp_path):
    from app.exports.errors import ArchiveRejected
    from app.exports.reader import unpack

    archive = tmp_path / "many.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for i in range(50):
            zf.writestr(f"f{i}", b"")
    with pytest.raises(ArchiveRejected, match="more than 10 members"):
        unpack(archive, tmp_path / "out", ArchiveLimits(max_members=10))
    assert unpack(archive, tmp_path / "ok", ArchiveLimits(max_members=100))["f3"].size == 0
