"""Export, import and bulk-operation actors.

Exports and imports run on the ``exports`` queue with a time limit below RabbitMQ's
consumer_timeout (the app sends each message with ``settings.export_time_limit``; the
default here matches the setting's default) and few retries: a final error
(``ExportError``) or a time-out is not retried at all, since it would fail the same way.
"""

from __future__ import annotations

from dramatiq.middleware import TimeLimitExceeded
from sqlalchemy.orm import Session

from app.exports import history as history_export
from app.exports import importer
from app.exports import invocation as invocation_export
from app.exports.errors import ExportError
from app.exports.manifest import ExportOptions
from app.objectstore import ObjectStore
from app.schemas.tasks import (
    BulkHistoryOperation,
    ImportHistoryArchive,
    PrepareHistoryArchive,
    PrepareInvocationArchive,
    PrepareInvocationPdf,
)
from app.services import bulk
from app.services.registry import Services
from app.settings import Settings
from app.shortterm import ShortTermStorage
from workers.tasks import Progress, task

#: The actors' own time limit; each message carries settings.export_time_limit instead.
EXPORT_TIME_LIMIT_MS = 25 * 60 * 1000
FINAL_ERRORS = (ExportError, TimeLimitExceeded)


@task(queue="exports", action="prepare_history_archive", tracked=True, time_limit=EXPORT_TIME_LIMIT_MS,
      max_retries=2, min_backoff=5000, throws=FINAL_ERRORS)
def prepare_history_archive(request: PrepareHistoryArchive, session: Session, store: ObjectStore,
                            settings: Settings, progress: Progress) -> dict:
    """Write a history archive into short-term storage."""
    return history_export.prepare_history_archive(
        session, ShortTermStorage.from_settings(settings), store,
        storage_request_id=request.storage_request_id, history_id=request.history_id,
        model_store_format=request.model_store_format,
        options=ExportOptions(request.include_files, request.include_hidden, request.include_deleted),
        progress=progress,
    )


@task(queue="exports", action="import_history_archive", tracked=True, time_limit=EXPORT_TIME_LIMIT_MS,
      max_retries=2, min_backoff=5000, throws=FINAL_ERRORS)
def import_history_archive(request: ImportHistoryArchive, session: Session, store: ObjectStore,
                           services: Services, progress: Progress) -> dict:
    """Make a new history from an archive; the result names it by its API id."""
    result = importer.import_history_archive(session, store, services.settings, request, progress=progress)
    return {**result, "history_id": services.ids.encode(result["history_id"])}


@task(queue="exports", action="prepare_invocation_archive", tracked=True, time_limit=EXPORT_TIME_LIMIT_MS,
      max_retries=2, min_backoff=5000, throws=FINAL_ERRORS)
def prepare_invocation_archive(request: PrepareInvocationArchive, session: Session, store: ObjectStore,
                               services: Services, progress: Progress) -> dict:
    """Write an invocation archive into short-term storage."""
    return invocation_export.prepare_invocation_archive(
        session, ShortTermStorage.from_settings(services.settings), store, services.ids,
        storage_request_id=request.storage_request_id, invocation_id=request.invocation_id,
        model_store_format=request.model_store_format, progress=progress,
        options=ExportOptions(request.include_files, request.include_hidden, request.include_deleted))


@task(queue="exports", action="prepare_invocation_pdf", tracked=True, time_limit=EXPORT_TIME_LIMIT_MS,
      max_retries=2, min_backoff=5000, throws=FINAL_ERRORS)
def prepare_invocation_pdf(request: PrepareInvocationPdf, session: Session, services: Services) -> dict:
    """Render an invocation's report PDF into short-term storage."""
    return invocation_export.prepare_invocation_pdf(
        session, ShortTermStorage.from_settings(services.settings), services.ids,
        storage_request_id=request.storage_request_id, invocation_id=request.invocation_id)


@task(queue="default", action="bulk_history_operation", tracked=True, max_retries=3)
def bulk_history_operation(request: BulkHistoryOperation, session: Session, services: Services) -> dict:
    """Apply a bulk operation to many items of a history."""
    return bulk.run_task(session, services.enqueuer, services.ids, request)


def short_term_storage_cleanup(rt) -> int:
    """Beat: remove expired short-term storage requests and abandoned import staging dirs."""
    settings = rt.settings
    removed = ShortTermStorage.from_settings(settings).cleanup()
    removed += importer.cleanup_staging(settings)
    return removed
