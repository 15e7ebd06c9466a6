"""Reading the inputs of a tool request into validated, JSON-able parameters.

Galaxy clients send inputs in two shapes, often mixed: legacy flat keys
(``queries_0|input2``, ``seed_source|seed``) and nested values (``queries: [{input2: …}]``,
``seed_source: {seed: …}``). ``validate_inputs`` reads both against the tool's parameter
tree and returns canonical parameters:

- data → ``{"src": "hda", "id": int}`` (a list for ``multiple``), data_collection →
  ``{"src": "hdca" | "dce", "id": int}``, integer/float/text/select as such, boolean as a
  bool, data_column → the column number as text (``"2"``; a list for ``multiple``),
  repeat → list of blocks, conditional → dict of the test value and its case;
- a batch value (``{"batch": true, "values": [...]}``) → a ``Batch`` holding one slice
  per job, expanded by ``app.tools.batches.expand_batches``.

Every error names the parameter, in the flat form Galaxy's messages use.
Database look-ups go through an ``InputResolver``, so this module stays pure.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from app.errors import RequestParameterInvalid, RequestParameterMissing
from app.tools import values as scalars
from app.tools.batches import Batch, Slice
from app.tools.values import MISSING
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
)



@dataclass(frozen=True)
class CollectionRef:
    """A collection named by a request: the HDCA (or element) and its structure's id and type."""

    src: str
    id: int
    collection_id: int
    collection_type: str
    hid: int | None = None
    name: str = ""


@dataclass(frozen=True)
class ElementRef:
    """One element of a collection: a dataset, or a child collection of ``child_type``."""

    id: int
    identifier: str
    dataset_id: int | None
    child_collection_id: int | None
    child_type: str | None


class InputResolver(Protocol):
    """The database side of validation (ownership checks included)."""

    def dataset(self, ref: Any, where: str) -> int:
        """The id of the dataset an input names (404 naming ``where`` when it is not the user's)."""

    def collection(self, src: str, ref: Any, where: str) -> CollectionRef:
        """The collection an input names (404 naming ``where`` when it is not the user's)."""

    def elements(self, collection_id: int) -> list[ElementRef]:
        """The elements of a collection, in order."""


def validate_inputs(tool_inputs: list[Any], raw: dict[str, Any], resolver: InputResolver) -> dict[str, Any]:
    """Canonical parameters for a request's inputs (may hold ``Batch`` values)."""
    if not isinstance(raw, dict):
        raise RequestParameterInvalid("inputs must be a JSON object")
    return _Validator(resolver).level(tool_inputs, nest(raw), "")


def nest(raw: dict[str, Any]) -> dict[str, Any]:
    """Turn flat keys ``a|b|c`` into nested dicts, merged with nested values given as such."""
    out: dict[str, Any] = {}
    for key, value in raw.items():
        parts = str(key).split("|")
        target = out
        for part in parts[:-1]:
            current = target.get(part)
            if not isinstance(current, dict):
                current = {}
            else:
                current = dict(current)
            target[part] = current
            target = current
        last = parts[-1]
        if isinstance(value, dict) and isinstance(target.get(last), dict) and not _is_value_dict(value):
            target[last] = {**value, **target[last]}
        elif last not in target or not isinstance(target[last], dict):
            target[last] = value
        else:
            target[last] = {**target[last], **value} if isinstance(value, dict) else value
    return out


def _is_value_dict(value: dict[str, Any]) -> bool:
    """A dict that is a data value, not a block of parameters."""
    return "src" in value or "values" in value or "batch" in value


