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
import inspect
import logging
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
        REGISTRY[action] = TaskSpec(
            fn=fn, queue=queue, action=action, request_model=request_model, tracked=tracked,
            params=params,
            options=dict(time_limit=time_limit, max_retries=max_retries, min_backoff=min_backoff,
                         max_backoff=max_backoff, priority=priority, **options),
        )
        return fn

    return decorate


class Container:
    """Resolves a task's service arguments by type.

    ``factories`` maps a type to a function of the message scope returning the instance;
    the ``Session`` is the message's own, committed when the task returns.
    """

    def __init__(self, factories: dict[type, Callable[["MessageScope"], Any]], session_factory):
        self.factories = factories
        self.session_factory = session_factory

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


@dataclass
class MessageScope:
    """What one message's run sees: its session, its task id, its progress reporter."""

    session: Session
    task_id: str | None
    progress: "Progress"
    failure: TaskFailure | None = None


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


@contextlib.contextmanager
def _tracking(spec: TaskSpec, session_factory, task_id: str | None) -> Iterator[None]:
    """Write STARTED before and SUCCESS/FAILURE after a tracked task's run."""
    if not spec.tracked or task_id is None:
        yield
        return
    with session_factory.begin() as session:
        session.execute(sa.update(Task).where(Task.id == task_id).values(
            state=TaskState.STARTED, attempts=Task.attempts + 1, update_time=utcnow()))
    try:
        yield
    except BaseException as exc:
        with session_factory.begin() as session:
            session.execute(sa.update(Task).where(Task.id == task_id).values(
                state=TaskState.RETRY, error=f"{type(exc).__name__}: {exc}"[:4000], update_time=utcnow()))
        raise


def _finish(spec: TaskSpec, session: Session, task_id: str | None, result: Any) -> None:
    if spec.tracked and task_id is not None:
        session.execute(sa.update(Task).where(Task.id == task_id).values(
            state=TaskState.SUCCESS, result=_jsonable(result), progress=1.0, error=None,
            update_time=utcnow()))


def _jsonable(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    return value


def make_runner(spec: TaskSpec, container: Container) -> Callable[..., Any]:
    """The function the Dramatiq actor runs for a task."""

    def run(request: dict[str, Any], failure: dict[str, Any] | None = None) -> Any:
        parsed = spec.request_model.model_validate(request)
        message = CurrentMessage.get_current_message()
        task_id = message.message_id if message is not None else None
        with _tracking(spec, container.session_factory, task_id):
            session = container.session_factory()
            try:
                scope = MessageScope(session, task_id, Progress(container.session_factory, task_id),
                                     TaskFailure(**failure) if failure else None)
                kwargs = {name: container.resolve(kind, scope) for name, kind in spec.params.items()}
                result = spec.fn(request=parsed, **kwargs)
                _finish(spec, session, task_id, result)
                session.commit()
            except BaseException:
                session.rollback()
                raise
            finally:
                session.close()
        return _jsonable(result)

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
