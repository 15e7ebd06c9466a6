"""The scheduler loop for one message: lease, one iteration, commit, release, and beat's sweep.

The lease is the invocation row itself: on PostgreSQL ``SELECT … FOR NO KEY UPDATE SKIP
LOCKED`` inside the iteration's transaction, on SQLite the write transaction (``BEGIN
IMMEDIATE``).
A process that dies mid-iteration loses its connection, so its lease and its half-done
work vanish together; the redelivered message (or the sweep) starts the iteration again,
and job keys make sure no job is created twice.

A message that finds the lease taken is not lost: it leaves a row in
``workflow_invocation_wakeup`` (never blocked by the holder's lock), tries the lease once
more, and otherwise returns; the holder, after committing, takes that row and runs one
more iteration. Either the holder sees the row or the message gets the lease. When the
holder is a thread of the same process, the wake-up is handed over in memory instead.

Every finished job wakes its invocation. Once an invocation is ``scheduled`` those
wake-ups can only complete it, so they are gathered: the first claims a pass due
``DEFER_S`` later (``pass_due_at``), the others see that pass coming and stop there.
A long map-over asks for its next iteration with a ``follow_on`` message, which waits for
the current iteration's lease rather than leaving a wake-up, so it starts at its commit.
"""

from __future__ import annotations

import datetime as dt
import enum
import logging
import threading

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from app.messaging import Enqueuer
from app.models import InvocationState, WorkflowInvocation, WorkflowInvocationMessage, WorkflowInvocationWakeup
from app.models.base import utcnow
from app.scheduling.registry import get_scheduler
from app.scheduling.run import InvocationRun
from app.schemas.tasks import AdvanceInvocation
from app.settings import Settings

log = logging.getLogger(__name__)

# Iterations one message may run back to back (wake-up loops) before it hands over.
MAX_PASSES_PER_MESSAGE = 20
# How long the request for a map-over's next iteration waits for the current one's lease.
FOLLOW_ON_WAIT_MS = 10_000
# Wake-ups of an invocation only waiting for its jobs are gathered over this many seconds.
DEFER_S = 0.2


class PassResult(enum.Enum):
    """What trying one iteration came to."""

    DONE = "done"  # an iteration ran and committed
    TAKEN = "taken"  # another scheduler holds the lease
    IDLE = "idle"  # nothing to do: the invocation is finished or gone


def advance_invocation(session_factory: sessionmaker[Session], invocation_id: int, *, settings: Settings,
                       enqueuer: Enqueuer, deferred: bool = False, follow_on: bool = False) -> str:
    """Handle one ``advance_invocation`` message; return what happened (for logs and tests)."""
    key = (str(session_factory.kw["bind"].url), invocation_id)
    if not follow_on and _local.join(key):
        return "joined"  # a thread of this process holds the lease: it iterates once more
    if not (deferred or follow_on) and _defer(session_factory, invocation_id, enqueuer):
        return "deferred"
    for attempt in range(MAX_PASSES_PER_MESSAGE):
        result = _one_pass(session_factory, invocation_id, settings, enqueuer, key,
                           wait_for_lease=follow_on and attempt == 0)
        if result is PassResult.TAKEN:
            if not _request_pass(session_factory, invocation_id):
                return "coalesced"
            # The holder may have finished before our wake-up landed: try once more ourselves.
            result = _one_pass(session_factory, invocation_id, settings, enqueuer, key, wait_for_lease=False)
            if result is PassResult.TAKEN:
                return "handed over"
        if result is PassResult.IDLE:
            return "idle"
        wanted_here = _local.leave(key)
        if not (_consume_pass_request(session_factory, invocation_id) or wanted_here):
            return "done"
    enqueuer_send(session_factory, enqueuer, invocation_id)
    return "continued"


class _LocalPasses:
    """Invocations a thread of this process is iterating, and whether a wake-up came meanwhile.

    Most wake-ups reach the process already holding the lease (one scheduler process is
    the default); they are handed to the holder here, without a query.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running: dict[tuple[str, int], bool] = {}

    def join(self, key: tuple[str, int]) -> bool:
        """Hand a wake-up to this process's holder, if there is one."""
        with self.lock:
            if key in self.running:
                self.running[key] = True
                return True
            return False

    def enter(self, key: tuple[str, int]) -> None:
        """A thread of this process took the lease."""
        with self.lock:
            self.running.setdefault(key, False)

    def leave(self, key: tuple[str, int]) -> bool:
        """The holder is done; True when a wake-up was handed to it meanwhile."""
        with self.lock:
            return self.running.pop(key, False)


_local = _LocalPasses()


