"""Resumable uploads with the tus protocol (1.0.0, "creation" extension), as Galaxy offers.

BioBlend uploads files this way when the server says it is Galaxy 22.01 or later: it
creates an upload, PATCHes the bytes in chunks, then names the upload's session id in a
fetch request. Each upload is a file plus a small JSON record under the data dir; only
the user who created it can write to it or use it. No server library for tus is kept up
for Flask, so this is written here (the protocol's core is four requests).
"""

from __future__ import annotations

import base64
import json
import os
import re
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import BinaryIO

from app.errors import BadRequest, Conflict, NotFound, PayloadTooLarge

_SESSION = re.compile(r"^[0-9a-f]{32}$")


@dataclass
class TusUpload:
    """One resumable upload."""

    session_id: str
    user_id: int
    length: int
    offset: int
    metadata: dict[str, str]


class TusStore:
    """Uploads under ``root``: ``<id>.bin`` (the bytes so far) and ``<id>.json``."""

    def __init__(self, root: Path, max_length: int):
        self.root = root
        self.max_length = max_length

    def _paths(self, session_id: str) -> tuple[Path, Path]:
        if not _SESSION.match(session_id or ""):
            raise NotFound("no such upload")
        return self.root / f"{session_id}.bin", self.root / f"{session_id}.json"

    def create(self, user_id: int, length: int, metadata_header: str | None) -> TusUpload:
        """Start an upload of ``length`` bytes."""
        if length < 0:
            raise BadRequest("Upload-Length must be a non-negative integer")
        if length > self.max_length:
            raise PayloadTooLarge(f"uploads are limited to {self.max_length} bytes")
        upload = TusUpload(uuid.uuid4().hex, user_id, length, 0, parse_metadata(metadata_header))
        self.root.mkdir(parents=True, exist_ok=True)
        data, record = self._paths(upload.session_id)
        data.touch()
        self._save(upload, record)
        return upload

    def get(self, session_id: str, user_id: int) -> TusUpload:
        """An upload of this user (404 otherwise)."""
        _, record = self._paths(session_id)
        try:
            upload = TusUpload(**json.loads(record.read_text()))
        except (OSError, ValueError, TypeError):
            raise NotFound("no such upload") from None
        if upload.user_id != user_id:
            raise NotFound("no such upload")
        return upload

    def append(self, upload: TusUpload, offset: int, stream: BinaryIO, chunk_limit: int) -> TusUpload:
        """Write a chunk at ``offset`` (which must be where the upload stands)."""
        if offset != upload.offset:
            raise Conflict(f"Upload-Offset {offset} does not match the upload's offset {upload.offset}")
        data, record = self._paths(upload.session_id)
        written = 0
        with data.open("r+b") as out:
            out.seek(offset)
            while block := stream.read(1 << 20):
                written += len(block)
                if offset + written > upload.length or written > chunk_limit:
                    out.truncate(offset)
                    raise PayloadTooLarge("chunk goes past the upload's length")
                out.write(block)
        upload.offset += written
        self._save(upload, record)
        return upload

    def take(self, session_id: str, user_id: int) -> tuple[TusUpload, Path]:
        """A finished upload's file, for a fetch to consume."""
        upload = self.get(session_id, user_id)
        if upload.offset != upload.length:
            raise Conflict(f"upload {session_id} is not finished ({upload.offset} of {upload.length} bytes)")
        return upload, self._paths(session_id)[0]

    def discard(self, session_id: str) -> None:
        """Remove an upload's record (its file has been moved away)."""
        data, record = self._paths(session_id)
        data.unlink(missing_ok=True)
        record.unlink(missing_ok=True)

    def _save(self, upload: TusUpload, record: Path) -> None:
        tmp = record.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(upload)))
        os.replace(tmp, record)


def parse_metadata(header: str | None) -> dict[str, str]:
    """Decode tus' ``Upload-Metadata``: comma-separated ``key base64value`` pairs."""
    result: dict[str, str] = {}
    for part in (header or "").split(","):
        pieces = part.strip().split(" ", 1)
        if not pieces[0]:
            continue
        try:
            value = base64.b64decode(pieces[1]).decode() if len(pieces) > 1 else ""
        except (ValueError, UnicodeDecodeError):
            raise BadRequest(f"Upload-Metadata value of {pieces[0]!r} is not base64") from None
        result[pieces[0]] = value[:1024]
    return result
