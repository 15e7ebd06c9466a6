"""Tool steps: one job, or a map-over creating one job per element, in slices of the job budget.

The step's parameters are its stored tool state, overridden by the invocation's
``parameters`` for the step, plus the values connected to it (datasets, collections,
parameter inputs), validated by the tools' own validator. A collection connected to an
input that takes a dataset (or a smaller collection) maps the tool over it; several such
inputs are linked (zipped element-wise). Jobs are keyed (invocation step, element index),
so no job is ever created twice, even when an iteration is repeated after a crash.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from app.errors import NebulaError
from app.models import WorkflowInvocationStep
from app.scheduling import mapping, post_actions, skipping, subworkflow_mapping
from app.scheduling.steps import BUDGET, DONE, WAITING
from app.scheduling.values import CollectionInfo, StepFailure
from app.services import collections, input_checks
from app.services.jobs import JobSpec, create_jobs
from app.services.tool_runs import job_inputs
from app.tools.params import CollectionRef, ElementRef, validate_inputs
from app.workflows import toolspec
from app.workflows.plan import PlanStep

if TYPE_CHECKING:
    from app.scheduling.run import InvocationRun

MARKERS = ("ConnectedValue", "RuntimeValue")


class StepResolver:
    """The tools' InputResolver for ids the scheduler already trusts, with bulk-loaded elements."""

    def __init__(self, session):
        self.session = session
        self.refs: dict[tuple[str, int], CollectionRef] = {}
        self.leaf_ids: dict[int, list[int]] = {}
        self._elements: dict[int, list[ElementRef]] = {}

    def dataset(self, ref: Any, where: str) -> int:
        """Datasets come from the invocation's own values: no look-up needed."""
        return int(ref)

    def collection(self, src: str, ref: Any, where: str) -> CollectionRef:
        """A collection or nested element, cached."""
        key = (src, int(ref))
        if key not in self.refs:
            self.refs[key] = collections.collection_ref(self.session, None, src, int(ref), where)
        return self.refs[key]

    def elements(self, collection_id: int) -> list[ElementRef]:
        """A collection's direct elements, cached."""
        if collection_id not in self._elements:
            self._elements[collection_id] = collections.elements(self.session, collection_id)
        return self._elements[collection_id]

    def leaves(self, collection_id: int) -> list[int]:
        """The datasets under a collection, in order (prefetched for map-over slices)."""
        if collection_id not in self.leaf_ids:
            self.leaf_ids[collection_id] = [d for _, d in collections.leaf_datasets(self.session, collection_id)]
        return self.leaf_ids[collection_id]


@dataclass
class MappedInput:
    """An input mapped over a collection: what each job gets from one element."""

    name: str | None  # None: no input, only the structure of a mapped subworkflow to run over
    collection_id: int
    unit: str  # "dataset" (a leaf), "leaves" (a sub-collection's datasets), "collection" (a nested element)
    element_type: str | None = None  # the type of a "collection" unit
    source: CollectionInfo | None = None
    covers: int = 0  # the levels of a mapped subworkflow's structure it maps over (subworkflow_mapping)


def clean_state(value: Any) -> Any:
    """A stored tool state without Galaxy's bookkeeping keys and connection/runtime markers."""
    if isinstance(value, dict):
        if value.get("__class__") in MARKERS:
            return None
        cleaned = {}
        for key, item in value.items():
            if str(key).startswith("__"):
                continue
            item = clean_state(item)
            if item is not None and item != "null":
                cleaned[key] = item
        return cleaned
    if isinstance(value, list):
        return [clean_state(v) for v in value]
    return value


def _reference(value: dict[str, Any]) -> dict[str, Any]:
    return {"src": value["src"], "id": value["id"]}


def schedule_tool(run: "InvocationRun", step: PlanStep, row: WorkflowInvocationStep, job_budget: int) -> str:
    """Create the step's job(s) once its inputs are done."""
    spec = toolspec.tool_spec(run.settings, step.tool_id or "")
    if spec is None:
        raise StepFailure("unexpected_failure", step=step.order_index,
                          details=f"tool {step.tool_id!r} is not installed")
    if row.mapping is not None:
        return _continue_mapping(run, step, row, spec, job_budget)
    for conn in step.connections:
        value = (run.rows[conn.source_index].outputs or {}).get(conn.output_name)
        if not run.values.ready(value, source_step=conn.source_index, dependent_step=step.order_index):
            return WAITING
    if job_budget < 1:
        return BUDGET
    base, mapped = _inputs(run, step, spec)
    skip = skipping.prepare(run, step, spec, base, {m.name for m in mapped})
    if not mapped:
        job = _create(run, step, row, spec, [base], first_index=0, visible=True, skipped=[skip.whole])[0]
        row.job_id = job.id
        outputs = {o.name: {"src": "hda", "id": o.dataset_id} for o in job.outputs}
        run.mark_scheduled(row, skipping.flag(outputs, skipping.SKIPPED) if skip.whole else outputs)
        return DONE
    _start_mapping(run, step, row, spec, base, mapped)
    skipping.record(run, step, row, skip)
    post_actions.apply_to_collections(run, step, (row.mapping or {}).get("outputs") or {}, mapped, base)
    return _continue_mapping(run, step, row, spec, job_budget)


