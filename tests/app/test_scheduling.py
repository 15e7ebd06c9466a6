"""The scheduler driver and plugins: job cap, crash safety, fair share, deadline, sweep, leases on PostgreSQL."""

from __future__ import annotations

import datetime as dt
import threading
import time

import pytest
import sqlalchemy as sa

from app.migrate import upgrade
from app.models import (
    Dataset,
    History,
    InvocationState,
    Job,
    User,
    WorkflowInvocation,
    WorkflowInvocationMessage,
)
from app.models.base import utcnow
from app.scheduling import driver, mapping, registry
from app.services import collections, invocations, workflows
from app.services.registry import build_services
from tests.app.conftest import make_settings
from tests.app.test_workflows import load


class NullPublisher:
    """Drops published messages: these tests call the driver themselves."""

    def __init__(self):
        self.published = []

    def publish_many(self, items):
        self.last, self.last_delay_ms = items[-1]
        self.published.extend(message for message, _ in items)


class World:
    """A user, a history, N datasets in a list, and the map-over workflow, written through the services."""

    def __init__(self, settings, elements: int = 5, publisher=NullPublisher):
        """``publisher=None`` publishes to the configured broker for real."""
        self.settings = settings
        self.services = build_services(settings, publisher=publisher() if publisher else None)
        with self.services.session_factory() as session:
            user = User(username="sched", email="sched@example.org")
            session.add(user)
            session.flush()
            history = History(user_id=user.id, name="h", hid_counter=elements + 1)
            session.add(history)
            session.flush()
            datasets = [Dataset(history_id=history.id, user_id=user.id, hid=i + 1, name=f"d{i}", state="ok",
                                extension="txt") for i in range(elements)]
            session.add_all(datasets)
            session.flush()
            hdca = collections.create_collection(
                session, user=user, history=history, collection_type="list", name="list",
                elements=[collections.ElementSpec(f"e{i}", dataset_id=d.id) for i, d in enumerate(datasets)])
            stored = workflows.create_workflow(session, user, workflows.parse_description(load("map_over.gxwf.yml")))
            session.commit()
            self.user_id, self.history_id, self.hdca_id, self.stored_id = user.id, history.id, hdca.id, stored.id

    def invoke(self, scheduler: str | None = None) -> int:
        with self.services.session_factory() as session:
            user = session.get(User, self.user_id)
            stored = session.get(workflows.StoredWorkflow, self.stored_id)
            request = invocations.InvokeRequest(
                inputs={"the_list": {"src": "hdca", "id": self.services.ids.encode(self.hdca_id)}},
                history_id=self.services.ids.encode(self.history_id), scheduler=scheduler)
            [invocation] = invocations.invoke(session, user, stored, workflows.version_id(session, stored), request,
                                              settings=self.settings, enqueuer=self.services.enqueuer,
                                              ids=self.services.ids)
            session.commit()
            return invocation.id

    def advance(self, invocation_id: int, settings=None) -> str:
        return driver.advance_invocation(self.services.session_factory, invocation_id,
                                         settings=settings or self.settings, enqueuer=self.services.enqueuer)

    def jobs(self, invocation_id: int) -> list[int]:
        with self.services.session_factory() as session:
            return sorted(session.scalars(sa.select(Job.element_index).where(Job.invocation_id == invocation_id)))

    def state(self, invocation_id: int) -> str:
        with self.services.session_factory() as session:
            return session.get(WorkflowInvocation, invocation_id).state

    def messages(self, invocation_id: int) -> list[WorkflowInvocationMessage]:
        with self.services.session_factory() as session:
            return list(session.scalars(sa.select(WorkflowInvocationMessage)
                                        .where(WorkflowInvocationMessage.invocation_id == invocation_id)))

    def execute(self, statement) -> None:
        with self.services.session_factory() as session:
            session.execute(statement)
            session.commit()


@pytest.fixture
def world(data_dir):
    settings = make_settings(data_dir)
    upgrade(settings)
    made = World(settings)
    yield made
    made.services.engine.dispose()


