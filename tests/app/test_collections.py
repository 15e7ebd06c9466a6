"""Collections: creation through the contents and fetch APIs, views, and map-over."""

from __future__ import annotations

from app.services.collections import leaf_datasets
from tests.app.test_tools import content, hda, job_count, new_history, paste, run, tool_stack  # noqa: F401


def _create(api, history_id: str, collection_type: str, elements: list, status: int = 200, **extra) -> dict:
    body = {"type": "dataset_collection", "collection_type": collection_type, "element_identifiers": elements,
            "name": "my collection", **extra}
    response = api.post(f"/api/histories/{history_id}/contents", json=body)
    assert response.status_code == status, response.json
    return response.json


def _list(api, history_id: str, texts: list[str]) -> dict:
    ids = [paste(api, history_id, text) for text in texts]
    return _create(api, history_id, "list", [{"name": f"e{i}", "src": "hda", "id": d} for i, d in enumerate(ids)])


def _fetch_list(api, history_id: str, texts: dict[str, str], collection_type: str = "list") -> dict:
    elements = [{"src": "pasted", "paste_content": text, "name": name, "ext": "txt"} for name, text in texts.items()]
    body = {"history_id": history_id, "targets": [{"destination": {"type": "hdca"}, "collection_type": collection_type,
                                                   "name": "fetched", "elements": elements}]}
    response = api.post("/api/tools/fetch", json=body)
    assert response.status_code == 200, response.json
    return response.json


def test_list_paired_and_nested_collections(stack):
    api = stack.client(stack.user_key("alice"))
    h = new_history(api)
    f, r = paste(api, h, "f\n"), paste(api, h, "r\n")
    flat = _create(api, h, "list", [{"name": "a", "src": "hda", "id": f}, {"name": "b", "src": "hda", "id": r}],
                   hide_source_items=True)
    assert flat["collection_type"] == "list" and flat["element_count"] == 2 and flat["populated_state"] == "ok"
    assert [e["element_identifier"] for e in flat["elements"]] == ["a", "b"]
    assert flat["elements"][0]["object"]["id"] == f and flat["elements"][0]["element_type"] == "hda"
    pair = _create(api, h, "paired", [{"name": "forward", "src": "hda", "id": f}, {"name": "reverse", "src": "hda", "id": r}])
    nested = _create(api, h, "list:paired", [
        {"name": "s1", "src": "new_collection", "collection_type": "paired",
         "element_identifiers": [{"name": "forward", "src": "hda", "id": f}, {"name": "reverse", "src": "hda", "id": r}]},
        {"name": "s2", "src": "hdca", "id": pair["id"]},
    ])
    shown = api.get(f"/api/dataset_collections/{nested['id']}").json
    assert shown["collection_type"] == "list:paired" and shown["element_count"] == 2
    inner = shown["elements"][1]["object"]
    assert shown["elements"][1]["element_type"] == "dataset_collection" and inner["collection_type"] == "paired"
    assert [e["element_identifier"] for e in inner["elements"]] == ["forward", "reverse"]
    assert api.get(f"/api/histories/{h}/contents/dataset_collections/{pair['id']}").json["name"] == "my collection"
    contents = api.get(f"/api/histories/{h}/contents").json
    collections = [c for c in contents if c["history_content_type"] == "dataset_collection"]
    assert [c["collection_type"] for c in collections] == ["list", "paired", "list:paired"]
    assert all(c["populated_state"] == "ok" for c in collections)
    assert [c["hid"] for c in contents] == sorted(c["hid"] for c in contents)
    visible = api.get(f"/api/histories/{h}/contents?visible=true&types=dataset").json
    assert visible == []  # the sources were hidden
    only = api.get(f"/api/histories/{h}/contents?types=dataset_collection").json
    assert len(only) == 3


def test_bad_collections_are_refused(stack):
    api = stack.client(stack.user_key("alice"))
    h = new_history(api)
    d = paste(api, h, "x\n")
    other = stack.client(stack.user_key("bob"))
    foreign = paste(other, new_history(other), "secret\n")
    element = {"name": "a", "src": "hda", "id": d}
    assert "collection type" in _create(api, h, "set", [element], status=400)["err_msg"]
    assert "twice" in _create(api, h, "list", [element, element], status=400)["err_msg"]
    assert "forward" in _create(api, h, "paired", [element, {**element, "name": "b"}], status=400)["err_msg"]
    assert _create(api, h, "list:paired", [element], status=400)["err_msg"]
    assert _create(api, h, "list", [{"name": "a", "src": "hda", "id": foreign}], status=404)
    assert _create(api, h, "list", [{"name": "", "src": "hda", "id": d}], status=400)
    assert api.get("/api/dataset_collections/0123456789abcdef").status_code == 404
    listing = _create(api, h, "list", [element])
    assert other.get(f"/api/dataset_collections/{listing['id']}").status_code == 404


