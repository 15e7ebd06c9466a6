"""The services a process shares: settings, database, ids, object store, enqueuer.

Built once per process by ``build_services(settings)`` (after any fork) and handed to the
web app and to the worker's task container.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from app.db import make_engine, make_session_factory
from app.ids import IdEncoder
from app.messaging import Enqueuer, Publisher
from app.objectstore import ObjectStore
from app.settings import Settings


@dataclass
class Services:
    """Process-wide services; cheap objects created lazily."""

    settings: Settings
    engine: Engine
    publisher: Publisher | None = None

    @cached_property
    def session_factory(self) -> sessionmaker[Session]:
        """Sessions bound to the engine, publishing their outbox after each commit."""
        factory = make_session_factory(self.engine)
        self.enqueuer.listen(factory)
        return factory

    @cached_property
    def ids(self) -> IdEncoder:
        """Encodes database ids into the API's opaque ids."""
        return IdEncoder(self.settings.id_secret)

    @cached_property
    def object_store(self) -> ObjectStore:
        """Where dataset files live."""
        return ObjectStore(self.settings.resolved_data_dir / "objects")

    @cached_property
    def enqueuer(self) -> Enqueuer:
        """Sends task messages inside the caller's transaction."""
        return Enqueuer(self.settings, self.engine, self.publisher)


def build_services(settings: Settings, *, publisher: Publisher | None = None, **engine_options) -> Services:
    """Services for one process (``engine_options`` go to ``make_engine``)."""
    return Services(settings=settings, engine=make_engine(settings, **engine_options), publisher=publisher)