def test_registry_has_builtins_and_entry_points(world):
    assert {"core", "fair_share"} <= set(registry.scheduler_names())
    assert registry.resolve_name(None, world.settings) == world.settings.default_scheduler
    for name in ("core", "fair_share"):
        assert registry.get_scheduler(name, world.settings).name == name


def test_job_cap_per_iteration(world):
    capped = world.settings.model_copy(update={"maximum_workflow_jobs_per_scheduling_iteration": 2})
    invocation = world.invoke()
    world.advance(invocation, capped)
    assert world.jobs(invocation) == [0, 1]
    assert world.state(invocation) == "ready"
    world.advance(invocation, capped)
    world.advance(invocation, capped)
    assert world.jobs(invocation) == [0, 1, 2, 3, 4]
    assert world.state(invocation) == "scheduled"
    world.advance(invocation, capped)  # a repeated message changes nothing
    assert world.jobs(invocation) == [0, 1, 2, 3, 4]


class Killed(BaseException):
    """Stands for SIGKILL: nothing after it in the iteration runs, nothing of it commits."""


def test_crash_mid_iteration_creates_no_job_twice(world, monkeypatch):
    capped = world.settings.model_copy(update={"maximum_workflow_jobs_per_scheduling_iteration": 3})
    invocation = world.invoke()
    real = mapping.add_leaves

    def die(*args, **kwargs):
        real(*args, **kwargs)
        raise Killed()

    monkeypatch.setattr(mapping, "add_leaves", die)
    with pytest.raises(Killed):
        world.advance(invocation, capped)
    assert world.jobs(invocation) == []
    monkeypatch.setattr(mapping, "add_leaves", real)
    for _ in range(4):
        world.advance(invocation, capped)
    assert world.jobs(invocation) == [0, 1, 2, 3, 4]


def test_fair_share_caps_active_jobs_per_user(world):
    shared = world.settings.model_copy(update={"fair_share_max_active_jobs": 2})
    invocation = world.invoke(scheduler="fair_share")
    world.advance(invocation, shared)
    assert world.jobs(invocation) == [0, 1]
    world.advance(invocation, shared)
    assert world.jobs(invocation) == [0, 1], "no room until a job finishes"
    world.execute(sa.update(Job).where(Job.invocation_id == invocation, Job.element_index == 0).values(state="ok"))
    world.advance(invocation, shared)
    assert world.jobs(invocation) == [0, 1, 2]


