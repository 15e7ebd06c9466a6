"""Workflows: /api/workflows (import, list, show, download, update, delete, versions)."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from app.api.context import current
from app.api.routing import ApiBlueprint, parse_model, read_body
from app.errors import RequestParameterInvalid, RequestParameterMissing
from app.models import StoredWorkflow, Workflow
from app.schemas.common import Query, Request
from app.services import workflows
from app.workflows import toolspec

bp = ApiBlueprint("workflows", __name__)


class WorkflowImport(Request):
    """POST /api/workflows and /api/workflows/upload: a description and flags."""

    workflow: dict[str, Any] | str | None = None
    yaml_content: str | None = None
    publish: bool = False
    importable: bool = False
    name: str | None = Field(None, max_length=255)


class WorkflowListQuery(Query):
    """GET /api/workflows."""

    show_published: bool = False
    show_deleted: bool = False
    deleted: bool | None = None
    search: str | None = Field(None, max_length=255)
    limit: int | None = Field(None, ge=0)
    offset: int = Field(0, ge=0)


class WorkflowShowQuery(Query):
    """GET /api/workflows/{id}."""

    version: int | None = Field(None, ge=0)
    instance: bool = False
    legacy: bool = False


class WorkflowDownloadQuery(WorkflowShowQuery):
    """GET /api/workflows/{id}/download."""

    style: str = "ga"
    format: str | None = None


class WorkflowUpdate(Request):
    """PUT /api/workflows/{id}: the fields given change; ``workflow`` adds a version."""

    name: str | None = Field(None, max_length=255)
    annotation: str | None = Field(None, max_length=65536)
    tags: list[str] | None = None
    published: bool | None = None
    importable: bool | None = None
    deleted: bool | None = None
    workflow: dict[str, Any] | str | None = None


def _description(body: dict[str, Any]) -> dict[str, Any] | str:
    """The workflow in an import body: under 'workflow', as yaml_content, or the body itself."""
    if body.get("workflow") not in (None, "", {}):
        return body["workflow"]
    if body.get("yaml_content"):
        return {"yaml_content": body["yaml_content"]}
    if "steps" in body or body.get("class") == "GalaxyWorkflow":
        return {k: v for k, v in body.items() if k not in ("publish", "importable")}
    raise RequestParameterMissing("workflow: give the workflow description (.ga JSON or gxformat2) under 'workflow'")


def _stored(workflow_id: str, *, owner_only: bool = False, instance: bool = False) -> tuple[StoredWorkflow, Workflow | None]:
    ctx = current()
    decoded = ctx.decode(workflow_id, "workflow")
    if instance:
        return workflows.get_workflow_by_version_id(ctx.session, ctx.user, decoded)
    return workflows.get_stored_workflow(ctx.session, ctx.user, decoded, owner_only=owner_only), None


@bp.endpoint("/api/workflows", "POST")
@bp.endpoint("/api/workflows/upload", "POST")
def import_workflow() -> dict[str, Any]:
    """Import a workflow from Galaxy's .ga JSON or gxformat2 (dict or YAML text)."""
    ctx = current()
    raw = read_body()
    body = parse_model(WorkflowImport, raw)
    parsed = workflows.parse_description(_description(raw), tool_outputs=toolspec.output_names(ctx.settings))
    stored = workflows.create_workflow(ctx.session, ctx.user, parsed, publish=body.publish or body.importable,
                                       name=body.name)
    return workflows.summary_view(ctx.session, stored, ctx.ids)


@bp.endpoint("/api/workflows", query=WorkflowListQuery)
def list_workflows(query: WorkflowListQuery) -> list[dict[str, Any]]:
    """The user's workflows (``show_published``: and everyone's published ones)."""
    ctx = current()
    rows = workflows.list_workflows(
        ctx.session, ctx.user, show_published=query.show_published,
        show_deleted=query.deleted if query.deleted is not None else query.show_deleted,
        search=query.search, limit=query.limit, offset=query.offset,
    )
    return [workflows.summary_view(ctx.session, stored, ctx.ids) for stored in rows]


@bp.endpoint("/api/workflows/<workflow_id>", query=WorkflowShowQuery)
def show_workflow(workflow_id: str, query: WorkflowShowQuery) -> dict[str, Any]:
    """A workflow with its inputs and steps (``version`` picks one; ``instance``: the id is a version's)."""
    ctx = current()
    stored, workflow = _stored(workflow_id, instance=query.instance)
    workflow = workflow or workflows.get_version(ctx.session, stored, query.version)
    return workflows.show_view(ctx.session, stored, workflow, ctx.ids, legacy=query.legacy)


@bp.endpoint("/api/workflows/<workflow_id>/download", query=WorkflowDownloadQuery)
@bp.endpoint("/api/workflows/download/<workflow_id>", query=WorkflowDownloadQuery)
def download_workflow(workflow_id: str, query: WorkflowDownloadQuery) -> dict[str, Any]:
    """The workflow as .ga (``style=ga``, the default) or gxformat2 (``style=format2``)."""
    ctx = current()
    stored, workflow = _stored(workflow_id, instance=query.instance)
    workflow = workflow or workflows.get_version(ctx.session, stored, query.version)
    return workflows.export_workflow(stored, workflow, query.style)


@bp.endpoint("/api/workflows/<workflow_id>/versions")
def list_versions(workflow_id: str) -> list[dict[str, Any]]:
    """The versions of a workflow."""
    ctx = current()
    stored, _ = _stored(workflow_id)
    return workflows.versions_view(ctx.session, stored)


@bp.endpoint("/api/workflows/<workflow_id>", "PUT", body=WorkflowUpdate)
def update_workflow(workflow_id: str, body: WorkflowUpdate) -> dict[str, Any]:
    """Rename, (un)publish, annotate, tag; a new ``workflow`` description becomes a new version."""
    ctx = current()
    stored, _ = _stored(workflow_id, owner_only=True)
    parsed = None
    if body.workflow not in (None, "", {}):
        parsed = workflows.parse_description(body.workflow, tool_outputs=toolspec.output_names(ctx.settings))
    changes = body.model_dump(exclude_unset=True, exclude={"workflow", "importable"})
    if body.importable is not None and body.published is None:
        changes["published"] = body.importable
    if "name" in changes and not (changes["name"] or "").strip():
        raise RequestParameterInvalid("name: a workflow name cannot be empty")
    workflows.update_workflow(ctx.session, stored, changes, parsed)
    latest = workflows.get_version(ctx.session, stored)
    return workflows.show_view(ctx.session, stored, latest, ctx.ids)


@bp.endpoint("/api/workflows/<workflow_id>", "DELETE")
def delete_workflow(workflow_id: str) -> dict[str, Any]:
    """Mark a workflow deleted."""
    ctx = current()
    stored, _ = _stored(workflow_id, owner_only=True)
    workflows.delete_workflow(ctx.session, stored)
    return workflows.summary_view(ctx.session, stored, ctx.ids)


@bp.endpoint("/api/workflows/<workflow_id>/undelete", "POST")
def undelete_workflow(workflow_id: str) -> dict[str, Any]:
    """Undo a delete."""
    ctx = current()
    stored, _ = _stored(workflow_id, owner_only=True)
    stored.deleted = False
    return workflows.summary_view(ctx.session, stored, ctx.ids)
