"""The manifest of a history archive: which contents go in, and their JSON description.

``select_history`` decides what an export holds (datasets, collections and the jobs that
made them) in one short read; ``write_manifest`` later streams the description into a
file, one row at a time, so that neither the selection nor the manifest is held in memory
as ORM objects. Inside the archive, datasets are named by keys (``d1``, ``d2`` …) and jobs
by ``j1`` …; database ids never leave the server.

Manifest, version 1::

    {"format": "nebula.history_archive", "version": 1, "created": ..., "options": {...},
     "history": {name, annotation, tags, ...},
     "datasets": [{key, hid, name, state, extension, ..., creating_job, file: {path, size, sha256} | null}],
     "collections": [{hid, name, ..., collection: {collection_type, elements: [
         {identifier, dataset: key} | {identifier, collection: {collection_type, elements}}]}}],
     "jobs": [{key, tool_id, state, params, ..., inputs: [{name, dataset}], outputs: [{name, dataset}]}]}
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, TextIO

import sqlalchemy as sa
from sqlalchemy.orm import Session, selectinload

from app.models import Dataset, History, Job
from app.models.base import utcnow
from app.models.collections import DatasetCollection, DatasetCollectionElement, HistoryDatasetCollection

FORMAT = "nebula.history_archive"
VERSION = 1
MANIFEST_NAME = "manifest.json"
_CHUNK = 500
_PRIVATE_PARAMS = {"stage_dir"}


@dataclass(frozen=True)
class ExportOptions:
    """What a history export includes."""

    include_files: bool = True
    include_hidden: bool = False
    include_deleted: bool = False


@dataclass
class DatasetFile:
    """A dataset file going into the archive."""

    dataset_id: int
    arcname: str
    object_key: str
    size: int
    mtime: float


@dataclass
class HistorySelection:
    """What one export holds, decided in one read."""

    history_id: int
    options: ExportOptions
    dataset_ids: list[int] = field(default_factory=list)
    dataset_keys: dict[int, str] = field(default_factory=dict)
    files: list[DatasetFile] = field(default_factory=list)
    hdca_ids: list[int] = field(default_factory=list)
    job_keys: dict[int, str] = field(default_factory=dict)

    @property
    def total_bytes(self) -> int:
        """Bytes of dataset files to copy."""
        return sum(f.size for f in self.files)


def _visible_filter(model, options: ExportOptions) -> list[sa.ColumnElement[bool]]:
    where = []
    if not options.include_deleted:
        where.append(model.deleted.is_(False))
    if not options.include_hidden:
        where.append(model.visible.is_(True))
    return where


def select_history(session: Session, history: History, options: ExportOptions) -> HistorySelection:
    """The datasets, collections and jobs an export of ``history`` holds."""
    selection = HistorySelection(history.id, options)
    rows = session.execute(
        sa.select(Dataset.id, Dataset.hid, Dataset.name, Dataset.extension, Dataset.object_key, Dataset.purged,
                  Dataset.file_size, Dataset.create_time, Dataset.creating_job_id)
        .where(Dataset.history_id == history.id, *_visible_filter(Dataset, options))
        .order_by(Dataset.hid)
    ).all()
    selection.hdca_ids = list(session.scalars(
        sa.select(HistoryDatasetCollection.id)
        .where(HistoryDatasetCollection.history_id == history.id, *_visible_filter(HistoryDatasetCollection, options))
        .order_by(HistoryDatasetCollection.hid)
    ))
    # Datasets inside exported collections go in even when hidden (they usually are).
    wanted = {r.id for r in rows}
    extra = sorted(_collection_dataset_ids(session, selection.hdca_ids) - wanted)
    for start in range(0, len(extra), _CHUNK):
        rows += session.execute(
            sa.select(Dataset.id, Dataset.hid, Dataset.name, Dataset.extension, Dataset.object_key, Dataset.purged,
                      Dataset.file_size, Dataset.create_time, Dataset.creating_job_id)
            .where(Dataset.id.in_(extra[start : start + _CHUNK]))
        ).all()
    job_ids: set[int] = set()
    for index, row in enumerate(rows, start=1):
        key = f"d{index}"
        selection.dataset_ids.append(row.id)
        selection.dataset_keys[row.id] = key
        if row.creating_job_id:
            job_ids.add(row.creating_job_id)
        if options.include_files and row.object_key and not row.purged:
            arcname = f"datasets/{key}_{_slug(row.name)}.{_slug(row.extension) or 'data'}"
            selection.files.append(DatasetFile(row.id, arcname, row.object_key, row.file_size or 0,
                                               row.create_time.replace(tzinfo=dt.UTC).timestamp()))
    job_ids |= {j for j in session.scalars(sa.select(HistoryDatasetCollection.job_id).where(
        HistoryDatasetCollection.id.in_(selection.hdca_ids or [-1]))) if j}
    selection.job_keys = {job_id: f"j{i}" for i, job_id in enumerate(sorted(job_ids), start=1)}
    return selection


def _collection_dataset_ids(session: Session, hdca_ids: list[int]) -> set[int]:
    """Every dataset inside the given history collections, at any depth."""
    level = set(session.scalars(sa.select(HistoryDatasetCollection.collection_id).where(
        HistoryDatasetCollection.id.in_(hdca_ids or [-1]))))
    found: set[int] = set()
    seen: set[int] = set()
    while level:
        seen |= level
        batch = sorted(level)
        level = set()
        for start in range(0, len(batch), _CHUNK):
            for dataset_id, child_id in session.execute(
                sa.select(DatasetCollectionElement.dataset_id, DatasetCollectionElement.child_collection_id)
                .where(DatasetCollectionElement.collection_id.in_(batch[start : start + _CHUNK]))
            ):
                if dataset_id:
                    found.add(dataset_id)
                if child_id and child_id not in seen:
                    level.add(child_id)
    return found


def write_manifest(session: Session, history: History, selection: HistorySelection,
                   checksums: dict[int, str], out: TextIO) -> None:
    """Stream the manifest of an export (after its files were written, with their checksums)."""
    head = {
        "format": FORMAT,
        "version": VERSION,
        "created": utcnow().isoformat(),
        "options": selection.options.__dict__,
        "history": {
            "name": history.name,
            "annotation": history.annotation,
            "tags": list(history.tags or []),
            "create_time": history.create_time.isoformat(),
            "update_time": history.update_time.isoformat(),
        },
    }
    files = {f.dataset_id: f for f in selection.files}
    sections = {
        "datasets": (_dataset_record(d, selection, files.get(d.id), checksums)
                     for d in _chunked(session, Dataset, selection.dataset_ids)),
        "collections": (_hdca_record(session, hdca, selection)
                        for hdca in _chunked(session, HistoryDatasetCollection, selection.hdca_ids)),
        "jobs": (_job_record(job, selection)
                 for job in _chunked(session, Job, sorted(selection.job_keys), load=(Job.inputs, Job.outputs))),
    }
    out.write(json.dumps(head)[:-1])
    for name, records in sections.items():
        out.write(f", {json.dumps(name)}: [")
        for i, record in enumerate(records):
            out.write(("," if i else "") + "\n" + json.dumps(record, default=_json_default))
        out.write("]")
    out.write("}\n")


def _chunked(session: Session, model, ids: list[int], load: Iterable[Any] = ()) -> Iterator[Any]:
    """Rows of ``model`` in the order of ``ids``, read ``_CHUNK`` at a time and then let go."""
    for start in range(0, len(ids), _CHUNK):
        part = ids[start : start + _CHUNK]
        query = sa.select(model).where(model.id.in_(part))
        if load:
            query = query.options(*(selectinload(rel) for rel in load))
        rows = {row.id: row for row in session.scalars(query)}
        for row_id in part:
            if row_id in rows:
                yield rows[row_id]
        session.expunge_all()


def _dataset_record(dataset: Dataset, selection: HistorySelection, file: DatasetFile | None,
                    checksums: dict[int, str]) -> dict[str, Any]:
    in_history = dataset.history_id == selection.history_id
    return {
        "key": selection.dataset_keys[dataset.id],
        "hid": dataset.hid if in_history else None,
        "name": dataset.name,
        "state": dataset.state,
        "extension": dataset.extension,
        "dbkey": dataset.dbkey,
        "info": dataset.info,
        "peek": dataset.peek,
        "blurb": dataset.blurb,
        "line_count": dataset.line_count,
        "file_size": dataset.file_size,
        "visible": dataset.visible if in_history else False,
        "deleted": dataset.deleted,
        "purged": dataset.purged,
        "tags": list(dataset.tags or []),
        "metadata": dataset.metadata_ or {},
        "create_time": dataset.create_time,
        "update_time": dataset.update_time,
        "creating_job": selection.job_keys.get(dataset.creating_job_id or 0),
        "file": None if file is None or dataset.id not in checksums else {
            "path": file.arcname, "size": file.size, "sha256": checksums[dataset.id]},
    }


def _hdca_record(session: Session, hdca: HistoryDatasetCollection, selection: HistorySelection) -> dict[str, Any]:
    return {
        "hid": hdca.hid,
        "name": hdca.name,
        "visible": hdca.visible,
        "deleted": hdca.deleted,
        "tags": list(hdca.tags or []),
        "implicit_output_name": hdca.implicit_output_name,
        "job": selection.job_keys.get(hdca.job_id or 0),
        "create_time": hdca.create_time,
        "collection": _collection_record(session, hdca.collection_id, selection, depth=0),
    }


def _collection_record(session: Session, collection_id: int, selection: HistorySelection, depth: int) -> dict[str, Any]:
    if depth > 32:
        raise ValueError("collection nesting deeper than 32 levels")
    collection = session.get(DatasetCollection, collection_id)
    assert collection is not None
    elements = []
    for element in session.scalars(
        sa.select(DatasetCollectionElement)
        .where(DatasetCollectionElement.collection_id == collection_id)
        .order_by(DatasetCollectionElement.element_index)
    ):
        item: dict[str, Any] = {"identifier": element.element_identifier}
        if element.child_collection_id:
            item["collection"] = _collection_record(session, element.child_collection_id, selection, depth + 1)
        else:
            item["dataset"] = selection.dataset_keys.get(element.dataset_id or 0)
        elements.append(item)
    return {
        "collection_type": collection.collection_type,
        "populated_state": collection.populated_state,
        "populated_state_message": collection.populated_state_message,
        "elements": elements,
    }


def _job_record(job: Job, selection: HistorySelection) -> dict[str, Any]:
    keys = selection.dataset_keys
    return {
        "key": selection.job_keys[job.id],
        "tool_id": job.tool_id,
        "tool_version": job.tool_version,
        "state": job.state,
        "params": {k: v for k, v in (job.params or {}).items() if k not in _PRIVATE_PARAMS},
        "command_line": job.command_line,
        "stdout": job.stdout,
        "stderr": job.stderr,
        "exit_code": job.exit_code,
        "info": job.info,
        "create_time": job.create_time,
        "start_time": job.start_time,
        "end_time": job.end_time,
        "inputs": [{"name": i.name, "dataset": keys.get(i.dataset_id)} for i in job.inputs],
        "outputs": [{"name": o.name, "dataset": keys.get(o.dataset_id)} for o in job.outputs],
    }


def _json_default(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _slug(text: str, limit: int = 60) -> str:
    """A file-name-safe form of a dataset name or extension."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text or "").strip("._")[:limit]
