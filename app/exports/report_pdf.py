"""The invocation report as a PDF: the workflow drawn as a graph beside its inputs, steps and outputs.

Page one is landscape: a title, then the workflow on the left — one box per step, laid
out in columns by depth, arrows for connections, each box coloured by the state of the
step and its jobs — and on the right the tables of inputs, steps and outputs, which carry
on over the following pages. Drawn with reportlab.
"""

from __future__ import annotations

import io
from collections import Counter
from dataclasses import dataclass
from typing import Any
from xml.sax.saxutils import escape

import sqlalchemy as sa
from sqlalchemy.orm import Session

from app.ids import IdEncoder
from app.models import Dataset, Job, JobState
from app.models.collections import HistoryDatasetCollection

# fill, border: one pair per status a step can be shown in
STATUS_COLOURS: dict[str, tuple[str, str]] = {
    "ok": ("#c8e6c9", "#2e7d32"),
    "error": ("#ffcdd2", "#c62828"),
    "running": ("#fff3c4", "#f9a825"),
    "scheduled": ("#bbdefb", "#1565c0"),
    "paused": ("#e1bee7", "#6a1b9a"),
    "waiting": ("#eeeeee", "#757575"),
    "cancelled": ("#e0e0e0", "#424242"),
}
_ACTIVE_JOBS = {JobState.NEW, JobState.QUEUED, JobState.RUNNING}


@dataclass
class StepInfo:
    """What the report shows of one step."""

    order_index: int
    title: str
    type: str
    state: str
    status: str
    jobs: Counter
    sources: list[int]


def step_status(plan_step, row, jobs: Counter, invocation_state: str, has_input: bool) -> str:
    """The colour class of a step: from its jobs when it has any, else from the step itself."""
    if jobs:
        if jobs.get(JobState.ERROR):
            return "error"
        if any(jobs.get(s) for s in _ACTIVE_JOBS):
            return "running"
        if jobs.get(JobState.OK):
            return "ok"
        return "cancelled"
    if plan_step.is_input:
        return "ok" if has_input else "waiting"
    if row is None:
        return "cancelled" if invocation_state in ("cancelled", "failed") else "waiting"
    if plan_step.type == "pause":
        return {None: "paused", True: "ok", False: "error"}.get(row.action, "paused")
    if row.state == "scheduled":
        return "ok" if invocation_state == "completed" else "scheduled"
    return "cancelled" if invocation_state in ("cancelled", "failed") else "waiting"


def collect_steps(session: Session, invocation, plan) -> list[StepInfo]:
    """Each step of the plan with its state and job counts."""
    from app.models import WorkflowInvocationStep

    rows = {r.order_index: r for r in session.scalars(
        sa.select(WorkflowInvocationStep).where(WorkflowInvocationStep.invocation_id == invocation.id))}
    counts: dict[int, Counter] = {}
    for step_id, state, n in session.execute(
        sa.select(Job.invocation_step_id, Job.state, sa.func.count())
        .where(Job.invocation_id == invocation.id).group_by(Job.invocation_step_id, Job.state)
    ):
        counts.setdefault(step_id, Counter())[state] += n
    steps = []
    for plan_step in plan.steps:
        row = rows.get(plan_step.order_index)
        jobs = counts.get(row.id, Counter()) if row is not None else Counter()
        has_input = bool((invocation.inputs or {}).get(str(plan_step.order_index)))
        steps.append(StepInfo(
            order_index=plan_step.order_index,
            title=plan_step.label or plan_step.name or plan_step.tool_id or plan_step.type,
            type=plan_step.type,
            state=row.state if row is not None else "new",
            status=step_status(plan_step, row, jobs, invocation.state, has_input),
            jobs=jobs,
            sources=sorted({c.source_index for c in plan_step.connections}),
        ))
    return steps


def layout(steps: list[StepInfo]) -> dict[int, tuple[int, int]]:
    """(column, row) of each step: its column is one more than the deepest step feeding it."""
    column: dict[int, int] = {}
    by_index = {s.order_index: s for s in steps}

    def depth(index: int, seen: frozenset[int] = frozenset()) -> int:
        if index in column:
            return column[index]
        if index in seen:  # a cycle cannot be in a valid workflow; draw it flat rather than fail
            return 0
        sources = [s for s in by_index[index].sources if s in by_index]
        column[index] = 1 + max((depth(s, seen | {index}) for s in sources), default=-1)
        return column[index]

    for step in steps:
        depth(step.order_index)
    rows: Counter = Counter()
    placed = {}
    for step in sorted(steps, key=lambda s: (column[s.order_index], s.order_index)):
        placed[step.order_index] = (column[step.order_index], rows[column[step.order_index]])
        rows[column[step.order_index]] += 1
    return placed


