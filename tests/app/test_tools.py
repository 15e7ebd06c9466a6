"""Tools: loading, the tools API, Galaxy's built-in tools end to end, and bad requests.

Helpers and the ``tool_stack`` fixture (the app with an extra tool directory of test
tools) are imported by the jobs and collections tests too.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path

import dramatiq
import pytest
import sqlalchemy as sa
from dramatiq.brokers.stub import StubBroker

from app.api import create_app
from app.migrate import upgrade
from app.models import Job
from app.services.registry import build_services
from app.tools import load_toolbox
from tests.app.conftest import Stack, make_settings
from workers.runtime import BrokerPublisher, build_runtime

BUILTIN_IDS = {"upload1", "cat", "cat1", "Paste1", "addValue", "Show beginning1", "random_lines1", "sort1"}

TEST_TOOLS = {
    "sleeper.yml": """
        id: sleeper
        name: Sleep
        inputs:
          - {name: seconds, type: float, value: 30}
        outputs:
          out: {format: txt}
        command: sleep {{ seconds }} && echo done > {{ out }}
    """,
    "limited.yml": """
        id: limited
        name: Sleep past the wall time
        outputs:
          out: {format: txt}
        resources: {walltime: 1}
        command: sleep 30 && echo done > {{ out }}
    """,
    "noisy.yml": """
        id: noisy
        name: Write to stderr
        inputs:
          - {name: forever, type: boolean}
        outputs:
          out: {format: txt}
        command: "{% if forever %}yes >&2{% else %}yes | head -c 100000 >&2; exit 1{% endif %}"
    """,
    "failing.yml": """
        id: failing
        name: Fail
        inputs:
          - {name: input, type: data}
        outputs:
          out: {format_source: input}
        command: "cat {{ input }} > {{ out }}; echo first line >&2; echo 'it went wrong' >&2; exit 3"
    """,
    "environment.yml": """
        id: environment
        name: Environment
        outputs:
          out: {format: txt}
        command: env > {{ out }}
    """,
    "pair_cat.yml": """
        id: pair_cat
        name: Cat a pair
        inputs:
          - {name: pair, type: data_collection, collection_type: paired}
        outputs:
          out: {format: input}
        command: cat {{ pair.forward }} {{ pair.reverse }} > {{ out }}
    """,
    "list_cat.yml": """
        id: list_cat
        name: Cat a list
        inputs:
          - {name: items, type: data_collection, collection_type: list}
        outputs:
          out: {format: txt}
        command: cat {{ items }} > {{ out }}
    """,
    "two_inputs.yml": """
        id: two_inputs
        name: Two inputs
        inputs:
          - {name: a, type: data}
          - {name: b, type: data}
        outputs:
          out: {format: txt}
        command: cat {{ a }} {{ b }} > {{ out }}
    """,
}


@pytest.fixture
def tool_stack(data_dir: Path, tmp_path: Path) -> Iterator[Stack]:
    """The stack fixture's app, with a directory of test tools loaded after the built-in ones."""
    yield from build_stack(data_dir, tmp_path)


def build_stack(data_dir: Path, tmp_path: Path, **settings_overrides) -> Iterator[Stack]:
    """A Stack (app, services, stub broker, worker runtime) with the test tools; SQLite unless overridden."""
    tools = tmp_path / "tools"
    tools.mkdir()
    for name, text in TEST_TOOLS.items():
        (tools / name).write_text(textwrap.dedent(text))
    settings = make_settings(data_dir, tool_dirs=[tools], **settings_overrides)
    upgrade(settings)
    broker = StubBroker(fail_fast_default=False)
    broker.emit_after("process_boot")
    runtime = build_runtime(settings, broker=broker)
    services = build_services(settings, publisher=BrokerPublisher(broker))
    yield Stack(settings, create_app(settings, services), services, runtime, broker)
    broker.close()
    services.engine.dispose()
    runtime.services.engine.dispose()
    dramatiq.set_broker(StubBroker())


# -- helpers shared by the tools, jobs and collections tests ------------------------------


def new_history(api) -> str:
    response = api.post("/api/histories", json={"name": "tools"})
    assert response.status_code == 200, response.json
    return response.json["id"]


