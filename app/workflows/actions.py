"""Post-job actions (Galaxy's PJAs): checked at import, turned into dataset columns when applied.

A tool step's ``post_job_actions`` maps a key to ``{"action_type", "output_name",
"action_arguments"}``; an empty output name means every output. Galaxy applies the
"immediate" actions when it creates a job's outputs: RenameDatasetAction (``newname``, where
``#{input}`` is the name of the dataset given to that input, with ``| basename``, ``| upper``
and ``| lower``, and ``${name}`` a replacement parameter), ChangeDatatypeAction
(``newtype``), TagDatasetAction and RemoveTagDatasetAction (``tags``, comma separated,
``#x`` meaning ``name:x``). HideDatasetAction is applied when the job ends, unless it
failed; a changed datatype is applied again then, so that the measured format does not
undo it. On a mapped-over step rename, hide and tags also apply to the implicit
collections, at once (Galaxy's mapped_over_output_actions).

Galaxy's editor turns "not a workflow output" into HideDatasetActions when it saves a
workflow; the runtime only follows the actions, and so does Nebula. DeleteIntermediatesAction,
EmailAction, ColumnSetAction and the other types Galaxy knows are accepted and not applied;
unknown types are kept (Galaxy imports them too) and ignored.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

from app.datatypes_registry import PARENTS, ROOT
from app.workflows.jsontext import json_mapping

log = logging.getLogger(__name__)

RENAME = "RenameDatasetAction"
HIDE = "HideDatasetAction"
CHANGE_DATATYPE = "ChangeDatatypeAction"
TAG = "TagDatasetAction"
REMOVE_TAG = "RemoveTagDatasetAction"
APPLIED = frozenset({RENAME, HIDE, CHANGE_DATATYPE, TAG, REMOVE_TAG})
# Known to Galaxy, accepted, not applied by Nebula.
NOT_APPLIED = frozenset({"DeleteIntermediatesAction", "EmailAction", "ColumnSetAction", "ValidateOutputsAction",
                         "DeleteDatasetAction", "SetMetadataAction"})
EXTRA_DATATYPES = frozenset({ROOT, "expression.json"})
MAX_ACTIONS = 200
_INPUT_REFERENCE = re.compile(r"#\{([^}]*)\}")


class ActionError(ValueError):
    """A post-job action with arguments Nebula cannot apply."""


def known_datatype(extension: str) -> bool:
    """Whether a datatype may be the target of ChangeDatatypeAction."""
    return extension in PARENTS or extension in EXTRA_DATATYPES


def normalize_actions(value: Any, where: str) -> dict[str, dict[str, Any]]:
    """A tool step's post-job actions, checked: ``{key: {action_type, output_name, action_arguments}}``."""
    if value in (None, "", [], {}):
        return {}
    try:
        value = json_mapping(value, "post_job_actions")
    except ValueError as exc:
        raise ActionError(str(exc)) from None
    if len(value) > MAX_ACTIONS:
        raise ActionError(f"more than {MAX_ACTIONS} post-job actions")
    actions = {}
    for key, action in value.items():
        actions[str(key)] = _normalize_action(str(key), action)
        action_type = actions[str(key)]["action_type"]
        if action_type not in APPLIED | NOT_APPLIED:
            log.info("unknown post-job action kept and ignored", extra={"where": where, "action_type": action_type})
    return actions


def _normalize_action(key: str, action: Any) -> dict[str, Any]:
    if not isinstance(action, dict):
        raise ActionError(f"post-job action {key!r} must be a mapping")
    action_type = action.get("action_type")
    if not isinstance(action_type, str) or not action_type:
        raise ActionError(f"post-job action {key!r} needs an action_type")
    output_name = action.get("output_name") or ""
    if not isinstance(output_name, str):
        raise ActionError(f"{action_type} {key!r}: output_name must be text")
    try:
        arguments = json_mapping(action.get("action_arguments") or {},
                                 f"{action_type} on output {output_name!r}: action_arguments")
    except ValueError as exc:
        raise ActionError(str(exc)) from None
    _check_arguments(action_type, output_name, arguments)
    return {"action_type": action_type, "output_name": output_name, "action_arguments": arguments}


def _check_arguments(action_type: str, output_name: str, arguments: dict[str, Any]) -> None:
    what = f"{action_type} on output {output_name!r}" if output_name else f"{action_type} on every output"
    if action_type == RENAME:
        newname = arguments.get("newname")
        if newname is not None and not isinstance(newname, str):
            raise ActionError(f"{what}: newname must be text")
        if newname and newname.count("#{") > len(_INPUT_REFERENCE.findall(newname)):
            raise ActionError(f"{what}: newname {newname!r} has a '#{{' without its '}}'")
    elif action_type == CHANGE_DATATYPE:
        newtype = arguments.get("newtype")
        if not isinstance(newtype, str) or not newtype:
            raise ActionError(f"{what}: newtype must name a datatype")
        if not known_datatype(newtype):
            raise ActionError(f"{what}: unknown datatype {newtype!r}")
    elif action_type in (TAG, REMOVE_TAG):
        tags = arguments.get("tags")
        if tags is not None and not isinstance(tags, str | list):
            raise ActionError(f"{what}: tags must be text (comma separated) or a list")
        if isinstance(tags, list) and not all(isinstance(t, str) for t in tags):
            raise ActionError(f"{what}: every tag must be text")