def workflow_drawing(steps: list[StepInfo], width: float, height: float):
    """A reportlab Drawing of the workflow graph fitted into width × height points."""
    from reportlab.graphics.shapes import Drawing, Line, Polygon, Rect, String
    from reportlab.lib import colors
    from reportlab.pdfbase.pdfmetrics import stringWidth

    drawing = Drawing(width, height)
    if not steps:
        drawing.add(String(4, height / 2, "(no steps)", fontName="Helvetica", fontSize=9))
        return drawing
    places = layout(steps)
    columns = max(c for c, _ in places.values()) + 1
    rows = max(r for _, r in places.values()) + 1
    legend_h = 16
    cell_w, cell_h = width / columns, (height - legend_h) / rows
    box_w, box_h = min(150.0, cell_w * 0.78), min(40.0, cell_h * 0.72)
    font = max(4.0, min(8.0, box_h / 3.2))

    def centre(index: int) -> tuple[float, float]:
        column, row = places[index]
        return column * cell_w + cell_w / 2, height - (row * cell_h + cell_h / 2)

    for step in steps:  # edges under the boxes
        x2, y2 = centre(step.order_index)
        for source in step.sources:
            if source not in places:
                continue
            x1, y1 = centre(source)
            start, end = (x1 + box_w / 2, y1), (x2 - box_w / 2, y2)
            drawing.add(Line(*start, *end, strokeColor=colors.HexColor("#546e7a"), strokeWidth=0.8))
            drawing.add(Polygon([end[0], end[1], end[0] - 5, end[1] + 2.5, end[0] - 5, end[1] - 2.5],
                                fillColor=colors.HexColor("#546e7a"), strokeColor=None))
    for step in steps:
        x, y = centre(step.order_index)
        fill, border = STATUS_COLOURS[step.status]
        drawing.add(Rect(x - box_w / 2, y - box_h / 2, box_w, box_h, rx=4, ry=4, fillColor=colors.HexColor(fill),
                         strokeColor=colors.HexColor(border), strokeWidth=1.2))
        title = _fit(f"{step.order_index}: {step.title}", box_w - 6, font, stringWidth)
        drawing.add(String(x, y + font * 0.25, title, fontName="Helvetica-Bold", fontSize=font, textAnchor="middle"))
        jobs = ", ".join(f"{n} {s}" for s, n in sorted(step.jobs.items()))
        detail = _fit(f"{step.status}" + (f" · {jobs}" if jobs else ""), box_w - 6, font * 0.9, stringWidth)
        drawing.add(String(x, y - font * 1.05, detail, fontName="Helvetica", fontSize=font * 0.9, textAnchor="middle"))
    x = 0.0
    for status, (fill, border) in STATUS_COLOURS.items():  # legend
        drawing.add(Rect(x, 3, 9, 9, fillColor=colors.HexColor(fill), strokeColor=colors.HexColor(border)))
        drawing.add(String(x + 12, 4.5, status, fontName="Helvetica", fontSize=7))
        x += 14 + stringWidth(status, "Helvetica", 7) + 8
    return drawing


def _fit(text: str, width: float, size: float, measure) -> str:
    if measure(text, "Helvetica-Bold", size) <= width:
        return text
    while text and measure(text + "…", "Helvetica-Bold", size) > width:
        text = text[:-1]
    return text + "…"


def _describe(session: Session, value: dict[str, Any] | None, ids: IdEncoder) -> str:
    if not value:
        return "—"
    if value.get("src") == "param" or "value" in value and "src" not in value:
        return repr(value.get("value"))
    if value.get("src") == "hda":
        row = session.execute(sa.select(Dataset.hid, Dataset.name, Dataset.state, Dataset.extension)
                              .where(Dataset.id == value["id"])).first()
        return f"{row.hid}: {row.name} ({row.extension}, {row.state})" if row else "(missing dataset)"
    if value.get("src") == "hdca":
        row = session.execute(sa.select(HistoryDatasetCollection.hid, HistoryDatasetCollection.name)
                              .where(HistoryDatasetCollection.id == value["id"])).first()
        return f"{row.hid}: {row.name} (collection)" if row else "(missing collection)"
    return str(value)


