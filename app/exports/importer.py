"""Importing a history archive as a new history (a task on the exports queue).

The archive is untrusted: it is unpacked by ``app.exports.reader`` (no member name is
ever a path; links, ``..``, absolute names and bombs are refused), its manifest is
validated with pydantic, and every dataset file must match the size and sha256 the
manifest gives. Only then are rows written — in the task's one transaction — and files
moved into the object store. A rejected archive fails the task with the reason and
leaves nothing behind.
"""

from __future__ import annotations

import fcntl
import json
import dataclasses
import logging
import shutil
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy.orm import Session

from app.exports.errors import ArchiveRejected, ExportError
from app.exports.manifest import FORMAT, MANIFEST_NAME
from app.exports.reader import ArchiveLimits, StagedMember, check_member_name, unpack
from app.models import Dataset, DatasetState, History, Job, JobInput, JobOutput, JobState
from app.models.collections import DatasetCollection, DatasetCollectionElement, HistoryDatasetCollection
from app.objectstore import ObjectStore
from app.schemas.tasks import ImportHistoryArchive
from app.services.uploads import download_url
from app.settings import Settings

log = logging.getLogger(__name__)
# The limits that are not settings (the unpack ratio); the settings give the totals.
LIMITS = ArchiveLimits()

_KEY = r"^[\w.-]{1,64}$"
_DATASET_STATES = {DatasetState.OK, DatasetState.EMPTY, DatasetState.ERROR, DatasetState.FAILED_METADATA,
                   DatasetState.DEFERRED, DatasetState.DISCARDED, DatasetState.PAUSED}
_MAX_DEPTH = 32


class _In(BaseModel):
    model_config = ConfigDict(extra="ignore")


class FileIn(_In):
    path: str = Field(max_length=1024)
    size: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class HistoryIn(_In):
    name: str = Field("Imported history", max_length=255)
    annotation: str | None = Field(None, max_length=65536)
    tags: list[str] = Field(default_factory=list, max_length=1000)


class DatasetIn(_In):
    key: str = Field(pattern=_KEY)
    hid: int | None = Field(None, ge=1, le=10**9)
    name: str = Field("dataset", max_length=255)
    state: str = Field(DatasetState.OK, max_length=32)
    extension: str = Field("data", max_length=64, pattern=r"^[\w.-]+$")
    dbkey: str = Field("?", max_length=64)
    info: str | None = Field(None, max_length=65536)
    peek: str | None = Field(None, max_length=65536)
    blurb: str | None = Field(None, max_length=255)
    line_count: int | None = Field(None, ge=0)
    visible: bool = True
    deleted: bool = False
    tags: list[str] = Field(default_factory=list, max_length=1000)
    metadata: dict[str, Any] = Field(default_factory=dict)
    creating_job: str | None = Field(None, pattern=_KEY)
    file: FileIn | None = None


class ElementIn(_In):
    identifier: str = Field(max_length=255)
    dataset: str | None = Field(None, pattern=_KEY)
    collection: "CollectionIn | None" = None


class CollectionIn(_In):
    collection_type: str = Field(max_length=255, pattern=r"^[\w:]+$")
    populated_state: str = Field("ok", max_length=64)
    populated_state_message: str | None = Field(None, max_length=65536)
    elements: list[ElementIn] = Field(default_factory=list)


class HdcaIn(_In):
    hid: int = Field(ge=1, le=10**9)
    name: str = Field(max_length=255)
    visible: bool = True
    deleted: bool = False
    tags: list[str] = Field(default_factory=list, max_length=1000)
    implicit_output_name: str | None = Field(None, max_length=255)
    job: str | None = Field(None, pattern=_KEY)
    collection: CollectionIn


class JobIoIn(_In):
    name: str = Field(max_length=255)
    dataset: str | None = Field(None, pattern=_KEY)


class JobIn(_In):
    key: str = Field(pattern=_KEY)
    tool_id: str = Field(max_length=255)
    tool_version: str = Field("1.0.0", max_length=64)
    state: str = Field(JobState.OK, max_length=32)
    params: dict[str, Any] = Field(default_factory=dict)
    command_line: str | None = Field(None, max_length=1 << 20)
    stdout: str | None = Field(None, max_length=1 << 20)
    stderr: str | None = Field(None, max_length=1 << 20)
    exit_code: int | None = None
    info: str | None = Field(None, max_length=65536)
    inputs: list[JobIoIn] = Field(default_factory=list)
    outputs: list[JobIoIn] = Field(default_factory=list)


class ManifestIn(_In):
    format: Literal["nebula.history_archive"]
    version: Literal[1]
    history: HistoryIn
    datasets: list[DatasetIn] = Field(default_factory=list)
    collections: list[HdcaIn] = Field(default_factory=list)
    jobs: list[JobIn] = Field(default_factory=list)


