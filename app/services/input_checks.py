"""The database side of ``app.tools.checks``: load the facts of jobs' input datasets in bulk.

Called by the tools API (``run_tool``) and the workflow scheduler before ``create_jobs``,
so a refused input creates no job. One SELECT per 900 distinct input datasets, whatever
the number of jobs: a map-over reads each element once.
"""

from __future__ import annotations

from collections.abc import Iterable

import sqlalchemy as sa
from sqlalchemy.orm import Session

from app.models import Dataset
from app.services.jobs import JobSpec
from app.tools.checks import DatasetFacts, check_columns, check_formats, has_columns, restricts_formats
from app.tools.loader import Tool

_CHUNK = 900


def dataset_facts(session: Session, dataset_ids: Iterable[int], *, metadata: bool = False) -> dict[int, DatasetFacts]:
    """{id: facts} of these datasets (metadata read only when asked: it may be large)."""
    ids = sorted(set(dataset_ids))
    columns = [Dataset.id, Dataset.extension, Dataset.hid, Dataset.name]
    if metadata:
        columns.append(Dataset.metadata_)
    found: dict[int, DatasetFacts] = {}
    for start in range(0, len(ids), _CHUNK):
        rows = session.execute(sa.select(*columns).where(Dataset.id.in_(ids[start : start + _CHUNK])))
        for row in rows:
            found[row[0]] = DatasetFacts(row[0], row[1], row[2], row[3], (row[4] or {}) if metadata else {})
    return found


def check_specs(session: Session, tool: Tool, specs: list[JobSpec]) -> None:
    """Refuse the jobs (400 naming the parameter) for a dataset of a refused format or a column it lacks."""
    formats, columns = restricts_formats(tool.inputs), has_columns(tool.inputs)
    if not (formats or columns):
        return
    ids = {d for spec in specs for dataset_ids in spec.inputs.values() for d in dataset_ids}
    if not ids:
        return
    facts = dataset_facts(session, ids, metadata=columns)
    jobs = [(spec.params, spec.inputs) for spec in specs]
    if formats:
        check_formats(tool.inputs, jobs, facts)
    if columns:
        check_columns(tool.inputs, jobs, facts)
