"""One scheduling iteration of one invocation: ``InvocationRun.advance(job_budget)``.

The caller holds the invocation's lease and owns the transaction. An iteration walks the
steps in topological order and schedules each whose inputs are ready (input steps at
once, tool steps when their input datasets are done, pause steps on the user's action,
subworkflows as sub-invocations), creating at most ``job_budget`` jobs. When every step
is scheduled the invocation is ``scheduled``; when its jobs and sub-invocations have
finished it is ``completed`` (or ``failed``, saying which job failed).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from app.messaging import Enqueuer
from app.models import (
    History,
    InvocationState,
    InvocationStepState,
    Job,
    JobState,
    WorkflowInvocation,
    WorkflowInvocationMessage,
    WorkflowInvocationStep,
)
from app.models.base import utcnow
from app.scheduling import steps as step_modules
from app.scheduling.plugin import Outcome
from app.scheduling.subworkflow_mapping import Structure, read_structure
from app.scheduling.values import ACTIVE_JOB_STATES, StepFailure, ValueReader
from app.schemas.tasks import AdvanceInvocation
from app.settings import Settings
from app.workflows.plan import PlanStep, WorkflowPlan, load_plan

log = logging.getLogger(__name__)


class InvocationRun:
    """The state one iteration works on: the invocation, its plan and its step rows."""

    def __init__(self, session: Session, invocation: WorkflowInvocation, *, settings: Settings, enqueuer: Enqueuer,
                 send_follow_on: Callable[[], None] | None = None):
        self.session = session
        self.send_follow_on = send_follow_on
        self.invocation = invocation
        self.settings = settings
        self.enqueuer = enqueuer
        self.plan: WorkflowPlan = load_plan(session, invocation.workflow_id)
        self._rows: dict[int, WorkflowInvocationStep] | None = None
        self.values = ValueReader(session, invocation.id)
        self.jobs_created = 0
        self.changed = False
        self.initial_state = invocation.state
        self.next_pass_requested = False
        self._map_structure: Structure | None = None
        self._map_structure_read = False

    @property
    def map_structure(self) -> Structure | None:
        """What this invocation is mapped over, when it is a subworkflow mapped over a collection."""
        if not self._map_structure_read:
            self._map_structure = read_structure(self.session, self.invocation)
            self._map_structure_read = True
        return self._map_structure

    @property
    def rows(self) -> dict[int, WorkflowInvocationStep]:
        """The invocation's step rows by order index (read on first use)."""
        if self._rows is None:
            self._rows = {
                row.order_index: row
                for row in self.session.scalars(
                    sa.select(WorkflowInvocationStep).where(WorkflowInvocationStep.invocation_id == self.invocation.id)
                )
            }
        return self._rows

    def request_next_pass(self) -> None:
        """Ask for another iteration right after this one (once per iteration).

        Called before a slice's jobs are created. Where the driver can, the message goes
        out at once in a transaction of its own: a scheduler thread then waits for this
        iteration's lease and starts the next one the moment this one commits, while this
        thread is still publishing the slice's job messages.
        """
        if self.next_pass_requested:
            return
        self.next_pass_requested = True
        if self.send_follow_on is not None:
            self.send_follow_on()
        else:
            self.enqueuer.send(self.session, AdvanceInvocation(invocation_id=self.invocation.id))

    # -- the iteration -----------------------------------------------------------------

    def advance(self, job_budget: int) -> Outcome:
        """Schedule what is ready, creating at most ``job_budget`` jobs."""
        invocation = self.invocation
        if invocation.state in InvocationState.TERMINAL:
            return Outcome()
        if invocation.state == InvocationState.CANCELLING:
            self.finish_cancel()
            return Outcome()
        if self._past_deadline():
            limit = self.settings.maximum_workflow_invocation_duration
            self.fail(StepFailure("unexpected_failure",
                                  details=f"the invocation was still running after {limit} s "
                                          "(maximum_workflow_invocation_duration)"))
            return Outcome()
        if self.session.scalar(sa.select(History.deleted).where(History.id == invocation.history_id)):
            self.add_message("history_deleted", details=f"history {invocation.history_id} was deleted")
            self.finish_cancel()
            return Outcome()
        if invocation.state == InvocationState.SCHEDULED:
            # Every step is scheduled: only its jobs (and sub-invocations) are awaited.
            self._check_completion()
            return Outcome()
        if invocation.state == InvocationState.NEW:
            self.set_state(InvocationState.READY)
        try:
            budget_hit = self._schedule_steps(job_budget)
        except StepFailure as failure:
            self.fail(failure)
            return Outcome(jobs_created=self.jobs_created)
        if all(row.state == InvocationStepState.SCHEDULED for row in self.rows.values()):
            if invocation.state == InvocationState.READY:
                self.set_state(InvocationState.SCHEDULED)
            self._check_completion()
        return Outcome(jobs_created=self.jobs_created, again=budget_hit)

    def _schedule_steps(self, job_budget: int) -> bool:
        """Walk the steps in topological order; True when the job budget stopped one."""
        budget_hit = False
        for index in self.plan.order:
            row = self.rows.get(index)
            if row is None or row.state == InvocationStepState.SCHEDULED:
                continue
            step = self.plan.step(index)
            if not self.sources_scheduled(step):
                continue
            remaining = max(0, job_budget - self.jobs_created)
            if step_modules.schedule(self, step, row, remaining) == step_modules.BUDGET:
                budget_hit = True
        return budget_hit

    def sources_scheduled(self, step: PlanStep) -> bool:
        """True when every step this one reads from is scheduled."""
        return all(self.rows[c.source_index].state == InvocationStepState.SCHEDULED for c in step.connections)

    def connected_values(self, step: PlanStep) -> dict[str, list[dict[str, Any] | None]]:
        """Input name → the values connected to it (the sources' outputs)."""
        values: dict[str, list[dict[str, Any] | None]] = {}
        for conn in step.connections:
            outputs = self.rows[conn.source_index].outputs or {}
            if conn.output_name not in outputs:
                raise StepFailure("output_not_found", step=conn.source_index, dependent_step=step.order_index,
                                  output_name=conn.output_name)
            values.setdefault(conn.input_name, []).append(outputs[conn.output_name])
        return values

    def mark_scheduled(self, row: WorkflowInvocationStep, outputs: dict[str, Any]) -> None:
        """A step is done: record its outputs."""
        row.outputs = outputs
        row.state = InvocationStepState.SCHEDULED
        self.changed = True

    def mark_ready(self, row: WorkflowInvocationStep) -> None:
        """A step has started (a pause waiting for its action, a map-over part-way)."""
        if row.state != InvocationStepState.READY:
            row.state = InvocationStepState.READY
            self.changed = True

    # -- states, messages, wake-ups ---------------------------------------------------

    def set_state(self, state: str) -> None:
        """Change the invocation's state."""
        if self.invocation.state != state:
            self.invocation.state = state
            self.changed = True

    def add_message(self, reason: str, **fields: Any) -> None:
        """Record a typed reason on the invocation."""
        self.session.add(WorkflowInvocationMessage(invocation_id=self.invocation.id, reason=reason, **fields))
        self.changed = True

    def fail(self, failure: StepFailure) -> None:
        """The invocation fails for the reason given; its sub-invocations are cancelled."""
        log.info("invocation failed", extra={"invocation_id": self.invocation.id, "reason": failure.reason,
                                             "details": failure.details})
        self.add_message(failure.reason, **failure.message_fields())
        self.set_state(InvocationState.FAILED)
        self._cancel_subinvocations()

    def finish_cancel(self) -> None:
        """cancelling → cancelled: queued jobs never start, running ones are stopped, subworkflows follow."""
        from app.scheduling.jobs import cancel_invocation_jobs

        cancel_invocation_jobs(self.session, self.invocation.id)
        self._cancel_subinvocations()
        self.set_state(InvocationState.CANCELLED)

    def _cancel_subinvocations(self) -> None:
        subs = self.session.scalars(
            sa.select(WorkflowInvocation.id).where(
                WorkflowInvocation.parent_invocation_id == self.invocation.id,
                WorkflowInvocation.state.in_(InvocationState.ACTIVE - {InvocationState.CANCELLING}),
            )
        ).all()
        if not subs:
            return
        self.session.execute(
            sa.update(WorkflowInvocation).where(WorkflowInvocation.id.in_(subs))
            .values(state=InvocationState.CANCELLING, update_time=utcnow())
        )
        for sub_id in subs:
            self.session.add(WorkflowInvocationMessage(invocation_id=sub_id, reason="user_request",
                                                       details="the parent invocation stopped"))
            self.enqueuer.send(self.session, AdvanceInvocation(invocation_id=sub_id))

    def _check_completion(self) -> None:
        """scheduled → completed once its jobs and sub-invocations are done (failed if a job failed)."""
        invocation_id = self.invocation.id
        active_job = self.session.scalar(
            sa.select(Job.id).where(Job.invocation_id == invocation_id, Job.state.in_(ACTIVE_JOB_STATES)).limit(1)
        )
        if active_job is not None:
            return
        subs = self.session.execute(
            sa.select(WorkflowInvocation.id, WorkflowInvocation.state, WorkflowInvocation.parent_step_id)
            .where(WorkflowInvocation.parent_invocation_id == invocation_id)
        ).all()
        if any(state not in InvocationState.TERMINAL for _, state, _ in subs):
            return
        failed_job = self.session.execute(
            sa.select(Job.id, Job.invocation_step_id).where(Job.invocation_id == invocation_id,
                                                            Job.state == JobState.ERROR).limit(1)
        ).first()
        if failed_job is not None:
            step_index = next((r.order_index for r in self.rows.values() if r.id == failed_job.invocation_step_id), None)
            self.fail(StepFailure("job_failed", step=step_index, job_id=failed_job.id))
            return
        bad_sub = next(((sid, pstep) for sid, state, pstep in subs if state != InvocationState.COMPLETED), None)
        if bad_sub is not None:
            step_index = next((r.order_index for r in self.rows.values() if r.id == bad_sub[1]), None)
            self.fail(StepFailure("unexpected_failure", step=step_index,
                                  details=f"subworkflow invocation {bad_sub[0]} did not complete"))
            return
        self.set_state(InvocationState.COMPLETED)

    def _past_deadline(self) -> bool:
        limit = dt.timedelta(seconds=self.settings.maximum_workflow_invocation_duration)
        return self.invocation.create_time + limit < utcnow()

    def finish(self) -> None:
        """Record progress and wake the parent invocation when the state changed."""
        invocation = self.invocation
        if self.changed or self.jobs_created:
            invocation.last_progress_time = utcnow()
            invocation.update_time = utcnow()
        if invocation.parent_invocation_id and invocation.state != self.initial_state:
            self.enqueuer.send(self.session, AdvanceInvocation(invocation_id=invocation.parent_invocation_id))
