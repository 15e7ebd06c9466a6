"""What a tool's outputs are called and which extension they get, from the job's inputs."""

from __future__ import annotations

from typing import Any

from app.tools.command import label_environment
from app.tools.loader import Tool
from app.tools.models import ToolOutput


def on_string(hids: list[int]) -> str:
    """Galaxy's 'data 1', 'data 1 and data 2', 'data 1, data 2, and others'."""
    names = [f"data {hid}" for hid in hids]
    if len(names) <= 2:
        return " and ".join(names)
    if len(names) == 3:
        return f"{names[0]}, {names[1]}, and {names[2]}"
    return f"{names[0]}, {names[1]}, and others"


def output_label(tool: Tool, output: ToolOutput, hids: list[int], params: dict[str, Any]) -> str:
    """The name of an output dataset: the output's label template, else 'TOOL on data N'."""
    on = on_string(hids)
    if output.label:
        try:
            text = label_environment().from_string(output.label).render(
                {**params, "tool": {"name": tool.name, "id": tool.id, "version": tool.version}, "on_string": on})
            if text.strip():
                return text.strip()[:255]
        except Exception:  # noqa: BLE001 - a broken label falls back to the default name
            pass
    return (f"{tool.name} on {on}" if on else tool.name)[:255]


def input_extensions(named: dict[str, list[str]], name: str) -> list[str]:
    """Extensions of the datasets given to the data input ``name`` (top-level or nested)."""
    if name in named:
        return named[name]
    for key, extensions in named.items():
        if key.rsplit("|", 1)[-1] == name:
            return extensions
    return []


def output_format(tool: Tool, output: ToolOutput, named: dict[str, list[str]]) -> str:
    """An output's extension: its format, or the format of the input it names ('auto': sniff)."""
    source = output.format_source
    if output.format == "input":
        source = tool.first_data_input
    if source is not None:
        extensions = input_extensions(named, source)
        fmt = extensions[0] if extensions else "data"
    else:
        fmt = output.format or "data"
    for change in output.change_format:
        if change.value in input_extensions(named, change.input)[:1]:
            fmt = change.format
    return fmt