def import_history_archive(session: Session, store: ObjectStore, settings: Settings, request: ImportHistoryArchive,
                           *, progress=None, limits: ArchiveLimits | None = None) -> dict[str, Any]:
    """Import the archive staged for ``request``; return {history_id, datasets, collections, jobs}."""
    limits = limits or dataclasses.replace(LIMITS, max_total_bytes=settings.import_max_bytes,
                                           max_members=settings.import_max_members)
    staging = _staging_dir(settings, request.staging_dir)
    done = staging / "done.json"
    if done.exists():  # a redelivered message: the history exists already
        return json.loads(done.read_text())
    if not staging.is_dir():
        raise ExportError("the staged archive is gone (the import was cleaned up)")
    with (staging / "lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if done.exists():
            return json.loads(done.read_text())
        try:
            result = _import(session, store, request, staging, limits, progress)
        except ArchiveRejected:
            session.rollback()
            shutil.rmtree(staging, ignore_errors=True)
            raise
        done.write_text(json.dumps(result))
    shutil.rmtree(staging / "members", ignore_errors=True)
    (staging / "archive").unlink(missing_ok=True)
    return result


def _staging_dir(settings: Settings, raw: str) -> Path:
    root = (settings.resolved_data_dir / "imports").resolve()
    path = Path(raw).resolve()
    if path.parent != root:
        raise ExportError("the import's staging directory is not under the data dir")
    return path


def _report(progress, fraction: float, message: str) -> None:
    if progress is not None:
        progress.update(fraction, message, force=True)


def _import(session: Session, store: ObjectStore, request: ImportHistoryArchive, staging: Path,
            limits: ArchiveLimits, progress) -> dict[str, Any]:
    archive = staging / "archive"
    if not archive.exists():
        if not request.archive_url:
            raise ExportError("no archive was staged for this import")
        _report(progress, 0.0, "downloading the archive")
        partial = staging / "archive.download"
        try:
            download_url(request.archive_url, partial, limit=limits.max_total_bytes)
        except ValueError as exc:
            raise ArchiveRejected(str(exc)) from exc
        except OSError as exc:
            raise ExportError(f"cannot download {request.archive_url}: {exc}") from exc
        partial.replace(archive)
    _report(progress, 0.1, "unpacking the archive")
    members_dir = staging / "members"
    shutil.rmtree(members_dir, ignore_errors=True)
    members = unpack(archive, members_dir, limits)
    manifest = _read_manifest(members, limits)
    _check(manifest, members)
    _report(progress, 0.6, "creating the history")
    return _create(session, store, request, manifest, members)


def _read_manifest(members: dict[str, StagedMember], limits: ArchiveLimits) -> ManifestIn:
    member = members.get(MANIFEST_NAME)
    if member is None:
        raise ArchiveRejected(f"the archive has no {MANIFEST_NAME}; is it a Nebula history archive?")
    if member.size > limits.max_manifest_bytes:
        raise ArchiveRejected(f"{MANIFEST_NAME} is larger than {limits.max_manifest_bytes} bytes")
    try:
        data = json.loads(member.path.read_bytes())
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ArchiveRejected(f"{MANIFEST_NAME} is not a Nebula history archive manifest")
        return ManifestIn.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:5])
        raise ArchiveRejected(f"{MANIFEST_NAME} is not valid: {problems}") from exc
    except (ValueError, RecursionError) as exc:
        raise ArchiveRejected(f"{MANIFEST_NAME} is not valid JSON: {exc}") from exc


def _check(manifest: ManifestIn, members: dict[str, StagedMember]) -> None:
    """Keys unique, hids unique, references resolvable, files present and byte-exact."""
    keys = [d.key for d in manifest.datasets]
    if len(set(keys)) != len(keys):
        raise ArchiveRejected("the manifest names a dataset key twice")
    job_keys = [j.key for j in manifest.jobs]
    if len(set(job_keys)) != len(job_keys):
        raise ArchiveRejected("the manifest names a job key twice")
    hids = [d.hid for d in manifest.datasets if d.hid is not None] + [c.hid for c in manifest.collections]
    if len(set(hids)) != len(hids):
        raise ArchiveRejected("the manifest gives two items the same hid")
    known = set(keys)
    for hdca in manifest.collections:
        _check_collection(hdca.collection, known, 0)
    for dataset in manifest.datasets:
        if dataset.file is None:
            continue
        member = members.get(_member_name(dataset.file.path))
        if member is None:
            raise ArchiveRejected(f"dataset {dataset.name!r}: its file {dataset.file.path!r} is not in the archive")
        if member.size != dataset.file.size or member.sha256 != dataset.file.sha256:
            raise ArchiveRejected(f"dataset {dataset.name!r}: {dataset.file.path!r} does not match its checksum")


def _member_name(path: str) -> str:
    """A manifest's file path in the form the reader names members (hostile paths are refused)."""
    return check_member_name(path)


