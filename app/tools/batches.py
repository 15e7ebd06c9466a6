"""Batch parameters: a tool request mapped over datasets or a collection, one job per slice.

``validate_inputs`` turns a ``{"batch": true, "values": [...]}`` value into a ``Batch``;
``expand_batches`` turns validated parameters holding batches into one parameter set per
job. Several batches in one request are linked: they must have the same structure and
are zipped element by element.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from app.errors import RequestParameterInvalid

if TYPE_CHECKING:
    from app.tools.params import CollectionRef


@dataclass(frozen=True)
class Slice:
    """One job's share of a batch: its value and where it sits in the mapped collection."""

    path: tuple[str, ...]
    value: Any


@dataclass
class Batch:
    """A batch parameter: one slice per job; ``collection_type`` of the implicit outputs."""

    where: str
    slices: list[Slice]
    collection_type: str | None
    source: "CollectionRef | None" = None


def find_batches(params: Any) -> list[Batch]:
    """Every Batch in validated parameters."""
    if isinstance(params, Batch):
        return [params]
    if isinstance(params, dict):
        return [b for v in params.values() for b in find_batches(v)]
    if isinstance(params, list):
        return [b for v in params for b in find_batches(v)]
    return []


def expand_batches(params: dict[str, Any]) -> tuple[list[dict[str, Any]], list[Batch]]:
    """One parameter set per job, and the batches they came from (linked: zipped element-wise)."""
    batches = find_batches(params)
    if not batches:
        return [params], []
    first = batches[0]
    for other in batches[1:]:
        if len(other.slices) != len(first.slices) or [s.path for s in other.slices] != [s.path for s in first.slices]:
            raise RequestParameterInvalid(
                f"parameters '{first.where}' and '{other.where}' are mapped over collections of different structure")
    jobs = []
    for index in range(len(first.slices)):
        jobs.append(_substitute(params, index))
    return jobs, batches


def _substitute(value: Any, index: int) -> Any:
    if isinstance(value, Batch):
        return copy.deepcopy(value.slices[index].value)
    if isinstance(value, dict):
        return {k: _substitute(v, index) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, index) for v in value]
    return value
