"""An invocation's report: markdown listing its inputs, steps and outputs."""

from __future__ import annotations

from collections import Counter
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from app.ids import IdEncoder
from app.models import Dataset, HistoryDatasetCollection, Job, User, WorkflowInvocation, WorkflowInvocationStep
from app.models.base import utcnow
from app.workflows.invocation_views import invocation_view
from app.workflows.plan import load_plan


def _cell(text: Any) -> str:
    return str(text if text is not None else "").replace("|", "\\|").replace("\n", " ")


def _describe(session: Session, value: dict[str, Any] | None, ids: IdEncoder) -> str:
    if not value:
        return "—"
    if value.get("src") == "param":
        return f"`{value.get('value')!r}`"
    if value["src"] == "hda":
        row = session.execute(sa.select(Dataset.hid, Dataset.name, Dataset.state, Dataset.extension)
                              .where(Dataset.id == value["id"])).first()
        if row is None:
            return "(missing dataset)"
        return f"{row.hid}: {row.name} ({row.extension}, {row.state}) `{ids.encode(value['id'])}`"
    row = session.execute(sa.select(HistoryDatasetCollection.hid, HistoryDatasetCollection.name)
                          .where(HistoryDatasetCollection.id == value["id"])).first()
    if row is None:
        return "(missing collection)"
    return f"{row.hid}: {row.name} (collection) `{ids.encode(value['id'])}`"


def invocation_report(session: Session, invocation: WorkflowInvocation, ids: IdEncoder) -> dict[str, Any]:
    """Galaxy's report shape: {markdown, invocation_markdown, title, …}."""
    plan = load_plan(session, invocation.workflow_id)
    view = invocation_view(session, invocation, ids)
    rows = {r.order_index: r for r in session.scalars(
        sa.select(WorkflowInvocationStep).where(WorkflowInvocationStep.invocation_id == invocation.id))}
    job_counts: dict[int, Counter[str]] = {}
    for step_id, state, count in session.execute(
        sa.select(Job.invocation_step_id, Job.state, sa.func.count())
        .where(Job.invocation_id == invocation.id).group_by(Job.invocation_step_id, Job.state)
    ):
        job_counts.setdefault(step_id, Counter())[state] += count
    lines = [f"# Workflow Execution Summary of {plan.name}", "",
             f"Invocation `{view['id']}` is **{invocation.state}** "
             f"(scheduler `{invocation.scheduler}`, started {invocation.create_time.isoformat(timespec='seconds')} UTC).", ""]
    lines += ["## Workflow Inputs", "", "| Input | Value |", "| --- | --- |"]
    for step in plan.input_steps:
        value = (invocation.inputs or {}).get(str(step.order_index))
        lines.append(f"| {_cell(step.label or step.order_index)} | {_cell(_describe(session, value, ids))} |")
    lines += ["", "## Steps", "", "| # | Step | Type | State | Jobs |", "| --- | --- | --- | --- | --- |"]
    for step in plan.steps:
        row = rows.get(step.order_index)
        counts = job_counts.get(row.id, Counter()) if row is not None else Counter()
        jobs = ", ".join(f"{n} {state}" for state, n in sorted(counts.items())) or "—"
        name = step.label or step.tool_id or step.type
        lines.append(f"| {step.order_index} | {_cell(name)} | {step.type} | {row.state if row else '—'} | {jobs} |")
    lines += ["", "## Workflow Outputs", "", "| Output | Value |", "| --- | --- |"]
    for label, (index, output_name) in plan.output_sources().items():
        row = rows.get(index)
        value = (row.outputs or {}).get(output_name) if row is not None else None
        lines.append(f"| {_cell(label)} | {_cell(_describe(session, value, ids))} |")
    if view["messages"]:
        lines += ["", "## Messages", ""]
        lines += [f"- **{m['reason']}**" + (f": {m['details']}" if m.get("details") else "")
                  + (f" (step {m['workflow_step_id']})" if m.get("workflow_step_id") is not None else "")
                  for m in view["messages"]]
    markdown = "\n".join(lines) + "\n"
    username = session.scalar(sa.select(User.username).where(User.id == invocation.user_id))
    return {
        "render_format": "markdown", "markdown": markdown, "invocation_markdown": markdown,
        "model_class": "Report", "id": view["workflow_id"], "username": username,
        "title": f"Workflow Execution Summary of {plan.name}", "errors": {},
        "generate_time": utcnow().isoformat(), "generate_version": "nebula",
    }
