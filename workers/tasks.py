"""The task decorator: ``@task(queue=…, action=…)``, Galaxy's ``galaxy_task`` on Dramatiq.

A task is a function whose ``request`` argument is a pydantic model (a
``app.messaging.TaskRequest``) and whose other arguments are services, resolved by type
from a ``Container`` when the message runs::

    @task(queue="default", action="fetch_data")
    def fetch_data(request: FetchData, session: Session, store: ObjectStore) -> None:
        uploads.fetch_data(session, request.job_id, store)

Decorating only records the task. Actors are created by ``bind_tasks(broker, container)``
in the worker entry module, after the broker is set — never at import time.
A tracked task (``tracked=True``) writes its state to the ``task`` row the app created
(``Enqueuer.send(..., track=True)``); ``Progress`` reports progress into it.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import threading
import time
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import dramatiq
import sqlalchemy as sa
from dramatiq.middleware import CurrentMessage
from pydantic import BaseModel
from sqlalchemy.orm import Session

from app.messaging import TaskRequest
from app.models import Task, TaskState
from app.models.base import utcnow

log = logging.getLogger(__name__)

DEFAULT_TIME_LIMIT_MS = 10 * 60 * 1000
DEFAULT_MAX_RETRIES = 5


@dataclass
class TaskFailure:
    """Why a message failed for good; given to error callbacks that ask for it."""

    type: str
    message: str


@dataclass
class TaskSpec:
    """A decorated task, waiting to be bound to a broker."""

    fn: Callable[..., Any]
    queue: str
    action: str
    request_model: type[TaskRequest]
    tracked: bool
    options: dict[str, Any]
    params: dict[str, Any] = field(default_factory=dict)

    def message(self, request: TaskRequest, **options: Any) -> dramatiq.Message:
        """A message for this task (not sent)."""
        return dramatiq.Message(
            queue_name=self.queue, actor_name=self.action, args=(),
            kwargs={"request": request.model_dump(mode="json")}, options=options,
        )


REGISTRY: dict[str, TaskSpec] = {}


def task(
    *,
    queue: str,
    action: str,
    tracked: bool = False,
    time_limit: int = DEFAULT_TIME_LIMIT_MS,
    max_retries: int = DEFAULT_MAX_RETRIES,
    min_backoff: int = 1000,
    max_backoff: int = 60_000,
    priority: int = 0,
    **options: Any,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Declare a task on a logical queue; see the module docstring."""

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        hints = typing.get_type_hints(fn)
        request_model = hints.get("request")
        if not (isinstance(request_model, type) and issubclass(request_model, BaseModel)):
            raise TypeError(f"task {action}: the 'request' argument must be a pydantic model")
        route = getattr(request_model, "route", None)
        if route is not None and (route.action, route.queue) != (action, queue):
            raise TypeError(f"task {action}: {request_model.__name__} routes to {route}")
        params = {
            name: hints.get(name)
            for name in inspect.signature(fn).parameters
            if name != "request"
        }
        spec = REGISTRY[action] = TaskSpec(
            fn=fn, queue=queue, action=action, request_model=request_model, tracked=tracked,
            params=params,
            options=dict(time_limit=time_limit, max_retries=max_retries, min_backoff=min_backoff,
                         max_backoff=max_backoff, priority=priority, **options),
        )
        fn.spec = spec  # type: ignore[attr-defined]
        fn.send = fn.delay = functools.partial(send, spec)  # type: ignore[attr-defined]
        return fn

    return decorate


def send(spec: TaskSpec, request: TaskRequest, *, delay_ms: int | None = None,
         broker: dramatiq.Broker | None = None) -> dramatiq.Message:
    """Enqueue a task straight on the broker it is bound to (for use inside workers).

    The web never calls this: it sends through ``Enqueuer.send`` inside its transaction.
    """
    actor = (broker or dramatiq.get_broker()).get_actor(spec.action)
    return actor.send_with_options(kwargs={"request": request.model_dump(mode="json")}, delay=delay_ms)


