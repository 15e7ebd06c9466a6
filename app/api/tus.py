"""The tus endpoint BioBlend uploads files to: /api/upload/resumable_upload."""

from __future__ import annotations

from flask import Response, request

from app.api.context import current
from app.api.routing import ApiBlueprint
from app.errors import BadRequest
from app.services.tus import TusStore

bp = ApiBlueprint("tus", __name__)
TUS_HEADERS = {"Tus-Resumable": "1.0.0", "Tus-Version": "1.0.0", "Tus-Extension": "creation"}
BASE = "/api/upload/resumable_upload"


def store() -> TusStore:
    """The upload store of the data dir."""
    settings = current().settings
    return TusStore(settings.resolved_data_dir / "tus", settings.max_request_size * 64)


def _int_header(name: str) -> int:
    try:
        return int(request.headers[name])
    except (KeyError, ValueError):
        raise BadRequest(f"{name} header must be an integer") from None


@bp.endpoint(BASE, "OPTIONS", auth=False)
@bp.endpoint(f"{BASE}/", "OPTIONS", auth=False)
def options() -> Response:
    """What this tus server supports."""
    return Response(status=204, headers=TUS_HEADERS)


@bp.endpoint(BASE, "POST")
@bp.endpoint(f"{BASE}/", "POST")
def create() -> Response:
    """Create an upload (tus answers 201 with its Location)."""
    upload = store().create(current().user.id, _int_header("Upload-Length"), request.headers.get("Upload-Metadata"))
    return Response(status=201, headers={**TUS_HEADERS, "Location": f"{BASE}/{upload.session_id}",
                                         "Upload-Offset": "0"})


@bp.endpoint(f"{BASE}/<session_id>", "HEAD")
def head(session_id: str) -> Response:
    """Where an upload stands."""
    upload = store().get(session_id, current().user.id)
    return Response(status=200, headers={**TUS_HEADERS, "Upload-Offset": str(upload.offset),
                                         "Upload-Length": str(upload.length), "Cache-Control": "no-store"})


@bp.endpoint(f"{BASE}/<session_id>", "PATCH")
def patch(session_id: str) -> Response:
    """Append a chunk."""
    if request.mimetype != "application/offset+octet-stream":
        raise BadRequest("PATCH needs Content-Type: application/offset+octet-stream")
    tus = store()
    upload = tus.get(session_id, current().user.id)
    upload = tus.append(upload, _int_header("Upload-Offset"), request.stream, current().settings.max_request_size)
    return Response(status=204, headers={**TUS_HEADERS, "Upload-Offset": str(upload.offset)})
