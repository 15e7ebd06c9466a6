"""Running a tool: validate a request's inputs, expand batches, create jobs and implicit collections.

``run_tool`` is the service behind ``POST /api/tools`` for every tool but upload1. A
batch value over a collection maps the tool over it: one job per element (linked batches
zip their elements) and, for each tool output, an implicit output collection with the
mapped collection's structure. ``fetch_into_collections`` is the data fetch API for
``hdca`` destinations: one upload job for every element, then the collections.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import sqlalchemy as sa
from sqlalchemy.orm import Session

from app.errors import NotFound, RequestParameterInvalid
from app.messaging import Enqueuer
from app.models import Dataset, History, HistoryDatasetCollection, User
from app.services import collections, input_checks, uploads
from app.services.jobs import CreatedJob, JobSpec, create_jobs
from app.tools.loader import Tool
from app.tools.batches import Batch, expand_batches
from app.tools.params import CollectionRef, ElementRef, data_refs, validate_inputs

Decode = Callable[[Any], int | None]


class DatabaseResolver:
    """Looks up what a request's inputs name, as ``user`` (ids decoded with ``decode``)."""

    def __init__(self, session: Session, user: User | None, decode: Decode = lambda value: value):
        self.session = session
        self.user = user
        self.decode = decode
        self._elements: dict[int, list[ElementRef]] = {}

    def _id(self, ref: Any, what: str, where: str) -> int:
        value = self.decode(ref)
        if not isinstance(value, int):
            raise NotFound(f"parameter '{where}': {what} {ref!r} not found")
        return value

    def dataset(self, ref: Any, where: str) -> int:
        """The id of one of the user's datasets (404 naming the parameter otherwise)."""
        dataset_id = self._id(ref, "dataset", where)
        dataset = self.session.get(Dataset, dataset_id)
        if dataset is None or (self.user is not None and dataset.user_id != self.user.id):
            raise NotFound(f"parameter '{where}': dataset {ref!r} not found")
        if dataset.purged:
            raise RequestParameterInvalid(f"parameter '{where}': dataset {ref!r} has been purged")
        return dataset_id

    def collection(self, src: str, ref: Any, where: str) -> CollectionRef:
        """One of the user's collections (an HDCA, or a nested element with src 'dce')."""
        return self.collection_by_id(src, self._id(ref, "collection", where), where)

    def collection_by_id(self, src: str, ref_id: int, where: str) -> CollectionRef:
        """Like ``collection``, for a database id (as validated parameters hold)."""
        return collections.collection_ref(self.session, self.user, src, ref_id, where)

    def elements(self, collection_id: int) -> list[ElementRef]:
        """A collection's elements; the first call loads the whole tree, level by level."""
        if collection_id not in self._elements:
            pending = [(collection_id, collections.load_tree(self.session, collection_id))]
            while pending:
                parent, tree = pending.pop()
                self._elements[parent] = [
                    ElementRef(e.id, e.identifier, e.dataset_id, e.child_collection_id, e.child_type) for e in tree]
                pending.extend((e.child_collection_id, e.children) for e in tree if e.child_collection_id)
        return self._elements[collection_id]

    def leaves(self, collection_id: int) -> list[int]:
        """The dataset ids under a collection, in element order."""
        out: list[int] = []
        for element in self.elements(collection_id):
            if element.child_collection_id is not None:
                out.extend(self.leaves(element.child_collection_id))
            elif element.dataset_id is not None:
                out.append(element.dataset_id)
        return out


def job_inputs(tool: Tool, params: dict[str, Any], resolver: Any) -> dict[str, list[int]]:
    """{flat parameter name: dataset ids} a job with these parameters reads (collections: their leaves).

    ``resolver`` needs ``leaves(collection_id)`` and a way to resolve the database ids that
    validated parameters hold: ``collection_by_id`` when it has one (the API's resolver,
    whose ``collection`` takes encoded ids), else ``collection``.
    """
    resolve = getattr(resolver, "collection_by_id", None) or resolver.collection
    inputs: dict[str, list[int]] = {}
    for name, _, value in data_refs(tool.inputs, params):
        if value.get("src") == "hda":
            ids = [value["id"]]
        else:
            ids = resolver.leaves(resolve(value["src"], value["id"], name).collection_id)
        inputs.setdefault(name, []).extend(ids)
    return inputs