class Container:
    """Resolves a task's service arguments by type.

    ``factories`` maps a type to a function of the message scope returning the instance;
    the ``Session`` is the message's own, committed when the task returns.
    """

    def __init__(self, factories: dict[type, Callable[["MessageScope"], Any]], session_factory):
        self.factories = factories
        self.session_factory = session_factory
        self.started = StartedMarker(session_factory)

    def resolve(self, wanted: Any, scope: "MessageScope") -> Any:
        """The instance for one parameter type."""
        if wanted is Session:
            return scope.session
        if wanted is Progress:
            return scope.progress
        if wanted is TaskFailure:
            return scope.failure
        for kind, factory in self.factories.items():
            if wanted is kind or (isinstance(wanted, type) and issubclass(kind, wanted)):
                return factory(scope)
        raise LookupError(f"no service registered for {wanted!r}")


class MessageScope:
    """What one message's run sees: its session and progress reporter, made on first use."""

    def __init__(self, session_factory, task_id: str | None, failure: "TaskFailure | None" = None):
        self.session_factory = session_factory
        self.task_id = task_id
        self.failure = failure
        self._session: Session | None = None
        self._progress: Progress | None = None

    @property
    def session(self) -> Session:
        """The message's own session."""
        if self._session is None:
            self._session = self.session_factory()
        return self._session

    @property
    def progress(self) -> "Progress":
        """The progress reporter of a tracked task (a no-op for untracked ones)."""
        if self._progress is None:
            self._progress = Progress(self.session_factory, self.task_id)
        return self._progress

    @property
    def session_used(self) -> bool:
        """Whether the task asked for its session."""
        return self._session is not None

    def commit(self) -> None:
        """Commit the session if one was used."""
        if self._session is not None:
            self._session.commit()

    def close(self, *, rollback: bool = False) -> None:
        """Release the session."""
        if self._session is not None:
            if rollback:
                self._session.rollback()
            self._session.close()
            self._session = None


class Progress:
    """Reports a tracked task's progress (throttled to one write per half second)."""

    def __init__(self, session_factory, task_id: str | None):
        self.session_factory = session_factory
        self.task_id = task_id
        self._last = 0.0

    def update(self, fraction: float, message: str | None = None, *, force: bool = False) -> None:
        """Record progress between 0 and 1 (in a transaction of its own, visible at once)."""
        now = time.monotonic()
        if self.task_id is None or (not force and now - self._last < 0.5):
            return
        self._last = now
        with self.session_factory.begin() as session:
            session.execute(
                sa.update(Task).where(Task.id == self.task_id).values(
                    progress=max(0.0, min(1.0, fraction)), progress_message=(message or "")[:255],
                    state=TaskState.STARTED, update_time=utcnow())
            )


class StartedMarker:
    """Marks tracked tasks STARTED once they have run for a moment, from one thread per process.

    Writing STARTED before every task would double the database writes of short tracked
    tasks (their state goes PENDING → SUCCESS in the same transaction as their work);
    tasks that run longer than ``after`` seconds, or report progress, show STARTED.
    """

    def __init__(self, session_factory, after: float = 0.5):
        self.session_factory = session_factory
        self.after = after
        self._running: dict[str, float] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    @contextlib.contextmanager
    def running(self, task_id: str) -> Iterator[None]:
        """Track a task for the duration of the block."""
        with self._lock:
            self._running[task_id] = time.monotonic()
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="nebula-started-marker", daemon=True)
                self._thread.start()
        try:
            yield
        finally:
            with self._lock:
                self._running.pop(task_id, None)

    def _loop(self) -> None:
        marked: set[str] = set()
        while True:
            time.sleep(self.after / 2)
            now = time.monotonic()
            with self._lock:
                due = [t for t, since in self._running.items() if now - since >= self.after and t not in marked]
                marked &= set(self._running)
            if not due:
                continue
            try:
                with self.session_factory.begin() as session:
                    session.execute(sa.update(Task).where(
                        Task.id.in_(due), Task.state.in_([TaskState.PENDING, TaskState.RETRY])
                    ).values(state=TaskState.STARTED, update_time=utcnow()))
                marked.update(due)
            except Exception:  # noqa: BLE001 - top of the loop: log and try again next tick
                log.exception("could not mark tasks STARTED")