def _defer(session_factory: sessionmaker[Session], invocation_id: int, enqueuer: Enqueuer) -> bool:
    """Gather the wake-ups of a scheduled invocation (one per finished job) into one pass per period.

    Such an invocation has nothing left to schedule; a pass only looks whether all its jobs
    are done. Returns True when a pass due within ``DEFER_S`` will see this wake-up's event.
    Most wake-ups end at the first SELECT, read on a plain connection (no ORM session).
    """
    engine = session_factory.kw["bind"]
    key = (str(engine.url), invocation_id)
    if _known_due.pending(key):
        return True  # this process claimed (or saw) a period still to come: no query at all
    with engine.connect() as conn:
        row = conn.execute(sa.select(WorkflowInvocation.state, WorkflowInvocation.pass_due_at)
                           .where(WorkflowInvocation.id == invocation_id)).first()
        conn.rollback()
    if row is None or row.state != InvocationState.SCHEDULED:
        return False
    now = utcnow()
    if row.pass_due_at is not None and row.pass_due_at > now:
        _known_due.remember(key, row.pass_due_at)
        return True  # a deferred pass, still to come, will see this message's event
    due = now + dt.timedelta(seconds=DEFER_S)
    with session_factory() as session:
        # Claim the next period unless another wake-up already did (then its pass is ours too).
        due_at = session.execute(
            sa.update(WorkflowInvocation)
            .where(WorkflowInvocation.id == invocation_id, WorkflowInvocation.state == InvocationState.SCHEDULED)
            .values(pass_due_at=sa.case(
                (sa.or_(WorkflowInvocation.pass_due_at.is_(None), WorkflowInvocation.pass_due_at <= now), due),
                else_=WorkflowInvocation.pass_due_at))
            .returning(WorkflowInvocation.pass_due_at)
        ).first()
        if due_at is None:
            return False  # no longer only waiting for jobs: run a pass now
        if due_at[0] == due:
            enqueuer.send(session, AdvanceInvocation(invocation_id=invocation_id, deferred=True),
                          delay_ms=int(DEFER_S * 1000))
        session.commit()
    _known_due.remember(key, due_at[0])
    return True


class _DueTimes:
    """Deferred passes this process knows to be committed and still to come, by invocation.

    A wake-up for such an invocation needs no query: that pass will run after it.
    """

    def __init__(self, limit: int = 10_000):
        self.limit = limit
        self.due: dict[tuple[str, int], dt.datetime] = {}
        self.lock = threading.Lock()

    def pending(self, key: tuple[str, int]) -> bool:
        """True when a deferred pass of (database, invocation) is known to come later."""
        with self.lock:
            due = self.due.get(key)
            if due is None:
                return False
            if due > utcnow():
                return True
            del self.due[key]
            return False

    def remember(self, key: tuple[str, int], due: dt.datetime) -> None:
        """Note a committed deferred pass."""
        with self.lock:
            if len(self.due) >= self.limit:
                self.due.clear()
            self.due[key] = due


_known_due = _DueTimes()


def _lock(session: Session, invocation_id: int, *, wait: bool = False) -> WorkflowInvocation | None:
    """The invocation row under this transaction's lease, or None when another holds it.

    ``wait``: wait (at most ``FOLLOW_ON_WAIT_MS``) for the holder instead of giving up.
    """
    stmt = sa.select(WorkflowInvocation).where(WorkflowInvocation.id == invocation_id)
    if session.get_bind().dialect.name == "postgresql":
        # NO KEY UPDATE: exclusive between schedulers, yet a wake-up row referencing the
        # invocation can still be inserted (its foreign key check takes KEY SHARE).
        if wait:
            session.execute(sa.text(f"SET LOCAL lock_timeout = '{FOLLOW_ON_WAIT_MS}ms'"))
            try:
                with session.begin_nested():
                    invocation = session.scalar(stmt.with_for_update(key_share=True))
            except OperationalError:  # the holder is still at it: leave a wake-up as anyone would
                return None
            session.execute(sa.text("SET LOCAL lock_timeout TO DEFAULT"))
            return invocation
        stmt = stmt.with_for_update(skip_locked=True, key_share=True)
    return session.scalar(stmt)


def _one_pass(session_factory: sessionmaker[Session], invocation_id: int, settings: Settings,
              enqueuer: Enqueuer, key: tuple[str, int], *, wait_for_lease: bool = False) -> PassResult:
    with session_factory() as session:
        invocation = _lock(session, invocation_id, wait=wait_for_lease)
        if invocation is None:
            exists = session.scalar(sa.select(WorkflowInvocation.id).where(WorkflowInvocation.id == invocation_id))
            return PassResult.TAKEN if exists else PassResult.IDLE
        if invocation.state in InvocationState.TERMINAL:
            return PassResult.IDLE
        _local.enter(key)
        try:
            _iterate(session, invocation, settings, enqueuer, session_factory)
        except DBAPIError:
            _local.leave(key)
            raise  # a database hiccup: the message is retried
        except Exception as exc:  # noqa: BLE001 - a bug must fail the invocation, not loop forever
            session.rollback()
            log.exception("scheduling invocation %s failed", invocation_id)
            _fail_unexpectedly(session_factory, invocation_id, f"{type(exc).__name__}: {exc}")
        except BaseException:
            _local.leave(key)  # killed mid-iteration: nothing of it committed, no holder left here
            raise
        return PassResult.DONE