def _inputs(run: "InvocationRun", step: PlanStep, spec: toolspec.ToolSpec) -> tuple[dict[str, Any], list[MappedInput]]:
    """The raw inputs shared by every job of the step, and the inputs mapped over collections."""
    raw: dict[str, Any] = clean_state(dict(step.tool_state)) or {}
    raw.update((run.invocation.parameters or {}).get(str(step.order_index), {}))
    mapped: list[MappedInput] = []
    for name, values in run.connected_values(step).items():
        present = [v for v in values if v]
        tool_input = spec.input(name)
        if not present:
            continue
        if tool_input is None or tool_input.kind == "param" or present[0].get("src") == "param":
            raw[name] = present[0].get("value") if present[0].get("src") == "param" else _reference(present[0])
            continue
        collections_given = [v for v in present if v["src"] == "hdca"]
        if not collections_given:
            refs = [_reference(v) for v in present]
            raw[name] = refs if tool_input.multiple else refs[0]
            continue
        info = run.values.collection(collections_given[0]["id"])
        mapping_of = _map_over(tool_input, info.collection_type)
        covers = subworkflow_mapping.map_depth(collections_given[0])
        if covers:  # part of what a mapped subworkflow runs over: never reduced, at most one element each
            mapping_of = subworkflow_mapping.at_least(step, name, tool_input.kind, tool_input.collection_types,
                                                      info.collection_type, covers, mapping_of)
        if mapping_of is None or len(present) > 1:
            if len(present) > 1 and mapping_of is not None:
                raise StepFailure("unexpected_failure", step=step.order_index,
                                  details=f"input {name!r}: several collections cannot be mapped over one input")
            refs = [_reference(v) for v in present]
            raw[name] = refs if tool_input.multiple else refs[0]
            continue
        unit, element_type = mapping_of
        mapped.append(MappedInput(name, info.collection_id, unit, element_type, info, covers))
    structure = run.map_structure
    if not mapped and structure is not None:  # Galaxy: inside a mapped subworkflow every step maps
        info = run.values.collection(structure.hdca_id)
        unit, element_type = subworkflow_mapping.structure_unit(structure, info.collection_type)
        mapped.append(MappedInput(None, info.collection_id, unit, element_type, info, structure.depth))
    return raw, mapped


def _map_over(tool_input: toolspec.ToolInput, collection_type: str) -> tuple[str, str | None] | None:
    """How an input consumes a collection: None (whole, no mapping) or (unit kind, element type)."""
    if tool_input.kind == "data":
        if not tool_input.multiple:
            return "dataset", None
        return ("leaves", collection_type.rsplit(":", 1)[1]) if ":" in collection_type else None
    accepted = tool_input.collection_types
    if not accepted or collection_type in accepted:
        return None
    for kind in accepted:
        if collection_type.endswith(":" + kind):
            return "collection", kind
    return None


def _map_type(collection_type: str, mapped: MappedInput) -> str:
    """The map-over type: the collection's type without the levels each job consumes."""
    if mapped.unit == "dataset":
        return collection_type
    return collection_type[: -len(mapped.element_type or "") - 1]


def _start_mapping(run: "InvocationRun", step: PlanStep, row: WorkflowInvocationStep, spec: toolspec.ToolSpec,
                   base: dict[str, Any], mapped: list[MappedInput]) -> None:
    """Check the mapped inputs agree, create the implicit output collections, record the plan."""
    shapes = []
    for item in mapped:
        info = item.source
        assert info is not None
        map_type = _map_type(info.collection_type, item)
        depth = len(map_type.split(":"))
        shapes.append((map_type, mapping.count_units(run.session, item.collection_id, depth)))
    if len(set(shapes)) > 1:
        names = ", ".join(repr(m.name) for m in mapped if m.name)
        raise StepFailure("unexpected_failure", step=step.order_index,
                          details=f"inputs {names} are mapped over collections of different structure")
    map_type, count = shapes[0]
    source = mapped[0].source
    assert source is not None
    top_count = source.element_count if len(map_type.split(":")) == 1 else \
        mapping.count_units(run.session, mapped[0].collection_id, 1)
    label = step.label or spec.tool.name
    outputs = mapping.create_output_collections(
        run.session, user_id=run.invocation.user_id, history_id=run.invocation.history_id,
        collection_type=map_type, element_count=top_count if count else 0, outputs=list(spec.outputs),
        name=f"{label} on collection {source.hid}", invocation_id=run.invocation.id, invocation_step_id=row.id,
    )
    row.mapping = {
        "collection_type": map_type, "depth": len(map_type.split(":")), "element_count": count, "base": base,
        "inputs": [{"name": m.name, "collection_id": m.collection_id, "unit": m.unit, "element_type": m.element_type}
                   for m in mapped],
        "outputs": outputs, "map_depth": max(m.covers for m in mapped),
    }
    run.mark_ready(row)


