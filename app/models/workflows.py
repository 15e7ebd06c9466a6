"""Workflows and their invocations.

A ``StoredWorkflow`` is what a user owns and names; each import or edit adds a ``Workflow``
version, whose ``WorkflowStep`` rows and ``WorkflowStepConnection`` rows never change
afterwards (so a scheduler may cache them). An invocation runs one version into one
history: ``WorkflowInvocation`` keeps the whole state the schedulers work from, one
``WorkflowInvocationStep`` per workflow step, and typed ``WorkflowInvocationMessage`` rows
saying why it failed or was cancelled.
"""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.models.base import Base, Timestamps, utcnow
from app.models.jobs import Job


class StepType:
    """Module types of workflow steps, as Galaxy names them."""

    DATA_INPUT = "data_input"
    DATA_COLLECTION_INPUT = "data_collection_input"
    PARAMETER_INPUT = "parameter_input"
    TOOL = "tool"
    PAUSE = "pause"
    SUBWORKFLOW = "subworkflow"

    INPUTS = frozenset({DATA_INPUT, DATA_COLLECTION_INPUT, PARAMETER_INPUT})
    ALL = frozenset({DATA_INPUT, DATA_COLLECTION_INPUT, PARAMETER_INPUT, TOOL, PAUSE, SUBWORKFLOW})


class InvocationState:
    """States of an invocation: new → ready → scheduled → completed, or cancelling → cancelled, or failed."""

    NEW = "new"
    READY = "ready"
    SCHEDULED = "scheduled"
    COMPLETED = "completed"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"
    FAILED = "failed"

    # States a scheduler still has work in (``scheduled`` waits for its jobs to finish).
    ACTIVE = frozenset({NEW, READY, SCHEDULED, CANCELLING})
    TERMINAL = frozenset({COMPLETED, CANCELLED, FAILED})


class InvocationStepState:
    """States of an invocation step."""

    NEW = "new"
    READY = "ready"
    SCHEDULED = "scheduled"


class StoredWorkflow(Timestamps, Base):
    """A user's workflow: a name, flags, and its versions."""

    __tablename__ = "stored_workflow"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(sa.ForeignKey("galaxy_user.id"), index=True)
    name: Mapped[str] = mapped_column(sa.String(255))
    annotation: Mapped[str | None] = mapped_column(sa.Text)
    tags: Mapped[list] = mapped_column(default=list)
    published: Mapped[bool] = mapped_column(default=False)
    deleted: Mapped[bool] = mapped_column(default=False)
    # The newest version; no foreign key because workflow points back here.
    latest_workflow_id: Mapped[int | None]

    versions: Mapped[list["Workflow"]] = relationship(
        back_populates="stored_workflow", order_by="Workflow.version"
    )


class Workflow(Base):
    """One version of a workflow (or an embedded subworkflow), immutable once written."""

    __tablename__ = "workflow"

    id: Mapped[int] = mapped_column(primary_key=True)
    # Null for a subworkflow embedded in another workflow's version.
    stored_workflow_id: Mapped[int | None] = mapped_column(sa.ForeignKey("stored_workflow.id"), index=True)
    version: Mapped[int | None]
    name: Mapped[str] = mapped_column(sa.String(255))
    uuid: Mapped[str] = mapped_column(sa.String(36), index=True)
    annotation: Mapped[str | None] = mapped_column(sa.Text)
    # The normalized native (.ga) description, subworkflows inline: the source of exports.
    definition: Mapped[dict] = mapped_column(default=dict, deferred=True)
    create_time: Mapped[dt.datetime] = mapped_column(default=utcnow)

    stored_workflow: Mapped[StoredWorkflow | None] = relationship(back_populates="versions")
    steps: Mapped[list["WorkflowStep"]] = relationship(
        order_by="WorkflowStep.order_index", foreign_keys="WorkflowStep.workflow_id"
    )