@contextlib.contextmanager
def _tracking(spec: TaskSpec, container: "Container", task_id: str | None) -> Iterator[None]:
    """Mark a tracked task STARTED while it runs long, and RETRY/error when it raises."""
    if not spec.tracked or task_id is None:
        yield
        return
    try:
        with container.started.running(task_id):
            yield
    except BaseException as exc:
        with container.session_factory.begin() as session:
            session.execute(sa.update(Task).where(Task.id == task_id).values(
                state=TaskState.RETRY, error=f"{type(exc).__name__}: {exc}"[:4000],
                attempts=Task.attempts + 1, update_time=utcnow()))
        raise


_TASK = Task.__table__
# Built once: constructing an UPDATE costs more Python time than running it.
_SUCCESS = (
    sa.update(_TASK)
    .where(_TASK.c.id == sa.bindparam("task_id"))
    .values(state=TaskState.SUCCESS, result=sa.bindparam("result"), progress=1.0, error=None,
            attempts=_TASK.c.attempts + 1, update_time=sa.bindparam("now"))
)


def _finish(scope: "MessageScope", task_id: str, result: Any) -> None:
    """Record SUCCESS: in the task's own transaction when it used its session (work and
    state commit together), else in one short statement of its own."""
    params = {"task_id": task_id, "result": _jsonable(result), "now": utcnow()}
    if scope.session_used:
        scope.session.execute(_SUCCESS, params)
    else:
        with scope.session_factory.kw["bind"].begin() as conn:
            conn.execute(_SUCCESS, params)


def _jsonable(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    return value


def make_runner(spec: TaskSpec, container: Container) -> Callable[..., Any]:
    """The function the Dramatiq actor runs for a task."""

    def run(request: dict[str, Any], failure: dict[str, Any] | None = None) -> Any:
        parsed = spec.request_model.model_validate(request)
        message = CurrentMessage.get_current_message()
        task_id = message.message_id if message is not None and spec.tracked else None
        with _tracking(spec, container, task_id):
            scope = MessageScope(container.session_factory, task_id, TaskFailure(**failure) if failure else None)
            try:
                kwargs = {name: container.resolve(kind, scope) for name, kind in spec.params.items()}
                result = spec.fn(request=parsed, **kwargs)
                if task_id is not None:
                    _finish(scope, task_id, result)
                scope.commit()
            except BaseException:
                scope.close(rollback=True)
                raise
            finally:
                scope.close()
        # Results live in the task row; returning them would make Dramatiq log a warning
        # for every message (no Results middleware), which costs more than the task.
        return None

    run.__name__ = spec.action
    return run


def bind_tasks(broker: dramatiq.Broker, container: Container, queue_name: Callable[[str], str]) -> None:
    """Create a Dramatiq actor for every registered task not yet bound to the broker."""
    for spec in REGISTRY.values():
        if spec.action in broker.actors:
            continue
        dramatiq.Actor(
            make_runner(spec, container), broker=broker, actor_name=spec.action,
            queue_name=queue_name(spec.queue), priority=spec.options["priority"],
            options={k: v for k, v in spec.options.items() if k != "priority"},
        )


def mark_failed(session_factory, task_id: str, error: str) -> None:
    """Record a tracked task's final failure (called when retries are exhausted)."""
    with session_factory.begin() as session:
        session.execute(sa.update(Task).where(Task.id == task_id).values(
            state=TaskState.FAILURE, error=error[:4000], update_time=utcnow()))
