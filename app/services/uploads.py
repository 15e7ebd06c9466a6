"""Uploads: the request side (stage bytes, create job and datasets) and the pipeline steps.

A request writes the pasted text or uploaded file into a staging directory, creates the
job and its datasets in state ``queued`` and sends the pipeline
``setup_fetch_data | fetch_data | set_job_metadata`` with ``finish_job`` on error. Each
step is idempotent: a redelivered message finds its work done and does nothing.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import sqlalchemy as sa
from pydantic import BaseModel, Field, field_validator
from sqlalchemy.orm import Session

from app.datatypes import file_metadata
from app.errors import BadRequest, RequestParameterInvalid
from app.messaging import Enqueuer
from app.models import Dataset, DatasetState, History, Job, JobOutput, JobState, User
from app.models.base import utcnow
from app.objectstore import ObjectStore
from app.schemas.tasks import FetchData, FinishJob, SetJobMetadata, SetupFetchData
from app.services.histories import allocate_hids
from app.services.jobs import wake_jobs_waiting_on

UPLOAD_TOOL = "upload1"
_FILE_KEY = re.compile(r"^files_(\d+)\|(\w+)$")
_URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://\S+$")


class UploadTarget(BaseModel):
    """One dataset to create from pasted text, an uploaded file or a URL."""

    src: str = Field(pattern="^(pasted|files|url)$")
    paste_content: str | None = None
    url: str | None = None
    file_index: int | None = None
    name: str | None = Field(None, max_length=255)
    ext: str = Field("auto", max_length=64, pattern=r"^[\w.-]+$")
    dbkey: str = Field("?", max_length=64)
    space_to_tab: bool = False
    to_posix_lines: bool = True

    @field_validator("url")
    @classmethod
    def _http_only(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("only http:// and https:// URLs can be fetched")
        return value


@dataclass
class StagedUpload:
    """What the request created."""

    job: Job
    datasets: list[Dataset]


def _truthy(value: Any) -> bool:
    return str(value).lower() in ("true", "1", "yes", "on")


def targets_from_upload1(inputs: dict[str, Any], file_count: int) -> list[UploadTarget]:
    """Read the legacy ``upload1`` flat inputs (``files_0|url_paste`` …) into targets."""
    per_file: dict[int, dict[str, Any]] = {}
    for key, value in inputs.items():
        match = _FILE_KEY.match(key)
        if match:
            per_file.setdefault(int(match.group(1)), {})[match.group(2)] = value
    for i, item in enumerate(inputs.get("files") or []):
        if isinstance(item, dict):
            per_file.setdefault(i, {}).update(item)
    ext = inputs.get("file_type") or "auto"
    dbkey = inputs.get("dbkey") or "?"
    targets = []
    for index in sorted(per_file):
        fields = per_file[index]
        common = dict(
            name=fields.get("NAME") or None,
            ext=fields.get("file_type") or ext,
            dbkey=fields.get("dbkey") or dbkey,
            space_to_tab=_truthy(fields.get("space_to_tab", False)),
            to_posix_lines=_truthy(fields.get("to_posix_lines", True)),
        )
        paste = fields.get("url_paste")
        if fields.get("file_data") is not None or (paste in (None, "") and index < file_count):
            targets.append(UploadTarget(src="files", file_index=index, **common))
        elif isinstance(paste, str) and _URL.match(paste.strip()):
            targets.append(UploadTarget(src="url", url=paste.strip(), **common))
        elif isinstance(paste, str):
            targets.append(UploadTarget(src="pasted", paste_content=paste, **common))
    if not targets:
        raise BadRequest("upload1 needs files_0|url_paste or files_0|file_data")
    return targets


def stage_upload(
    session: Session,
    *,
    user: User,
    history: History,
    targets: list[UploadTarget],
    files: list[tuple[str, BinaryIO | Path]],
    staging_root: Path,
    enqueuer: Enqueuer,
    tool_id: str = UPLOAD_TOOL,
) -> StagedUpload:
    """Stage the bytes, create job + datasets (queued) and send the upload pipeline."""
    stage_dir = staging_root / uuid.uuid4().hex
    stage_dir.mkdir(parents=True)
    try:
        params_targets = []
        for i, target in enumerate(targets):
            entry = target.model_dump(exclude={"paste_content"})
            if target.src == "pasted":
                source = stage_dir / f"target_{i}"
                source.write_text(target.paste_content or "", encoding="utf-8", newline="")
                entry["staged"] = source.name
                entry["name"] = target.name or "Pasted Entry"
            elif target.src == "files":
                if target.file_index is None or target.file_index >= len(files):
                    raise RequestParameterInvalid(f"target {i}: no uploaded file with index {target.file_index}")
                filename, stream = files[target.file_index]
                source = stage_dir / f"target_{i}"
                if isinstance(stream, Path):  # a finished resumable (tus) upload: move it in
                    shutil.move(stream, source)
                else:
                    with source.open("wb") as out:
                        shutil.copyfileobj(stream, out, 1 << 20)
                entry["staged"] = source.name
                entry["name"] = target.name or safe_display_name(filename) or "uploaded file"
            else:
                entry["name"] = target.name or safe_display_name(target.url or "") or "url"
            params_targets.append(entry)
        job = Job(
            user_id=user.id,
            history_id=history.id,
            tool_id=tool_id,
            state=JobState.QUEUED,
            params={"stage_dir": str(stage_dir)},
        )
        session.add(job)
        session.flush()
        first_hid = allocate_hids(session, history.id, len(params_targets))
        datasets = []
        for i, entry in enumerate(params_targets):
            dataset = Dataset(
                history_id=history.id,
                user_id=user.id,
                hid=first_hid + i,
                name=entry["name"],
                state=DatasetState.QUEUED,
                extension=entry["ext"],
                dbkey=entry["dbkey"],
                creating_job_id=job.id,
            )
            session.add(dataset)
            datasets.append(dataset)
        session.flush()
        for i, dataset in enumerate(datasets):
            job.outputs.append(JobOutput(dataset_id=dataset.id, name=f"output{i}"))
            params_targets[i]["dataset_id"] = dataset.id
        job.params = {"stage_dir": str(stage_dir), "targets": params_targets}
        session.flush()
        send_upload_pipeline(session, enqueuer, job.id)
        return StagedUpload(job=job, datasets=datasets)
    except BaseException:
        shutil.rmtree(stage_dir, ignore_errors=True)
        raise


def send_upload_pipeline(session: Session, enqueuer: Enqueuer, job_id: int) -> None:
    """setup_fetch_data | fetch_data | set_job_metadata, with finish_job on error."""
    enqueuer.send_pipeline(
        session,
        [SetupFetchData(job_id=job_id), FetchData(job_id=job_id), SetJobMetadata(job_id=job_id)],
        on_error=FinishJob(job_id=job_id),
    )


UPLOAD_TOOLS = (UPLOAD_TOOL, "__DATA_FETCH__")


def resend_stalled_uploads(session: Session, enqueuer: Enqueuer, *, stalled_after_s: float) -> int:
    """Send the pipeline again for uploads that have not moved for a while; return how many.

    Dramatiq enqueues a pipeline's next step after acking the current one; if that enqueue
    fails the upload would wait forever. Every step is idempotent, so sending the whole
    pipeline again finishes what is left and redoes nothing.
    """
    cutoff = utcnow() - dt.timedelta(seconds=stalled_after_s)
    stalled = list(session.scalars(
        sa.select(Job.id).where(Job.tool_id.in_(UPLOAD_TOOLS), Job.state.in_([JobState.QUEUED, JobState.RUNNING]),
                                Job.update_time < cutoff).limit(500)
    ))
    if stalled:
        session.execute(sa.update(Job).where(Job.id.in_(stalled)).values(update_time=utcnow()))
    for job_id in stalled:
        send_upload_pipeline(session, enqueuer, job_id)
    return len(stalled)


def safe_display_name(filename: str) -> str:
    """A dataset name from a client file name or URL: its last path part, never a path."""
    name = re.split(r"[\\/]", filename.rstrip("/\\"))[-1]
    name = "".join(ch for ch in name if ch.isprintable())
    return "" if name in (".", "..") else name[:255]


# --- pipeline steps (run in workers) -------------------------------------------------


def setup_fetch_data(session: Session, job_id: int) -> bool:
    """Mark an upload job running; False when it already finished (nothing to do)."""
    job = session.get(Job, job_id, with_for_update=True)
    if job is None or job.state in JobState.TERMINAL:
        return False
    if job.state != JobState.RUNNING:
        job.state = JobState.RUNNING
        job.start_time = utcnow()
        session.execute(
            sa.update(Dataset)
            .where(Dataset.creating_job_id == job.id, Dataset.state == DatasetState.QUEUED)
            .values(state=DatasetState.RUNNING)
        )
    return True


def fetch_data(session: Session, job_id: int, store: ObjectStore, fetch_url=None) -> None:
    """Normalise each target's bytes into the object store (skips those already stored)."""
    job = session.get(Job, job_id)
    if job is None or job.state in JobState.TERMINAL:
        return
    stage_dir = Path(job.params["stage_dir"])
    for target in job.params["targets"]:
        dataset = session.get(Dataset, target["dataset_id"])
        if dataset is None or (dataset.object_key and store.path(dataset.object_key).exists()):
            continue
        work = stage_dir / f"normalized_{target['dataset_id']}"
        if target["src"] == "url":
            raw = stage_dir / f"download_{target['dataset_id']}"
            (fetch_url or download_url)(target["url"], raw)
        else:
            raw = stage_dir / target["staged"]
        normalize(raw, work, to_posix_lines=target.get("to_posix_lines", True), space_to_tab=target.get("space_to_tab", False))
        dataset.object_key = store.put(dataset.id, work)
    session.flush()


