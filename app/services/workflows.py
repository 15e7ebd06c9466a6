"""Workflows: import (native and gxformat2), versions, listing, views, update, delete, export."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from app.errors import NotFound, RequestParameterInvalid
from app.ids import IdEncoder
from app.models import StoredWorkflow, User, Workflow, WorkflowStep, WorkflowStepConnection
from app.models.workflows import StepType
from app.workflows import export as exporting
from app.workflows.formats import to_native
from app.workflows.parse import ParsedWorkflow, ToolOutputs, parse_workflow
from app.workflows.plan import WorkflowPlan, load_plan


def parse_description(description: dict[str, Any] | str, *, tool_outputs: ToolOutputs | None = None) -> ParsedWorkflow:
    """Convert and validate any accepted description (400 naming the problem)."""
    return parse_workflow(to_native(description), tool_outputs=tool_outputs)


def create_workflow(session: Session, user: User, parsed: ParsedWorkflow, *, publish: bool = False,
                    name: str | None = None) -> StoredWorkflow:
    """Store a new workflow with its first version."""
    stored = StoredWorkflow(user_id=user.id, name=(name or parsed.name)[:255], annotation=parsed.annotation,
                            tags=parsed.tags, published=publish)
    session.add(stored)
    session.flush()
    add_version(session, stored, parsed)
    return stored


def add_version(session: Session, stored: StoredWorkflow, parsed: ParsedWorkflow) -> Workflow:
    """Write a new version of a stored workflow and make it the latest."""
    count = session.scalar(sa.select(sa.func.count()).where(Workflow.stored_workflow_id == stored.id)) or 0
    workflow = write_workflow(session, parsed, stored_workflow_id=stored.id, version=count)
    stored.latest_workflow_id = workflow.id
    session.flush()
    return workflow


def write_workflow(session: Session, parsed: ParsedWorkflow, *, stored_workflow_id: int | None,
                   version: int | None) -> Workflow:
    """Write a version's rows: the workflow, its steps (subworkflows first) and connections."""
    workflow = Workflow(stored_workflow_id=stored_workflow_id, version=version, name=parsed.name,
                        uuid=parsed.uuid, annotation=parsed.annotation, definition=parsed.definition)
    session.add(workflow)
    session.flush()
    rows: list[WorkflowStep] = []
    for step in parsed.steps:
        sub_id = None
        if step.subworkflow is not None:
            sub_id = write_workflow(session, step.subworkflow, stored_workflow_id=None, version=None).id
        rows.append(WorkflowStep(
            workflow_id=workflow.id, order_index=step.order_index, type=step.type, label=step.label,
            name=step.name, uuid=step.uuid, annotation=step.annotation, tool_id=step.tool_id,
            tool_version=step.tool_version, tool_state=step.tool_state, subworkflow_id=sub_id,
            outputs=step.outputs, workflow_outputs=step.workflow_outputs,
            post_job_actions=step.post_job_actions, position=step.position, when_expression=step.when,
        ))
    session.add_all(rows)
    session.flush()
    session.add_all(
        WorkflowStepConnection(
            input_step_id=rows[step.order_index].id, input_name=conn.input_name,
            output_step_id=rows[conn.source_index].id, output_name=conn.output_name,
            input_subworkflow_step_index=conn.input_subworkflow_step_index,
        )
        for step in parsed.steps
        for conn in step.connections
    )
    session.flush()
    return workflow


def get_stored_workflow(session: Session, user: User, stored_id: int, *, owner_only: bool = False,
                        include_deleted: bool = True) -> StoredWorkflow:
    """A workflow the user owns, or (unless ``owner_only``) a published one; 404 otherwise."""
    stored = session.get(StoredWorkflow, stored_id)
    visible = stored is not None and (
        stored.user_id == user.id or user.is_admin or (not owner_only and stored.published and not stored.deleted)
    )
    if not visible or (stored.deleted and not include_deleted):
        raise NotFound(f"workflow {stored_id} not found")
    return stored


def get_workflow_by_version_id(session: Session, user: User, workflow_id: int) -> tuple[StoredWorkflow, Workflow]:
    """A version by its own id (Galaxy's ``instance=true``), checked through its stored workflow."""
    workflow = session.get(Workflow, workflow_id)
    if workflow is None or workflow.stored_workflow_id is None:
        raise NotFound(f"workflow {workflow_id} not found")
    return get_stored_workflow(session, user, workflow.stored_workflow_id), workflow


def version_id(session: Session, stored: StoredWorkflow, version: int | None = None) -> int:
    """The id of a version (the latest by default) without loading it; 400 for a version it does not have."""
    if version is None and stored.latest_workflow_id is not None:
        return stored.latest_workflow_id
    return get_version(session, stored, version).id


def get_version(session: Session, stored: StoredWorkflow, version: int | None = None) -> Workflow:
    """A version of a stored workflow (the latest by default; 400 for a version it does not have)."""
    if version is None:
        workflow = session.get(Workflow, stored.latest_workflow_id) if stored.latest_workflow_id else None
    else:
        workflow = session.scalar(
            sa.select(Workflow).where(Workflow.stored_workflow_id == stored.id, Workflow.version == version)
        )
    if workflow is None:
        raise RequestParameterInvalid(f"version: the workflow has no version {version}")
    return workflow