class WorkflowStep(Base):
    """A step of a workflow version."""

    __tablename__ = "workflow_step"
    __table_args__ = (sa.UniqueConstraint("workflow_id", "order_index", name="uq_workflow_step_order"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    workflow_id: Mapped[int] = mapped_column(sa.ForeignKey("workflow.id"), index=True)
    order_index: Mapped[int]
    type: Mapped[str] = mapped_column(sa.String(32))
    label: Mapped[str | None] = mapped_column(sa.String(255))
    name: Mapped[str | None] = mapped_column(sa.String(255))
    uuid: Mapped[str] = mapped_column(sa.String(36))
    annotation: Mapped[str | None] = mapped_column(sa.Text)
    tool_id: Mapped[str | None] = mapped_column(sa.String(255))
    tool_version: Mapped[str | None] = mapped_column(sa.String(64))
    # Decoded tool state (tools) or input definition (optional, format, collection type,
    # parameter type, default) for input steps.
    tool_state: Mapped[dict] = mapped_column(default=dict)
    subworkflow_id: Mapped[int | None] = mapped_column(sa.ForeignKey("workflow.id"))
    # Outputs the description declares: [{"name", "type"}].
    outputs: Mapped[list] = mapped_column(default=list)
    # Labelled workflow outputs: [{"output_name", "label", "uuid"}].
    workflow_outputs: Mapped[list] = mapped_column(default=list)
    post_job_actions: Mapped[dict] = mapped_column(default=dict)
    position: Mapped[dict | None] = mapped_column(sa.JSON)
    # A conditional step's ``when`` expression (``$(inputs.NAME)`` and the like), else null.
    when_expression: Mapped[str | None] = mapped_column(sa.Text)

    input_connections: Mapped[list["WorkflowStepConnection"]] = relationship(
        foreign_keys="WorkflowStepConnection.input_step_id", order_by="WorkflowStepConnection.id"
    )


class WorkflowStepConnection(Base):
    """An edge: ``output_step``'s output ``output_name`` feeds ``input_step``'s input ``input_name``."""

    __tablename__ = "workflow_step_connection"

    id: Mapped[int] = mapped_column(primary_key=True)
    input_step_id: Mapped[int] = mapped_column(sa.ForeignKey("workflow_step.id"), index=True)
    input_name: Mapped[str] = mapped_column(sa.String(255))
    output_step_id: Mapped[int] = mapped_column(sa.ForeignKey("workflow_step.id"), index=True)
    output_name: Mapped[str] = mapped_column(sa.String(255))
    # For a subworkflow step: the order index of the subworkflow's input step fed.
    input_subworkflow_step_index: Mapped[int | None]


class WorkflowInvocation(Timestamps, Base):
    """One run of a workflow version into a history, with everything its scheduler needs."""

    __tablename__ = "workflow_invocation"
    __table_args__ = (sa.Index("ix_workflow_invocation_active", "state", "last_progress_time"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    uuid: Mapped[str] = mapped_column(sa.String(36), unique=True)
    user_id: Mapped[int] = mapped_column(sa.ForeignKey("galaxy_user.id"), index=True)
    workflow_id: Mapped[int] = mapped_column(sa.ForeignKey("workflow.id"), index=True)
    # The top-level stored workflow (null for a subworkflow's invocation).
    stored_workflow_id: Mapped[int | None] = mapped_column(sa.ForeignKey("stored_workflow.id"), index=True)
    history_id: Mapped[int] = mapped_column(sa.ForeignKey("history.id"), index=True)
    state: Mapped[str] = mapped_column(sa.String(32), default=InvocationState.NEW)
    scheduler: Mapped[str] = mapped_column(sa.String(64))
    parent_invocation_id: Mapped[int | None] = mapped_column(sa.ForeignKey("workflow_invocation.id"), index=True)
    parent_step_id: Mapped[int | None]
    # {order_index: {"src": "hda"|"hdca", "id": int} | {"value": ...}} for input steps.
    inputs: Mapped[dict] = mapped_column(default=dict)
    # {order_index: {param name or path: value}}: tool parameters given at invoke.
    parameters: Mapped[dict] = mapped_column(default=dict)
    # {name: text}: the invoke payload's replacement_params, for ``${name}`` in post-job renames.
    replacement_params: Mapped[dict] = mapped_column(default=dict)
    # When a deferred pass is due: wake-ups of an invocation that only waits for its jobs
    # are gathered into one pass per short period instead of one pass per finished job.
    pass_due_at: Mapped[dt.datetime | None]
    last_progress_time: Mapped[dt.datetime] = mapped_column(default=utcnow)

    steps: Mapped[list["WorkflowInvocationStep"]] = relationship(order_by="WorkflowInvocationStep.order_index")
    messages: Mapped[list["WorkflowInvocationMessage"]] = relationship(order_by="WorkflowInvocationMessage.id")


class WorkflowInvocationStep(Timestamps, Base):
    """The progress of one workflow step in an invocation."""

    __tablename__ = "workflow_invocation_step"
    __table_args__ = (
        sa.UniqueConstraint("invocation_id", "workflow_step_id", name="uq_workflow_invocation_step_step"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    invocation_id: Mapped[int] = mapped_column(sa.ForeignKey("workflow_invocation.id"), index=True)
    workflow_step_id: Mapped[int] = mapped_column(sa.ForeignKey("workflow_step.id"))
    order_index: Mapped[int]
    state: Mapped[str] = mapped_column(sa.String(32), default=InvocationStepState.NEW)
    # The user's decision on a pause step: null until set.
    action: Mapped[bool | None]
    # {output name: {"src": "hda"|"hdca", "id": int} | {"value": ...}}, set when scheduled.
    outputs: Mapped[dict] = mapped_column(default=dict)
    # A map-over's progress: mapped collection, element count, implicit output collections.
    mapping: Mapped[dict | None] = mapped_column(sa.JSON)
    jobs_created: Mapped[int] = mapped_column(default=0)
    job_id: Mapped[int | None]
    subworkflow_invocation_id: Mapped[int | None]


class WorkflowInvocationWakeup(Base):
    """Another scheduling pass is wanted: left by a message that found the lease taken.

    A row of its own, not a flag on the invocation: the lease holder has the invocation
    row locked, and a wake-up must never wait for it. The holder deletes it after its
    commit and, when there was one, runs one more pass.
    """

    __tablename__ = "workflow_invocation_wakeup"

    invocation_id: Mapped[int] = mapped_column(sa.ForeignKey("workflow_invocation.id"), primary_key=True)
    create_time: Mapped[dt.datetime] = mapped_column(default=utcnow)


class WorkflowInvocationMessage(Base):
    """A typed reason on an invocation: why it failed, was cancelled, or a warning."""

    __tablename__ = "workflow_invocation_message"

    id: Mapped[int] = mapped_column(primary_key=True)
    invocation_id: Mapped[int] = mapped_column(sa.ForeignKey("workflow_invocation.id"), index=True)
    reason: Mapped[str] = mapped_column(sa.String(64))
    # Order indexes of the step concerned and of the step that could not run because of it.
    workflow_step_index: Mapped[int | None]
    dependent_workflow_step_index: Mapped[int | None]
    job_id: Mapped[int | None]
    hda_id: Mapped[int | None]
    hdca_id: Mapped[int | None]
    output_name: Mapped[str | None] = mapped_column(sa.String(255))
    details: Mapped[str | None] = mapped_column(sa.Text)
    create_time: Mapped[dt.datetime] = mapped_column(default=utcnow)


# Schedulers ask after every finished job whether an invocation (or one of its steps) still
# has unfinished jobs; this index answers that without reading the finished ones. It is
# declared here, next to the queries that need it, on the jobs table.
sa.Index("ix_job_invocation_id_state", Job.invocation_id, Job.state)
