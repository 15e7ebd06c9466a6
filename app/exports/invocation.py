"""Invocation archives: the workflow, the invocation (steps, parameters, jobs), its inputs and outputs.

Formats: ``zip``, ``tar.gz`` (and ``tar``) hold

- ``workflow.ga`` — the workflow version that ran, as native Galaxy JSON;
- ``invocation.json`` — the invocation as the API shows it (steps with their jobs, inputs,
  outputs, messages), its parameters, a description of each dataset and collection with
  the archive path and sha256 of its file, and the jobs it ran;
- ``datasets/…`` — the files of the input and output datasets (``include_files``).

Hidden and deleted datasets and collections are left out unless ``include_hidden`` /
``include_deleted`` ask for them, as in a history archive.

``rocrate.zip`` is an RO-Crate (Workflow Run Crate style) built with the ``rocrate``
library: the workflow as the main ComputationalWorkflow, the datasets as Files, and a
CreateAction for the invocation with its inputs as ``object`` and outputs as ``result``.
Like history archives, the files are streamed and the database is not held open meanwhile.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from app.exports.archive import FORMATS as ARCHIVE_FORMATS
from app.exports.archive import ArchiveFormat, open_writer
from app.exports.errors import ExportError
from app.exports.history import NoProgress, ProgressReporter, fill_request
from app.exports.manifest import ExportOptions, _collection_dataset_ids, _json_default, _slug, _visible_filter
from app.ids import IdEncoder
from app.models import Dataset, Job
from app.models.collections import DatasetCollectionElement, HistoryDatasetCollection
from app.objectstore import ObjectStore
from app.shortterm import ShortTermStorage

FORMAT = "nebula.invocation_archive"
ROCRATE = "rocrate.zip"
FORMATS: dict[str, ArchiveFormat] = {
    **{k: v for k, v in ARCHIVE_FORMATS.items()},
    ROCRATE: ArchiveFormat(ROCRATE, "rocrate.zip", "application/zip", "rocrate", True),
}
_CHUNK = 500


@dataclass
class InvocationSelection:
    """What an invocation archive holds: dataset and collection ids with their role."""

    roles: dict[int, str] = field(default_factory=dict)  # dataset id → "input" | "output"
    collections: dict[int, str] = field(default_factory=dict)  # hdca id → role
    files: list[tuple[int, str, str, float]] = field(default_factory=list)  # (dataset id, arcname, object key, mtime)
    invocation_ids: list[int] = field(default_factory=list)


def _refs(values: Any) -> list[tuple[str, int]]:
    found = []
    for value in (values or {}).values():
        if isinstance(value, dict) and value.get("src") in ("hda", "hdca") and isinstance(value.get("id"), int):
            found.append((value["src"], value["id"]))
    return found


def select_invocation(session: Session, invocation, options: ExportOptions) -> InvocationSelection:
    """The datasets and collections an invocation read and wrote (sub-invocations included).

    Hidden or deleted datasets and collections are left out unless ``options`` include
    them, as in a history archive; the datasets inside an exported collection always go
    in (a mapped-over step's elements are hidden, yet part of its visible collection).
    """
    from app.models import WorkflowInvocation, WorkflowInvocationStep
    from app.services.invocations import descendant_ids

    selection = InvocationSelection(invocation_ids=descendant_ids(session, invocation.id))
    refs: list[tuple[str, int, str]] = [(src, i, "input") for src, i in _refs(invocation.inputs)]
    for step_outputs in session.scalars(sa.select(WorkflowInvocationStep.outputs).where(
            WorkflowInvocationStep.invocation_id.in_(selection.invocation_ids))):
        refs += [(src, i, "output") for src, i in _refs(step_outputs)]
    for sub_inputs in session.scalars(sa.select(WorkflowInvocation.inputs).where(
            WorkflowInvocation.id.in_(selection.invocation_ids[1:] or [-1]))):
        refs += [(src, i, "output") for src, i in _refs(sub_inputs)]  # produced upstream of the sub-workflow
    for src, row_id, role in refs:
        target = selection.roles if src == "hda" else selection.collections
        if target.get(row_id) != "input":
            target[row_id] = role
    selection.roles = _kept(session, Dataset, selection.roles, options)
    selection.collections = _kept(session, HistoryDatasetCollection, selection.collections, options)
    for hdca_id, role in list(selection.collections.items()):
        for dataset_id in _collection_dataset_ids(session, [hdca_id]):
            if selection.roles.get(dataset_id) != "input":
                selection.roles[dataset_id] = role
    if options.include_files:
        ids = sorted(selection.roles)
        for start in range(0, len(ids), _CHUNK):
            for row in session.execute(
                sa.select(Dataset.id, Dataset.hid, Dataset.name, Dataset.extension, Dataset.object_key, Dataset.purged,
                          Dataset.create_time, Dataset.user_id)
                .where(Dataset.id.in_(ids[start : start + _CHUNK]), Dataset.user_id == invocation.user_id)
            ):
                if row.object_key and not row.purged:
                    arcname = f"datasets/{row.hid}_{_slug(row.name)}.{_slug(row.extension) or 'data'}"
                    mtime = row.create_time.replace(tzinfo=dt.UTC).timestamp()
                    selection.files.append((row.id, f"{arcname}" if arcname not in {f[1] for f in selection.files}
                                            else f"datasets/{row.id}_{_slug(row.name)}", row.object_key, mtime))
    return selection


def _kept(session: Session, model, roles: dict[int, str], options: ExportOptions) -> dict[int, str]:
    """The rows of ``roles`` that the export options let in (the history archive's filter)."""
    where = _visible_filter(model, options)
    if not where:
        return roles
    ids = sorted(roles)
    kept: set[int] = set()
    for start in range(0, len(ids), _CHUNK):
        kept.update(session.scalars(sa.select(model.id).where(model.id.in_(ids[start : start + _CHUNK]), *where)))
    return {row_id: role for row_id, role in roles.items() if row_id in kept}


def prepare_invocation_archive(session: Session, sts: ShortTermStorage, store: ObjectStore, ids: IdEncoder, *,
                               storage_request_id: str, invocation_id: int, model_store_format: str,
                               options: ExportOptions | None = None,
                               progress: ProgressReporter | None = None) -> dict[str, Any]:
    """Write an invocation archive into a short-term storage request; return a summary."""
    from app.models import StoredWorkflow, Workflow, WorkflowInvocation
    from app.workflows.export import export_ga
    from app.workflows.invocation_views import invocation_view

    progress = progress or NoProgress()
    options = options or ExportOptions()

    def work(meta) -> dict[str, Any]:
        fmt = FORMATS.get(model_store_format)
        if fmt is None:
            raise ExportError(f"unknown archive format {model_store_format!r}")
        invocation = session.get(WorkflowInvocation, invocation_id)
        if invocation is None or invocation.user_id != meta.owner_id:
            raise ExportError(f"invocation {invocation_id} not found")
        workflow = session.get(Workflow, invocation.workflow_id)
        stored = session.get(StoredWorkflow, invocation.stored_workflow_id) if invocation.stored_workflow_id else None
        workflow_ga = export_ga(workflow, stored)
        view = invocation_view(session, invocation, ids, step_details=True)
        selection = select_invocation(session, invocation, options)
        head = {
            "format": FORMAT, "version": 1, "created": dt.datetime.now(dt.UTC).isoformat(),
            "workflow": {"name": workflow_ga.get("name"), "uuid": workflow.uuid, "version": workflow.version,
                         "path": "workflow.ga"},
            "invocation": view,
            "parameters": invocation.parameters or {},
            "options": options.__dict__,
        }
        session.commit()
        with sts.writing(storage_request_id) as partial:
            summary = _write(session, store, ids, partial, fmt, head, workflow_ga, selection, invocation, progress)
        return {"storage_request_id": storage_request_id, **summary}

    return fill_request(sts, storage_request_id, work)


def _write(session: Session, store: ObjectStore, ids: IdEncoder, partial: Path, fmt: ArchiveFormat,
           head: dict[str, Any], workflow_ga: dict[str, Any], selection: InvocationSelection, invocation,
           progress: ProgressReporter) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="invocation-", dir=partial.parent))
    try:
        (work / "workflow.ga").write_text(json.dumps(workflow_ga, indent=2))
        present = [(d, a, store.path(k), m) for d, a, k, m in selection.files if store.path(k).exists()]
        if fmt.kind == "rocrate":
            checksums: dict[int, str] = {}
            _write_manifest(session, ids, work / "invocation.json", head, selection, present, checksums)
            session.commit()
            _write_rocrate(partial, work, head, present, selection, session, ids, invocation)
            return {"files": len(present), "format": fmt.name}
        writer = open_writer(partial, fmt)
        try:
            checksums = {}
            total = max(1, sum(p.stat().st_size for _, _, p, _ in present))
            done = 0
            for dataset_id, arcname, path, mtime in present:
                with path.open("rb") as source:
                    size = os.fstat(source.fileno()).st_size
                    checksums[dataset_id] = writer.add_file(arcname, source, size, mtime=mtime)
                done += size
                progress.update(0.95 * done / total, f"{done >> 20} of {total >> 20} MiB archived")
            with (work / "workflow.ga").open("rb") as source:
                writer.add_file("workflow.ga", source, (work / "workflow.ga").stat().st_size)
            _write_manifest(session, ids, work / "invocation.json", head, selection, present, checksums)
            session.commit()
            with (work / "invocation.json").open("rb") as source:
                writer.add_file("invocation.json", source, (work / "invocation.json").stat().st_size)
            writer.close()
        except BaseException:
            writer.abort()
            raise
        return {"files": len(checksums), "format": fmt.name}
    finally:
        import shutil

        shutil.rmtree(work, ignore_errors=True)