def paste(api, history_id: str, text: str, ext: str = "auto") -> str:
    inputs = {"file_type": ext, "files_0|type": "upload_dataset", "files_0|url_paste": text}
    response = api.post("/api/tools", json={"history_id": history_id, "tool_id": "upload1", "inputs": inputs})
    assert response.status_code == 200, response.json
    return response.json["outputs"][0]["id"]


def run(api, history_id: str, tool_id: str, inputs: dict, status: int = 200) -> dict:
    response = api.post("/api/tools", json={"history_id": history_id, "tool_id": tool_id, "inputs": inputs})
    assert response.status_code == status, response.json
    return response.json


def hda(dataset_id: str) -> dict:
    return {"src": "hda", "id": dataset_id}


def content(api, dataset_id: str) -> bytes:
    shown = api.get(f"/api/datasets/{dataset_id}").json
    assert shown["state"] == "ok", shown
    return api.get(shown["download_url"]).data


def run_and_read(stack, api, history_id: str, tool_id: str, inputs: dict) -> bytes:
    result = run(api, history_id, tool_id, inputs)
    stack.drain()
    job = api.get(f"/api/jobs/{result['jobs'][0]['id']}?full=true").json
    assert job["state"] == "ok", job
    return content(api, result["outputs"][0]["id"])


def job_count(stack) -> int:
    with stack.services.session_factory() as session:
        return session.scalar(sa.select(sa.func.count()).select_from(Job).where(Job.tool_id != "upload1"))


# -- loading -------------------------------------------------------------------------------


def test_broken_tool_files_are_reported_and_the_others_load(tmp_path: Path):
    (tmp_path / "good.yml").write_text("id: good\nname: Good\ncommand: 'true'\n")
    (tmp_path / "bad_field.yml").write_text(
        "id: bad\nname: Bad\ninputs:\n  - {name: x, type: integer, value: ten}\ncommand: 'true'\n")
    (tmp_path / "bad_type.yml").write_text("id: bad2\nname: Bad\ninputs:\n  - {name: x, type: dta}\ncommand: 'true'\n")
    (tmp_path / "bad_yaml.yml").write_text("id: [unclosed\n")
    (tmp_path / "bad_template.yml").write_text("id: bad3\nname: Bad\ncommand: 'cat {% for %}'\n")
    (tmp_path / "bad_source.yml").write_text(
        "id: bad4\nname: Bad\noutputs:\n  o: {format_source: nope}\ncommand: 'true'\n")
    (tmp_path / "duplicate.yml").write_text("id: cat1\nname: Again\ncommand: 'true'\n")
    box = load_toolbox([tmp_path])
    assert "good" in box and BUILTIN_IDS <= {t.id for t in box.all()}
    errors = {Path(str(e.path)).name: e.message for e in box.errors}
    assert "inputs.0.integer.value" in errors["bad_field.yml"]
    assert "inputs.0" in errors["bad_type.yml"] and "dta" in errors["bad_type.yml"]
    assert "not valid YAML" in errors["bad_yaml.yml"]
    assert errors["bad_template.yml"].startswith("command: template syntax error")
    assert "nope" in errors["bad_source.yml"] and "outputs" in errors["bad_source.yml"]
    assert "already defined" in errors["duplicate.yml"]
    assert all(str(tmp_path) in str(e) for e in box.errors)


def test_missing_tool_directory_is_an_error_not_a_crash(tmp_path: Path):
    box = load_toolbox([tmp_path / "nowhere"])
    assert BUILTIN_IDS <= {t.id for t in box.all()}
    assert "not found" in str(box.errors[0])


# -- tools API -----------------------------------------------------------------------------


def test_every_built_in_tool_is_listed(stack):
    api = stack.client(stack.user_key("alice"))
    flat = api.get("/api/tools?in_panel=False").json
    assert BUILTIN_IDS <= {t["id"] for t in flat}
    assert all(t["model_class"] == "Tool" and t["version"] for t in flat)
    panel = api.get("/api/tools").json
    section = next(s for s in panel if s.get("name") == "Text Manipulation")
    assert section["model_class"] == "ToolSection" and "cat1" in {t["id"] for t in section["elems"]}