class _Validator:
    """Walks the parameter tree with the request's values."""

    def __init__(self, resolver: InputResolver):
        self.resolver = resolver

    def level(self, params: list[Any], values: dict[str, Any], prefix: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for param in params:
            where = f"{prefix}{param.name}"
            if isinstance(param, RepeatParam):
                out[param.name] = self.repeat(param, values, prefix)
            elif isinstance(param, ConditionalParam):
                out[param.name] = self.conditional(param, values.get(param.name, MISSING), where)
            else:
                out[param.name] = self.simple(param, values.get(param.name, MISSING), where)
        return out

    def repeat(self, param: RepeatParam, values: dict[str, Any], prefix: str) -> list[dict[str, Any]]:
        blocks: dict[int, Any] = {}
        given = values.get(param.name, MISSING)
        if isinstance(given, list):
            blocks.update(enumerate(given))
        elif isinstance(given, dict):
            for key, block in given.items():
                if not str(key).isdigit():
                    raise RequestParameterInvalid(f"parameter '{prefix}{param.name}': expected a list of blocks")
                blocks[int(key)] = block
        elif given is not MISSING and given is not None:
            raise RequestParameterInvalid(f"parameter '{prefix}{param.name}': expected a list of blocks")
        pattern = re.compile(rf"^{re.escape(param.name)}_(\d+)$")
        for key, block in values.items():
            match = pattern.match(str(key))
            if match:
                index = int(match.group(1))
                blocks[index] = {**blocks[index], **block} if isinstance(blocks.get(index), dict) and isinstance(block, dict) else block
        if not blocks and given is MISSING:
            count = param.default if param.default is not None else param.min
            blocks = {i: {} for i in range(count)}
        ordered = [blocks[i] for i in sorted(blocks)]
        while len(ordered) < param.min:
            ordered.append({})
        if param.max is not None and len(ordered) > param.max:
            raise RequestParameterInvalid(f"parameter '{prefix}{param.name}': at most {param.max} blocks allowed")
        out = []
        for index, block in enumerate(ordered):
            if not isinstance(block, dict):
                raise RequestParameterInvalid(f"parameter '{prefix}{param.name}_{index}': expected an object")
            out.append(self.level(param.inputs, block, f"{prefix}{param.name}_{index}|"))
        return out

    def conditional(self, param: ConditionalParam, given: Any, where: str) -> dict[str, Any]:
        if given is MISSING or given is None:
            given = {}
        if not isinstance(given, dict):
            raise RequestParameterInvalid(f"parameter '{where}': expected an object")
        test = param.test_param
        test_value = self.simple(test, given.get(test.name, MISSING), f"{where}|{test.name}")
        key = (test.truevalue if test_value else test.falsevalue) if isinstance(test, BooleanParam) else test_value
        when = param.when(str(key)) if key is not None else None
        out = {test.name: test_value}
        if when is not None:
            out.update(self.level(when.inputs, given, f"{where}|"))
        return out

    def simple(self, param: Any, value: Any, where: str) -> Any:
        if isinstance(param, DataParam):
            return self.data(param, value, where)
        if isinstance(param, DataCollectionParam):
            return self.data_collection(param, value, where)
        if isinstance(value, dict) and value.get("batch"):
            raise RequestParameterInvalid(f"parameter '{where}': only data inputs can be given in batch mode")
        if isinstance(param, IntegerParam):
            return scalars.number(param, value, where, int)
        if isinstance(param, FloatParam):
            return scalars.number(param, value, where, float)
        if isinstance(param, TextParam):
            return scalars.text(param, value, where)
        if isinstance(param, BooleanParam):
            return scalars.boolean(param, value, where)
        if isinstance(param, SelectParam):
            return scalars.select(param, value, where)
        if isinstance(param, DataColumnParam):
            return scalars.data_column(param, value, where)
        raise RequestParameterInvalid(f"parameter '{where}': unsupported parameter type {param.type!r}")

    # -- data ----------------------------------------------------------------------------

    def data(self, param: DataParam, value: Any, where: str) -> Any:
        if isinstance(value, dict) and value.get("batch"):
            return self.batch(param, value, where)
        refs = _refs(value, where)
        if not refs:
            if param.optional:
                return [] if param.multiple else None
            raise RequestParameterMissing(f"parameter '{where}': a dataset is required")
        datasets: list[dict[str, Any]] = []
        for src, ref in refs:
            if src == "hda":
                datasets.append({"src": "hda", "id": self.resolver.dataset(ref, where)})
            elif src in ("hdca", "dce"):
                if not param.multiple:
                    raise RequestParameterInvalid(
                        f"parameter '{where}': a collection was given to a single-dataset input; "
                        "use batch mode to map the tool over it")
                collection = self.resolver.collection(src, ref, where)
                datasets.extend({"src": "hda", "id": d} for _, d in self.leaves(collection.collection_id))
            else:
                raise RequestParameterInvalid(f"parameter '{where}': unknown src {src!r} (use hda or hdca)")
        if not param.multiple:
            if len(datasets) > 1:
                raise RequestParameterInvalid(f"parameter '{where}': takes one dataset, {len(datasets)} given")
            return datasets[0]
        return datasets

    def data_collection(self, param: DataCollectionParam, value: Any, where: str) -> Any:
        if isinstance(value, dict) and value.get("batch"):
            return self.batch(param, value, where)
        refs = _refs(value, where)
        if not refs:
            if param.optional:
                return None
            raise RequestParameterMissing(f"parameter '{where}': a collection is required")
        if len(refs) > 1:
            raise RequestParameterInvalid(f"parameter '{where}': takes one collection, {len(refs)} given")
        src, ref = refs[0]
        if src not in ("hdca", "dce"):
            raise RequestParameterInvalid(f"parameter '{where}': expected a collection (src 'hdca'), got src {src!r}")
        collection = self.resolver.collection(src, ref, where)
        if param.collection_type and collection.collection_type not in param.collection_type:
            raise RequestParameterInvalid(
                f"parameter '{where}': a collection of type '{collection.collection_type}' was given; "
                f"this input takes {' or '.join(param.collection_type)}")
        return {"src": collection.src, "id": collection.id}

    def batch(self, param: Any, value: dict[str, Any], where: str) -> Batch:
        refs = _refs({"values": value.get("values")}, where)
        if not refs:
            raise RequestParameterMissing(f"parameter '{where}': batch mode needs values")
        if all(src == "hda" for src, _ in refs):
            if isinstance(param, DataCollectionParam):
                raise RequestParameterInvalid(f"parameter '{where}': expected collections, got datasets")
            slices = [Slice((), {"src": "hda", "id": self.resolver.dataset(ref, where)}) for _, ref in refs]
            return Batch(where, slices, None)
        if len(refs) != 1:
            raise RequestParameterInvalid(f"parameter '{where}': batch mode maps over exactly one collection")
        src, ref = refs[0]
        if src not in ("hdca", "dce"):
            raise RequestParameterInvalid(f"parameter '{where}': unknown src {src!r} (use hda or hdca)")
        collection = self.resolver.collection(src, ref, where)
        if isinstance(param, DataParam):
            slices = [Slice(path, {"src": "hda", "id": d}) for path, d in self.leaves(collection.collection_id)]
            return Batch(where, slices, collection.collection_type, collection)
        return self.subcollection_batch(param, collection, value.get("map_over_type"), where)

    def subcollection_batch(self, param: DataCollectionParam, collection: CollectionRef,
                            map_over_type: str | None, where: str) -> Batch:
        outer_type = None
        for accepted in param.collection_type:
            if collection.collection_type.endswith(f":{accepted}"):
                outer_type = collection.collection_type[: -len(accepted) - 1]
                break
        if not param.collection_type:
            raise RequestParameterInvalid(f"parameter '{where}': accepts any collection; there is nothing to map over")
        if outer_type is None or (map_over_type and map_over_type != outer_type):
            raise RequestParameterInvalid(
                f"parameter '{where}': a collection of type '{collection.collection_type}' cannot be mapped "
                f"over an input of type {' or '.join(param.collection_type)}")
        depth = len(outer_type.split(":"))
        slices = [Slice(path, {"src": "dce", "id": element.id})
                  for path, element in self.elements_at(collection.collection_id, depth)]
        return Batch(where, slices, outer_type, collection)

    def leaves(self, collection_id: int, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], int]]:
        """(identifier path, dataset id) of every dataset under a collection, in order."""
        for element in self.resolver.elements(collection_id):
            here = (*path, element.identifier)
            if element.child_collection_id is not None:
                yield from self.leaves(element.child_collection_id, here)
            elif element.dataset_id is not None:
                yield here, element.dataset_id

    def elements_at(self, collection_id: int, depth: int, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], ElementRef]]:
        """The elements ``depth`` levels down, with their identifier paths."""
        for element in self.resolver.elements(collection_id):
            here = (*path, element.identifier)
            if depth == 1:
                yield here, element
            elif element.child_collection_id is not None:
                yield from self.elements_at(element.child_collection_id, depth - 1, here)