def render_invocation_pdf(session: Session, invocation, ids: IdEncoder) -> bytes:
    """The PDF report of an invocation."""
    from reportlab.lib import colors
    from reportlab.lib.pagesizes import A4, landscape
    from reportlab.lib.styles import getSampleStyleSheet
    from reportlab.platypus import (BaseDocTemplate, Frame, FrameBreak, NextPageTemplate, PageTemplate, Paragraph,
                                    Spacer, Table, TableStyle)

    from app.models import WorkflowInvocationStep
    from app.workflows.plan import load_plan

    plan = load_plan(session, invocation.workflow_id)
    steps = collect_steps(session, invocation, plan)
    rows = {r.order_index: r for r in session.scalars(
        sa.select(WorkflowInvocationStep).where(WorkflowInvocationStep.invocation_id == invocation.id))}
    styles = getSampleStyleSheet()
    small = styles["BodyText"].clone("small", fontSize=8, leading=10)
    page_w, page_h = landscape(A4)
    margin, header_h = 30.0, 70.0
    body_h = page_h - 2 * margin - header_h
    left_w = (page_w - 2 * margin) * 0.5
    right_w = page_w - 2 * margin - left_w - 12
    tight = dict(leftPadding=0, rightPadding=0, topPadding=0, bottomPadding=0)
    first = PageTemplate("first", frames=[
        Frame(margin, page_h - margin - header_h, page_w - 2 * margin, header_h, id="header", **tight),
        Frame(margin, margin, left_w, body_h, id="graph", **tight),
        Frame(margin + left_w + 12, margin, right_w, body_h, id="tables", **tight),
    ], onPage=_footer)
    later = PageTemplate("later", frames=[Frame(margin, margin, page_w - 2 * margin, page_h - 2 * margin, id="body",
                                                **tight)], onPage=_footer)
    buffer = io.BytesIO()
    doc = BaseDocTemplate(buffer, pagesize=landscape(A4), pageTemplates=[first, later],
                          title=f"Workflow Execution Summary of {plan.name}", author="Nebula")

    def table(header: list[str], data: list[list[Any]], widths: list[float]) -> Table:
        cells = [[Paragraph(f"<b>{escape(h)}</b>", small) for h in header]]
        cells += [[Paragraph(escape(str(c)), small) for c in row] for row in data] or [[Paragraph("—", small)] * len(header)]
        result = Table(cells, colWidths=widths, repeatRows=1)
        result.setStyle(TableStyle([
            ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#eceff1")),
            ("GRID", (0, 0), (-1, -1), 0.3, colors.HexColor("#b0bec5")),
            ("VALIGN", (0, 0), (-1, -1), "TOP"),
        ]))
        return result

    input_rows = [[s.label or s.order_index, _describe(session, (invocation.inputs or {}).get(str(s.order_index)), ids)]
                  for s in plan.input_steps]
    step_rows = []
    for info in steps:
        jobs = ", ".join(f"{n} {s}" for s, n in sorted(info.jobs.items())) or "—"
        step_rows.append([info.order_index, info.title, info.type, f"{info.state} ({info.status})", jobs])
    output_rows = []
    for label, (index, output_name) in plan.output_sources().items():
        row = rows.get(index)
        output_rows.append([label, _describe(session, (row.outputs or {}).get(output_name) if row else None, ids)])
    title = escape(f"Workflow Execution Summary of {plan.name}")
    info = escape(f"Invocation {ids.encode(invocation.id)} · state {invocation.state} · scheduler "
                  f"{invocation.scheduler} · started {invocation.create_time.isoformat(timespec='seconds')} UTC · "
                  f"updated {invocation.update_time.isoformat(timespec='seconds')} UTC")
    w = right_w
    story = [
        NextPageTemplate("later"),
        Paragraph(title, styles["Heading2"]),
        Paragraph(info, small),
        FrameBreak(),
        workflow_drawing(steps, left_w - 2, body_h - 16),
        FrameBreak(),
        Paragraph("Inputs", styles["Heading3"]),
        table(["Input", "Value"], input_rows, [w * 0.3, w * 0.7]),
        Spacer(1, 8),
        Paragraph("Steps", styles["Heading3"]),
        table(["#", "Step", "Type", "State", "Jobs"], step_rows, [w * 0.07, w * 0.33, w * 0.18, w * 0.2, w * 0.22]),
        Spacer(1, 8),
        Paragraph("Outputs", styles["Heading3"]),
        table(["Output", "Value"], output_rows, [w * 0.3, w * 0.7]),
    ]
    doc.build(story)
    return buffer.getvalue()


def _footer(canvas, doc) -> None:
    canvas.saveState()
    canvas.setFont("Helvetica", 7)
    canvas.drawRightString(doc.pagesize[0] - 30, 15, f"Nebula · page {doc.page}")
    canvas.restoreState()
