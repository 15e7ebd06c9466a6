"""History archives: prepare_store_download, the legacy /exports routes, and archive import.

Every long part runs as a tracked task on the ``exports`` queue; these views only check
the input, make a short-term storage request and send the task.
"""

from __future__ import annotations

import json
import shutil
import uuid
from typing import Any

import sqlalchemy as sa
from flask import Response, request
from pydantic import Field

from app.api.context import RequestContext, current
from app.api.routing import ApiBlueprint, parse_model, read_body
from app.api.short_term_storage import PreparationFailed, outcome, send_prepared, storage
from app.errors import NebulaError, NotFound, RequestParameterInvalid, RequestParameterMissing
from app.exports.archive import FORMATS
from app.exports.history import default_file_name
from app.messaging import TaskRequest
from app.models import Dataset, History
from app.models.collections import HistoryDatasetCollection
from app.schemas.common import Model, Query, Request
from app.schemas.tasks import ImportHistoryArchive, PrepareHistoryArchive
from app.services import histories
from app.shortterm import ShortTermStorage, StorageRequest

bp = ApiBlueprint("exports", __name__)

HISTORY_ARCHIVE = "history_archive"


class StoreExportPayload(Request):
    """POST /api/histories/{id}/prepare_store_download."""

    model_store_format: str = "tar.gz"
    include_files: bool = True
    include_hidden: bool = False
    include_deleted: bool = False
    duration: int | None = Field(None, gt=0, description="Seconds the file stays available once ready.")


class AsyncTaskSummary(Model):
    """The task preparing a file (Galaxy's AsyncTaskResultSummary)."""

    id: str
    ignored: bool = False
    name: str | None = None
    queue: str | None = None


class AsyncFile(Model):
    """A short-term storage request and the task filling it."""

    storage_request_id: str
    task: AsyncTaskSummary


class LegacyExportQuery(Query):
    """PUT /api/histories/{id}/exports parameters."""

    gzip: bool = True
    include_hidden: bool = False
    include_deleted: bool = False


class ImportPayload(Request):
    """POST /api/histories with an archive."""

    archive_source: str | None = Field(None, max_length=4096)
    archive_type: str = "url"
    name: str | None = Field(None, max_length=255)


def send_tracked_export(ctx: RequestContext, task_request: TaskRequest) -> str:
    """Send a tracked task carrying the export time limit; return its id (the message id).

    The time limit travels as a message option because it is a setting, known to the
    app, while actors are declared at import time.
    """
    return ctx.services.enqueuer.send(ctx.session, task_request, tracked_for=ctx.user.id,
                                      options={"time_limit": ctx.settings.export_time_limit * 1000})


def _format(name: str, allowed: dict[str, Any]) -> str:
    if name not in allowed:
        raise RequestParameterInvalid(
            f"unknown model_store_format {name!r}; use one of: {', '.join(sorted(allowed))}")
    return name


def start_history_archive(ctx: RequestContext, history: History, fmt_name: str, *, include_files: bool = True,
                          include_hidden: bool = False, include_deleted: bool = False,
                          duration: int | None = None, subject: dict[str, Any] | None = None) -> StorageRequest:
    """Make the storage request and send the task writing a history archive into it."""
    fmt = FORMATS[fmt_name]
    sts = storage(ctx)
    meta = sts.create(ctx.user.id, default_file_name(history, fmt_name), fmt.mime_type, duration=duration,
                      kind=HISTORY_ARCHIVE, subject={"history_id": history.id, **(subject or {})})
    try:
        task_id = send_tracked_export(ctx, PrepareHistoryArchive(
            storage_request_id=meta.request_id, history_id=history.id, model_store_format=fmt.name,
            include_files=include_files, include_hidden=include_hidden, include_deleted=include_deleted))
        sts.attach_task(meta.request_id, task_id)
    except BaseException:
        shutil.rmtree(sts.directory(meta.request_id), ignore_errors=True)
        raise
    return meta.model_copy(update={"task_id": task_id})


def async_file(meta: StorageRequest, action: str) -> AsyncFile:
    """The answer of a prepare_* call."""
    assert meta.task_id is not None
    return AsyncFile(storage_request_id=meta.request_id,
                     task=AsyncTaskSummary(id=meta.task_id, name=action, queue="exports"))


