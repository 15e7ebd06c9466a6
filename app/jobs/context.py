"""The values a command template sees: parameters, input datasets as paths, output paths."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from app.services import collections
from app.tools.command import BooleanValue, CollectionValue, ColumnList, DatasetValue
from app.tools.loader import Tool
from app.tools.models import (
    BooleanParam,
    ConditionalParam,
    DataCollectionParam,
    DataColumnParam,
    DataParam,
    RepeatParam,
)
from app.tools.params import data_refs


@dataclass(frozen=True)
class InputDataset:
    """What the runner knows of an input dataset."""

    id: int
    path: str
    extension: str
    name: str
    hid: int
    metadata: dict[str, Any]

    def value(self, identifier: str | None = None) -> DatasetValue:
        """The template value of the dataset."""
        return DatasetValue(self.path, ext=self.extension, name=self.name, hid=self.hid,
                            element_identifier=identifier, metadata=self.metadata)


# A collection's structure for templates: (identifier, dataset id | nested structure) pairs.
Structure = tuple[str, list[tuple[str, Any]]]


def build_context(
    tool: Tool,
    params: dict[str, Any],
    datasets: dict[int, InputDataset],
    collections: dict[tuple[str, int], Structure],
    outputs: dict[str, Path],
) -> dict[str, Any]:
    """The template context: every parameter, each output's path, __tool_directory__ and __python__."""
    context = _level(tool.inputs, params, datasets, collections)
    context.update({name: str(path) for name, path in outputs.items()})
    context["__tool_directory__"] = str(tool.tool_dir)
    context["__python__"] = sys.executable
    return context


def _level(params_tree: list[Any], values: dict[str, Any], datasets: dict[int, InputDataset],
           collections: dict[tuple[str, int], Structure]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for param in params_tree:
        value = values.get(param.name)
        if isinstance(param, RepeatParam):
            out[param.name] = [_level(param.inputs, block, datasets, collections) for block in value or []]
        elif isinstance(param, ConditionalParam):
            block = dict(value or {})
            test = param.test_param
            test_value = block.get(test.name)
            when_key = (test.truevalue if test_value else test.falsevalue) if isinstance(test, BooleanParam) else test_value
            when = param.when(str(when_key)) if when_key is not None else None
            inner = _level(when.inputs, block, datasets, collections) if when is not None else {}
            shown = BooleanValue(bool(test_value), test.truevalue, test.falsevalue) if isinstance(test, BooleanParam) else test_value
            out[param.name] = {test.name: shown, **inner}
        elif isinstance(param, DataParam):
            if isinstance(value, list):
                out[param.name] = [datasets[v["id"]].value() for v in value]
            else:
                out[param.name] = datasets[value["id"]].value() if value else None
        elif isinstance(param, DataCollectionParam):
            out[param.name] = _collection(collections[(value["src"], value["id"])], datasets) if value else None
        elif isinstance(param, BooleanParam):
            out[param.name] = BooleanValue(bool(value), param.truevalue, param.falsevalue)
        elif isinstance(param, DataColumnParam) and param.multiple:
            out[param.name] = ColumnList(value or [])
        else:
            out[param.name] = value
    return out


def _collection(structure: Structure, datasets: dict[int, InputDataset]) -> CollectionValue:
    collection_type, elements = structure
    values: list[tuple[str, Any]] = []
    for identifier, item in elements:
        if isinstance(item, tuple):
            values.append((identifier, _collection(item, datasets)))
        else:
            values.append((identifier, datasets[item].value(identifier)))
    return CollectionValue(collection_type, values)


def collection_structures(session_factory: sessionmaker[Session], tool: Tool,
                          params: dict[str, Any]) -> dict[tuple[str, int], Structure]:
    """The element structure of every collection the job's parameters name (none: no query)."""
    refs = [(v["src"], v["id"]) for _, _, v in data_refs(tool.inputs, params) if v.get("src") in ("hdca", "dce")]
    if not refs:
        return {}
    out: dict[tuple[str, int], Structure] = {}
    with session_factory() as session:
        for src, ref_id in refs:
            ref = collections.collection_ref(session, None, src, ref_id, "collection")
            out[(src, ref_id)] = (ref.collection_type, _structure(collections.load_tree(session, ref.collection_id)))
    return out


def _structure(tree: list[collections.TreeElement]) -> list[tuple[str, Any]]:
    return [(e.identifier, (e.child_type, _structure(e.children)) if e.child_collection_id else e.dataset_id)
            for e in tree]
