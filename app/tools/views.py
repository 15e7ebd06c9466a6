"""The API form of tools: Galaxy's tool dicts for GET /api/tools and GET /api/tools/{id}."""

from __future__ import annotations

import re
from typing import Any

from app.tools.loader import Tool
from app.tools.models import (
    BooleanParam,
    ConditionalParam,
    DataCollectionParam,
    DataColumnParam,
    DataParam,
    FloatParam,
    IntegerParam,
    RepeatParam,
    SelectParam,
    TextParam,
    ToolOutput,
)

_MODEL_CLASS = {
    DataParam: "DataToolParameter",
    DataCollectionParam: "DataCollectionToolParameter",
    DataColumnParam: "ColumnListToolParameter",
    IntegerParam: "IntegerToolParameter",
    FloatParam: "FloatToolParameter",
    TextParam: "TextToolParameter",
    BooleanParam: "BooleanToolParameter",
    SelectParam: "SelectToolParameter",
    RepeatParam: "Repeat",
    ConditionalParam: "Conditional",
}


def section_id(name: str) -> str:
    """A panel section id from its name ('Text Manipulation' → 'text_manipulation')."""
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def tool_summary(tool: Tool) -> dict[str, Any]:
    """A tool as GET /api/tools lists it."""
    section = tool.definition.section
    return {
        "model_class": "Tool",
        "id": tool.id,
        "name": tool.name,
        "version": tool.version,
        "description": tool.definition.description,
        "labels": [],
        "edam_operations": [],
        "edam_topics": [],
        "hidden": "",
        "is_workflow_compatible": tool.definition.action == "command",
        "xrefs": [],
        "link": f"/tool_runner?tool_id={tool.id}",
        "min_width": -1,
        "target": "galaxy_main",
        "form_style": "regular",
        "panel_section_id": section_id(section) if section else None,
        "panel_section_name": section,
        "tool_shed_repository": None,
    }


def tool_detail(tool: Tool) -> dict[str, Any]:
    """A tool with its inputs and outputs, as GET /api/tools/{id} shows it."""
    return {
        **tool_summary(tool),
        "inputs": [param_view(p) for p in tool.inputs],
        "outputs": [output_view(tool, o) for o in tool.outputs],
        "help": tool.definition.help,
        "requirements": [],
        "citations": False,
        "resources": tool.definition.resources.model_dump(),
    }


def panel(tools: list[Tool]) -> list[dict[str, Any]]:
    """Tools grouped into panel sections (tools without a section stand alone), in load order."""
    out: list[dict[str, Any]] = []
    sections: dict[str, dict[str, Any]] = {}
    for tool in tools:
        name = tool.definition.section
        if not name:
            out.append(tool_summary(tool))
            continue
        if name not in sections:
            sections[name] = {"model_class": "ToolSection", "id": section_id(name), "name": name,
                              "version": "", "elems": []}
            out.append(sections[name])
        sections[name]["elems"].append(tool_summary(tool))
    return out


def param_view(param: Any) -> dict[str, Any]:
    """One input parameter in Galaxy's to_dict form."""
    view: dict[str, Any] = {
        "model_class": _MODEL_CLASS[type(param)],
        "name": param.name,
        "type": param.type,
        "label": param.display_label,
        "help": param.help or "",
        "optional": param.optional,
        "argument": param.argument,
        "hidden": False,
        "is_dynamic": False,
        "refresh_on_change": False,
    }
    if isinstance(param, DataParam):
        view.update(extensions=param.format, multiple=param.multiple, value=None, options={"hda": [], "hdca": []})
    elif isinstance(param, DataCollectionParam):
        view.update(extensions=param.format, collection_types=param.collection_type or None, value=None,
                    options={"hda": [], "hdca": []})
    elif isinstance(param, DataColumnParam):
        # The options are the data_ref dataset's columns: none without a dataset chosen.
        view.update(data_ref=param.data_ref, numerical=param.numerical, multiple=param.multiple,
                    value=param.value, optional=param.may_be_empty, display=None, options=[], textable=True,
                    is_dynamic=True, use_header_names=param.use_header_names)
    elif isinstance(param, (IntegerParam, FloatParam)):
        view.update(value=param.value, min=param.min, max=param.max, area=False)
    elif isinstance(param, TextParam):
        view.update(value=param.value, area=param.area)
    elif isinstance(param, BooleanParam):
        view.update(value=param.checked, truevalue=param.truevalue, falsevalue=param.falsevalue)
    elif isinstance(param, SelectParam):
        view.update(value=param.default, multiple=param.multiple, display=param.display,
                    options=[[o.label or o.value, o.value, o.selected] for o in param.options])
    elif isinstance(param, RepeatParam):
        view.update(title=param.title or param.name, min=param.min, max=param.max,
                    default=param.default if param.default is not None else param.min,
                    inputs=[param_view(p) for p in param.inputs])
    elif isinstance(param, ConditionalParam):
        view.update(test_param=param_view(param.test_param), cases=[
            {"model_class": "ConditionalWhen", "value": w.value, "inputs": [param_view(p) for p in w.inputs]}
            for w in param.whens
        ])
    return view


def output_view(tool: Tool, output: ToolOutput) -> dict[str, Any]:
    """One output."""
    fmt = output.format or "data"
    if output.format_source or output.format == "input":
        fmt = "input"
    return {
        "model_class": "ToolOutput",
        "name": output.name,
        "format": fmt,
        "format_source": output.format_source or (tool.first_data_input if output.format == "input" else None),
        "label": output.label,
        "hidden": output.hidden,
        "edam_format": None,
        "edam_data": None,
        "count": 1,
    }
