"""Data inputs' formats (Galaxy's subtype rule) and data_column parameters, through the API and workflows."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path

import dramatiq
import pytest
import sqlalchemy as sa
from dramatiq.brokers.stub import StubBroker

from app.api import create_app
from app.datatypes_registry import accepts, is_subtype, lineage
from app.datatypes_tabular import tabular_metadata
from app.migrate import upgrade
from app.models import Job
from app.services.registry import build_services
from tests.app.conftest import Stack, make_settings
from tests.app.test_invocations import invoke, settle
from tests.app.test_tools import content, hda, job_count, new_history, paste, run, run_and_read
from tests.app.test_workflows import import_workflow
from workers.runtime import BrokerPublisher, build_runtime

TOOLS = {
    "tab_list.yml": """
        id: tab_list
        name: Cat a list of tables
        inputs:
          - {name: items, type: data_collection, collection_type: list, format: tabular}
        outputs:
          out: {format: tabular}
        command: cat {{ items }} > {{ out }}
    """,
    "two_formats.yml": """
        id: two_formats
        name: A table and a sequence
        inputs:
          - {name: table, type: data, format: "tabular"}
          - {name: seqs, type: data, format: [fasta, fastq], optional: true}
        outputs:
          out: {format: txt}
        command: cat {{ table }} > {{ out }}
    """,
    "columns_tool.yml": """
        id: columns_tool
        name: Columns
        inputs:
          - {name: table, type: data, format: tabular}
          - {name: cols, type: data_column, data_ref: table, multiple: true, value: "c1,2"}
          - {name: num, type: data_column, data_ref: table, numerical: true, optional: true}
          - name: more
            type: conditional
            test_param: {name: pick, type: select, options: [none, one]}
            whens:
              - value: one
                inputs:
                  - {name: extra, type: data_column, data_ref: table, force_select: false}
        outputs:
          out: {format: txt}
        command: >-
          {{ __python__ }} -c "import sys; open(sys.argv[1], 'w').write(repr(sys.argv[2:]))"
          {{ out }} {{ cols }} {{ num }} {{ more.extra }}
    """,
}


@pytest.fixture
def params_stack(data_dir: Path, tmp_path: Path) -> Iterator[Stack]:
    """The app with the tools above loaded after the built-in ones."""
    tools = tmp_path / "tools"
    tools.mkdir()
    for name, text in TOOLS.items():
        (tools / name).write_text(textwrap.dedent(text))
    settings = make_settings(data_dir, tool_dirs=[tools])
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


def _collection(api, history_id: str, dataset_ids: list[str]) -> str:
    body = {"type": "dataset_collection", "collection_type": "list", "name": "tables",
            "element_identifiers": [{"name": f"e{i}", "src": "hda", "id": d} for i, d in enumerate(dataset_ids)]}
    response = api.post(f"/api/histories/{history_id}/contents", json=body)
    assert response.status_code == 200, response.json
    return response.json["id"]


def _hdca_batch(hdca_id: str) -> dict:
    return {"batch": True, "values": [{"src": "hdca", "id": hdca_id}]}


# -- the datatype tree ------------------------------------------------------------------------


def test_subtypes_follow_galaxys_classes():
    assert lineage("bed") == ("bed", "interval", "tabular", "txt", "data")
    assert is_subtype("fastqsanger", "sequence") and is_subtype("fasta", "txt")
    assert not is_subtype("txt", "tabular") and not is_subtype("csv", "tabular")
    assert lineage("someformat") == ("someformat", "data")
    assert accepts(("tabular",), "bed") and accepts(("sam", "tabular"), "vcf")
    assert not accepts(("tabular",), "txt") and not accepts(("tabular",), "data")
    assert accepts(("data",), "png") and accepts((), "anything")
    assert accepts(("someformat",), "someformat") and not accepts(("someformat",), "txt")


# -- formats at POST /api/tools ------------------------------------------------------------------


def test_a_dataset_of_a_refused_format_is_a_400_naming_input_and_formats(stack):
    api = stack.client(stack.user_key("alice"))
    h = new_history(api)
    text = paste(api, h, "just words\n", ext="txt")
    table = paste(api, h, "a\t1\n", ext="tabular")
    bed = paste(api, h, "chr1\t10\t20\n", ext="bed")
    stack.drain()
    before = job_count(stack)
    refused = run(api, h, "addValue", {"input": hda(text), "exp": "x"}, status=400)
    assert "'input'" in refused["err_msg"] and "'txt'" in refused["err_msg"] and "tabular" in refused["err_msg"]
    assert "dataset 1" in refused["err_msg"]
    assert job_count(stack) == before
    # a subtype is accepted: bed is an interval is a tabular
    assert run_and_read(stack, api, h, "addValue", {"input": hda(bed), "exp": "x"}) == b"chr1\t10\t20\tx\n"
    assert run_and_read(stack, api, h, "addValue", {"input": hda(table), "exp": "y"}) == b"a\t1\ty\n"
    # data accepts anything; txt accepts its subtypes
    assert run_and_read(stack, api, h, "cat1", {"input1": hda(text)}) == b"just words\n"
    assert run_and_read(stack, api, h, "Show beginning1", {"input": hda(table)}) == b"a\t1\n"


def test_an_upload_whose_format_is_not_known_yet_is_not_refused(stack):
    api = stack.client(stack.user_key("alice"))
    h = new_history(api)
    pending = paste(api, h, "r1\tx\nr2\ty\n")  # extension 'auto' until the upload is sniffed
    assert api.get(f"/api/datasets/{pending}").json["extension"] == "auto"
    result = run(api, h, "addValue", {"input": hda(pending), "exp": "z"})
    stack.drain()
    assert content(api, result["outputs"][0]["id"]) == b"r1\tx\tz\nr2\ty\tz\n"


def test_repeats_conditionals_and_optional_inputs_are_checked(params_stack):
    stack = params_stack
    api = stack.client(stack.user_key("alice"))
    h = new_history(api)
    table = paste(api, h, "a\t1\n", ext="tabular")
    fasta = paste(api, h, ">s\nACGT\n", ext="fasta")
    fastq = paste(api, h, "@r\nACGT\n+\nIIII\n", ext="fastqsanger")
    stack.drain()
    run(api, h, "two_formats", {"table": hda(table), "seqs": hda(fasta)})
    run(api, h, "two_formats", {"table": hda(table), "seqs": hda(fastq)})
    run(api, h, "two_formats", {"table": hda(table)})
    refused = run(api, h, "two_formats", {"table": hda(table), "seqs": hda(table)}, status=400)
    assert "'seqs'" in refused["err_msg"] and "fasta, fastq" in refused["err_msg"]
    assert "'table'" in run(api, h, "two_formats", {"table": hda(fasta)}, status=400)["err_msg"]


def test_map_over_batches_and_collection_inputs_check_every_element(params_stack):
    stack = params_stack
    api = stack.client(stack.user_key("alice"))
    h = new_history(api)
    tables = [paste(api, h, f"t{i}\t{i}\n", ext="tabular") for i in range(3)]
    text = paste(api, h, "words\n", ext="txt")
    stack.drain()
    good, bad = _collection(api, h, tables), _collection(api, h, [*tables, text])
    before = job_count(stack)
    mapped = run(api, h, "addValue", {"input": _hdca_batch(bad), "exp": "1"}, status=400)
    assert "'input'" in mapped["err_msg"] and "'txt'" in mapped["err_msg"]
    listed = run(api, h, "addValue", {"input": {"batch": True, "values": [hda(tables[0]), hda(text)]}}, status=400)
    assert "'input'" in listed["err_msg"]
    whole = run(api, h, "tab_list", {"items": {"src": "hdca", "id": bad}}, status=400)
    assert "'items'" in whole["err_msg"] and "tabular" in whole["err_msg"]
    assert job_count(stack) == before
    contents = api.get(f"/api/histories/{h}/contents").json
    assert sum(c["history_content_type"] == "dataset_collection" for c in contents) == 2  # no implicit output
    result = run(api, h, "addValue", {"input": _hdca_batch(good), "exp": "1"})
    assert len(result["jobs"]) == 3
    stack.drain()
    whole = run(api, h, "tab_list", {"items": {"src": "hdca", "id": good}})
    stack.drain()
    assert content(api, whole["outputs"][0]["id"]) == b"t0\t0\nt1\t1\nt2\t2\n"


# -- formats in workflow invocations -----------------------------------------------------------

ADD_VALUE_WORKFLOW = {
    "class": "GalaxyWorkflow", "label": "Add a column",
    "inputs": {"table": "data"},
    "steps": {"add": {"tool_id": "addValue", "in": {"input": "table"}, "state": {"exp": "w", "iterate": "no"}}},
}


def test_a_workflow_step_given_a_refused_format_fails_with_a_clear_message(stack):
    api = stack.client(stack.user_key("alice"))
    h = new_history(api)
    text = paste(api, h, "words\n", ext="txt")
    table = paste(api, h, "a\t1\n", ext="tabular")
    stack.drain()
    workflow_id = import_workflow(api, ADD_VALUE_WORKFLOW)["id"]
    before = job_count(stack)
    failed = settle(stack, api, invoke(api, workflow_id, {"0": hda(text)}, history_id=h)["id"])
    assert failed["state"] == "failed", failed
    details = failed["messages"][0]["details"]
    assert "'input'" in details and "'txt'" in details and "tabular" in details
    assert job_count(stack) == before
    done = settle(stack, api, invoke(api, workflow_id, {"0": hda(table)}, history_id=h)["id"])
    assert done["state"] == "completed", done["messages"]


def test_a_workflow_map_over_a_list_with_a_refused_element_fails(stack):
    api = stack.client(stack.user_key("alice"))
    h = new_history(api)
    ids = [paste(api, h, "a\t1\n", ext="tabular"), paste(api, h, "words\n", ext="txt")]
    stack.drain()
    hdca = _collection(api, h, ids)
    workflow = {**ADD_VALUE_WORKFLOW, "inputs": {"table": {"type": "data_collection", "collection_type": "list"}}}
    workflow_id = import_workflow(api, workflow)["id"]
    failed = settle(stack, api, invoke(api, workflow_id, {"0": {"src": "hdca", "id": hdca}}, history_id=h)["id"])
    assert failed["state"] == "failed", failed
    assert "'txt'" in failed["messages"][0]["details"]
    with stack.services.session_factory() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Job).where(Job.tool_id == "addValue")) == 0


# -- column metadata of tabular datasets -------------------------------------------------------


def test_column_metadata_is_guessed_like_galaxy():
    assert tabular_metadata("name\tn\nz\t3\n#note\ny\t1.5\n") == {
        "columns": 2, "column_types": ["str", "float"], "column_names": ["name", "n"]}
    assert tabular_metadata("#a\tb\tc\nx\t1\t2,3\ny\t2\n") == {
        "columns": 3, "column_types": ["str", "int", "list"], "column_names": ["a", "b", "c"]}
    assert tabular_metadata("chr1\t10\t20\n") == {"columns": 3, "column_types": ["str", "int", "int"]}
    assert tabular_metadata("# only a comment\n") == {}


def _metadata_through_uploads_and_jobs(stack) -> None:
    api = stack.client(stack.user_key("alice"))
    h = new_history(api)
    table = paste(api, h, "name\tn\nz\t3\ny\t1\n")
    text = paste(api, h, "just words\n")
    stack.drain()
    shown = api.get(f"/api/datasets/{table}").json
    assert shown["extension"] == "tabular" and shown["metadata_columns"] == 2
    assert shown["metadata_column_types"] == ["str", "int"] and shown["metadata_column_names"] == ["name", "n"]
    assert api.get(f"/api/datasets/{text}").json["metadata_columns"] is None
    added = run(api, h, "addValue", {"input": hda(table), "exp": "x"})
    stack.drain()
    out = api.get(f"/api/datasets/{added['outputs'][0]['id']}").json
    assert out["state"] == "ok" and out["metadata_columns"] == 3 and out["metadata_column_types"] == ["str", "int", "str"]


def test_uploads_and_job_outputs_get_column_metadata(stack):
    _metadata_through_uploads_and_jobs(stack)


@pytest.mark.postgres
def test_job_outputs_get_column_metadata_on_postgresql(pg_url, data_dir, tmp_path):
    from tests.app.test_tools import build_stack

    for stack in build_stack(data_dir, tmp_path, database_url=pg_url):
        _metadata_through_uploads_and_jobs(stack)


# -- data_column parameters --------------------------------------------------------------------


def test_sort1_columns_are_data_columns_in_the_tool_view(stack):
    api = stack.client(stack.user_key("alice"))
    inputs = api.get("/api/tools/sort1").json["inputs"]
    column = inputs[1]
    assert column["type"] == "data_column" and column["model_class"] == "ColumnListToolParameter"
    assert column["data_ref"] == "input" and column["multiple"] is False and column["numerical"] is False
    other = inputs[4]["inputs"][0]
    assert other["name"] == "other_column" and other["type"] == "data_column" and other["data_ref"] == "input"


def test_sort1_takes_columns_as_galaxy_clients_send_them(stack):
    api = stack.client(stack.user_key("alice"))
    h = new_history(api)
    a = paste(api, h, "b\t10\tx\na\t9\ty\nC\t100\tx\n")
    stack.drain()
    assert api.get(f"/api/datasets/{a}").json["metadata_columns"] == 3
    by_second = b"a\t9\ty\nb\t10\tx\nC\t100\tx\n"
    for column in ("2", 2, "c2", " 2 ", {"value": "2"}, ["2"]):
        inputs = {"input": hda(a), "column": column, "style": "n", "order": ""}
        assert run_and_read(stack, api, h, "sort1", inputs) == by_second, column
    # no column: Galaxy's accept_default, column 1
    first = run_and_read(stack, api, h, "sort1", {"input": hda(a), "column": "1", "style": "", "order": "r"})
    assert first == b"b\t10\tx\na\t9\ty\nC\t100\tx\n"
    assert run_and_read(stack, api, h, "sort1", {"input": hda(a), "style": "", "order": "r"}) == first
    job = run(api, h, "sort1", {"input": hda(a), "column": "c3"})["jobs"][0]
    assert api.get(f"/api/jobs/{job['id']}").json["params"]["column"] == "3"


def test_bad_columns_are_400s_naming_the_parameter_and_create_no_job(stack):
    api = stack.client(stack.user_key("alice"))
    h = new_history(api)
    a = paste(api, h, "b\t10\tx\na\t9\ty\n")
    stack.drain()
    before = job_count(stack)
    cases = [
        ({"column": "4"}, "'column'", "beyond the 3 columns"),
        ({"column": "abc"}, "'column'", "not a column number"),
        ({"column": 0}, "'column'", "not a column number"),
        ({"column": -1}, "'column'", "not a column number"),
        ({"column": True}, "'column'", "not a column number"),
        ({"column": 2.5}, "'column'", "not a column number"),
        ({"column": ["1", "2"]}, "'column'", "one column"),
        ({"column": {"a": 1}}, "'column'", "column number"),
        ({"column": "2", "column_set_0|other_column": "c9"}, "'column_set_0|other_column'", "beyond the 3 columns"),
    ]
    for extra, name, why in cases:
        refused = run(api, h, "sort1", {"input": hda(a), **extra}, status=400)
        assert name in refused["err_msg"] and why in refused["err_msg"], (extra, refused)
    assert job_count(stack) == before


def test_columns_of_datasets_not_finished_yet_are_not_checked(stack):
    api = stack.client(stack.user_key("alice"))
    h = new_history(api)
    pending = paste(api, h, "b\t1\na\t2\n", ext="tabular")  # metadata set when the upload finishes
    run(api, h, "sort1", {"input": hda(pending), "column": "7"})
    stack.drain()
    chained = run(api, h, "cat1", {"input1": hda(pending)})["outputs"][0]["id"]
    run(api, h, "sort1", {"input": hda(chained), "column": "7"})  # its output has no metadata yet
    stack.drain()
    assert run(api, h, "sort1", {"input": hda(chained), "column": "7"}, status=400)


def test_mapped_columns_are_checked_against_every_element(stack):
    api = stack.client(stack.user_key("alice"))
    h = new_history(api)
    narrow, wide = paste(api, h, "b\t2\na\t1\n"), paste(api, h, "b\t2\tz\na\t1\ty\n")
    stack.drain()
    hdca = _collection(api, h, [wide, narrow])
    before = job_count(stack)
    refused = run(api, h, "sort1", {"input": _hdca_batch(hdca), "column": "3"}, status=400)
    assert "'column'" in refused["err_msg"] and "beyond the 2 columns" in refused["err_msg"]
    assert job_count(stack) == before
    result = run(api, h, "sort1", {"input": _hdca_batch(hdca), "column": "2", "style": "n", "order": ""})
    stack.drain()
    assert [content(api, o["id"]) for o in result["outputs"]] == [b"a\t1\ty\nb\t2\tz\n", b"a\t1\nb\t2\n"]


def test_multiple_numerical_optional_and_nested_data_columns(params_stack):
    stack = params_stack
    api = stack.client(stack.user_key("alice"))
    h = new_history(api)
    table = paste(api, h, "name\tn\tx\nz\t3\t1.5\ny\t1\t2\n")
    stack.drain()
    assert api.get(f"/api/datasets/{table}").json["metadata_column_types"] == ["str", "int", "float"]

    def argv(inputs: dict) -> str:
        return run_and_read(stack, api, h, "columns_tool", {"table": hda(table), **inputs}).decode()

    assert argv({}) == "['1,2', '', '']"
    assert argv({"cols": "c3\n1", "num": "c2", "more|pick": "one", "more|extra": 3}) == "['3,1', '2', '3']"
    assert argv({"cols": [1, "c3"], "more": {"pick": "one"}}) == "['1,3', '', '']"
    not_numerical = run(api, h, "columns_tool", {"table": hda(table), "num": "1"}, status=400)
    assert "'num'" in not_numerical["err_msg"] and "not numerical" in not_numerical["err_msg"]
    beyond = run(api, h, "columns_tool", {"table": hda(table), "cols": "1,4"}, status=400)
    assert "'cols'" in beyond["err_msg"] and "column 4" in beyond["err_msg"]
    nested = run(api, h, "columns_tool", {"table": hda(table), "more|pick": "one", "more|extra": "5"}, status=400)
    assert "'more|extra'" in nested["err_msg"]
    view = {i["name"]: i for i in api.get("/api/tools/columns_tool").json["inputs"]}
    assert view["cols"]["multiple"] is True and view["cols"]["value"] == ["1", "2"] and view["num"]["numerical"] is True


@pytest.mark.parametrize("param, error", [
    ({"name": "c", "type": "data_column", "data_ref": "nothing"}, "data_ref 'nothing'"),
    ({"name": "c", "type": "data_column", "data_ref": "table", "value": "x"}, "value: 'x' is not a column number"),
    ({"name": "c", "type": "data_column", "data_ref": "table", "value": "1,2"}, "takes one column"),
    ({"name": "c", "type": "data_column"}, "data_ref"),
])
def test_broken_data_columns_are_load_errors(tmp_path, param, error):
    import yaml

    from app.tools import ToolLoadError, load_tool
    from app.tools.loader import _LoadFailure

    path = tmp_path / "bad.yml"
    path.write_text(yaml.safe_dump({"id": "bad", "name": "Bad", "command": "true", "outputs": {},
                                    "inputs": [{"name": "table", "type": "data"}, param]}))
    with pytest.raises(_LoadFailure) as failure:
        load_tool(path)
    assert isinstance(failure.value.error, ToolLoadError) and error in str(failure.value.error), failure.value.error


SORT_WORKFLOW = {
    "class": "GalaxyWorkflow", "label": "Sort on a column",
    "inputs": {"table": "data"},
    "steps": {"sort": {"tool_id": "sort1", "in": {"input": "table"},
                       "state": {"column": "2", "style": "n", "order": "r", "column_set": [], "header_lines": "0"}}},
}


def test_workflows_setting_a_column_as_text_keep_running(stack):
    api = stack.client(stack.user_key("alice"))
    h = new_history(api)
    table = paste(api, h, "a\t9\nb\t10\nc\t2\n", ext="tabular")
    stack.drain()
    workflow_id = import_workflow(api, SORT_WORKFLOW)["id"]
    done = settle(stack, api, invoke(api, workflow_id, {"0": hda(table)}, history_id=h)["id"])
    assert done["state"] == "completed", done["messages"]
    sorted_id = [c for c in api.get(f"/api/histories/{h}/contents").json if c["hid"] == 2][0]["id"]
    assert content(api, sorted_id) == b"b\t10\na\t9\nc\t2\n"


def test_same_named_inputs_of_two_conditional_cases_are_told_apart():
    from app.errors import RequestParameterInvalid
    from app.tools.checks import DatasetFacts, check_formats
    from app.tools.models import ToolDefinition

    tool = ToolDefinition.model_validate({
        "id": "cases", "name": "Cases", "command": "true", "inputs": [{
            "name": "c", "type": "conditional", "test_param": {"name": "pick", "type": "select", "options": ["a", "b"]},
            "whens": [{"value": "a", "inputs": [{"name": "x", "type": "data", "format": "tabular"}]},
                      {"value": "b", "inputs": [{"name": "x", "type": "data", "format": "fasta"}]}]}]})
    facts = {1: DatasetFacts(1, "tabular", 1, "t"), 2: DatasetFacts(2, "fasta", 2, "f")}

    def job(pick: str, dataset_id: int) -> tuple[dict, dict]:
        return {"c": {"pick": pick, "x": {"src": "hda", "id": dataset_id}}}, {"c|x": [dataset_id]}

    check_formats(tool.inputs, [job("a", 1), job("b", 2), job("a", 1)], facts)
    with pytest.raises(RequestParameterInvalid, match="'c\\|x'.*'tabular'.*fasta"):
        check_formats(tool.inputs, [job("a", 1), job("b", 1)], facts)