def list_workflows(session: Session, user: User, *, show_published: bool = False, show_deleted: bool = False,
                   search: str | None = None, limit: int | None = None, offset: int = 0) -> list[StoredWorkflow]:
    """The user's workflows (and published ones when asked), newest first."""
    visible = StoredWorkflow.user_id == user.id
    if show_published:
        visible = sa.or_(visible, StoredWorkflow.published.is_(True))
    stmt = (
        sa.select(StoredWorkflow)
        .where(visible, StoredWorkflow.deleted.is_(show_deleted))
        .order_by(StoredWorkflow.update_time.desc(), StoredWorkflow.id.desc())
        .offset(offset)
    )
    if search:
        stmt = stmt.where(StoredWorkflow.name.ilike(f"%{search}%"))
    if limit is not None:
        stmt = stmt.limit(limit)
    return list(session.scalars(stmt))


def update_workflow(session: Session, stored: StoredWorkflow, changes: dict[str, Any],
                    parsed: ParsedWorkflow | None = None) -> StoredWorkflow:
    """Change name, annotation, tags, published or deleted; a new description adds a version."""
    if parsed is not None:
        add_version(session, stored, parsed)
    for name in ("name", "annotation", "tags", "published", "deleted"):
        if changes.get(name) is not None:
            setattr(stored, name, changes[name])
    session.flush()
    return stored


def delete_workflow(session: Session, stored: StoredWorkflow) -> StoredWorkflow:
    """Mark deleted (invocations keep their version)."""
    stored.deleted = True
    session.flush()
    return stored


def export_workflow(stored: StoredWorkflow, workflow: Workflow, style: str) -> dict[str, Any]:
    """The description in a style ('ga' or 'format2')."""
    return exporting.export(workflow, stored, style)


def summary_view(session: Session, stored: StoredWorkflow, ids: IdEncoder, *, plan: WorkflowPlan | None = None) -> dict[str, Any]:
    """What import and list answer with."""
    encoded = ids.encode(stored.id)
    plan = plan or (load_plan(session, stored.latest_workflow_id) if stored.latest_workflow_id else None)
    owner = session.scalar(sa.select(User.username).where(User.id == stored.user_id))
    latest = session.get(Workflow, stored.latest_workflow_id) if stored.latest_workflow_id else None
    return {
        "model_class": "StoredWorkflow",
        "id": encoded,
        "name": stored.name,
        "url": f"/api/workflows/{encoded}",
        "owner": owner,
        "tags": list(stored.tags or []),
        "annotation": stored.annotation,
        "deleted": stored.deleted,
        "hidden": False,
        "published": stored.published,
        "importable": stored.published,
        "latest_workflow_uuid": plan.uuid if plan else None,
        "version": latest.version if latest is not None else 0,
        "number_of_steps": len(plan.steps) if plan else 0,
        "show_in_tool_panel": False,
        "create_time": stored.create_time.isoformat(),
        "update_time": stored.update_time.isoformat(),
    }


INPUT_LABELS = {
    StepType.DATA_INPUT: "Input Dataset",
    StepType.DATA_COLLECTION_INPUT: "Input Dataset Collection",
    StepType.PARAMETER_INPUT: "Input Parameter",
}


def show_view(session: Session, stored: StoredWorkflow, workflow: Workflow, ids: IdEncoder,
              *, legacy: bool = False) -> dict[str, Any]:
    """Galaxy's workflow show: summary, inputs and steps keyed by order index (or step id if legacy)."""
    plan = load_plan(session, workflow.id)
    view = summary_view(session, stored, ids, plan=plan)
    view["version"] = workflow.version
    view["latest_workflow_uuid"] = workflow.uuid
    key = (lambda s: s.id) if legacy else (lambda s: s.order_index)
    view["inputs"] = {
        str(key(s)): {"label": s.label or INPUT_LABELS[s.type], "value": "", "uuid": s.uuid}
        for s in plan.input_steps
    }
    steps = {}
    for s in plan.steps:
        entry: dict[str, Any] = {
            "id": key(s), "type": s.type, "label": s.label, "annotation": None,
            "tool_id": s.tool_id, "tool_version": s.tool_version, "tool_inputs": s.tool_state, "when": s.when,
            "input_steps": {
                c.input_name: {"source_step": key(plan.step(c.source_index)), "step_output": c.output_name}
                for c in s.connections
            },
        }
        if s.type == StepType.SUBWORKFLOW:
            for field in ("tool_id", "tool_version", "tool_inputs"):
                del entry[field]
            entry["workflow_id"] = ids.encode(s.subworkflow_id) if s.subworkflow_id else None
        steps[str(key(s))] = entry
    view["steps"] = steps
    return view


def versions_view(session: Session, stored: StoredWorkflow) -> list[dict[str, Any]]:
    """The versions of a workflow, oldest first."""
    rows = session.scalars(
        sa.select(Workflow).where(Workflow.stored_workflow_id == stored.id).order_by(Workflow.version)
    )
    return [{"version": w.version, "update_time": w.create_time.isoformat(),
             "steps": len(load_plan(session, w.id).steps)} for w in rows]