def test_show_tool_with_inputs(stack):
    api = stack.client(stack.user_key("alice"))
    cat1 = api.get("/api/tools/cat1").json
    assert [i["name"] for i in cat1["inputs"]] == ["input1", "queries"]
    assert cat1["inputs"][1]["type"] == "repeat" and cat1["inputs"][1]["inputs"][0]["name"] == "input2"
    assert cat1["outputs"][0]["name"] == "out_file1"
    lines = api.get("/api/tools/random_lines1").json
    cond = lines["inputs"][2]
    assert cond["model_class"] == "Conditional" and [c["value"] for c in cond["cases"]] == ["no_seed", "set_seed"]
    assert api.get("/api/tools/Show%20beginning1").json["inputs"][0]["name"] == "lineNum"
    assert api.get("/api/tools/nope").status_code == 404


# -- built-in tools, byte for byte ----------------------------------------------------------


def test_cat1_concatenates_in_order_legacy_and_nested_inputs(stack):
    api = stack.client(stack.user_key("alice"))
    h = new_history(api)
    a, b, c = paste(api, h, "a\t1\nb\t2\n"), paste(api, h, "c\n"), paste(api, h, "d\ne\n")
    stack.drain()
    legacy = {"input1": hda(a), "queries_0|input2": hda(b), "queries_1|input2": hda(c)}
    assert run_and_read(stack, api, h, "cat1", legacy) == b"a\t1\nb\t2\nc\nd\ne\n"
    nested = {"input1": {"values": [hda(c)]}, "queries": [{"input2": hda(a)}]}
    assert run_and_read(stack, api, h, "cat1", nested) == b"d\ne\na\t1\nb\t2\n"
    assert run_and_read(stack, api, h, "cat1", {"input1": hda(b)}) == b"c\n"


def test_cat1_output_takes_the_first_input_format_and_galaxy_name(stack):
    api = stack.client(stack.user_key("alice"))
    h = new_history(api)
    a, b = paste(api, h, "x\t1\n"), paste(api, h, "y\t2\n")
    stack.drain()
    result = run(api, h, "cat1", {"input1": hda(a), "queries_0|input2": hda(b)})
    stack.drain()
    out = api.get(f"/api/datasets/{result['outputs'][0]['id']}").json
    assert out["extension"] == "tabular" and out["name"] == "Concatenate datasets on data 1 and data 2"
    assert out["hid"] == 3 and out["metadata_data_lines"] == 2


def test_cat_takes_several_datasets_in_input1(stack):
    api = stack.client(stack.user_key("alice"))
    h = new_history(api)
    a, b = paste(api, h, "1\n"), paste(api, h, "2\n")
    stack.drain()
    assert run_and_read(stack, api, h, "cat", {"input1": {"values": [hda(a), hda(b)]}}) == b"1\n2\n"


@pytest.mark.parametrize("delimiter, char", [("T", "\t"), ("C", ","), ("D", "-"), ("U", "_"), ("P", "|"),
                                              ("Dt", "."), ("Sp", " ")])
def test_paste1_delimiters(stack, delimiter, char):
    api = stack.client(stack.user_key("alice"))
    h = new_history(api)
    a, b = paste(api, h, "a 1\na 2\na 3\n"), paste(api, h, "20\n30\n")
    stack.drain()
    got = run_and_read(stack, api, h, "Paste1", {"input1": hda(a), "input2": hda(b), "delimiter": delimiter})
    assert got == f"a 1{char}20\na 2{char}30\na 3{char}\n".encode()


def test_paste1_output_is_tabular(stack):
    api = stack.client(stack.user_key("alice"))
    h = new_history(api)
    a, b = paste(api, h, "a\nb\n"), paste(api, h, "1\n2\n")
    stack.drain()
    result = run(api, h, "Paste1", {"input1": hda(a), "input2": hda(b), "delimiter": "T"})
    stack.drain()
    assert api.get(f"/api/datasets/{result['outputs'][0]['id']}").json["extension"] == "tabular"


def test_add_value_text_is_data_never_code(stack, tmp_path):
    api = stack.client(stack.user_key("alice"))
    h = new_history(api)
    a = paste(api, h, "r1\tx\nr2\ty\n")
    stack.drain()
    marker = tmp_path / "pwned"
    exp = f"$(touch {marker}); `touch {marker}`; touch {marker} && echo 'q' \"d\" > {marker}"
    got = run_and_read(stack, api, h, "addValue", {"input": hda(a), "exp": exp, "iterate": "no"})
    assert got == f"r1\tx\t{exp}\nr2\ty\t{exp}\n".encode()
    assert not marker.exists()