@bp.endpoint("/api/histories/<history_id>/prepare_store_download", "POST", body=StoreExportPayload,
             response=AsyncFile)
def prepare_history_download(history_id: str, body: StoreExportPayload) -> AsyncFile:
    """Prepare a history archive (tar.gz, tar or zip) in short-term storage, as a task."""
    ctx = current()
    history = histories.get_history(ctx.session, ctx.user, ctx.decode(history_id, "history"))
    fmt_name = _format(body.model_store_format, FORMATS)
    meta = start_history_archive(ctx, history, fmt_name, include_files=body.include_files,
                                 include_hidden=body.include_hidden, include_deleted=body.include_deleted,
                                 duration=body.duration)
    return async_file(meta, PrepareHistoryArchive.route.action)


# --- legacy exports: PUT /api/histories/{id}/exports, GET .../exports/{export_id} -------------


def history_fingerprint(ctx: RequestContext, history: History) -> str:
    """Changes whenever the history or anything in it changes (a legacy export is then stale)."""
    datasets = ctx.session.execute(
        sa.select(sa.func.count(Dataset.id), sa.func.max(Dataset.update_time)).where(Dataset.history_id == history.id)
    ).one()
    collections = ctx.session.execute(
        sa.select(sa.func.count(HistoryDatasetCollection.id), sa.func.max(HistoryDatasetCollection.update_time))
        .where(HistoryDatasetCollection.history_id == history.id)
    ).one()
    parts = [history.update_time, *datasets, *collections]
    return "|".join(str(p) for p in parts)


def _legacy_key(ctx: RequestContext, history: History, query: LegacyExportQuery) -> str:
    return (f"legacy-{ctx.user.id}-{history.id}-{'tgz' if query.gzip else 'tar'}"
            f"-{int(query.include_hidden)}{int(query.include_deleted)}")


def _legacy_view(ctx: RequestContext, history: History, meta: StorageRequest, *, ready: bool) -> dict[str, Any]:
    encoded = ctx.ids.encode(history.id)
    return {
        "id": meta.request_id,
        "job_id": meta.task_id,
        "ready": ready,
        "preparing": not ready,
        "up_to_date": True,
        "download_url": f"/api/histories/{encoded}/exports/{meta.request_id}",
        "external_download_latest_url": None,
        "external_download_permanent_url": None,
    }


def _current_legacy_export(ctx: RequestContext, sts: ShortTermStorage, key: str, fingerprint: str) -> StorageRequest | None:
    request_id = sts.recall(key)
    if request_id is None:
        return None
    try:
        meta = sts.load_for(request_id, ctx.user.id)
    except NebulaError:  # gone, expired or foreign: start afresh
        return None
    return meta if meta.subject.get("fingerprint") == fingerprint else None


@bp.endpoint("/api/histories/<history_id>/exports", "PUT", query=LegacyExportQuery)
def legacy_export(history_id: str, query: LegacyExportQuery) -> Response:
    """Start (or look up) a history export: 202 while it runs, 200 with download_url when ready."""
    ctx = current()
    history = histories.get_history(ctx.session, ctx.user, ctx.decode(history_id, "history"))
    sts = storage(ctx)
    key = _legacy_key(ctx, history, query)
    fingerprint = history_fingerprint(ctx, history)
    meta = _current_legacy_export(ctx, sts, key, fingerprint)
    if meta is None:
        meta = start_history_archive(ctx, history, "tar.gz" if query.gzip else "tar",
                                     include_hidden=query.include_hidden, include_deleted=query.include_deleted,
                                     subject={"fingerprint": fingerprint, "legacy_key": key})
        sts.remember(key, meta.request_id)
        return Response(json.dumps(_legacy_view(ctx, history, meta, ready=False)), status=202,
                        mimetype="application/json")
    state = outcome(ctx, sts, meta)
    if state.error is not None:
        sts.forget(key, meta.request_id)  # the next PUT starts a new export
        raise PreparationFailed(f"the export of history {history_id} failed: {state.error}")
    status = 200 if state.ready else 202
    return Response(json.dumps(_legacy_view(ctx, history, meta, ready=state.ready)), status=status,
                    mimetype="application/json")


