"""Running tools other than upload1, and fetches into collections (called by app.api.tools)."""

from __future__ import annotations

from typing import Any

from app.api.context import RequestContext
from app.models import History
from app.services import collections, tool_runs
from app.services.datasets import dataset_view
from app.services.jobs import job_view
from app.tools import toolbox


def run(ctx: RequestContext, history: History, body: Any) -> dict[str, Any]:
    """POST /api/tools for a tool run as jobs: create them and answer at once."""
    tool = toolbox(ctx.settings).get(body.tool_id)
    result = tool_runs.run_tool(
        ctx.session, user=ctx.user, history=history, tool=tool, inputs=body.inputs,
        enqueuer=ctx.services.enqueuer, decode=ctx.ids.decode,
    )
    # Committed (and the jobs' messages published) before the answer is built: for a large
    # map-over the workers are already running jobs while thousands of views are made.
    ctx.commit()
    outputs = []
    for name, dataset in tool_runs.output_datasets(ctx.session, result.jobs):
        view = dataset_view(dataset, ctx.ids).model_dump(mode="json")
        view["output_name"] = name
        outputs.append(view)
    implicit = [
        {**collections.collection_view(ctx.session, hdca, ctx.ids, detailed=False), "output_name": hdca.implicit_output_name}
        for hdca in result.implicit_collections
    ]
    return {
        "outputs": outputs,
        "output_collections": [],
        "jobs": [job_view(job, ctx.ids) for job in result.jobs],
        "implicit_collections": implicit,
        "produces_entry_points": False,
        "errors": [],
    }


def fetch_collection(ctx: RequestContext, history: History, body: Any, files: list) -> dict[str, Any]:
    """POST /api/tools/fetch with collection (``hdca``) destinations."""
    targets = [t.model_dump(exclude_none=True) for t in body.targets]
    fetched = tool_runs.fetch_into_collections(
        ctx.session, user=ctx.user, history=history, targets=targets, files=files,
        staging_root=ctx.settings.resolved_data_dir / "staging", enqueuer=ctx.services.enqueuer,
    )
    job = fetched.staged.job
    outputs = []
    for i, dataset in enumerate(fetched.staged.datasets):
        view = dataset_view(dataset, ctx.ids).model_dump(mode="json")
        view["output_name"] = f"output{i}"
        outputs.append(view)
    output_collections = [
        {**collections.collection_view(ctx.session, hdca, ctx.ids, detailed=False), "output_name": f"output{i}"}
        for i, hdca in enumerate(fetched.collections)
    ]
    return {
        "outputs": outputs,
        "output_collections": output_collections,
        "jobs": [job_view(job, ctx.ids)],
        "implicit_collections": [],
        "produces_entry_points": False,
    }
