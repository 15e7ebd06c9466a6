"""Short-term storage: files prepared by background tasks for one user to download.

Galaxy's design, on the shared data dir: one directory per request holding

- ``request.json`` — owner, file name, MIME type, duration, creation time, task id and
  what was asked for (``kind`` and ``subject``);
- ``target`` — the finished file (written as ``target.partial`` and renamed);
- ``finalized`` — the marker that the target is complete (its content: the time);
- ``error.json`` — why the task failed, when it did.

A request expires ``duration`` seconds after it was finalized (so a slow export never
vanishes before anyone could fetch it); an unfinished one after the configured maximum
duration. Beat's cleanup removes expired directories.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from app.errors import NebulaError, NotFound, RequestParameterInvalid
from app.models.base import utcnow
from app.settings import Settings

log = logging.getLogger(__name__)

_REQUEST_ID = re.compile(r"^[0-9a-f]{32}$")
_INDEX_KEY = re.compile(r"^[\w.-]{1,200}$")
_INDEX_DIR = "_index"


class Gone(NebulaError):
    """The download existed but has expired."""

    status = 410
    err_code = 410001


class StorageRequest(BaseModel):
    """What ``request.json`` holds."""

    request_id: str
    owner_id: int
    file_name: str
    mime_type: str
    duration: int
    created: dt.datetime
    task_id: str | None = None
    kind: str = ""
    subject: dict[str, Any] = Field(default_factory=dict)


class ShortTermStorage:
    """The request directories under ``<data dir>/short_term``."""

    def __init__(self, root: Path, *, default_duration: int = 86400, maximum_duration: int = 7 * 86400):
        self.root = root
        self.default_duration = default_duration
        self.maximum_duration = maximum_duration

    @classmethod
    def from_settings(cls, settings: Settings) -> "ShortTermStorage":
        """The storage of a Nebula installation."""
        return cls(
            settings.resolved_data_dir / "short_term",
            default_duration=settings.short_term_storage_default_duration,
            maximum_duration=settings.short_term_storage_maximum_duration,
        )

    # --- paths -------------------------------------------------------------------

    def directory(self, request_id: str) -> Path:
        """The directory of a request; a malformed id never names a path."""
        if not isinstance(request_id, str) or not _REQUEST_ID.match(request_id):
            raise NotFound(f"short-term storage request {request_id!r} not found")
        return self.root / request_id

    def target_path(self, request_id: str) -> Path:
        """Where the finished file is."""
        return self.directory(request_id) / "target"

    def partial_path(self, request_id: str) -> Path:
        """Where the file is written before it is finished."""
        return self.directory(request_id) / "target.partial"

    # --- requests ----------------------------------------------------------------

    def create(
        self,
        owner_id: int,
        file_name: str,
        mime_type: str,
        *,
        duration: int | None = None,
        kind: str = "",
        subject: dict[str, Any] | None = None,
    ) -> StorageRequest:
        """Make a new request directory and return its metadata."""
        if duration is None:
            duration = self.default_duration
        if not 0 < duration <= self.maximum_duration:
            raise RequestParameterInvalid(
                f"duration must be between 1 and {self.maximum_duration} seconds"
            )
        meta = StorageRequest(
            request_id=uuid.uuid4().hex, owner_id=owner_id, file_name=safe_file_name(file_name),
            mime_type=mime_type, duration=duration, created=utcnow(), kind=kind, subject=subject or {},
        )
        directory = self.directory(meta.request_id)
        directory.mkdir(parents=True)
        self._write_meta(meta)
        return meta

    def attach_task(self, request_id: str, task_id: str) -> None:
        """Record the id of the task preparing the file."""
        meta = self.load(request_id)
        self._write_meta(meta.model_copy(update={"task_id": task_id}))

    def load(self, request_id: str) -> StorageRequest:
        """The metadata of a request (404 when there is none)."""
        path = self.directory(request_id) / "request.json"
        try:
            return StorageRequest.model_validate_json(path.read_bytes())
        except (OSError, ValueError):
            raise NotFound(f"short-term storage request {request_id!r} not found") from None

    def load_for(self, request_id: str, owner_id: int, *, now: dt.datetime | None = None) -> StorageRequest:
        """A request of this owner that has not expired (404 for another's, 410 when expired)."""
        meta = self.load(request_id)
        if meta.owner_id != owner_id:
            raise NotFound(f"short-term storage request {request_id!r} not found")
        if self.expires_at(meta) <= (now or utcnow()):
            raise Gone(f"short-term storage request {request_id!r} has expired")
        return meta

    def _write_meta(self, meta: StorageRequest) -> None:
        _write_atomic(self.directory(meta.request_id) / "request.json", meta.model_dump_json().encode())

    # --- state -------------------------------------------------------------------

    def finalized_at(self, request_id: str) -> dt.datetime | None:
        """When the file was finished, or None."""
        try:
            text = (self.directory(request_id) / "finalized").read_text().strip()
        except OSError:
            return None
        try:
            return dt.datetime.fromisoformat(text)
        except ValueError:
            return utcnow()

    def is_finalized(self, request_id: str) -> bool:
        """True when the target is complete."""
        return (self.directory(request_id) / "finalized").exists()

    def error(self, request_id: str) -> str | None:
        """Why the task failed, or None."""
        try:
            return json.loads((self.directory(request_id) / "error.json").read_text())["message"]
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def expires_at(self, meta: StorageRequest) -> dt.datetime:
        """Finalized: ``duration`` after that; otherwise the maximum duration after creation."""
        finished = self.finalized_at(meta.request_id)
        if finished is not None:
            return finished + dt.timedelta(seconds=meta.duration)
        return meta.created + dt.timedelta(seconds=max(meta.duration, self.maximum_duration))

    @contextmanager
    def writing(self, request_id: str) -> Iterator[Path]:
        """Yield the partial path; on success it becomes the target and the request is finalized."""
        partial = self.partial_path(request_id)
        partial.unlink(missing_ok=True)
        try:
            yield partial
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        self.finalize(request_id)

    def finalize(self, request_id: str) -> None:
        """Make the partial file the target and write the finished marker (idempotent)."""
        directory = self.directory(request_id)
        partial = self.partial_path(request_id)
        if partial.exists():
            os.replace(partial, self.target_path(request_id))
        (directory / "error.json").unlink(missing_ok=True)
        _write_atomic(directory / "finalized", utcnow().isoformat().encode())

    def fail(self, request_id: str, message: str) -> None:
        """Record why the task failed; the request then counts as done (with an error)."""
        directory = self.directory(request_id)
        if not directory.exists():
            return
        _write_atomic(directory / "error.json", json.dumps({"message": message[:4000], "time": utcnow().isoformat()}).encode())

    # --- an index of the latest request per key (legacy export look-ups) ------------

    def remember(self, key: str, request_id: str) -> None:
        """Point ``key`` at a request (last writer wins)."""
        _write_atomic(self._index_path(key), request_id.encode())

    def recall(self, key: str) -> str | None:
        """The request ``key`` points at, if it still exists."""
        try:
            request_id = self._index_path(key).read_text().strip()
        except OSError:
            return None
        if not _REQUEST_ID.match(request_id) or not (self.root / request_id).is_dir():
            return None
        return request_id

    def forget(self, key: str, request_id: str | None = None) -> None:
        """Drop the pointer (only if it still names ``request_id``, when given)."""
        if request_id is None or self.recall(key) == request_id:
            self._index_path(key).unlink(missing_ok=True)

    def _index_path(self, key: str) -> Path:
        if not _INDEX_KEY.match(key):
            raise ValueError(f"bad index key {key!r}")
        return self.root / _INDEX_DIR / key

    # --- cleanup -----------------------------------------------------------------

    def cleanup(self, now: dt.datetime | None = None) -> int:
        """Remove expired requests (and index entries pointing nowhere); return how many."""
        now = now or utcnow()
        removed = 0
        if not self.root.is_dir():
            return 0
        for entry in self.root.iterdir():
            if not _REQUEST_ID.match(entry.name):
                continue
            try:
                meta = self.load(entry.name)
                expired = self.expires_at(meta) <= now
            except NotFound:
                # No readable metadata: a directory half made by a crashed request; give
                # it an hour before treating it as garbage.
                expired = _age(entry, now) > 3600
            if expired:
                shutil.rmtree(entry, ignore_errors=True)
                removed += 1
        index = self.root / _INDEX_DIR
        if index.is_dir():
            for pointer in index.iterdir():
                if self.recall(pointer.name) is None:
                    pointer.unlink(missing_ok=True)
        return removed


def safe_file_name(name: str) -> str:
    """A download name without path separators or control characters."""
    name = re.split(r"[\\/]", name)[-1]
    name = "".join(ch for ch in name if ch.isprintable() and ch not in '"')
    return name.strip(" .")[:200] or "download"


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _age(path: Path, now: dt.datetime) -> float:
    try:
        mtime = dt.datetime.fromtimestamp(path.stat().st_mtime, dt.UTC).replace(tzinfo=None)
    except OSError:
        return 0.0
    return (now - mtime).total_seconds()
