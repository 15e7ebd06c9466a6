"""Post-job actions when a tool step's jobs are made (``app.workflows.actions`` says what each does).

The immediate actions (rename, change datatype, tags) are written onto a slice's new output
datasets in bulk: one UPDATE per group of datasets given the same columns, and one
executemany for names that differ per dataset (a rename from each element's input name).
On a map-over, rename, hide and tags also apply to the implicit collections. ``${name}`` in
a new name comes from the invoke payload's ``replacement_params`` (the top invocation's, for
a subworkflow) or else from a labelled parameter input, as in Galaxy.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from app.models import Dataset, HistoryDatasetCollection, StepType, WorkflowInvocation
from app.tools.params import data_refs
from app.workflows.actions import StepActions
from app.workflows.plan import PlanStep

if TYPE_CHECKING:
    from app.scheduling.run import InvocationRun
    from app.services.jobs import JobSpec

_CHUNK = 900


def apply_at_creation(run: "InvocationRun", step: PlanStep, specs: list["JobSpec"], jobs: list[Any],
                      skipped: list[bool]) -> None:
    """Rename, retype and tag the outputs of jobs just made, as the step's immediate actions say."""
    actions = StepActions(step.post_job_actions)
    if not actions.at_creation or not jobs:
        return
    names = _input_names(run.session, specs) if actions.needs_input_names else [{} for _ in specs]
    replacements = replacement_dict(run) if actions.needs_replacements else {}
    groups: dict[str, list[int]] = {}
    columns_of: dict[str, dict[str, Any]] = {}
    same_for_all: dict[tuple[str, bool], str] = {}  # without input names, columns depend on the output only
    for job, input_names, is_skipped in zip(jobs, names, skipped):
        for output in job.outputs:
            key = same_for_all.get((output.name, is_skipped))
            if key is None:
                columns = actions.creation_columns(output.name, input_names, replacements, skipped=is_skipped)
                key = json.dumps(columns, sort_keys=True)
                columns_of.setdefault(key, columns)
                if not actions.needs_input_names:
                    same_for_all[(output.name, is_skipped)] = key
            if columns_of[key]:
                groups.setdefault(key, []).append(output.dataset_id)
    _write(run.session, groups, columns_of)


def _write(session: Session, groups: dict[str, list[int]], columns_of: dict[str, dict[str, Any]]) -> None:
    """One UPDATE per shared set of columns; datasets with columns of their own in one executemany."""
    singles = []
    for key, dataset_ids in groups.items():
        if len(dataset_ids) == 1:
            singles.append({"id": dataset_ids[0], **columns_of[key]})
            continue
        for start in range(0, len(dataset_ids), _CHUNK):
            session.execute(sa.update(Dataset).where(Dataset.id.in_(dataset_ids[start : start + _CHUNK]))
                            .values(**columns_of[key]).execution_options(synchronize_session=False))
    if singles:
        session.execute(sa.update(Dataset), singles)


def apply_to_collections(run: "InvocationRun", step: PlanStep, outputs: dict[str, dict[str, int]],
                         mapped: list[Any], base: dict[str, Any]) -> None:
    """Rename, hide and tag a map-over's implicit collections (Galaxy's mapped_over_output_actions)."""
    actions = StepActions(step.post_job_actions)
    if not actions.on_collections or not outputs:
        return
    input_names: dict[str, str] = {}
    if actions.needs_input_names:
        # The step's inputs as a whole: a mapped collection by its name, a dataset given to all jobs by its.
        refs = {name: value for name, value in base.items()
                if isinstance(value, dict) and value.get("src") == "hda" and isinstance(value.get("id"), int)}
        found = _dataset_names(run.session, [v["id"] for v in refs.values()])
        input_names = {name: found[v["id"]] for name, v in refs.items() if v["id"] in found}
        input_names.update({m.name: m.source.name for m in mapped if m.name and m.source is not None})
    replacements = replacement_dict(run) if actions.needs_replacements else {}
    for output, info in outputs.items():
        columns = actions.collection_columns(output, input_names, replacements)
        if columns:
            run.session.execute(sa.update(HistoryDatasetCollection)
                                .where(HistoryDatasetCollection.id == info["hdca_id"])
                                .values(**columns).execution_options(synchronize_session=False))


def replacement_dict(run: "InvocationRun") -> dict[str, str]:
    """``${name}`` values: the invoke payload's replacement_params, else labelled parameter inputs."""
    values: dict[str, str] = {}
    for input_step in run.plan.input_steps:
        if input_step.type != StepType.PARAMETER_INPUT or not input_step.label:
            continue
        row = run.rows.get(input_step.order_index)
        value = (row.outputs or {}).get("output") if row is not None else None
        if value and value.get("src") == "param" and value.get("value") is not None:
            values[input_step.label] = str(value["value"])
    values.update(_top_replacement_params(run))
    return values


def _top_replacement_params(run: "InvocationRun") -> dict[str, str]:
    """The replacement_params of the invocation the user made (a subworkflow's are its parent's)."""
    params, parent_id = run.invocation.replacement_params, run.invocation.parent_invocation_id
    while parent_id is not None:
        params, parent_id = run.session.execute(
            sa.select(WorkflowInvocation.replacement_params, WorkflowInvocation.parent_invocation_id)
            .where(WorkflowInvocation.id == parent_id)).one()
    return {str(k): str(v) for k, v in (params or {}).items()}


def _input_names(session: Session, specs: list["JobSpec"]) -> list[dict[str, str]]:
    """Per job: input name → the name of what it was given (Galaxy: the dataset's, a whole collection's)."""
    dataset_ids = [ids[0] for spec in specs for ids in spec.inputs.values() if ids]
    collection_refs = [[(name, value["id"]) for name, _, value in data_refs(spec.tool.inputs, spec.params)
                        if value.get("src") == "hdca"] for spec in specs]
    datasets = _dataset_names(session, dataset_ids)
    collections = _collection_names(session, [hdca_id for refs in collection_refs for _, hdca_id in refs])
    names = []
    for spec, refs in zip(specs, collection_refs):
        named = {name: datasets[ids[0]] for name, ids in spec.inputs.items() if ids and ids[0] in datasets}
        named.update({name: collections[hdca_id] for name, hdca_id in refs if hdca_id in collections})
        names.append(named)
    return names


def _dataset_names(session: Session, dataset_ids: list[int]) -> dict[int, str]:
    unique = sorted(set(dataset_ids))
    found: dict[int, str] = {}
    for start in range(0, len(unique), _CHUNK):
        found.update(session.execute(sa.select(Dataset.id, Dataset.name)
                                     .where(Dataset.id.in_(unique[start : start + _CHUNK]))).all())
    return found


def _collection_names(session: Session, hdca_ids: list[int]) -> dict[int, str]:
    unique = sorted(set(hdca_ids))
    found: dict[int, str] = {}
    for start in range(0, len(unique), _CHUNK):
        found.update(session.execute(
            sa.select(HistoryDatasetCollection.id, HistoryDatasetCollection.name)
            .where(HistoryDatasetCollection.id.in_(unique[start : start + _CHUNK]))).all())
    return found
