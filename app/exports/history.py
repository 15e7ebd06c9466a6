"""History archives: written by a worker into short-term storage, streamed and in bounded memory.

The run is idempotent: a redelivered message finds the finished marker and does nothing;
two copies of one message running at once serialise on a lock file in the request's
directory (the second then finds the work done). The database is read in two short
transactions (what to export; the manifest) and never held open while files are copied:
on SQLite every transaction holds the write lock.
"""

from __future__ import annotations

import fcntl
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol

from sqlalchemy.orm import Session

from app.errors import NotFound
from app.exports.archive import FORMATS, open_writer
from app.exports.errors import ExportError
from app.exports.manifest import MANIFEST_NAME, ExportOptions, HistorySelection, select_history, write_manifest
from app.models import History
from app.objectstore import ObjectStore
from app.shortterm import ShortTermStorage

log = logging.getLogger(__name__)


class ProgressReporter(Protocol):
    """Where a task reports its progress (``workers.tasks.Progress`` in a worker)."""

    def update(self, fraction: float, message: str | None = None, *, force: bool = False) -> None:
        """Record progress between 0 and 1."""


class NoProgress:
    """A reporter that reports nothing."""

    def update(self, fraction: float, message: str | None = None, *, force: bool = False) -> None:
        """Do nothing."""


@contextmanager
def request_lock(sts: ShortTermStorage, request_id: str) -> Iterator[None]:
    """Serialise copies of one request's task (a redelivered message waits for the first)."""
    with (sts.directory(request_id) / "lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def fill_request(sts: ShortTermStorage, request_id: str, work: Callable[[Any], dict[str, Any]]) -> dict[str, Any]:
    """Run ``work(meta)`` to fill a storage request, once, whatever the deliveries.

    A request that no longer exists (expired, cleaned) is skipped; one already finished
    is left alone (a redelivered message); copies of the task wait on the request's lock;
    an ExportError marks the request failed with its message, for the client to read.
    """
    try:
        meta = sts.load(request_id)
    except NotFound:
        return {"storage_request_id": request_id, "skipped": "the request no longer exists"}
    with request_lock(sts, request_id):
        if sts.is_finalized(request_id):
            return {"storage_request_id": request_id, "already_done": True}
        try:
            return work(meta)
        except ExportError as exc:
            sts.fail(request_id, str(exc))
            raise


def prepare_history_archive(
    session: Session,
    sts: ShortTermStorage,
    store: ObjectStore,
    *,
    storage_request_id: str,
    history_id: int,
    model_store_format: str,
    options: ExportOptions,
    progress: ProgressReporter | None = None,
) -> dict[str, Any]:
    """Write the archive of a history into a short-term storage request; return a summary."""
    progress = progress or NoProgress()

    def work(meta) -> dict[str, Any]:
        history = session.get(History, history_id)
        if history is None or history.user_id != meta.owner_id:
            raise ExportError(f"history {history_id} not found")
        fmt = FORMATS.get(model_store_format)
        if fmt is None:
            raise ExportError(f"unknown archive format {model_store_format!r}")
        selection = select_history(session, history, options)
        session.commit()  # end the read: no transaction is held while files are copied
        return _write(session, sts, store, storage_request_id, history, selection, fmt, progress)

    return fill_request(sts, storage_request_id, work)


def _write(session: Session, sts: ShortTermStorage, store: ObjectStore, request_id: str, history: History,
           selection: HistorySelection, fmt, progress: ProgressReporter) -> dict[str, Any]:
    total = max(selection.total_bytes, 1)
    started = time.monotonic()
    checksums: dict[int, str] = {}
    missing: list[str] = []
    with sts.writing(request_id) as partial:
        writer = open_writer(partial, fmt)
        try:
            done = 0
            progress.update(0.0, f"archiving {len(selection.files)} dataset files", force=True)
            for file in selection.files:
                path = store.path(file.object_key)
                try:
                    source = path.open("rb")
                except FileNotFoundError:
                    missing.append(file.arcname)
                    continue
                with source:
                    size = os.fstat(source.fileno()).st_size
                    base = done

                    def observe(nbytes: int, base: int = base) -> None:
                        progress.update(0.95 * min(1.0, (base + nbytes) / total),
                                        f"{(base + nbytes) >> 20} of {total >> 20} MiB archived")

                    checksums[file.dataset_id] = writer.add_file(file.arcname, source, size, mtime=file.mtime,
                                                                 observe=observe)
                    file.size = size
                    done += size
            progress.update(0.96, "writing the manifest", force=True)
            with tempfile.TemporaryFile("w+b", dir=partial.parent) as raw:
                text = _TextSink(raw)
                write_manifest(session, history, selection, checksums, text)
                session.commit()
                raw.flush()
                size = raw.tell()
                raw.seek(0)
                writer.add_file(MANIFEST_NAME, raw, size)
            writer.close()
        except BaseException:
            writer.abort()
            raise
    if missing:
        log.warning("history export: %d dataset file(s) missing from the object store", len(missing),
                    extra={"history_id": history.id, "missing": missing[:20]})
    elapsed = time.monotonic() - started
    archive = sts.target_path(request_id)
    return {
        "storage_request_id": request_id,
        "datasets": len(selection.dataset_ids),
        "files": len(checksums),
        "missing_files": missing,
        "bytes": done,
        "archive_bytes": archive.stat().st_size,
        "seconds": round(elapsed, 3),
    }


class _TextSink:
    """A text writer encoding into a binary file (``json`` writes str)."""

    def __init__(self, raw):
        self.raw = raw

    def write(self, text: str) -> int:
        return self.raw.write(text.encode("utf-8"))


def default_file_name(history: History, fmt_name: str) -> str:
    """The download name of a history archive."""
    stem = "".join(ch if ch.isalnum() or ch in "-_ " else "_" for ch in history.name).strip() or "history"
    return f"Galaxy-History-{stem[:80]}.{FORMATS[fmt_name].extension}"