@bp.endpoint("/api/histories/<history_id>/exports")
def list_legacy_exports(history_id: str) -> list[dict[str, Any]]:
    """The history's current legacy exports."""
    ctx = current()
    history = histories.get_history(ctx.session, ctx.user, ctx.decode(history_id, "history"))
    sts = storage(ctx)
    found = []
    for gzip in (True, False):
        for hidden in (False, True):
            for deleted in (False, True):
                query = LegacyExportQuery(gzip=gzip, include_hidden=hidden, include_deleted=deleted)
                request_id = sts.recall(_legacy_key(ctx, history, query))
                if request_id is None:
                    continue
                try:
                    meta = sts.load_for(request_id, ctx.user.id)
                except NebulaError:  # expired meanwhile
                    continue
                found.append(_legacy_view(ctx, history, meta, ready=outcome(ctx, sts, meta).ready))
    return found


@bp.endpoint("/api/histories/<history_id>/exports/<export_id>")
def download_legacy_export(history_id: str, export_id: str) -> Response:
    """The archive of a legacy export (202 while it is being prepared)."""
    ctx = current()
    history = histories.get_history(ctx.session, ctx.user, ctx.decode(history_id, "history"))
    sts = storage(ctx)
    meta = sts.load_for(export_id, ctx.user.id)
    if meta.kind != HISTORY_ARCHIVE or meta.subject.get("history_id") != history.id:
        raise NotFound(f"export {export_id!r} of history {history_id} not found")
    return send_prepared(ctx, sts, meta)


# --- import: POST /api/histories with archive_file or archive_source ----------------------


def archive_import_requested() -> bool:
    """True when a POST /api/histories carries an archive to import."""
    return "archive_file" in request.files or bool(read_body().get("archive_source"))


def import_history_archive() -> dict[str, Any]:
    """Stage the archive (or note its URL) and send the import task."""
    ctx = current()
    body = parse_model(ImportPayload, read_body())
    upload = request.files.get("archive_file")
    staging = ctx.settings.resolved_data_dir / "imports" / uuid.uuid4().hex
    url = None
    if upload is None:
        if not body.archive_source:
            raise RequestParameterMissing("archive_source or archive_file is required")
        if body.archive_type != "url" or not body.archive_source.startswith(("http://", "https://")):
            raise RequestParameterInvalid("archive_source must be an http:// or https:// URL (archive_type 'url')")
        url = body.archive_source
    staging.mkdir(parents=True)
    try:
        if upload is not None:
            with (staging / "archive").open("wb") as out:
                shutil.copyfileobj(upload.stream, out, 1 << 20)
        task_id = send_tracked_export(ctx, ImportHistoryArchive(
            user_id=ctx.user.id, staging_dir=str(staging), archive_url=url, name=body.name))
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    source = url or (upload.filename if upload is not None else "upload")
    return {
        "id": task_id,
        "task": AsyncTaskSummary(id=task_id, name=ImportHistoryArchive.route.action, queue="exports"),
        "state": "queued",
        "model_class": "Task",
        "message": f"Importing history from source '{source}'. The history appears when the task finishes; "
                   f"follow it at /api/tasks/{task_id}/state.",
    }



# --- invocations: prepare_store_download, prepare_pdf, report.pdf --------------------------


class InvocationExportPayload(Request):
    """POST /api/invocations/{id}/prepare_store_download."""

    model_store_format: str = "tar.gz"
    include_files: bool = True
    include_hidden: bool = False
    include_deleted: bool = False
    duration: int | None = Field(None, gt=0, description="Seconds the file stays available once ready.")


class PdfPayload(Request):
    """POST /api/invocations/{id}/prepare_pdf."""

    duration: int | None = Field(None, gt=0)


def _invocation(ctx: RequestContext, invocation_id: str):
    from app.services.invocations import get_invocation

    invocation = get_invocation(ctx.session, ctx.user, ctx.decode(invocation_id, "invocation"))
    if invocation.user_id != ctx.user.id:  # admins may read others' invocations, not export them
        raise NotFound(f"invocation {invocation_id} not found")
    return invocation


