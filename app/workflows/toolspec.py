"""What workflows need to know of a tool: its data inputs (for map-over) and its outputs.

The one place that reads the toolbox's ``Tool`` objects, so that import validation and
the scheduler do not depend on their shape.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from app.errors import NotFound
from app.settings import Settings


@dataclass(frozen=True)
class ToolInput:
    """A tool input a workflow connection can feed."""

    name: str
    kind: str  # "data", "data_collection" or "param"
    multiple: bool = False
    collection_types: tuple[str, ...] = ()
    optional: bool = False


@dataclass(frozen=True)
class ToolSpec:
    """A tool as workflows see it."""

    id: str
    version: str
    inputs: dict[str, ToolInput]  # by flat name, repeat indexes left out ("queries|input2")
    outputs: dict[str, str]  # output name → format
    repeats: frozenset[str]
    tool: Any

    def input(self, connection_name: str) -> ToolInput | None:
        """The input a connection name (``queries_0|input2``) feeds, if the tool has it."""
        parts = connection_name.split("|")
        normalized = []
        for part in parts[:-1]:
            match = _INDEXED.match(part)
            prefix = "|".join([*normalized, match.group(1)]) if match else None
            normalized.append(match.group(1) if match and prefix in self.repeats else part)
        normalized.append(parts[-1])
        return self.inputs.get("|".join(normalized))


_INDEXED = re.compile(r"^(.+)_(\d+)$")


def _toolbox(settings: Settings):
    try:
        from app.tools import toolbox
    except ImportError:  # the toolbox is not installed in this build
        return None
    return toolbox(settings)


def tool_spec(settings: Settings, tool_id: str) -> ToolSpec | None:
    """The tool's spec, or None when no such tool is installed."""
    box = _toolbox(settings)
    if box is None:
        return None
    try:
        tool = box.get(tool_id)
    except NotFound:
        return None
    return describe(tool)


def describe(tool: Any) -> ToolSpec:
    """A ToolSpec from a toolbox Tool (cached on the tool: tools do not change)."""
    cached = getattr(tool, "_workflow_spec", None)
    if cached is not None:
        return cached
    inputs: dict[str, ToolInput] = {}
    repeats: set[str] = set()
    _walk(tool.inputs, "", inputs, repeats)
    spec = ToolSpec(id=tool.id, version=str(tool.version), inputs=inputs,
                    outputs={o.name: o.format or "data" for o in tool.outputs}, repeats=frozenset(repeats), tool=tool)
    try:
        tool._workflow_spec = spec
    except AttributeError:  # a frozen tool object: compute each time
        pass
    return spec


def _walk(params: list[Any], prefix: str, found: dict[str, ToolInput], repeats: set[str]) -> None:
    for param in params:
        name = f"{prefix}{param.name}"
        kind = param.type
        if kind == "repeat":
            repeats.add(name)
            _walk(param.inputs, f"{name}|", found, repeats)
        elif kind == "conditional":
            _walk([param.test_param], f"{name}|", found, repeats)
            for when in param.whens:
                _walk(when.inputs, f"{name}|", found, repeats)
        elif kind == "data":
            found[name] = ToolInput(name, "data", bool(param.multiple), optional=bool(param.optional))
        elif kind == "data_collection":
            found[name] = ToolInput(name, "data_collection", collection_types=tuple(param.collection_type),
                                    optional=bool(param.optional))
        else:
            found[name] = ToolInput(name, "param", optional=bool(param.optional))


def output_names(settings: Settings) -> Callable[[str], set[str] | None]:
    """For import validation: a tool's output names, or None for a tool that is not installed."""

    def names(tool_id: str) -> set[str] | None:
        spec = tool_spec(settings, tool_id)
        return set(spec.outputs) if spec is not None else None

    return names


def missing_tools(settings: Settings, tool_ids: set[str]) -> list[str]:
    """The tool ids among these that are not installed, sorted."""
    return sorted(t for t in tool_ids if tool_spec(settings, t) is None)