def test_add_value_iterates(stack):
    api = stack.client(stack.user_key("alice"))
    h = new_history(api)
    a = paste(api, h, "a\nb\nc\n", ext="tabular")  # sniffed as txt otherwise, which addValue refuses
    stack.drain()
    assert run_and_read(stack, api, h, "addValue", {"input": hda(a), "exp": "5", "iterate": "yes"}) == b"a\t5\nb\t6\nc\t7\n"
    assert run_and_read(stack, api, h, "addValue", {"input": hda(a), "exp": "g", "iterate": "yes"}) == b"a\tg-0\nb\tg-1\nc\tg-2\n"
    assert run_and_read(stack, api, h, "addValue", {"input": hda(a)}) == b"a\t1\nb\t1\nc\t1\n"


def test_show_beginning(stack):
    api = stack.client(stack.user_key("alice"))
    h = new_history(api)
    a = paste(api, h, "".join(f"line {i}\n" for i in range(20)))
    stack.drain()
    assert run_and_read(stack, api, h, "Show beginning1", {"input": hda(a), "lineNum": "3"}) == b"line 0\nline 1\nline 2\n"
    with_header = run_and_read(stack, api, h, "Show beginning1", {"input": hda(a), "lineNum": 2, "header": True})
    assert with_header == b"line 0\nline 1\nline 2\n"
    assert run_and_read(stack, api, h, "Show beginning1", {"input": hda(a)}).count(b"\n") == 10


def test_random_lines_keeps_order_and_repeats_with_a_seed(stack):
    api = stack.client(stack.user_key("alice"))
    h = new_history(api)
    lines = [f"row {i}\n".encode() for i in range(50)]
    a = paste(api, h, b"".join(lines).decode())
    stack.drain()
    seeded = {"input": hda(a), "num_lines": 7, "seed_source|seed_source_selector": "set_seed", "seed_source|seed": "asdf"}
    first = run_and_read(stack, api, h, "random_lines1", seeded)
    nested = {"input": hda(a), "num_lines": 7, "seed_source": {"seed_source_selector": "set_seed", "seed": "asdf"}}
    assert run_and_read(stack, api, h, "random_lines1", nested) == first
    picked = first.splitlines(keepends=True)
    assert len(picked) == 7 and picked == sorted(picked, key=lines.index)
    many = run_and_read(stack, api, h, "random_lines1", {**seeded, "num_lines": 40}).splitlines(keepends=True)
    assert len(many) == 40 and many == sorted(many, key=lines.index)
    unseeded = run_and_read(stack, api, h, "random_lines1", {"input": hda(a), "num_lines": 50})
    assert unseeded == b"".join(lines)


def test_sort1_numeric_alphabetical_and_several_columns(stack):
    api = stack.client(stack.user_key("alice"))
    h = new_history(api)
    a = paste(api, h, "b\t10\tx\na\t9\ty\nC\t100\tx\nb\t2\ty\n")
    stack.drain()
    desc = run_and_read(stack, api, h, "sort1", {"input": hda(a), "column": "2", "style": "n", "order": "r"})
    assert desc == b"C\t100\tx\nb\t10\tx\na\t9\ty\nb\t2\ty\n"
    legacy = run_and_read(stack, api, h, "sort1", {"input": hda(a), "column": 2, "style": "num", "order": "ASC"})
    assert legacy == b"b\t2\ty\na\t9\ty\nb\t10\tx\nC\t100\tx\n"
    alpha = run_and_read(stack, api, h, "sort1", {"input": hda(a), "column": 1, "style": "", "order": "",
                                                  "column_set_0|other_column": 2, "column_set_0|other_style": "n",
                                                  "column_set_0|other_order": ""})
    assert alpha == b"a\t9\ty\nb\t2\ty\nb\t10\tx\nC\t100\tx\n"


def test_sort1_keeps_header_lines_and_comments_first(stack):
    api = stack.client(stack.user_key("alice"))
    h = new_history(api)
    a = paste(api, h, "name\tn\nz\t3\n#note\ny\t1\n")
    stack.drain()
    got = run_and_read(stack, api, h, "sort1", {"input": hda(a), "column": 2, "style": "n", "order": "",
                                                "header_lines": 1})
    assert got == b"name\tn\n#note\ny\t1\nz\t3\n"