def _continue_mapping(run: "InvocationRun", step: PlanStep, row: WorkflowInvocationStep, spec: toolspec.ToolSpec,
                      job_budget: int) -> str:
    """Create the next slice of the map-over's jobs; DONE when all exist."""
    plan = row.mapping or {}
    start, total, depth = row.jobs_created, plan["element_count"], plan["depth"]
    if start < total:
        if job_budget < 1:
            return BUDGET
        size = min(job_budget, total - start)
        resolver = StepResolver(run.session)
        per_input = []
        for item in plan["inputs"]:
            units = mapping.read_units(run.session, item["collection_id"], depth, start, size)
            if len(units) != size:
                raise StepFailure("unexpected_failure", step=step.order_index,
                                  details=f"input {item['name']!r}: the mapped collection changed while scheduling")
            if item["name"] is not None:
                _prefetch(resolver, item, units)
            per_input.append((item, units))
        if start + size < total:
            run.request_next_pass()
        raws = []
        for j in range(size):
            raw = dict(plan["base"])
            for item, units in per_input:
                if item["name"] is not None:
                    raw[item["name"]] = _unit_value(resolver, item, units[j])
            raws.append(raw)
        flags = skipping.slice_flags(run, step, plan, per_input, start, size)
        jobs = _create(run, step, row, spec, raws, first_index=start, visible=False, resolver=resolver, skipped=flags)
        skipping.count(row, flags)
        units = per_input[0][1]
        for name, info in plan["outputs"].items():
            dataset_ids = [next(o.dataset_id for o in job.outputs if o.name == name) for job in jobs]
            mapping.add_leaves(run.session, info["collection_id"], plan["collection_type"], units, dataset_ids)
        row.jobs_created = start + size
        run.changed = True
    if row.jobs_created < total:
        return BUDGET
    mapping.finish_collections(run.session, [info["collection_id"] for info in plan["outputs"].values()])
    outputs = skipping.finish_mapping(run, row, mapping.output_values(plan["outputs"]))
    run.mark_scheduled(row, subworkflow_mapping.mark_outputs(outputs, plan.get("map_depth") or 0))
    return DONE


def _prefetch(resolver: StepResolver, item: dict[str, Any], units: list[mapping.Unit]) -> None:
    """Load what a slice's units need in bulk instead of per element."""
    children = [u.child_collection_id for u in units if u.child_collection_id is not None]
    if item["unit"] == "leaves" or (item["unit"] == "collection" and ":" not in (item["element_type"] or "")):
        resolver.leaf_ids.update(mapping.direct_leaves(resolver.session, children))
    if item["unit"] == "collection":
        for unit in units:
            resolver.refs[("dce", unit.element_id)] = CollectionRef(
                "dce", unit.element_id, unit.child_collection_id, item["element_type"], None, unit.identifiers[-1])


def _unit_value(resolver: StepResolver, item: dict[str, Any], unit: mapping.Unit) -> Any:
    if item["unit"] == "dataset":
        return {"src": "hda", "id": unit.dataset_id}
    if item["unit"] == "leaves":
        return [{"src": "hda", "id": d} for d in resolver.leaves(unit.child_collection_id)]
    return {"src": "dce", "id": unit.element_id}


def _create(run: "InvocationRun", step: PlanStep, row: WorkflowInvocationStep, spec: toolspec.ToolSpec,
            raws: list[dict[str, Any]], *, first_index: int, visible: bool,
            resolver: StepResolver | None = None, skipped: list[bool] | None = None) -> list[Any]:
    """Validate each job's parameters and create the jobs in one bulk call."""
    resolver = resolver or StepResolver(run.session)
    flags = skipped or [False] * len(raws)  # skipped jobs (conditional steps) are made, never run
    tool = spec.tool
    specs = []
    for offset, raw in enumerate(raws):
        try:
            params = validate_inputs(tool.inputs, raw, resolver)
            inputs = job_inputs(tool, params, resolver)
        except NebulaError as exc:
            raise StepFailure("unexpected_failure", step=step.order_index,
                              details=f"tool {tool.id!r}: {exc.message}") from None
        specs.append(JobSpec(
            user_id=run.invocation.user_id, history_id=run.invocation.history_id, tool=tool, params=params,
            inputs=inputs, invocation_id=run.invocation.id, invocation_step_id=row.id,
            element_index=first_index + offset, output_visible=visible, skipped=flags[offset],
        ))
    try:  # a dataset of a format the tool does not take: the step fails, as in Galaxy
        input_checks.check_specs(run.session, tool, [s for s, skip in zip(specs, flags) if not skip])
    except NebulaError as exc:
        raise StepFailure("unexpected_failure", step=step.order_index,
                          details=f"tool {tool.id!r}: {exc.message}") from None
    jobs = create_jobs(run.session, specs, enqueuer=run.enqueuer)
    skipping.write_null_outputs(run, jobs, flags)
    post_actions.apply_at_creation(run, step, specs, jobs, flags)
    run.jobs_created += len(jobs)
    return jobs