def _workflow_name(ctx: RequestContext, invocation) -> str:
    from app.models import StoredWorkflow, Workflow

    if invocation.stored_workflow_id:
        return ctx.session.get(StoredWorkflow, invocation.stored_workflow_id).name
    return ctx.session.get(Workflow, invocation.workflow_id).name


@bp.endpoint("/api/invocations/<invocation_id>/prepare_store_download", "POST", body=InvocationExportPayload,
             response=AsyncFile)
def prepare_invocation_download(invocation_id: str, body: InvocationExportPayload) -> AsyncFile:
    """Prepare an invocation archive (zip, tar.gz, tar or rocrate.zip) in short-term storage, as a task."""
    from app.exports import invocation as invocation_export
    from app.schemas.tasks import PrepareInvocationArchive

    ctx = current()
    invocation = _invocation(ctx, invocation_id)
    fmt_name = _format(body.model_store_format, invocation_export.FORMATS)
    fmt = invocation_export.FORMATS[fmt_name]
    sts = storage(ctx)
    meta = sts.create(ctx.user.id, invocation_export.default_file_name(_workflow_name(ctx, invocation), fmt_name),
                      fmt.mime_type, duration=body.duration, kind="invocation_archive",
                      subject={"invocation_id": invocation.id})
    try:
        task_id = send_tracked_export(ctx, PrepareInvocationArchive(
            storage_request_id=meta.request_id, invocation_id=invocation.id,
            model_store_format=fmt_name if fmt_name != "tgz" else "tar.gz", include_files=body.include_files,
            include_hidden=body.include_hidden, include_deleted=body.include_deleted))
        sts.attach_task(meta.request_id, task_id)
    except BaseException:
        shutil.rmtree(sts.directory(meta.request_id), ignore_errors=True)
        raise
    return async_file(meta.model_copy(update={"task_id": task_id}), PrepareInvocationArchive.route.action)


@bp.endpoint("/api/invocations/<invocation_id>/prepare_pdf", "POST", body=PdfPayload, response=AsyncFile)
def prepare_invocation_pdf(invocation_id: str, body: PdfPayload) -> AsyncFile:
    """Prepare the invocation report as a PDF in short-term storage, as a task."""
    from app.schemas.tasks import PrepareInvocationPdf

    ctx = current()
    invocation = _invocation(ctx, invocation_id)
    sts = storage(ctx)
    stem = "".join(ch if ch.isalnum() or ch in "-_ " else "_" for ch in _workflow_name(ctx, invocation))[:80]
    meta = sts.create(ctx.user.id, f"Invocation-Report-{stem or 'workflow'}.pdf", "application/pdf",
                      duration=body.duration, kind="invocation_pdf", subject={"invocation_id": invocation.id})
    try:
        task_id = send_tracked_export(ctx, PrepareInvocationPdf(storage_request_id=meta.request_id,
                                                                invocation_id=invocation.id))
        sts.attach_task(meta.request_id, task_id)
    except BaseException:
        shutil.rmtree(sts.directory(meta.request_id), ignore_errors=True)
        raise
    return async_file(meta.model_copy(update={"task_id": task_id}), PrepareInvocationPdf.route.action)


@bp.endpoint("/api/invocations/<invocation_id>/report.pdf")
@bp.endpoint("/api/workflows/<workflow_id>/invocations/<invocation_id>/report.pdf")
def invocation_report_pdf(invocation_id: str, workflow_id: str | None = None) -> Response:
    """The invocation report as PDF bytes, for existing clients (new ones use prepare_pdf).

    Rendered in the request: its cost grows with the number of workflow steps (jobs are
    counted by one grouped query), a fraction of a second for a workflow of a few hundred steps.
    """
    from app.exports.report_pdf import render_invocation_pdf

    ctx = current()
    invocation = _invocation(ctx, invocation_id)
    pdf = render_invocation_pdf(ctx.session, invocation, ctx.ids)
    name = f"invocation_{invocation_id}_report.pdf"
    return Response(pdf, status=200, mimetype="application/pdf",
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})