@dataclass
class ToolRun:
    """What a tool request created."""

    jobs: list[CreatedJob]
    implicit_collections: list[HistoryDatasetCollection] = field(default_factory=list)


def run_tool(
    session: Session,
    *,
    user: User,
    history: History,
    tool: Tool,
    inputs: dict[str, Any],
    enqueuer: Enqueuer,
    decode: Decode,
) -> ToolRun:
    """Validate, expand batches, create the jobs (and implicit collections); nothing runs yet."""
    if tool.definition.action != "command":
        raise RequestParameterInvalid(f"tool {tool.id!r} cannot be run as a job")
    resolver = DatabaseResolver(session, user, decode)
    params = validate_inputs(tool.inputs, inputs, resolver)
    per_job, batches = expand_batches(params)
    mapped = batches[0] if batches and batches[0].collection_type is not None else None
    specs = [JobSpec(user_id=user.id, history_id=history.id, tool=tool, params=job_params,
                     inputs=job_inputs(tool, job_params, resolver), output_visible=mapped is None)
             for job_params in per_job]
    input_checks.check_specs(session, tool, specs)
    jobs = create_jobs(session, specs, enqueuer=enqueuer)
    run = ToolRun(jobs=jobs)
    if mapped is not None:
        run.implicit_collections = _implicit_collections(session, user, history, tool, mapped, jobs)
    return run


def output_datasets(session: Session, jobs: list[CreatedJob]) -> list[tuple[str, Dataset]]:
    """(output name, dataset) of every job, in job order (for the answer, read after the commit)."""
    links = [(o.name, o.dataset_id) for job in jobs for o in job.outputs]
    ids = [d for _, d in links]
    found: dict[int, Dataset] = {}
    for start in range(0, len(ids), 900):
        found.update((d.id, d) for d in session.scalars(sa.select(Dataset).where(Dataset.id.in_(ids[start : start + 900]))))
    return [(name, found[dataset_id]) for name, dataset_id in links]


def _implicit_collections(session: Session, user: User, history: History, tool: Tool, mapped: Batch,
                          jobs: list[CreatedJob]) -> list[HistoryDatasetCollection]:
    """One collection per tool output, shaped like the mapped collection, gathering the jobs' outputs."""
    paths = [s.path for s in mapped.slices]
    source = mapped.source
    on = f"collection {source.hid}" if source is not None and source.hid is not None else (source.name if source else "")
    made = []
    for output in tool.outputs:
        dataset_ids = [next(o.dataset_id for o in job.outputs if o.name == output.name) for job in jobs]
        made.append(collections.create_collection(
            session, user=user, history=history, collection_type=mapped.collection_type or "list",
            elements=collections.elements_from_paths(paths, dataset_ids),
            name=f"{tool.name} on {on}" if on else tool.name, implicit_output_name=output.name,
        ))
    return made


# -- data fetch into collections -------------------------------------------------------------


@dataclass
class FetchedCollections:
    """What a fetch with collection destinations created."""

    staged: uploads.StagedUpload
    collections: list[HistoryDatasetCollection]