# -- bad requests: 4xx naming the parameter, no job --------------------------------------------


def test_bad_requests_name_the_parameter_and_create_no_job(stack):
    api = stack.client(stack.user_key("alice"))
    h = new_history(api)
    a = paste(api, h, "a\n")
    other = stack.client(stack.user_key("bob"))
    theirs = paste(other, new_history(other), "secret\n")
    stack.drain()
    before = job_count(stack)
    cases = [
        ("nope", {"input1": hda(a)}, 404, "tool 'nope'"),
        ("cat1", {}, 400, "'input1'"),
        ("cat1", {"input1": 5}, 400, "'input1'"),
        ("cat1", {"input1": hda(theirs)}, 404, "'input1'"),
        ("cat1", {"input1": hda("0123456789abcdef")}, 404, "'input1'"),
        ("cat1", {"input1": hda(a), "queries_0|input2": hda(theirs)}, 404, "'queries_0|input2'"),
        ("Paste1", {"input1": hda(a), "input2": hda(a), "delimiter": "X"}, 400, "'delimiter'"),
        ("Show beginning1", {"input": hda(a), "lineNum": "ten"}, 400, "'lineNum'"),
        ("Show beginning1", {"input": hda(a), "lineNum": 0}, 400, "'lineNum'"),
        ("Show beginning1", {"input": hda(a), "header": "maybe"}, 400, "'header'"),
        ("random_lines1", {"input": hda(a), "seed_source": {"seed_source_selector": "sometimes"}}, 400,
         "'seed_source|seed_source_selector'"),
        ("addValue", {"input": hda(a), "exp": {"nested": 1}}, 400, "'exp'"),
        ("addValue", {"input": hda(a), "exp": "a\x00b"}, 400, "'exp'"),
        ("upload1", {"files_0|NAME": "x"}, 400, "upload1"),
    ]
    for tool_id, inputs, status, needle in cases:
        result = run(api, h, tool_id, inputs, status=status)
        assert needle in result["err_msg"], (tool_id, inputs, result)
    assert job_count(stack) == before


def test_a_failing_command_ends_in_error_with_the_stderr_tail(tool_stack):
    stack = tool_stack
    api = stack.client(stack.user_key("alice"))
    h = new_history(api)
    a = paste(api, h, "a\n")
    stack.drain()
    result = run(api, h, "failing", {"input": hda(a)})
    stack.drain()
    job = api.get(f"/api/jobs/{result['jobs'][0]['id']}?full=true").json
    assert job["state"] == "error" and job["exit_code"] == 3
    assert job["stderr"] == "first line\nit went wrong\n"
    assert "exit 3" in job["command_line"]
    out = api.get(f"/api/datasets/{result['outputs'][0]['id']}").json
    assert out["state"] == "error" and "it went wrong" in out["misc_info"]


def test_random_lines_asking_for_too_many_lines_fails_cleanly(stack):
    api = stack.client(stack.user_key("alice"))
    h = new_history(api)
    a = paste(api, h, "a\nb\n")
    stack.drain()
    result = run(api, h, "random_lines1", {"input": hda(a), "num_lines": 5})
    stack.drain()
    job = api.get(f"/api/jobs/{result['jobs'][0]['id']}?full=true").json
    assert job["state"] == "error" and "more lines (5)" in job["stderr"]


def test_jobs_get_a_clean_environment(tool_stack):
    stack = tool_stack
    api = stack.client(stack.user_key("alice"))
    h = new_history(api)
    result = run(api, h, "environment", {})
    stack.drain()
    env = dict(line.split("=", 1) for line in content(api, result["outputs"][0]["id"]).decode().splitlines() if "=" in line)
    assert env["LC_ALL"] == "C" and env["GALAXY_SLOTS"] == "1"
    assert "/jobs/" in env["HOME"] and env["TMPDIR"].startswith(env["HOME"])
    assert not any(key.startswith("NEBULA_") and key != "NEBULA_JOB_ID" for key in env)
    assert "VIRTUAL_ENV" not in env and "PYTHONPATH" not in env