def _write_manifest(session: Session, ids: IdEncoder, target: Path, head: dict[str, Any], selection: InvocationSelection,
                    present: list[tuple[int, str, Path, float]], checksums: dict[int, str]) -> None:
    """invocation.json, streamed: datasets, collections and jobs one row at a time."""
    paths = {d: (a, p) for d, a, p, _ in present}

    def datasets():
        order = sorted(selection.roles)
        for start in range(0, len(order), _CHUNK):
            for d in session.scalars(sa.select(Dataset).where(Dataset.id.in_(order[start : start + _CHUNK]))
                                     .order_by(Dataset.id)):
                arcname, path = paths.get(d.id, (None, None))
                yield {"id": ids.encode(d.id), "role": selection.roles[d.id], "hid": d.hid, "name": d.name,
                       "state": d.state, "extension": d.extension, "dbkey": d.dbkey, "file_size": d.file_size,
                       "history_id": ids.encode(d.history_id), "creating_job": ids.encode(d.creating_job_id)
                       if d.creating_job_id else None,
                       "file": {"path": arcname, "size": path.stat().st_size, "sha256": checksums.get(d.id)}
                       if arcname else None}
            session.expunge_all()

    def collections():
        for hdca_id in sorted(selection.collections):
            hdca = session.get(HistoryDatasetCollection, hdca_id)
            if hdca is None:
                continue
            yield {"id": ids.encode(hdca.id), "role": selection.collections[hdca_id], "hid": hdca.hid,
                   "name": hdca.name, "collection_type": hdca.collection.collection_type,
                   "elements": _elements(session, ids, hdca.collection_id, 0)}

    def jobs():
        job_ids = list(session.scalars(sa.select(Job.id).where(Job.invocation_id.in_(selection.invocation_ids))
                                       .order_by(Job.id)))
        for start in range(0, len(job_ids), _CHUNK):
            for job in session.scalars(sa.select(Job).where(Job.id.in_(job_ids[start : start + _CHUNK])).order_by(Job.id)):
                yield {"id": ids.encode(job.id), "tool_id": job.tool_id, "tool_version": job.tool_version,
                       "state": job.state, "params": {k: v for k, v in (job.params or {}).items() if k != "stage_dir"},
                       "command_line": job.command_line, "exit_code": job.exit_code, "stdout": job.stdout,
                       "stderr": job.stderr, "info": job.info, "invocation_step_id": ids.encode(job.invocation_step_id)
                       if job.invocation_step_id else None, "element_index": job.element_index,
                       "create_time": job.create_time, "start_time": job.start_time, "end_time": job.end_time,
                       "inputs": [{"name": i.name, "id": ids.encode(i.dataset_id)} for i in job.inputs],
                       "outputs": [{"name": o.name, "id": ids.encode(o.dataset_id)} for o in job.outputs]}
            session.expunge_all()

    with target.open("w", encoding="utf-8") as out:
        out.write(json.dumps(head, default=_json_default)[:-1])
        for name, records in (("datasets", datasets()), ("collections", collections()), ("jobs", jobs())):
            out.write(f", {json.dumps(name)}: [")
            for i, record in enumerate(records):
                out.write(("," if i else "") + "\n" + json.dumps(record, default=_json_default))
            out.write("]")
        out.write("}\n")