def fetch_into_collections(
    session: Session,
    *,
    user: User,
    history: History,
    targets: list[dict[str, Any]],
    files: list[tuple[str, BinaryIO]],
    staging_root: Path,
    enqueuer: Enqueuer,
) -> FetchedCollections:
    """Upload every element of every target in one job; make a collection of each hdca target."""
    leaves: list[uploads.UploadTarget] = []
    plans: list[tuple[dict[str, Any], str, list[tuple[str, ...]], int]] = []  # target, type, paths, first leaf
    for t_index, target in enumerate(targets):
        kind = (target.get("destination") or {}).get("type")
        where = f"targets[{t_index}]"
        if kind not in ("hdas", "hdca"):
            raise RequestParameterInvalid(f"{where}.destination: type must be 'hdas' or 'hdca', not {kind!r}")
        elements = target.get("elements") or []
        if kind == "hdas":
            for e_index, element in enumerate(elements):
                leaves.append(_upload_target(element, f"{where}.elements[{e_index}]", identifier=None))
            continue
        collection_type = collections.check_collection_type(target.get("collection_type") or "list",
                                                            f"{where}.collection_type")
        first = len(leaves)
        paths: list[tuple[str, ...]] = []
        _collect(elements, collection_type, (), leaves, paths, f"{where}.elements")
        # Checked before anything is staged: pairs, duplicate names, nesting depth.
        collections.validate_elements(collection_type, collections.elements_from_paths(paths, [0] * len(paths)),
                                      f"{where}.elements")
        plans.append((target, collection_type, paths, first))
    if not leaves and not plans:
        raise RequestParameterInvalid("targets: no elements to fetch")
    for i, leaf in enumerate(leaves):
        if leaf.src == "files" and leaf.file_index is None:
            leaves[i] = leaf.model_copy(update={"file_index": sum(1 for t in leaves[:i] if t.src == "files")})
    staged = uploads.stage_upload(session, user=user, history=history, targets=leaves, files=files,
                                  staging_root=staging_root, enqueuer=enqueuer, tool_id="__DATA_FETCH__")
    made = []
    for target, collection_type, paths, first in plans:
        datasets = staged.datasets[first : first + len(paths)]
        for dataset in datasets:
            dataset.visible = False
        elements = collections.elements_from_paths(paths, [d.id for d in datasets])
        made.append(collections.create_collection(
            session, user=user, history=history, collection_type=collection_type, elements=elements,
            name=target.get("name") or "Unnamed collection"))
    return FetchedCollections(staged, made)


def _collect(elements: list[Any], collection_type: str, path: tuple[str, ...], leaves: list[uploads.UploadTarget],
             paths: list[tuple[str, ...]], where: str) -> None:
    """Walk a target's (possibly nested) elements, appending leaves and their identifier paths."""
    kind, _, rest = collection_type.partition(":")
    if not isinstance(elements, list):
        raise RequestParameterInvalid(f"{where}: expected a list of elements")
    for index, element in enumerate(elements):
        here = f"{where}[{index}]"
        if not isinstance(element, dict):
            raise RequestParameterInvalid(f"{here}: expected an object")
        name = element.get("name")
        if not isinstance(name, str) or not name:
            raise RequestParameterInvalid(f"{here}.name: a collection element needs a name")
        if rest:
            if element.get("elements") is None:
                raise RequestParameterInvalid(f"{here}: a '{collection_type}' element needs nested 'elements'")
            _collect(element["elements"], rest, (*path, name), leaves, paths, f"{here}.elements")
        else:
            if element.get("elements") is not None:
                raise RequestParameterInvalid(f"{here}: a '{kind}' element is a dataset, not nested elements")
            leaves.append(_upload_target(element, here, identifier=name))
            paths.append((*path, name))


def _upload_target(element: Any, where: str, *, identifier: str | None) -> uploads.UploadTarget:
    from pydantic import ValidationError

    if not isinstance(element, dict):
        raise RequestParameterInvalid(f"{where}: expected an object")
    fields = {k: v for k, v in element.items() if k in uploads.UploadTarget.model_fields}
    if identifier is not None and not fields.get("name"):
        fields["name"] = identifier
    try:
        return uploads.UploadTarget(**fields)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'element'}: {e['msg']}" for e in exc.errors(include_url=False))
        raise RequestParameterInvalid(f"{where}: {problems}") from exc
