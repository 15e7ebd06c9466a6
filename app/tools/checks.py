"""Checks of a job's input datasets against its tool: formats (Galaxy's subtype rule), columns.

``validate_inputs`` reads a request's shape; what the named datasets *are* is checked
here, once their facts (extension, metadata) are loaded in bulk by the caller
(``app.services.input_checks``). The module stays pure: no database.

A dataset of an extension an input does not accept is refused (``tabular`` takes ``bed``,
not ``txt``; ``data`` takes anything). A dataset whose format is not known yet (an upload
still to be sniffed, extension ``auto``) passes: refusing it could be wrong, and Galaxy
too lets a pending dataset through.

A data_column value is checked against the ``columns`` metadata of every dataset its
``data_ref`` input gets (each element's, when mapped over a collection); a dataset whose
columns are not known yet (still being made or uploaded) or that is empty passes.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from app.datatypes_registry import ROOT, accepts, is_pending
from app.errors import RequestParameterInvalid
from app.tools.models import BooleanParam, DataCollectionParam, DataColumnParam, DataParam, walk_params
from app.tools.params import data_refs


@dataclass(frozen=True)
class DatasetFacts:
    """What the checks need to know of one input dataset."""

    id: int
    extension: str | None
    hid: int | None = None
    name: str = ""
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        """'dataset 3 (reads.txt)', as error messages name it."""
        label = f"dataset {self.hid}" if self.hid is not None else f"dataset #{self.id}"
        return f"{label} ({self.name})" if self.name else label


def input_params(tool_inputs: list[Any], params: dict[str, Any]) -> dict[str, DataParam | DataCollectionParam]:
    """{flat input name: parameter} of every data and collection input a job's parameters fill."""
    return {name: param for name, param, _ in data_refs(tool_inputs, params)}


def restricts_formats(tool_inputs: list[Any]) -> bool:
    """Whether any data input of the tool refuses some format (none does when all take ``data``)."""
    return any(isinstance(p, (DataParam, DataCollectionParam)) and p.format and ROOT not in p.format
               for p in walk_params(tool_inputs))


def check_formats(tool_inputs: list[Any], jobs: Iterable[tuple[dict[str, Any], Mapping[str, list[int]]]],
                  facts: Mapping[int, DatasetFacts]) -> None:
    """Refuse (400 naming the input) any job input dataset of a format its input does not take.

    ``jobs`` are (validated parameters, {flat input name: dataset ids read}) pairs, the
    latter with collections flattened to their datasets, as ``JobSpec.inputs`` holds them.
    A verdict is reached once per (input, extension): a map-over costs a few dictionary
    look-ups per element, not a walk of the parameters or of the datatype tree.
    """
    # A flat name always means the same input unless a conditional holds data inputs
    # (two cases may use one name): then each job's parameters are walked.
    stable = not any(p.type == "conditional" and any(isinstance(q, (DataParam, DataCollectionParam))
                                                     for w in p.whens for q in walk_params(w.inputs))
                     for p in walk_params(tool_inputs))
    known: dict[str, DataParam | DataCollectionParam] = {}
    verdicts: dict[tuple[int, str], bool] = {}
    for params, inputs in jobs:
        if not (stable and all(name in known for name in inputs)):
            by_name = input_params(tool_inputs, params)
            known = {**known, **by_name} if stable else by_name
        for name, dataset_ids in inputs.items():
            param = known.get(name)
            if param is None:
                continue
            for dataset_id in dataset_ids:
                fact = facts.get(dataset_id)
                if fact is None or is_pending(fact.extension):
                    continue
                key = (id(param), fact.extension)
                if key not in verdicts:
                    verdicts[key] = accepts(tuple(param.format), fact.extension)
                if not verdicts[key]:
                    raise RequestParameterInvalid(format_refused(name, fact, tuple(param.format)))


def format_refused(name: str, fact: DatasetFacts, formats: tuple[str, ...]) -> str:
    """The message for a dataset of a format an input does not accept."""
    return (f"parameter '{name}': {fact.describe()} has format '{fact.extension}'; "
            f"this input accepts {', '.join(formats)} (or a subtype)")


def has_columns(tool_inputs: list[Any]) -> bool:
    """Whether the tool has data_column parameters (then input metadata is needed)."""
    return any(isinstance(p, DataColumnParam) for p in walk_params(tool_inputs))


def column_values(tool_inputs: list[Any], params: dict[str, Any], prefix: str = "",
                  scope: Mapping[str, str] | None = None) -> Iterator[tuple[str, DataColumnParam, list[str], str]]:
    """(flat name, parameter, columns, flat name of its data_ref input) of every data_column value set."""
    visible = dict(scope or {})
    visible.update((p.name, f"{prefix}{p.name}") for p in tool_inputs if isinstance(p, (DataParam, DataCollectionParam)))
    for param in tool_inputs:
        value = params.get(param.name)
        if param.type == "repeat":
            for index, block in enumerate(value or []):
                yield from column_values(param.inputs, block, f"{prefix}{param.name}_{index}|", visible)
        elif param.type == "conditional":
            block = value or {}
            test = param.test_param
            key = block.get(test.name)
            if isinstance(test, BooleanParam):
                key = test.truevalue if key else test.falsevalue
            when = param.when(str(key)) if key is not None else None
            if when is not None:
                yield from column_values(when.inputs, block, f"{prefix}{param.name}|", visible)
        elif isinstance(param, DataColumnParam) and value:
            yield f"{prefix}{param.name}", param, value if isinstance(value, list) else [value], visible[param.data_ref]


def check_columns(tool_inputs: list[Any], jobs: Iterable[tuple[dict[str, Any], Mapping[str, list[int]]]],
                  facts: Mapping[int, DatasetFacts]) -> None:
    """Refuse (400 naming the parameter) a column beyond a data_ref dataset's columns, or not numerical."""
    for params, inputs in jobs:
        for name, param, columns, ref in column_values(tool_inputs, params):
            for dataset_id in inputs.get(ref, []):
                fact = facts.get(dataset_id)
                if fact is not None and not is_pending(fact.extension):
                    _check_dataset_columns(name, param, columns, ref, fact)


def _check_dataset_columns(name: str, param: DataColumnParam, columns: list[str], ref: str,
                           fact: DatasetFacts) -> None:
    count = fact.metadata.get("columns")
    if not isinstance(count, int) or count < 1:  # not known yet, or an empty dataset
        return
    types = fact.metadata.get("column_types") if param.numerical else None
    for column in columns:
        number = int(column)
        if number > count:
            raise RequestParameterInvalid(
                f"parameter '{name}': column {number} is beyond the {count} column{'s' if count != 1 else ''} "
                f"of {fact.describe()} given to '{ref}'")
        if isinstance(types, list) and number <= len(types) and types[number - 1] not in ("int", "float"):
            raise RequestParameterInvalid(
                f"parameter '{name}': column {number} of {fact.describe()} is not numerical "
                f"({types[number - 1]}); this parameter takes numerical columns")