def _elements(session: Session, ids: IdEncoder, collection_id: int, depth: int) -> list[dict[str, Any]]:
    if depth > 32:
        return []
    out = []
    for element in session.scalars(sa.select(DatasetCollectionElement)
                                   .where(DatasetCollectionElement.collection_id == collection_id)
                                   .order_by(DatasetCollectionElement.element_index)):
        if element.child_collection_id:
            out.append({"identifier": element.element_identifier,
                        "elements": _elements(session, ids, element.child_collection_id, depth + 1)})
        else:
            out.append({"identifier": element.element_identifier,
                        "dataset": ids.encode(element.dataset_id) if element.dataset_id else None})
    return out


def _write_rocrate(partial: Path, work: Path, head: dict[str, Any], present: list[tuple[int, str, Path, float]],
                   selection: InvocationSelection, session: Session, ids: IdEncoder, invocation) -> None:
    """An RO-Crate zip: workflow, datasets, the invocation as a CreateAction."""
    from rocrate.rocrate import ROCrate

    crate = ROCrate()
    name = head["workflow"]["name"] or "workflow"
    crate.name = f"Invocation of {name}"
    crate.description = f"Run of the Galaxy workflow {name!r} (invocation {head['invocation']['id']}) by Nebula"
    crate.license = "https://spdx.org/licenses/CC-BY-4.0"
    workflow = crate.add_workflow(work / "workflow.ga", "workflow.ga", main=True, lang="galaxy",
                                  properties={"name": name})
    crate.add_file(work / "invocation.json", "invocation.json",
                   properties={"name": "Nebula invocation record", "encodingFormat": "application/json"})
    meta = {d.id: d for d in session.scalars(sa.select(Dataset).where(Dataset.id.in_([d for d, *_ in present] or [-1])))}
    inputs, outputs = [], []
    for dataset_id, arcname, path, _ in present:
        row = meta.get(dataset_id)
        entity = crate.add_file(path, arcname, properties={
            "name": row.name if row else arcname, "encodingFormat": row.extension if row else None,
            "contentSize": str(path.stat().st_size)})
        (inputs if selection.roles.get(dataset_id) == "input" else outputs).append(entity)
    status = {"completed": "CompletedActionStatus", "failed": "FailedActionStatus",
              "cancelled": "FailedActionStatus"}.get(invocation.state, "ActiveActionStatus")
    crate.add_action(workflow, identifier=f"#invocation-{head['invocation']['id']}", object=inputs, result=outputs,
                     properties={"name": f"Run of {name}", "actionStatus": f"http://schema.org/{status}",
                                 "startTime": invocation.create_time.isoformat(),
                                 "endTime": invocation.update_time.isoformat()})
    crate.write_zip(partial)


def default_file_name(name: str, fmt_name: str) -> str:
    """The download name of an invocation archive."""
    stem = "".join(ch if ch.isalnum() or ch in "-_ " else "_" for ch in name).strip() or "invocation"
    return f"Galaxy-Invocation-{stem[:80]}.{FORMATS[fmt_name].extension}"


def prepare_invocation_pdf(session: Session, sts: ShortTermStorage, ids: IdEncoder, *, storage_request_id: str,
                           invocation_id: int) -> dict[str, Any]:
    """Render the invocation's report PDF into a short-term storage request."""
    from app.exports.report_pdf import render_invocation_pdf
    from app.models import WorkflowInvocation

    def work(meta) -> dict[str, Any]:
        invocation = session.get(WorkflowInvocation, invocation_id)
        if invocation is None or invocation.user_id != meta.owner_id:
            raise ExportError(f"invocation {invocation_id} not found")
        pdf = render_invocation_pdf(session, invocation, ids)
        session.commit()
        with sts.writing(storage_request_id) as partial:
            partial.write_bytes(pdf)
        return {"storage_request_id": storage_request_id, "bytes": len(pdf)}

    return fill_request(sts, storage_request_id, work)