def test_wake_up_during_an_iteration_of_this_process_is_handed_to_its_holder(world, monkeypatch):
    invocation = world.invoke()
    inside, release = threading.Event(), threading.Event()
    real, calls = driver._iterate, []

    def slow(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            inside.set()
            release.wait(10)
        return real(*args, **kwargs)

    monkeypatch.setattr(driver, "_iterate", slow)
    results: list[str] = []
    holder = threading.Thread(target=lambda: results.append(world.advance(invocation)))
    holder.start()
    assert inside.wait(10)
    assert world.advance(invocation) == "joined"
    release.set()
    holder.join(20)
    assert results == ["done"] and len(calls) == 2, "the holder iterated once more for the wake-up"
    assert world.jobs(invocation) == [0, 1, 2, 3, 4]


def test_unknown_scheduler_is_refused(world):
    with pytest.raises(Exception, match="unknown scheduler 'nope'"):
        world.invoke(scheduler="nope")


def test_invocation_past_its_maximum_duration_fails(world):
    short = world.settings.model_copy(update={"maximum_workflow_invocation_duration": 60})
    invocation = world.invoke()
    world.execute(sa.update(WorkflowInvocation).where(WorkflowInvocation.id == invocation)
                  .values(create_time=utcnow() - dt.timedelta(seconds=120)))
    world.advance(invocation, short)
    assert world.state(invocation) == "failed"
    [message] = world.messages(invocation)
    assert message.reason == "unexpected_failure" and "maximum_workflow_invocation_duration" in message.details
    assert world.jobs(invocation) == []


def test_unexpected_error_fails_the_invocation_with_details(world, monkeypatch):
    invocation = world.invoke()

    def broken(*args, **kwargs):
        raise ValueError("something broke")

    monkeypatch.setattr(mapping, "read_units", broken)
    assert world.advance(invocation) == "done"
    assert world.state(invocation) == "failed"
    assert "ValueError: something broke" in world.messages(invocation)[0].details


def test_sweep_wakes_stale_active_invocations(world):
    invocation = world.invoke()
    finished = world.invoke()
    world.execute(sa.update(WorkflowInvocation).where(WorkflowInvocation.id == finished)
                  .values(state=InvocationState.COMPLETED))
    world.execute(sa.update(WorkflowInvocation).values(last_progress_time=utcnow() - dt.timedelta(minutes=5)))
    publisher = world.services.enqueuer.publisher
    assert driver.sweep(world.services.session_factory, world.services.enqueuer, stale_after_s=30) == 1
    assert publisher.last["kwargs"]["request"]["invocation_id"] == invocation
    assert driver.sweep(world.services.session_factory, world.services.enqueuer, stale_after_s=30) == 0


@pytest.mark.postgres
def test_postgres_lease_taken_asks_the_holder_for_one_more_pass(pg_url, data_dir):
    settings = make_settings(data_dir, database_url=pg_url)
    upgrade(settings)
    world = World(settings)
    try:
        invocation = world.invoke()
        holder = world.services.session_factory()
        holder.execute(sa.select(WorkflowInvocation).where(WorkflowInvocation.id == invocation)
                       .with_for_update(key_share=True))
        started = time.monotonic()
        assert world.advance(invocation) == "handed over"
        assert time.monotonic() - started < 1.0, "a message never waits for the lease holder"
        assert world.advance(invocation) == "coalesced", "one wake-up is enough"
        assert world.jobs(invocation) == []
        holder.commit()  # the holder's iteration ends: it takes the wake-up and runs once more
        assert driver._consume_pass_request(world.services.session_factory, invocation) is True
        assert driver._consume_pass_request(world.services.session_factory, invocation) is False
        assert world.advance(invocation) == "done"
        assert world.jobs(invocation) == [0, 1, 2, 3, 4]
        holder.close()
    finally:
        world.services.engine.dispose()


@pytest.mark.postgres
def test_postgres_follow_on_waits_for_the_current_iteration(pg_url, data_dir):
    settings = make_settings(data_dir, database_url=pg_url)
    upgrade(settings)
    world = World(settings)
    try:
        invocation = world.invoke()
        holder = world.services.session_factory()
        holder.execute(sa.select(WorkflowInvocation).where(WorkflowInvocation.id == invocation)
                       .with_for_update(key_share=True))
        timer = threading.Timer(0.3, lambda: (holder.commit(), holder.close()))
        timer.start()
        result = driver.advance_invocation(world.services.session_factory, invocation, settings=settings,
                                           enqueuer=world.services.enqueuer, follow_on=True)
        timer.join()
        assert result == "done" and world.jobs(invocation) == [0, 1, 2, 3, 4]
        # a long map-over asks for its next iteration in a transaction of its own
        capped = settings.model_copy(update={"maximum_workflow_jobs_per_scheduling_iteration": 2})
        second = world.invoke()
        world.advance(second, capped)
        publisher = world.services.enqueuer.publisher
        requests = [m["kwargs"]["request"] for m in publisher.published if m["actor_name"] == "advance_invocation"]
        assert {"invocation_id": second, "deferred": False, "follow_on": True} in requests
    finally:
        world.services.engine.dispose()


@pytest.mark.postgres
def test_postgres_concurrent_messages_create_each_job_once(pg_url, data_dir):
    settings = make_settings(data_dir, database_url=pg_url)
    upgrade(settings)
    world = World(settings, elements=40)
    capped = settings.model_copy(update={"maximum_workflow_jobs_per_scheduling_iteration": 3})
    try:
        invocation = world.invoke()
        errors: list[BaseException] = []

        def hammer():
            try:
                for _ in range(8):
                    world.advance(invocation, capped)
            except BaseException as exc:  # noqa: BLE001 - collected for the assertion
                errors.append(exc)

        threads = [threading.Thread(target=hammer) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert errors == []
        while world.state(invocation) != "scheduled":
            world.advance(invocation, capped)
        assert world.jobs(invocation) == list(range(40))
    finally:
        world.services.engine.dispose()