def set_job_metadata(session: Session, job_id: int, store: ObjectStore, *, enqueuer: Enqueuer) -> None:
    """Sniff and measure each output; datasets and the job become ok, waiting jobs are woken; staging is removed."""
    job = session.get(Job, job_id, with_for_update=True)
    if job is None or job.state in JobState.TERMINAL:
        return
    for target in job.params["targets"]:
        dataset = session.get(Dataset, target["dataset_id"])
        if dataset is None or not dataset.object_key:
            raise RuntimeError(f"dataset {target['dataset_id']} has no file after fetch")
        meta = file_metadata(store.path(dataset.object_key), target.get("ext", "auto"))
        dataset.extension = meta.extension
        dataset.line_count = meta.line_count
        dataset.file_size = meta.file_size
        dataset.peek = meta.peek
        dataset.blurb = meta.blurb
        dataset.metadata_ = {**(dataset.metadata_ or {}), **meta.metadata}
        dataset.state = DatasetState.OK
    job.state = JobState.OK
    job.exit_code = 0
    job.end_time = utcnow()
    session.flush()
    _wake_waiting(session, job.id, enqueuer)
    shutil.rmtree(job.params["stage_dir"], ignore_errors=True)


def finish_job_with_error(session: Session, job_id: int, message: str, *, enqueuer: Enqueuer) -> None:
    """Mark a job and its unfinished outputs error with a message (idempotent); wake jobs waiting on them."""
    job = session.get(Job, job_id, with_for_update=True)
    if job is None or job.state in JobState.TERMINAL:
        return
    job.state = JobState.ERROR
    job.info = message[:4000]
    job.end_time = utcnow()
    session.execute(
        sa.update(Dataset)
        .where(Dataset.creating_job_id == job.id, Dataset.state.not_in(list(DatasetState.TERMINAL)))
        .values(state=DatasetState.ERROR, info=message[:4000])
    )
    session.flush()
    _wake_waiting(session, job.id, enqueuer)
    if "stage_dir" in (job.params or {}):
        shutil.rmtree(job.params["stage_dir"], ignore_errors=True)


