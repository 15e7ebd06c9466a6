"""Exporting a stored workflow version as native ``.ga`` or as gxformat2."""

from __future__ import annotations

import copy
import json
from typing import Any

from app.errors import RequestParameterInvalid
from app.models.workflows import StoredWorkflow, Workflow

STYLES = ("ga", "format2", "export", "legacy", "run", "editor", "instance")


def export_ga(workflow: Workflow, stored: StoredWorkflow | None) -> dict[str, Any]:
    """The native description, carrying the stored workflow's current name, annotation and tags."""
    data = copy.deepcopy(workflow.definition)
    data["a_galaxy_workflow"] = "true"
    data.setdefault("format-version", "0.1")
    data["uuid"] = workflow.uuid
    if stored is not None:
        data["name"] = stored.name
        data["annotation"] = stored.annotation or ""
        data["tags"] = list(stored.tags or [])
        if workflow.version is not None:
            data["version"] = workflow.version
    _encode_tool_states(data)
    return data


def _encode_tool_states(data: dict[str, Any]) -> None:
    """Native exports carry tool_state as a JSON string, as Galaxy writes it."""
    for step in (data.get("steps") or {}).values():
        if isinstance(step.get("tool_state"), dict):
            step["tool_state"] = json.dumps(step["tool_state"])
        if isinstance(step.get("subworkflow"), dict):
            _encode_tool_states(step["subworkflow"])


def export_format2(workflow: Workflow, stored: StoredWorkflow | None) -> dict[str, Any]:
    """The gxformat2 description (``class: GalaxyWorkflow``), converted by the gxformat2 library."""
    from gxformat2 import from_galaxy_native

    native = export_ga(workflow, stored)
    native.pop("version", None)
    try:
        data = from_galaxy_native(native)
    except Exception as exc:  # noqa: BLE001 - the library raises many types
        raise RequestParameterInvalid(f"this workflow cannot be written as gxformat2: {exc}") from exc
    if stored is not None and "label" not in data:
        data["label"] = stored.name
    return data


def export(workflow: Workflow, stored: StoredWorkflow | None, style: str) -> dict[str, Any]:
    """Export in a style: 'format2' for gxformat2, anything else Galaxy accepts gives .ga."""
    if style not in STYLES:
        raise RequestParameterInvalid(f"style: unknown export style {style!r} (use 'ga' or 'format2')")
    if style == "format2":
        return export_format2(workflow, stored)
    return export_ga(workflow, stored)