def parse_tags(tags: str | list[str] | None) -> list[str]:
    """Tags of a tag action: comma separated, trimmed, ``#x`` meaning ``name:x`` (as Galaxy reads them)."""
    items = tags.split(",") if isinstance(tags, str) else list(tags or [])
    cleaned = [t.strip() for t in items if t and t.strip()]
    return ["name:" + t[1:] if t.startswith("#") else t for t in cleaned]


def new_name(template: str, input_names: dict[str, str], replacements: dict[str, str]) -> str:
    """A RenameDatasetAction's name: ``#{input | op}`` from the inputs' names, then ``${name}`` replacements."""

    def input_name(match: re.Match[str]) -> str:
        variable, *operations = [part.strip() for part in match.group(1).split("|")]
        variable = variable.replace(".", "|")  # queries_0.input2 names the repeat's input
        value = input_names.get(variable)
        if value is None:  # Galaxy's best effort: an unqualified name of a nested input
            value = next((v for k, v in input_names.items() if "|" in k and k.endswith(variable)), None)
        value = value or ""
        for operation in operations:
            if operation == "basename":
                value = value.rsplit(".", 1)[0] if "." in value else value
            elif operation == "upper":
                value = value.upper()
            elif operation == "lower":
                value = value.lower()
        return value

    name = _INPUT_REFERENCE.sub(input_name, template)
    for key, value in replacements.items():
        name = name.replace("${" + key + "}", value)
    return name


@dataclass(frozen=True)
class Action:
    """One applied post-job action."""

    type: str
    output_name: str
    arguments: dict[str, Any]

    def targets(self, output: str) -> bool:
        """Whether the action concerns this output (an empty output name means every output)."""
        return self.output_name in ("", output)


class StepActions:
    """A step's applied actions, and the dataset (or collection) columns they set."""

    def __init__(self, post_job_actions: dict[str, Any]):
        self.actions = [Action(a["action_type"], a.get("output_name") or "", a.get("action_arguments") or {})
                        for a in (post_job_actions or {}).values()
                        if isinstance(a, dict) and a.get("action_type") in APPLIED]
        types = {a.type for a in self.actions}
        self.at_creation = bool(types & {RENAME, CHANGE_DATATYPE, TAG, REMOVE_TAG})
        self.at_end = bool(types & {HIDE, CHANGE_DATATYPE})
        self.on_collections = bool(types & {RENAME, HIDE, TAG, REMOVE_TAG})
        renames = [a.arguments.get("newname") or "" for a in self.actions if a.type == RENAME]
        self.needs_input_names = any("#{" in n for n in renames)
        self.needs_replacements = any("${" in n for n in renames)

    def creation_columns(self, output: str, input_names: dict[str, str], replacements: dict[str, str], *,
                         skipped: bool = False) -> dict[str, Any]:
        """Columns of a new output dataset: name, extension, tags (a skipped output keeps its datatype)."""
        columns = self._named_and_tagged(output, input_names, replacements)
        for action in self.actions:
            if action.type == CHANGE_DATATYPE and action.targets(output) and not skipped:
                columns["extension"] = action.arguments["newtype"]
        return columns

    def collection_columns(self, output: str, input_names: dict[str, str],
                           replacements: dict[str, str]) -> dict[str, Any]:
        """Columns of a mapped-over step's implicit collection: name, visible, tags."""
        columns = self._named_and_tagged(output, input_names, replacements)
        if any(a.type == HIDE and a.targets(output) for a in self.actions):
            columns["visible"] = False
        return columns

    def end_columns(self, output: str) -> dict[str, Any]:
        """Columns of an output of a job that ended ok: visible, extension."""
        columns: dict[str, Any] = {}
        for action in self.actions:
            if not action.targets(output):
                continue
            if action.type == HIDE:
                columns["visible"] = False
            elif action.type == CHANGE_DATATYPE:
                columns["extension"] = action.arguments["newtype"]
        return columns

    def _named_and_tagged(self, output: str, input_names: dict[str, str],
                          replacements: dict[str, str]) -> dict[str, Any]:
        columns: dict[str, Any] = {}
        tags: list[str] | None = None
        for action in self.actions:
            if not action.targets(output):
                continue
            if action.type == RENAME and action.arguments.get("newname"):
                name = new_name(action.arguments["newname"], input_names, replacements)
                if name:  # Galaxy never renames to nothing
                    columns["name"] = name[:255]
            elif action.type == TAG:
                tags = list(tags or [])
                tags += [t for t in parse_tags(action.arguments.get("tags")) if t not in tags]
            elif action.type == REMOVE_TAG:
                removed = set(parse_tags(action.arguments.get("tags")))
                tags = [t for t in (tags or []) if t not in removed]
        if tags is not None:
            columns["tags"] = tags
        return columns
