"""Waking invocations from job ends: at once for the first, gathered for the rest.

A 10,000-element map-over ends 10,000 jobs, and each end must reach the scheduler (the
invocation may now be complete, or a step waiting on those outputs may start). One
message per end is 10,000 broker round trips in the workers and 10,000 deliveries to the
scheduler that each only confirm what the previous one said. Here the first end of an
invocation in a quiet period wakes it at once (a chain's next step starts without delay),
and the ends that follow within ``WINDOW_S`` are gathered into one wake-up sent when the
window closes: every end is still followed by a wake-up sent after it.

These wake-ups leave the process after the job's end committed. A process that dies with
some still gathered loses them; beat's scheduling sweep wakes any invocation that has not
moved for a while, so the invocation is late, never stuck.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

WINDOW_S = 0.025
_FORGET_AFTER = 10_000  # remembered invocations before the old ones are forgotten


class InvocationWakeups:
    """Throttles wake-ups per invocation: the first at once, the rest once per window."""

    def __init__(self, send: Callable[[list[int]], None], window_s: float = WINDOW_S):
        self.send = send
        self.window_s = window_s
        self.lock = threading.Lock()
        self.sent_at: dict[int, float] = {}
        self.pending: set[int] = set()
        self.timer: threading.Timer | None = None
        atexit.register(self.flush)

    def wake(self, invocation_id: int) -> None:
        """Wake the invocation now, or at the end of the current window if one was just woken."""
        now = time.monotonic()
        with self.lock:
            last = self.sent_at.get(invocation_id)
            if last is not None and now - last < self.window_s:
                self.pending.add(invocation_id)
                if self.timer is None:
                    self.timer = threading.Timer(last + self.window_s - now, self.flush)
                    self.timer.daemon = True
                    self.timer.start()
                return
            self._remember(invocation_id, now)
        self.send([invocation_id])

    def flush(self) -> None:
        """Send the gathered wake-ups."""
        now = time.monotonic()
        with self.lock:
            due, self.pending, self.timer = sorted(self.pending), set(), None
            for invocation_id in due:
                self._remember(invocation_id, now)
        if due:
            try:
                self.send(due)
            except Exception:  # noqa: BLE001 - a timer thread: beat's sweep makes up for these
                log.exception("could not wake invocations %s", due)

    def _remember(self, invocation_id: int, now: float) -> None:
        if len(self.sent_at) >= _FORGET_AFTER:
            self.sent_at = {i: t for i, t in self.sent_at.items() if now - t < self.window_s}
        self.sent_at[invocation_id] = now