def test_fetch_into_a_list_and_a_list_of_pairs(stack):
    api = stack.client(stack.user_key("alice"))
    h = new_history(api)
    fetched = _fetch_list(api, h, {"one": "1\n", "two": "2\n", "three": "3\n"})
    hdca = fetched["output_collections"][0]
    assert hdca["collection_type"] == "list" and hdca["name"] == "fetched" and len(fetched["outputs"]) == 3
    nested = {"history_id": h, "targets": [{"destination": {"type": "hdca"}, "collection_type": "list:paired", "name": "pairs",
              "elements": [{"name": "s1", "elements": [
                  {"name": "forward", "src": "pasted", "paste_content": "f\n"},
                  {"name": "reverse", "src": "pasted", "paste_content": "r\n"}]}]}]}
    pairs = api.post("/api/tools/fetch", json=nested).json["output_collections"][0]
    stack.drain()
    shown = api.get(f"/api/dataset_collections/{hdca['id']}").json
    assert [e["element_identifier"] for e in shown["elements"]] == ["one", "two", "three"]
    assert [e["object"]["state"] for e in shown["elements"]] == ["ok"] * 3
    assert [content(api, e["object"]["id"]) for e in shown["elements"]] == [b"1\n", b"2\n", b"3\n"]
    assert all(not e["object"]["visible"] for e in shown["elements"])
    assert shown["job_state_summary"]["ok"] == 1 and shown["elements_states"] == {"ok": 3}
    pair = api.get(f"/api/dataset_collections/{pairs['id']}").json["elements"][0]["object"]
    assert [content(api, e["object"]["id"]) for e in pair["elements"]] == [b"f\n", b"r\n"]


def test_fetch_refuses_bad_structures_before_staging_anything(stack):
    api = stack.client(stack.user_key("alice"))
    h = new_history(api)
    bad = {"history_id": h, "targets": [{"destination": {"type": "hdca"}, "collection_type": "paired",
                                         "elements": [{"name": "left", "src": "pasted", "paste_content": "x"}]}]}
    assert api.post("/api/tools/fetch", json=bad).status_code == 400
    unnamed = {"history_id": h, "targets": [{"destination": {"type": "hdca"}, "collection_type": "list",
                                             "elements": [{"src": "pasted", "paste_content": "x"}]}]}
    assert "name" in api.post("/api/tools/fetch", json=unnamed).json["err_msg"]
    assert not list((stack.settings.resolved_data_dir / "staging").glob("*/*"))


def test_map_cat1_over_a_fetched_list(stack):
    api = stack.client(stack.user_key("alice"))
    h = new_history(api)
    texts = {f"s{i}": f"line {i}\n" for i in range(12)}
    hdca = _fetch_list(api, h, texts)["output_collections"][0]
    result = run(api, h, "cat1", {"input1": {"batch": True, "values": [{"src": "hdca", "id": hdca["id"]}]}})
    assert len(result["jobs"]) == 12 and len(result["outputs"]) == 12
    implicit = result["implicit_collections"][0]
    assert implicit["output_name"] == "out_file1" and implicit["collection_type"] == "list"
    assert implicit["name"].startswith("Concatenate datasets on collection ")
    stack.drain()
    assert {j["state"] for j in api.get(f"/api/jobs?history_id={h}&tool_id=cat1").json} == {"ok"}
    shown = api.get(f"/api/dataset_collections/{implicit['id']}").json
    assert [e["element_identifier"] for e in shown["elements"]] == list(texts)
    assert [content(api, e["object"]["id"]) for e in shown["elements"]] == [t.encode() for t in texts.values()]
    assert shown["job_state_summary"]["ok"] == 12 and shown["job_state_summary"]["all_jobs"] == 12
    outputs = [d for d in api.get(f"/api/histories/{h}/contents?types=dataset").json if d["name"].startswith("Concat")]
    assert len(outputs) == 12 and not any(d["visible"] for d in outputs)


