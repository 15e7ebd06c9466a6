"""The tools-and-jobs and workflows issues' checks, over HTTP against a Nebula started by ./run.sh."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

WORKFLOWS = Path(__file__).resolve().parents[1] / "data" / "workflows"
BUILTIN_TOOLS = ("upload1", "cat", "cat1", "Paste1", "addValue", "Show beginning1", "random_lines1", "sort1")
FINISHED = ("completed", "failed", "cancelled")


def _ok(response) -> Any:
    assert response.status_code == 200, f"{response.request.method} {response.request.url}: {response.text[:500]}"
    return response.json()


def _until(check, what: str, timeout: float = 120, every: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}")


def _paste(api, history: str, text: str, ext: str = "auto") -> str:
    inputs = {"file_type": ext, "files_0|type": "upload_dataset", "files_0|url_paste": text}
    made = _ok(api.call("POST", "/api/tools", json={"history_id": history, "tool_id": "upload1", "inputs": inputs}))
    return made["outputs"][0]["id"]


def _finished(api, dataset: str) -> dict:
    def done() -> dict | None:
        shown = api.call("GET", f"/api/datasets/{dataset}").json()
        return shown if shown["state"] in ("ok", "error", "empty") else None
    return _until(done, f"dataset {dataset}")


def _content(api, dataset: str) -> bytes:
    shown = _finished(api, dataset)
    assert shown["state"] == "ok", shown
    return api.call("GET", shown["download_url"]).content


def _run(api, history: str, tool: str, inputs: dict) -> dict:
    return _ok(api.call("POST", "/api/tools", json={"history_id": history, "tool_id": tool, "inputs": inputs}))


def _fetched_list(api, history: str, count: int) -> str:
    """A list of ``count`` pasted elements made through the fetch API; waits until it is populated."""
    elements = [{"src": "pasted", "paste_content": f"line {i}\n", "name": f"e{i}", "ext": "txt"} for i in range(count)]
    made = _ok(api.call("POST", "/api/tools/fetch", json={"history_id": history, "targets": [
        {"destination": {"type": "hdca"}, "collection_type": "list", "name": f"{count} pasted", "elements": elements}]}))
    hdca = made["output_collections"][0]["id"]

    def populated() -> bool:
        shown = api.call("GET", f"/api/dataset_collections/{hdca}").json()
        states = {e["object"]["state"] for e in shown.get("elements", [])}
        return shown.get("populated_state") == "ok" and len(shown["elements"]) == count and states == {"ok"}
    _until(populated, f"the {count}-element list", timeout=300, every=0.5)
    return hdca


def tools_scenario(api, history: str) -> None:
    """Issue 3's check: the tools listed, cat1 and Paste1 byte-exact, addValue quoting, a 200-element map-over."""
    listed = {tool["id"] for tool in _ok(api.call("GET", "/api/tools?in_panel=False"))}
    assert set(BUILTIN_TOOLS) <= listed, set(BUILTIN_TOOLS) - listed
    first, second = _paste(api, history, "a\tb\n1\t2\n", "tabular"), _paste(api, history, "c\td\n", "tabular")
    cat = _run(api, history, "cat1", {"input1": {"src": "hda", "id": first},
                                      "queries_0|input2": {"src": "hda", "id": second}})
    assert _content(api, cat["outputs"][0]["id"]) == b"a\tb\n1\t2\nc\td\n"
    pasted = _run(api, history, "Paste1", {"input1": {"src": "hda", "id": first},
                                           "input2": {"src": "hda", "id": second}, "delimiter": "T"})
    assert _content(api, pasted["outputs"][0]["id"]) == b"a\tb\tc\td\n1\t2\t\n"
    evil = "$(touch /tmp/nebula-e2e-pwned); `id`; echo hi"
    added = _run(api, history, "addValue", {"input": {"src": "hda", "id": first}, "exp": evil, "iterate": "no"})
    assert _content(api, added["outputs"][0]["id"]) == f"a\tb\t{evil}\n1\t2\t{evil}\n".encode()
    assert not Path("/tmp/nebula-e2e-pwned").exists()
    hdca = _fetched_list(api, history, 200)
    mapped = _run(api, history, "cat1", {"input1": {"batch": True, "values": [{"src": "hdca", "id": hdca}]}})
    assert len(mapped["jobs"]) == 200 and len(mapped["implicit_collections"]) == 1

    def all_ok() -> bool:
        jobs = api.call("GET", f"/api/jobs?history_id={history}&tool_id=cat1&limit=1000").json()
        states = [job["state"] for job in jobs if job["id"] in {j["id"] for j in mapped["jobs"]}]
        assert "error" not in states, states
        return states.count("ok") == 200
    _until(all_ok, "200 cat1 jobs", timeout=300, every=0.5)
    assert _content(api, mapped["outputs"][7]["id"]) == b"line 7\n"