def _wake_waiting(session: Session, job_id: int, enqueuer: Enqueuer) -> None:
    """Jobs reading this upload's datasets run (or fail on them) now, not at their next retry."""
    outputs = list(session.scalars(sa.select(JobOutput.dataset_id).where(JobOutput.job_id == job_id)))
    wake_jobs_waiting_on(session, outputs, enqueuer=enqueuer)


_WHITESPACE = re.compile(rb"[ \t]+")
MAX_CARRY = 16 << 20  # longest run of blanks normalize() holds back between chunks


def normalize(source: Path, target: Path, *, to_posix_lines: bool, space_to_tab: bool,
              chunk_size: int = 1 << 20) -> None:
    """Galaxy's paste semantics: \\r\\n and \\r become \\n, a final \\n is added, spaces to tabs.

    Streams in chunks, so an upload of any size is normalised in bounded memory. A chunk's
    trailing \\r or run of blanks waits for the next chunk: it may be half of a \\r\\n or
    of a run that must become a single tab.
    """
    with source.open("rb") as src:
        binary = b"\x00" in src.read(65536)
    if binary or (not to_posix_lines and not space_to_tab):
        shutil.copyfile(source, target)
        return
    carry = b""
    last = b""
    with source.open("rb") as src, target.open("wb") as out:
        while chunk := src.read(chunk_size):
            data = carry + chunk
            keep = len(data) - len(data.rstrip(b" \t\r"))
            if keep > MAX_CARRY:  # a pathological run of blanks: bound the memory it takes
                keep = 1
            data, carry = (data[:-keep], data[-keep:]) if keep else (data, b"")
            last = _write_normalized(out, data, to_posix_lines, space_to_tab) or last
        last = _write_normalized(out, carry, to_posix_lines, space_to_tab) or last
        if to_posix_lines and last and last != b"\n":
            out.write(b"\n")


def _write_normalized(out, data: bytes, to_posix_lines: bool, space_to_tab: bool) -> bytes:
    """Write one normalised piece; return its last byte (b"" when nothing was written)."""
    if to_posix_lines:
        data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    if space_to_tab:
        data = _WHITESPACE.sub(b"\t", data)
    out.write(data)
    return data[-1:]


def download_url(url: str, target: Path, *, limit: int = 1 << 30) -> None:
    """Fetch a URL to a file, refusing more than ``limit`` bytes."""
    import requests

    with requests.get(url, stream=True, timeout=(10, 300)) as response:
        response.raise_for_status()
        size = 0
        with target.open("wb") as out:
            for chunk in response.iter_content(1 << 20):
                size += len(chunk)
                if size > limit:
                    raise ValueError(f"{url}: more than {limit} bytes")
                out.write(chunk)
    os.chmod(target, 0o600)
