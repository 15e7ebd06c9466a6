"""Tools: /api/tools (run a tool; upload1) and /api/tools/fetch."""

from __future__ import annotations

from typing import Any

from flask import request
from pydantic import ConfigDict, Field

from app.api.context import current
from app.api.routing import ApiBlueprint
from app.errors import NotFound, RequestParameterInvalid
from app.schemas.common import Query, Request
from app.api.tus import store as tus_store
from app.services import datasets, histories, uploads
from app.tools import toolbox
from app.tools import views as tool_views

bp = ApiBlueprint("tools", __name__)


class ToolListQuery(Query):
    """GET /api/tools."""

    in_panel: bool = True
    tool_id: str | None = None
    q: str | None = None


@bp.endpoint("/api/tools", query=ToolListQuery, auth=False)
def list_tools(query: ToolListQuery) -> list[dict[str, Any]]:
    """The tools: panel sections (in_panel=True, the default) or a flat list (in_panel=False)."""
    box = toolbox(current().settings)
    tools = [t for t in box.all() if not t.definition.hidden]
    if query.tool_id:
        tools = [t for t in tools if t.id == query.tool_id]
    if query.q:
        needle = query.q.lower()
        tools = [t for t in tools if needle in t.name.lower() or needle in t.id.lower()
                 or needle in t.definition.description.lower()]
    if query.in_panel and not (query.q or query.tool_id):
        return tool_views.panel(tools)
    return [tool_views.tool_summary(t) for t in tools]


@bp.endpoint("/api/tools/<path:tool_id>", auth=False)
def show_tool(tool_id: str) -> dict[str, Any]:
    """One tool with its inputs and outputs."""
    return tool_views.tool_detail(toolbox(current().settings).get(tool_id))


class ToolRunBody(Request):
    """POST /api/tools (top-level ``files_N|…`` keys join the inputs, as in Galaxy)."""

    model_config = ConfigDict(extra="allow")

    tool_id: str = Field(max_length=255)
    history_id: str
    inputs: dict[str, Any] = Field(default_factory=dict)
    input_format: str | None = None
    tool_version: str | None = None


class FetchElement(uploads.UploadTarget):
    """One element of a fetch target; a collection target's element may nest ``elements``."""

    src: str | None = Field(None, pattern="^(pasted|files|url)$")
    elements: list["FetchElement"] | None = Field(None, max_length=100_000)


class FetchTarget(Request):
    """A fetch destination with its elements."""

    destination: dict[str, Any]
    elements: list[FetchElement] = Field(default_factory=list, max_length=100_000)
    collection_type: str | None = None
    name: str | None = Field(None, max_length=255)


class FetchBody(Request):
    """POST /api/tools/fetch (``files_N|file_data`` may name a finished tus upload)."""

    model_config = ConfigDict(extra="allow")

    history_id: str
    targets: list[FetchTarget] = Field(min_length=1)


def _file_index(key: str, default: int) -> int:
    index = key.split("|", 1)[0].removeprefix("files_")
    return int(index) if index.isdigit() else default


def _uploaded_files(extra: dict[str, Any] | None = None) -> list[tuple[str, Any]]:
    """Files in the order of their ``files_N|file_data`` index: multipart parts, and finished
    tus uploads named by ``{"session_id", "name"}`` (the latter are consumed)."""
    found = []
    for key, storage in request.files.items(multi=True):
        found.append((_file_index(key, len(found)), storage.filename or "uploaded file", storage.stream))
    ctx = current()
    for key, value in (extra or {}).items():
        if key.endswith("|file_data") and isinstance(value, dict) and "session_id" in value:
            tus = tus_store()
            upload, path = tus.take(str(value["session_id"]), ctx.user.id)
            name = str(value.get("name") or upload.metadata.get("filename") or "uploaded file")
            found.append((_file_index(key, len(found)), name, path))
            _consumed_sessions().append(str(value["session_id"]))
    found.sort(key=lambda item: item[0])
    return [(name, stream) for _, name, stream in found]


def _consumed_sessions() -> list[str]:
    from flask import g

    if "tus_consumed" not in g:
        g.tus_consumed = []
    return g.tus_consumed


def _discard_consumed() -> None:
    tus = tus_store()
    for session_id in _consumed_sessions():
        tus.discard(session_id)


def _upload_response(staged: uploads.StagedUpload) -> dict[str, Any]:
    ctx = current()
    outputs = [datasets.dataset_view(d, ctx.ids).model_dump(mode="json") for d in staged.datasets]
    for i, item in enumerate(outputs):
        item["output_name"] = f"output{i}"
    job = {"id": ctx.ids.encode(staged.job.id), "tool_id": staged.job.tool_id, "state": staged.job.state,
           "model_class": "Job", "history_id": ctx.ids.encode(staged.job.history_id)}
    return {"outputs": outputs, "jobs": [job], "implicit_collections": [], "output_collections": [],
            "produces_entry_points": False}


@bp.endpoint("/api/tools", "POST", body=ToolRunBody)
def run_tool(body: ToolRunBody) -> dict[str, Any]:
    """Run a tool; ``upload1`` uploads pasted text or files."""
    ctx = current()
    history = histories.get_history(ctx.session, ctx.user, ctx.decode(body.history_id, "history"))
    if body.tool_id != uploads.UPLOAD_TOOL:
        from app.api import tool_runs

        return tool_runs.run(ctx, history, body)
    extra = body.model_extra or {}
    inputs = {**body.inputs, **{k: v for k, v in extra.items() if k.startswith("files_")}}
    files = _uploaded_files(extra)
    try:
        targets = uploads.targets_from_upload1(inputs, len(files))
    except ValueError as exc:
        raise RequestParameterInvalid(f"upload1: {exc}") from exc
    staged = uploads.stage_upload(
        ctx.session, user=ctx.user, history=history, targets=targets, files=files,
        staging_root=ctx.settings.resolved_data_dir / "staging", enqueuer=ctx.services.enqueuer,
    )
    _discard_consumed()
    return _upload_response(staged)


@bp.endpoint("/api/tools/fetch", "POST", body=FetchBody)
def fetch(body: FetchBody) -> dict[str, Any]:
    """Galaxy's data fetch API: pasted, file and URL elements into datasets (or collections)."""
    ctx = current()
    history = histories.get_history(ctx.session, ctx.user, ctx.decode(body.history_id, "history"))
    files = _uploaded_files(body.model_extra)
    targets = []
    for target in body.targets:
        kind = target.destination.get("type")
        if kind != "hdas":
            from app.api import tool_runs

            return tool_runs.fetch_collection(ctx, history, body, files)
        for e in target.elements:
            if e.src is None or e.elements is not None:
                raise RequestParameterInvalid("an 'hdas' destination takes elements with a src, not nested elements")
            targets.append(uploads.UploadTarget(**e.model_dump(exclude={"elements"})))
    for i, target in enumerate(targets):
        if target.src == "files" and target.file_index is None:
            targets[i] = target.model_copy(update={"file_index": sum(1 for t in targets[:i] if t.src == "files")})
    if not targets:
        raise RequestParameterInvalid("targets: no elements to fetch")
    staged = uploads.stage_upload(
        ctx.session, user=ctx.user, history=history, targets=targets, files=files,
        staging_root=ctx.settings.resolved_data_dir / "staging", enqueuer=ctx.services.enqueuer,
        tool_id="__DATA_FETCH__",
    )
    _discard_consumed()
    return _upload_response(staged)
