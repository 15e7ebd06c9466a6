"""Checks of a job's input datasets against its tool: formats (Galaxy's subtype rule).

``validate_inputs`` reads a request's shape; what the named datasets *are* is checked
here, once their facts (extension, metadata) are loaded in bulk by the caller
(``app.services.input_checks``). The module stays pure: no database.

A dataset of an extension an input does not accept is refused (``tabular`` takes ``bed``,
not ``txt``; ``data`` takes anything). A dataset whose format is not known yet (an upload
still to be sniffed, extension ``auto``) passes: refusing it could be wrong, and Galaxy
too lets a pending dataset through.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from app.datatypes_registry import ROOT, accepts, is_pending
from app.errors import RequestParameterInvalid
from app.tools.models import DataCollectionParam, DataParam, walk_params
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
    The verdict for an (input formats, extension) pair is cached, so a map-over costs a
    dictionary look-up per element, not a datatype walk.
    """
    for params, inputs in jobs:
        by_name = input_params(tool_inputs, params)
        for name, dataset_ids in inputs.items():
            param = by_name.get(name)
            if param is None:
                continue
            formats = tuple(param.format)
            for dataset_id in dataset_ids:
                fact = facts.get(dataset_id)
                if fact is None or is_pending(fact.extension):
                    continue
                if not accepts(formats, fact.extension):
                    raise RequestParameterInvalid(format_refused(name, fact, formats))


def format_refused(name: str, fact: DatasetFacts, formats: tuple[str, ...]) -> str:
    """The message for a dataset of a format an input does not accept."""
    return (f"parameter '{name}': {fact.describe()} has format '{fact.extension}'; "
            f"this input accepts {', '.join(formats)} (or a subtype)")
