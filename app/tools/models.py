"""The tool definition format: what a tool YAML file may say, validated by pydantic.

See ``app/tools/README.md`` for the format with examples. The models here are the
reference: every field has a description, unknown keys are errors (a typo never passes
silently), and the error of a broken file names the file and the field.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from app.tools.columns import parse_column, parse_columns

NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"
TOOL_ID = r"^[A-Za-z0-9_][A-Za-z0-9_ .+-]*$"


class Strict(BaseModel):
    """Base of the definition models: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _comma_list(value: Any) -> Any:
    """Accept "a,b" as well as [a, b] (Galaxy writes format lists with commas)."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class ParamBase(Strict):
    """Fields every input parameter has."""

    name: str = Field(pattern=NAME, description="Parameter name, as Galaxy's API and workflows use it.")
    label: str | None = Field(None, description="Label shown to users.")
    help: str | None = Field(None, description="Help text shown under the input.")
    optional: bool = Field(False, description="Whether the parameter may be left empty.")
    argument: str | None = Field(None, description="Command-line flag the parameter stands for (informative).")

    @property
    def display_label(self) -> str:
        """The label, or the name when there is none."""
        return self.label or self.name


class DataParam(ParamBase):
    """A dataset input; ``multiple`` takes a list (or the datasets of a list collection)."""

    type: Literal["data"]
    format: list[str] = Field(default_factory=lambda: ["data"],
                              description="Accepted formats and their subtypes (data: any); others get a 400.")
    multiple: bool = Field(False, description="Accept several datasets.")

    _split = field_validator("format", mode="before")(_comma_list)


class DataCollectionParam(ParamBase):
    """A collection input of one of the given collection types (any type when none is given)."""

    type: Literal["data_collection"]
    collection_type: list[str] = Field(default_factory=list, description="Accepted types, e.g. list, paired, list:paired.")
    format: list[str] = Field(default_factory=lambda: ["data"],
                              description="Accepted formats of the elements' datasets, and their subtypes.")

    _split = field_validator("collection_type", "format", mode="before")(_comma_list)

    @field_validator("collection_type")
    @classmethod
    def _check_types(cls, value: list[str]) -> list[str]:
        for kind in value:
            if not re.fullmatch(r"(list|paired)(:(list|paired))*", kind):
                raise ValueError(f"unknown collection type {kind!r} (use list, paired and ':' nestings)")
        return value


class DataColumnParam(ParamBase):
    """A column of the dataset given to the data input ``data_ref`` (Galaxy's data_column).

    Values are column numbers counted from 1, as text ("2"; "c2" and 2 are accepted too);
    a list of them with ``multiple``. Checked against the dataset's ``columns`` metadata
    when it is known.
    """

    type: Literal["data_column"]
    data_ref: str = Field(pattern=NAME, description="The data input (here or in an enclosing block) whose columns these are.")
    value: str | list[str] | None = Field(None, description="Default column ('1', 'c1'; a list or '1,2' with multiple).")
    numerical: bool = Field(False, description="Only columns of numbers (by the dataset's column_types, when known).")
    multiple: bool = Field(False, description="Take several columns (a list; '1,2' when printed).")
    use_header_names: bool = Field(False, description="Label columns with the dataset's header names (forms only).")
    force_select: bool = Field(True, description="false: the parameter may be left empty (Galaxy's older optional).")
    accept_default: bool = Field(False, description="An empty value means the default, else column 1.")

    @model_validator(mode="before")
    @classmethod
    def _column_default(cls, data: Any) -> Any:
        """The default as canonical text: '2', or a list of such with multiple."""
        if not isinstance(data, dict) or data.get("value") in (None, "", []):
            return data
        try:
            value = parse_columns(data["value"])
        except ValueError as exc:
            raise ValueError(f"value: {exc}") from None
        if not data.get("multiple"):
            if len(value) != 1:
                raise ValueError("value: a data_column without multiple takes one column")
            value = value[0]
        return {**data, "value": value}

    @property
    def may_be_empty(self) -> bool:
        """Whether no column at all is a valid value."""
        return self.optional or not self.force_select


class IntegerParam(ParamBase):
    """A whole number between ``min`` and ``max``."""

    type: Literal["integer"]
    value: int | None = Field(None, description="Default value.")
    min: int | None = None
    max: int | None = None


class FloatParam(ParamBase):
    """A number between ``min`` and ``max``."""

    type: Literal["float"]
    value: float | None = Field(None, description="Default value.")
    min: float | None = None
    max: float | None = None


class TextParam(ParamBase):
    """Free text; it reaches the command as one quoted argument, never as shell code."""

    type: Literal["text"]
    value: str = Field("", description="Default value.")
    area: bool = Field(False, description="Shown as a multi-line text area.")
    max_length: int = Field(65536, gt=0, description="Longest value accepted, in characters.")


class BooleanParam(ParamBase):
    """A checkbox; in the command it reads ``truevalue`` or ``falsevalue``."""

    type: Literal["boolean"]
    checked: bool = Field(False, description="Default value.")
    truevalue: str = "true"
    falsevalue: str = "false"


class SelectOption(Strict):
    """One choice of a select."""

    value: str
    label: str | None = None
    selected: bool = False


class SelectParam(ParamBase):
    """One (or with ``multiple`` several) of fixed options; anything else is refused."""

    type: Literal["select"]
    options: list[SelectOption] = Field(min_length=1)
    multiple: bool = False
    display: Literal["radio", "checkboxes"] | None = None

    @field_validator("options", mode="before")
    @classmethod
    def _plain_options(cls, value: Any) -> Any:
        """Options may be written as plain strings."""
        if isinstance(value, list):
            return [{"value": item} if isinstance(item, str) else item for item in value]
        return value

    @property
    def default(self) -> str | list[str] | None:
        """The selected option(s), else the first option (none for an optional or multiple select)."""
        chosen = [o.value for o in self.options if o.selected]
        if self.multiple:
            return chosen
        if chosen:
            return chosen[0]
        return None if self.optional else self.options[0].value


class RepeatParam(ParamBase):
    """A block of inputs given any number of times between ``min`` and ``max``."""

    type: Literal["repeat"]
    title: str | None = None
    min: int = Field(0, ge=0)
    max: int | None = Field(None, ge=0)
    default: int | None = Field(None, ge=0, description="Blocks shown at first (default: min).")
    inputs: list["Param"] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check(self) -> "RepeatParam":
        _unique_names(self.inputs)
        if self.max is not None and self.max < self.min:
            raise ValueError("max is below min")
        return self


class ConditionalWhen(Strict):
    """The inputs that apply when the test parameter has ``value``."""

    value: str
    inputs: list["Param"] = Field(default_factory=list)


class ConditionalParam(ParamBase):
    """Inputs that depend on the value of a select or boolean test parameter."""

    type: Literal["conditional"]
    test_param: Annotated[Union[SelectParam, BooleanParam], Field(discriminator="type")]
    whens: list[ConditionalWhen] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check(self) -> "ConditionalParam":
        values = [w.value for w in self.whens]
        if len(set(values)) != len(values):
            raise ValueError("two 'whens' have the same value")
        for when in self.whens:
            _unique_names(when.inputs, reserved={self.test_param.name})
        return self

    def when(self, value: str) -> ConditionalWhen | None:
        """The case for a test value (None when the test value has no inputs of its own)."""
        return next((w for w in self.whens if w.value == value), None)


Param = Annotated[
    Union[DataParam, DataCollectionParam, DataColumnParam, IntegerParam, FloatParam, TextParam, BooleanParam,
          SelectParam, RepeatParam, ConditionalParam],
    Field(discriminator="type"),
]
RepeatParam.model_rebuild()
ConditionalWhen.model_rebuild()
ConditionalParam.model_rebuild()


def _unique_names(params: list[Any], reserved: set[str] = frozenset()) -> None:
    seen = set(reserved)
    for param in params:
        if param.name in seen:
            raise ValueError(f"two inputs are named {param.name!r}")
        seen.add(param.name)


class ChangeFormat(Strict):
    """Use ``format`` instead when the input dataset ``input`` has extension ``value``."""

    input: str = Field(pattern=NAME)
    value: str
    format: str


class ToolOutput(Strict):
    """A dataset the tool writes; its path is ``{{ name }}`` in the command."""

    name: str = Field(pattern=NAME)
    format: str | None = Field(
        None, description="Extension of the output; 'input' takes the first data input's, 'auto' sniffs the file."
    )
    format_source: str | None = Field(None, pattern=NAME, description="Data input whose extension the output takes.")
    label: str | None = Field(
        None, description="Name of the output dataset, a template: '{{ tool.name }} on {{ on_string }}' by default."
    )
    hidden: bool = Field(False, description="Create the output hidden.")
    change_format: list[ChangeFormat] = Field(default_factory=list)

    @model_validator(mode="after")
    def _one_format(self) -> "ToolOutput":
        if self.format and self.format_source:
            raise ValueError("give either format or format_source, not both")
        return self


class Resources(Strict):
    """Limits of one job of the tool."""

    walltime: int | None = Field(None, gt=0, description="Seconds a job may run (at most the job_wall_time setting).")
    memory_mb: int | None = Field(None, gt=0, description="Address-space limit of the command, in MiB.")
    cpus: int = Field(1, gt=0, description="Threads the command may use (exported as GALAXY_SLOTS).")


class ToolDefinition(Strict):
    """One tool file."""

    id: str = Field(pattern=TOOL_ID, max_length=255, description="Tool id; Galaxy's for Galaxy's tools.")
    name: str = Field(max_length=255)
    version: str = Field("1.0.0", max_length=64)
    description: str = ""
    section: str | None = Field(None, description="Tool panel section name.")
    action: Literal["command", "upload"] = Field(
        "command", description="'command' runs the command template in a job; 'upload' is the upload tool."
    )
    hidden: bool = Field(False, description="Left out of GET /api/tools.")
    inputs: list[Param] = Field(default_factory=list)
    outputs: list[ToolOutput] = Field(default_factory=list)
    command: str | None = Field(None, description="Jinja2 template of the command; every value is quoted.")
    resources: Resources = Field(default_factory=Resources)
    help: str = ""

    @field_validator("id", "version", mode="before")
    @classmethod
    def _text(cls, value: Any) -> Any:
        """YAML reads 1.0 as a number; a version or id is always text."""
        return str(value) if isinstance(value, (int, float)) else value

    @field_validator("outputs", mode="before")
    @classmethod
    def _outputs_mapping(cls, value: Any) -> Any:
        """Outputs may be written as a mapping of name to definition."""
        if isinstance(value, dict):
            return [{"name": name, **(spec or {})} for name, spec in value.items()]
        return value

    @model_validator(mode="after")
    def _check(self) -> "ToolDefinition":
        _unique_names(self.inputs)
        if self.action == "command" and not (self.command or "").strip():
            raise ValueError("command: a tool with action 'command' needs a command template")
        if self.command and "\x00" in self.command:
            raise ValueError("command: NUL characters are not allowed")
        _check_data_refs(self.inputs, set())
        data_names = {p.name for p in walk_params(self.inputs) if p.type in ("data", "data_collection")}
        all_names = {p.name for p in walk_params(self.inputs)}
        outputs = [o.name for o in self.outputs]
        if len(set(outputs)) != len(outputs):
            raise ValueError("outputs: two outputs have the same name")
        for output in self.outputs:
            if output.name in all_names:
                raise ValueError(f"outputs: output {output.name!r} has the name of an input")
            for source in [output.format_source, *(c.input for c in output.change_format)]:
                if source is not None and source not in data_names:
                    raise ValueError(f"outputs.{output.name}: {source!r} is not a data input of the tool")
        return self


def _check_data_refs(params: list[Any], outer: set[str]) -> None:
    """Every data_column's data_ref names a data input of its level or an enclosing one."""
    visible = outer | {p.name for p in params if p.type in ("data", "data_collection")}
    for param in params:
        if param.type == "data_column" and param.data_ref not in visible:
            raise ValueError(f"inputs: data_column {param.name!r}: data_ref {param.data_ref!r} "
                             "is not a data input of its level or an enclosing one")
        if param.type == "repeat":
            _check_data_refs(param.inputs, visible)
        elif param.type == "conditional":
            for when in param.whens:
                _check_data_refs(when.inputs, visible)


def walk_params(params: list[Any]):
    """Every parameter of a tree, depth first (repeats and conditionals included)."""
    for param in params:
        yield param
        if param.type == "repeat":
            yield from walk_params(param.inputs)
        elif param.type == "conditional":
            yield param.test_param
            for when in param.whens:
                yield from walk_params(when.inputs)
