"""Loading tool files into a ToolBox: the built-in directory, then the configured ones.

A file that cannot be read, is not YAML, or does not validate becomes a ``ToolLoadError``
naming the file and the field; the other files still load.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import yaml
from pydantic import ValidationError

from app.errors import NotFound
from app.tools.command import CommandError, CommandTemplate
from app.tools.models import ToolDefinition, ToolOutput, walk_params

log = logging.getLogger(__name__)

BUILTIN_DIR = Path(__file__).parent / "builtin"
TOOL_SUFFIXES = (".yml", ".yaml")


@dataclass(frozen=True)
class ToolLoadError:
    """Why one tool file did not load."""

    path: Path
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


@dataclass
class Tool:
    """A loaded tool: its definition, where it came from and its compiled command."""

    definition: ToolDefinition
    path: Path
    template: CommandTemplate | None = None

    @property
    def id(self) -> str:
        """The tool id."""
        return self.definition.id

    @property
    def name(self) -> str:
        """The tool name."""
        return self.definition.name

    @property
    def version(self) -> str:
        """The tool version."""
        return self.definition.version

    @property
    def tool_dir(self) -> Path:
        """The directory of the tool file (``{{ __tool_directory__ }}`` in commands)."""
        return self.path.parent

    @property
    def inputs(self) -> list:
        """The top-level input parameters."""
        return self.definition.inputs

    @property
    def outputs(self) -> list[ToolOutput]:
        """The outputs."""
        return self.definition.outputs

    @cached_property
    def first_data_input(self) -> str | None:
        """The name of the first data input (what ``format: input`` refers to)."""
        return next((p.name for p in walk_params(self.inputs) if p.type in ("data", "data_collection")), None)


class ToolBox:
    """The tools of a process, by id, in load order."""

    def __init__(self, tools: list[Tool], errors: list[ToolLoadError]):
        self._tools: dict[str, Tool] = {}
        self.errors = list(errors)
        for tool in tools:
            other = self._tools.get(tool.id)
            if other is not None:
                self.errors.append(ToolLoadError(tool.path, f"id: tool id {tool.id!r} is already defined by {other.path}"))
                continue
            self._tools[tool.id] = tool

    def get(self, tool_id: str) -> Tool:
        """The tool with this id (404 when there is none)."""
        tool = self._tools.get(tool_id)
        if tool is None:
            raise NotFound(f"tool {tool_id!r} not found")
        return tool

    def all(self) -> list[Tool]:
        """Every tool, in load order."""
        return list(self._tools.values())

    def __contains__(self, tool_id: object) -> bool:
        return tool_id in self._tools


def load_tool(path: Path) -> Tool:
    """Read, validate and compile one tool file (raises ToolLoadError)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise _error(path, f"cannot read the file: {exc}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise _error(path, f"not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise _error(path, "the top level must be a mapping of tool fields")
    try:
        definition = ToolDefinition.model_validate(data)
    except ValidationError as exc:
        raise _error(path, describe(exc)) from exc
    template = None
    if definition.command:
        try:
            template = CommandTemplate(definition.command)
        except CommandError as exc:
            raise _error(path, f"command: {exc}") from exc
    return Tool(definition=definition, path=path.resolve(), template=template)


def describe(exc: ValidationError) -> str:
    """'inputs.0.format: …; name: Field required' for a validation error."""
    parts = []
    for error in exc.errors(include_url=False):
        where = ".".join(str(p) for p in error["loc"]) or "(tool)"
        message = error["msg"].removeprefix("Value error, ")
        parts.append(f"{where}: {message}")
    return "; ".join(parts)


def _error(path: Path, message: str) -> "_LoadFailure":
    return _LoadFailure(ToolLoadError(path, message))


class _LoadFailure(Exception):
    """Carries a ToolLoadError out of load_tool."""

    def __init__(self, error: ToolLoadError):
        super().__init__(str(error))
        self.error = error


def tool_files(directory: Path) -> list[Path]:
    """The tool files of a directory and its subdirectories, in name order."""
    return sorted(p for p in directory.rglob("*") if p.suffix in TOOL_SUFFIXES and p.is_file())


def load_toolbox(directories: list[Path]) -> ToolBox:
    """Load the built-in tools, then those of ``directories``; broken files are reported, not fatal."""
    tools: list[Tool] = []
    errors: list[ToolLoadError] = []
    for directory in [BUILTIN_DIR, *directories]:
        directory = Path(directory).expanduser()
        if not directory.is_dir():
            errors.append(ToolLoadError(directory, "tool directory not found"))
            continue
        for path in tool_files(directory):
            try:
                tools.append(load_tool(path))
            except _LoadFailure as failure:
                errors.append(failure.error)
    box = ToolBox(tools, errors)
    for error in box.errors:
        log.warning("tool not loaded: %s", error)
    return box
