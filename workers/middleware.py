"""Nebula's Dramatiq middleware: error callbacks carrying typed requests, task failure state."""

from __future__ import annotations

import logging

import dramatiq
from dramatiq.middleware import Middleware

from app.messaging import ON_ERROR_OPTION
from workers.tasks import REGISTRY, mark_failed

log = logging.getLogger(__name__)


class TaskOutcomes(Middleware):
    """When a message fails for good: mark its tracked task FAILURE and send its error callback.

    Must come before Retries in the middleware list: "after" hooks run in reverse order,
    and only once Retries has run is it known whether the failure is final.
    """

    def __init__(self, session_factory):
        self.session_factory = session_factory

    @property
    def actor_options(self) -> set[str]:
        """The message option naming the error callback."""
        return {ON_ERROR_OPTION}

    def after_process_message(self, broker, message, *, result=None, exception=None):
        """Act on a final failure."""
        if exception is None or not message.failed:
            return
        error = f"{type(exception).__name__}: {exception}"
        spec = REGISTRY.get(message.actor_name)
        if spec is not None and spec.tracked:
            mark_failed(self.session_factory, message.message_id, error)
        target = message.options.get(ON_ERROR_OPTION)
        if target:
            callback = dramatiq.Message(**target)
            failure = {"type": type(exception).__name__, "message": str(exception)[:4000]}
            broker.enqueue(callback.copy(kwargs={**callback.kwargs, "failure": failure}))

    def after_skip_message(self, broker, message):
        """A skipped message (e.g. too old) counts as a final failure for tracking."""
        spec = REGISTRY.get(message.actor_name)
        if spec is not None and spec.tracked:
            mark_failed(self.session_factory, message.message_id, "skipped")