def _invocation(api, invocation: str) -> dict:
    return _ok(api.call("GET", f"/api/invocations/{invocation}"))


def _settled(api, invocation: str, timeout: float = 300) -> dict:
    return _until(lambda: (shown := _invocation(api, invocation))["state"] in FINISHED and shown,
                  f"invocation {invocation}", timeout=timeout, every=0.3)


def _paused(api, workflow: str, invocation: str) -> dict:
    """The pause step once it waits for the user (read through the /usage alias)."""
    def waiting() -> dict | None:
        shown = _ok(api.call("GET", f"/api/workflows/{workflow}/usage/{invocation}"))
        pauses = [s for s in shown["steps"] if s["workflow_step_label"] == "review" and s["state"] == "ready"]
        return pauses[0] if pauses else None
    return _until(waiting, "the pause step")


def workflows_scenario(api, history: str, map_size: int = 1000) -> None:
    """Issue 4's check: a .ga with a pause continued and cancelled (also via /usage), a cycle refused,
    a gxformat2 map-over run to completion, another cancelled right after invoking."""
    ga = json.loads((WORKFLOWS / "pause_review.ga").read_text())
    workflow = _ok(api.call("POST", "/api/workflows", json={"workflow": ga}))["id"]
    data = _paste(api, history, "reviewed\n")
    inputs = {"0": {"src": "hda", "id": data}}
    going = _ok(api.call("POST", f"/api/workflows/{workflow}/invocations", json={"inputs": inputs, "history_id": history}))
    pause = _paused(api, workflow, going["id"])
    assert pause["action"] is None
    _ok(api.call("PUT", f"/api/invocations/{going['id']}/steps/{pause['id']}", json={"action": True}))
    assert _settled(api, going["id"])["state"] == "completed"
    stopped = _ok(api.call("POST", f"/api/workflows/{workflow}/usage", json={"inputs": inputs, "history_id": history}))
    pause = _paused(api, workflow, stopped["id"])
    _ok(api.call("PUT", f"/api/workflows/{workflow}/usage/{stopped['id']}/steps/{pause['id']}", json={"action": False}))
    cancelled = _settled(api, stopped["id"])
    assert cancelled["state"] == "cancelled"
    assert cancelled["messages"][0]["reason"] == "cancelled_on_review", cancelled["messages"]

    cycle = json.loads((WORKFLOWS / "cycle.ga").read_text())
    refused = api.call("POST", "/api/workflows", json={"workflow": cycle})
    assert refused.status_code == 400 and "cycle" in refused.json()["err_msg"], refused.text

    mapper = _ok(api.call("POST", "/api/workflows/upload", json={
        "workflow": (WORKFLOWS / "map_over.gxwf.yml").read_text()}))["id"]
    hdca = _fetched_list(api, history, map_size)
    the_list = {"the_list": {"src": "hdca", "id": hdca}}
    started = time.monotonic()
    full = _ok(api.call("POST", f"/api/workflows/{mapper}/invocations", json={"inputs": the_list, "history_id": history}))
    posted = time.monotonic() - started
    other = _ok(api.call("POST", f"/api/workflows/{mapper}/invocations", json={"inputs": the_list, "history_id": history}))
    _ok(api.call("DELETE", f"/api/invocations/{other['id']}"))
    done = _settled(api, full["id"], timeout=600)
    finished = time.monotonic() - started
    assert done["state"] == "completed", done["messages"]
    summary = _ok(api.call("GET", f"/api/invocations/{full['id']}/jobs_summary"))
    assert summary["states"] == {"ok": map_size}, summary
    print(f"{map_size}-element gxformat2 map-over over HTTP: POST {posted * 1000:.0f} ms, completed in {finished:.1f} s")
    assert _settled(api, other["id"])["state"] == "cancelled"
    ran = _ok(api.call("GET", f"/api/invocations/{other['id']}/jobs_summary"))["states"].get("ok", 0)
    assert ran < map_size, f"the cancelled invocation ran all {ran} jobs"