def _refs(value: Any, where: str) -> list[tuple[str, Any]]:
    """The (src, id) pairs of a data value in any of Galaxy's shapes."""
    if value is MISSING or value is None or value == "":
        return []
    if isinstance(value, dict) and "values" in value and "src" not in value:
        value = value["values"]
        if value is None:
            return []
    items = value if isinstance(value, list) else [value]
    refs = []
    for item in items:
        if isinstance(item, str):
            refs.append(("hda", item))
        elif isinstance(item, dict) and "id" in item:
            refs.append((str(item.get("src") or "hda"), item["id"]))
        else:
            raise RequestParameterInvalid(f"parameter '{where}': expected {{\"src\": \"hda\", \"id\": …}}, got {scalars.short(item)}")
    return refs


# -- reading canonical parameters ------------------------------------------------------------


def data_refs(tool_inputs: list[Any], params: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, Any, dict[str, Any]]]:
    """(flat name, parameter, value) of every data and data_collection value in ``params``."""
    for param in tool_inputs:
        value = params.get(param.name)
        if isinstance(param, RepeatParam):
            for index, block in enumerate(value or []):
                yield from data_refs(param.inputs, block, f"{prefix}{param.name}_{index}|")
        elif isinstance(param, ConditionalParam):
            block = value or {}
            test = param.test_param
            test_value = block.get(test.name)
            key = (test.truevalue if test_value else test.falsevalue) if isinstance(test, BooleanParam) else test_value
            when = param.when(str(key)) if key is not None else None
            if when is not None:
                yield from data_refs(when.inputs, block, f"{prefix}{param.name}|")
        elif isinstance(param, (DataParam, DataCollectionParam)):
            for item in value if isinstance(value, list) else [value]:
                if isinstance(item, dict):
                    yield f"{prefix}{param.name}", param, item