def test_map_over_nested_collections_keeps_the_structure(tool_stack):
    stack = tool_stack
    api = stack.client(stack.user_key("alice"))
    h = new_history(api)
    files = {name: paste(api, h, f"{name}\n") for name in ("f1", "r1", "f2", "r2")}
    nested = _create(api, h, "list:paired", [
        {"name": s, "src": "new_collection", "collection_type": "paired", "element_identifiers": [
            {"name": "forward", "src": "hda", "id": files[f"f{s[-1]}"]},
            {"name": "reverse", "src": "hda", "id": files[f"r{s[-1]}"]}]} for s in ("s1", "s2")])
    batch = {"batch": True, "values": [{"src": "hdca", "id": nested["id"]}]}
    # A dataset input over list:paired: one job per dataset, a list:paired of outputs.
    per_dataset = run(api, h, "cat1", {"input1": batch})
    assert len(per_dataset["jobs"]) == 4 and per_dataset["implicit_collections"][0]["collection_type"] == "list:paired"
    # A paired input over list:paired: one job per pair, a list of outputs.
    per_pair = run(api, h, "pair_cat", {"pair": batch})
    assert len(per_pair["jobs"]) == 2 and per_pair["implicit_collections"][0]["collection_type"] == "list"
    stack.drain()
    shown = api.get(f"/api/dataset_collections/{per_pair['implicit_collections'][0]['id']}").json
    assert [e["element_identifier"] for e in shown["elements"]] == ["s1", "s2"]
    assert [content(api, e["object"]["id"]) for e in shown["elements"]] == [b"f1\nr1\n", b"f2\nr2\n"]
    with stack.services.session_factory() as session:
        from app.models import HistoryDatasetCollection

        hdca = session.get(HistoryDatasetCollection, stack.services.ids.decode(per_dataset["implicit_collections"][0]["id"]))
        paths = [path for path, _ in leaf_datasets(session, hdca.collection_id)]
    assert paths == [("s1", "forward"), ("s1", "reverse"), ("s2", "forward"), ("s2", "reverse")]


def test_collection_inputs_and_wrong_collection_types(tool_stack):
    stack = tool_stack
    api = stack.client(stack.user_key("alice"))
    h = new_history(api)
    listing = _list(api, h, ["a\n", "b\n"])
    stack.drain()
    result = run(api, h, "list_cat", {"items": {"src": "hdca", "id": listing["id"]}})
    stack.drain()
    assert content(api, result["outputs"][0]["id"]) == b"a\nb\n"
    job = api.get(f"/api/jobs/{result['jobs'][0]['id']}").json
    assert job["params"]["items"] == {"src": "hdca", "id": listing["id"]} and len(job["inputs"]) == 2
    before = job_count(stack)
    wrong = run(api, h, "pair_cat", {"pair": {"src": "hdca", "id": listing["id"]}}, status=400)
    assert "'pair'" in wrong["err_msg"] and "list" in wrong["err_msg"]
    wrong_batch = run(api, h, "pair_cat", {"pair": {"batch": True, "values": [{"src": "hdca", "id": listing["id"]}]}}, status=400)
    assert "'pair'" in wrong_batch["err_msg"] and "cannot be mapped" in wrong_batch["err_msg"]
    no_batch = run(api, h, "cat1", {"input1": {"src": "hdca", "id": listing["id"]}}, status=400)
    assert "batch" in no_batch["err_msg"]
    assert job_count(stack) == before


def test_linked_batches_zip_and_must_match(tool_stack):
    stack = tool_stack
    api = stack.client(stack.user_key("alice"))
    h = new_history(api)
    left, right, short = _list(api, h, ["1\n", "2\n"]), _list(api, h, ["a\n", "b\n"]), _list(api, h, ["x\n"])
    stack.drain()
    batch = lambda hdca: {"batch": True, "values": [{"src": "hdca", "id": hdca["id"]}]}  # noqa: E731
    result = run(api, h, "two_inputs", {"a": batch(left), "b": batch(right)})
    stack.drain()
    shown = api.get(f"/api/dataset_collections/{result['implicit_collections'][0]['id']}").json
    assert [content(api, e["object"]["id"]) for e in shown["elements"]] == [b"1\na\n", b"2\nb\n"]
    mismatch = run(api, h, "two_inputs", {"a": batch(left), "b": batch(short)}, status=400)
    assert "different structure" in mismatch["err_msg"]


def test_batch_over_datasets_runs_one_job_each_without_a_collection(stack):
    api = stack.client(stack.user_key("alice"))
    h = new_history(api)
    a, b = paste(api, h, "a\n"), paste(api, h, "b\n")
    stack.drain()
    result = run(api, h, "cat1", {"input1": {"batch": True, "values": [hda(a), hda(b)]}})
    assert len(result["jobs"]) == 2 and result["implicit_collections"] == []
    stack.drain()
    assert [content(api, o["id"]) for o in result["outputs"]] == [b"a\n", b"b\n"]


def test_delete_a_collection(stack):
    api = stack.client(stack.user_key("alice"))
    h = new_history(api)
    listing = _list(api, h, ["a\n"])
    stack.drain()
    deleted = api.delete(f"/api/histories/{h}/contents/dataset_collections/{listing['id']}?recursive=true").json
    assert deleted["deleted"] is True
    element = api.get(f"/api/dataset_collections/{listing['id']}").json["elements"][0]["object"]
    assert element["deleted"] is True
    renamed = api.put(f"/api/histories/{h}/contents/dataset_collections/{listing['id']}", json={"name": "new"}).json
    assert renamed["name"] == "new"
