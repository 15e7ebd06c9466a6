"""The scheduler plugin interface: one method, ``schedule(run) -> Outcome``.

A plugin decides how much of an invocation may be scheduled now (a budget of jobs, or
none for a while); ``InvocationRun.advance`` does the mechanics. Plugins are registered by
name (see ``registry``) and chosen per invocation with ``scheduler`` in the invoke payload.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Protocol

from app.settings import Settings

if TYPE_CHECKING:
    from app.scheduling.run import InvocationRun


@dataclass(frozen=True)
class Outcome:
    """What one scheduling iteration did, and when the invocation wants the next one."""

    jobs_created: int = 0
    # Work is left that the iteration's budget did not cover: iterate again at once.
    again: bool = False
    # Nothing may be scheduled now (e.g. a fair-share cap): look again after this many seconds.
    retry_after: float | None = None


class Scheduler(Protocol):
    """A scheduler plugin."""

    name: ClassVar[str]

    def __init__(self, settings: Settings) -> None:
        """Plugins are built once per process with the settings."""

    def schedule(self, run: "InvocationRun") -> Outcome:
        """Run one iteration of the invocation (the caller holds its lease and commits)."""