def _iterate(session: Session, invocation: WorkflowInvocation, settings: Settings, enqueuer: Enqueuer,
             session_factory: sessionmaker[Session]) -> None:
    """One iteration of the invocation's scheduler plugin, committed."""
    invocation.pass_due_at = None

    def send_follow_on() -> None:
        with session_factory() as other:
            enqueuer.send(other, AdvanceInvocation(invocation_id=invocation.id, follow_on=True))
            other.commit()

    # On SQLite (one writer at a time) no second transaction can commit now: the request
    # then travels with this iteration's own messages.
    postgres = session.get_bind().dialect.name == "postgresql"
    run = InvocationRun(session, invocation, settings=settings, enqueuer=enqueuer,
                        send_follow_on=send_follow_on if postgres else None)
    outcome = get_scheduler(invocation.scheduler, settings).schedule(run)
    if outcome.again:
        run.request_next_pass()
    elif outcome.retry_after is not None:
        enqueuer.send(session, AdvanceInvocation(invocation_id=invocation.id),
                      delay_ms=int(outcome.retry_after * 1000))
    run.finish()
    session.commit()


def _request_pass(session_factory: sessionmaker[Session], invocation_id: int) -> bool:
    """Leave a wake-up for the lease holder; False when one is already waiting (or the invocation is gone)."""
    with session_factory() as session:
        table = WorkflowInvocationWakeup.__table__
        if session.scalar(sa.select(table.c.invocation_id).where(table.c.invocation_id == invocation_id)):
            return False
        dialect = session.get_bind().dialect.name
        insert = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)
        try:
            added = session.execute(
                insert.values(invocation_id=invocation_id, create_time=utcnow())
                .on_conflict_do_nothing(index_elements=["invocation_id"])
            ).rowcount
            session.commit()
        except IntegrityError:  # the invocation was deleted meanwhile
            return False
        return bool(added)


def _consume_pass_request(session_factory: sessionmaker[Session], invocation_id: int) -> bool:
    """After an iteration: take the wake-up left meanwhile, if any (then another pass is due)."""
    with session_factory() as session:
        table = WorkflowInvocationWakeup.__table__
        taken = session.execute(sa.delete(table).where(table.c.invocation_id == invocation_id)).rowcount
        session.commit()
        return bool(taken)


def _fail_unexpectedly(session_factory: sessionmaker[Session], invocation_id: int, details: str) -> None:
    with session_factory() as session:
        invocation = _lock(session, invocation_id)
        if invocation is None or invocation.state in InvocationState.TERMINAL:
            return
        invocation.state = InvocationState.FAILED
        invocation.update_time = utcnow()
        session.add(WorkflowInvocationMessage(invocation_id=invocation_id, reason="unexpected_failure",
                                              details=details[:4000]))
        session.commit()


def enqueuer_send(session_factory: sessionmaker[Session], enqueuer: Enqueuer, invocation_id: int,
                  delay_ms: int = 0) -> None:
    """Send an AdvanceInvocation in a transaction of its own."""
    with session_factory() as session:
        enqueuer.send(session, AdvanceInvocation(invocation_id=invocation_id), delay_ms=delay_ms)
        session.commit()


def sweep(session_factory: sessionmaker[Session], enqueuer: Enqueuer, *, stale_after_s: float = 30.0,
          limit: int = 500) -> int:
    """Beat's safety net: wake active invocations that have not progressed for a while.

    Their ``last_progress_time`` is bumped so each is woken at most once per period.
    """
    cutoff = utcnow() - dt.timedelta(seconds=stale_after_s)
    with session_factory() as session:
        stmt = (
            sa.select(WorkflowInvocation.id)
            .where(WorkflowInvocation.state.in_(InvocationState.ACTIVE),
                   WorkflowInvocation.last_progress_time < cutoff)
            .order_by(WorkflowInvocation.last_progress_time)
            .limit(limit)
        )
        if session.get_bind().dialect.name == "postgresql":
            stmt = stmt.with_for_update(skip_locked=True, key_share=True)
        ids = list(session.scalars(stmt))
        if not ids:
            return 0
        session.execute(sa.update(WorkflowInvocation).where(WorkflowInvocation.id.in_(ids))
                        .values(last_progress_time=utcnow()))
        for invocation_id in ids:
            enqueuer.send(session, AdvanceInvocation(invocation_id=invocation_id))
        session.commit()
    log.info("scheduling sweep woke %d invocation(s)", len(ids))
    return len(ids)
