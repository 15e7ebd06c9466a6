"""Accepted workflow descriptions, turned into Galaxy's native (.ga) dict.

Native ``.ga`` JSON is taken as is; gxformat2 (a dict with ``class: GalaxyWorkflow``, YAML
text, or Galaxy's ``{"yaml_content": ...}`` wrapper) is converted with the ``gxformat2``
library, as Galaxy does.
"""

from __future__ import annotations

import copy
from typing import Any

import yaml

from app.errors import RequestParameterInvalid

FORMAT2_CLASS = "GalaxyWorkflow"


def load_text(text: str) -> dict[str, Any]:
    """A description given as text (JSON is YAML): the dict it holds, or a 400."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RequestParameterInvalid(f"workflow: not valid JSON or YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise RequestParameterInvalid("workflow: the description must be a mapping")
    return data


def is_format2(data: dict[str, Any]) -> bool:
    """True for a gxformat2 description."""
    if data.get("class") == FORMAT2_CLASS or "yaml_content" in data:
        return True
    # A class-less description with gxformat2's top-level keys is format2 too.
    return "a_galaxy_workflow" not in data and ("inputs" in data or "outputs" in data)


def to_native(description: dict[str, Any] | str) -> dict[str, Any]:
    """The native dict of any accepted description (a deep copy; the input is not changed)."""
    data = load_text(description) if isinstance(description, str) else description
    if not isinstance(data, dict):
        raise RequestParameterInvalid("workflow: the description must be a JSON object or YAML text")
    if "yaml_content" in data:
        content = data["yaml_content"]
        if not isinstance(content, str):
            raise RequestParameterInvalid("workflow: yaml_content must be text")
        data = load_text(content)
    if is_format2(data):
        return format2_to_native(data)
    if "steps" not in data:
        raise RequestParameterInvalid(
            "workflow: not a Galaxy workflow (expected a .ga description with 'steps', "
            "or gxformat2 with 'class: GalaxyWorkflow')"
        )
    return copy.deepcopy(data)


def format2_to_native(data: dict[str, Any]) -> dict[str, Any]:
    """Convert gxformat2 with the gxformat2 library; its complaints become a 400."""
    from gxformat2 import ImportOptions, python_to_workflow

    _check_format2_sources(data)
    options = ImportOptions()
    options.deduplicate_subworkflows = False
    options.encode_tool_state_json = False
    try:
        native = python_to_workflow(copy.deepcopy(data), None, workflow_directory=None, import_options=options)
    except Exception as exc:  # noqa: BLE001 - the library raises many types for bad input
        raise RequestParameterInvalid(f"workflow: invalid gxformat2 description: {_reason(exc)}") from exc
    if not isinstance(native, dict) or "steps" not in native:
        raise RequestParameterInvalid("workflow: the gxformat2 description did not convert to a workflow")
    if data.get("label") and not data.get("name"):
        native["name"] = data["label"]
    elif data.get("name"):
        native["name"] = data["name"]
    return native


def _reason(exc: Exception) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:500] if len(text) > 500 else text


def _names(items: Any, key: str = "id") -> tuple[list[str], list[Any]]:
    """Ids of a gxformat2 mapping-or-list section, and its entries."""
    if isinstance(items, dict):
        return [str(k) for k in items], list(items.values())
    if isinstance(items, list):
        names = [str(i.get(key) or i.get("label") or i.get("id")) for i in items if isinstance(i, dict)]
        return names, list(items)
    return [], []


def _check_format2_sources(data: dict[str, Any]) -> None:
    """Refuse step inputs and workflow outputs naming a step or input that does not exist."""
    input_names, _ = _names(data.get("inputs"))
    step_names, steps = _names(data.get("steps"), key="label")
    known = set(input_names) | set(step_names)

    def check(source: Any, where: str) -> None:
        for item in source if isinstance(source, list) else [source]:
            if isinstance(item, dict):
                item = item.get("source")
            if item is None or isinstance(item, dict | list):
                continue
            text = str(item)
            if text.split("/", 1)[0].isdigit():  # a step referred to by its index
                continue
            if text not in known and not any(text.startswith(name + "/") for name in known):
                raise RequestParameterInvalid(
                    f"invalid workflow: {where} refers to {text!r}, which is not a step or an input")

    for name, step in zip(step_names, steps):
        if not isinstance(step, dict):
            continue
        inputs = step.get("in") or {}
        if isinstance(inputs, dict):
            for input_name, source in inputs.items():
                check(source.get("source") if isinstance(source, dict) else source, f"step {name!r} input {input_name!r}")
        elif isinstance(inputs, list):
            for entry in inputs:
                if isinstance(entry, dict):
                    check(entry.get("source"), f"step {name!r} input {entry.get('id')!r}")
    output_names, outputs = _names(data.get("outputs"))
    for name, output in zip(output_names, outputs):
        if isinstance(output, dict):
            check(output.get("outputSource"), f"workflow output {name!r}")