def _check_collection(collection: CollectionIn, known: set[str], depth: int) -> None:
    if depth > _MAX_DEPTH:
        raise ArchiveRejected(f"a collection is nested deeper than {_MAX_DEPTH} levels")
    for element in collection.elements:
        if element.collection is not None:
            _check_collection(element.collection, known, depth + 1)
        elif element.dataset is None or element.dataset not in known:
            raise ArchiveRejected(f"collection element {element.identifier!r} names no dataset of the archive")


def _create(session: Session, store: ObjectStore, request: ImportHistoryArchive, manifest: ManifestIn,
            members: dict[str, StagedMember]) -> dict[str, Any]:
    history = History(user_id=request.user_id, name=request.name or manifest.history.name,
                      annotation=manifest.history.annotation, tags=list(manifest.history.tags))
    session.add(history)
    session.flush()
    jobs: dict[str, Job] = {}
    for item in manifest.jobs:
        state = item.state if item.state in JobState.TERMINAL else JobState.DELETED
        job = Job(user_id=request.user_id, history_id=history.id, tool_id=item.tool_id, tool_version=item.tool_version,
                  state=state, params=item.params, command_line=item.command_line, stdout=item.stdout,
                  stderr=item.stderr, exit_code=item.exit_code, info=item.info)
        session.add(job)
        jobs[item.key] = job
    session.flush()
    used = {d.hid for d in manifest.datasets if d.hid} | {c.hid for c in manifest.collections}
    next_hid = max(used, default=0) + 1
    datasets: dict[str, Dataset] = {}
    for item in manifest.datasets:
        if item.hid is None:
            hid, next_hid = next_hid, next_hid + 1
        else:
            hid = item.hid
        state = item.state if item.state in _DATASET_STATES else DatasetState.DISCARDED
        if item.file is None and state in (DatasetState.OK, DatasetState.EMPTY):
            state = DatasetState.DISCARDED
        creating = jobs.get(item.creating_job) if item.creating_job else None
        dataset = Dataset(history_id=history.id, user_id=request.user_id, hid=hid, name=item.name, state=state,
                          extension=item.extension, dbkey=item.dbkey, info=item.info, peek=item.peek, blurb=item.blurb,
                          line_count=item.line_count, file_size=item.file.size if item.file else 0,
                          visible=item.visible, deleted=item.deleted, tags=list(item.tags), metadata_=item.metadata,
                          creating_job_id=creating.id if creating else None)
        session.add(dataset)
        datasets[item.key] = dataset
    history.hid_counter = next_hid
    session.flush()
    for item in manifest.jobs:
        job = jobs[item.key]
        for io in item.inputs:
            if io.dataset in datasets:
                session.add(JobInput(job_id=job.id, dataset_id=datasets[io.dataset].id, name=io.name))
        for io in item.outputs:
            if io.dataset in datasets:
                session.add(JobOutput(job_id=job.id, dataset_id=datasets[io.dataset].id, name=io.name))
    for item in manifest.collections:
        job = jobs.get(item.job) if item.job else None
        collection = _create_collection(session, item.collection, datasets)
        session.add(HistoryDatasetCollection(
            history_id=history.id, user_id=request.user_id, hid=item.hid, name=item.name, collection_id=collection.id,
            visible=item.visible, deleted=item.deleted, tags=list(item.tags),
            implicit_output_name=item.implicit_output_name, job_id=job.id if job else None))
    session.flush()
    moved = 0
    for item in manifest.datasets:
        if item.file is not None:
            member = members[_member_name(item.file.path)]
            datasets[item.key].object_key = store.put(datasets[item.key].id, member.path)
            moved += 1
    session.commit()
    return {"history_id": history.id, "name": history.name, "datasets": len(datasets), "files": moved,
            "collections": len(manifest.collections), "jobs": len(jobs)}


def _create_collection(session: Session, item: CollectionIn, datasets: dict[str, Dataset]) -> DatasetCollection:
    collection = DatasetCollection(collection_type=item.collection_type, populated_state=item.populated_state,
                                   populated_state_message=item.populated_state_message,
                                   element_count=len(item.elements))
    session.add(collection)
    session.flush()
    for index, element in enumerate(item.elements):
        child = _create_collection(session, element.collection, datasets) if element.collection is not None else None
        session.add(DatasetCollectionElement(
            collection_id=collection.id, element_index=index, element_identifier=element.identifier,
            dataset_id=datasets[element.dataset].id if child is None and element.dataset else None,
            child_collection_id=child.id if child else None))
    return collection


def cleanup_staging(settings: Settings, *, older_than: int | None = None) -> int:
    """Remove import staging dirs left behind (a task that failed for good, or never ran)."""
    import time

    root = settings.resolved_data_dir / "imports"
    if not root.is_dir():
        return 0
    limit = older_than if older_than is not None else settings.short_term_storage_maximum_duration
    removed = 0
    for entry in root.iterdir():
        try:
            age = time.time() - entry.stat().st_mtime
        except OSError:
            continue
        if entry.is_dir() and age > limit:
            shutil.rmtree(entry, ignore_errors=True)
            removed += 1
    return removed
