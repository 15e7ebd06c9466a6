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
import os
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

WINDOW_S = 0.025
_FORGET_AFTER = 10_000  # remembered invocations before the old ones are forgotten


class InvocationWakeups:
    """Throttles wake-ups per invocation: the first at once, the rest once per window.

    Gathered wake-ups are sent by one long-lived thread per process (the publisher keeps a
    broker connection per thread: a thread per flush would open a connection each time).
    """

    def __init__(self, send: Callable[[list[int]], None], window_s: float = WINDOW_S):
        self.send = send
        self.window_s = window_s
        self.lock = threading.Condition()
        self.sent_at: dict[int, float] = {}
        self.pending: set[int] = set()
        self.due_at: float | None = None
        self.flusher_pid: int | None = None
        atexit.register(self.flush)

    def wake(self, invocation_id: int) -> None:
        """Wake the invocation now, or at the end of the current window if one was just woken."""
        now = time.monotonic()
        with self.lock:
            last = self.sent_at.get(invocation_id)
            if last is not None and now - last < self.window_s:
                self.pending.add(invocation_id)
                due = last + self.window_s
                if self.due_at is None or due < self.due_at:
                    self.due_at = due
                self._ensure_flusher()
                self.lock.notify()
                return
            self._remember(invocation_id, now)
        self.send([invocation_id])

    def flush(self) -> None:
        """Send the gathered wake-ups now."""
        now = time.monotonic()
        with self.lock:
            due, self.pending, self.due_at = sorted(self.pending), set(), None
            for invocation_id in due:
                self._remember(invocation_id, now)
        if due:
            try:
                self.send(due)
            except Exception:  # noqa: BLE001 - beat's sweep makes up for these
                log.exception("could not wake invocations %s", due)

    def _ensure_flusher(self) -> None:
        """Start the flushing thread of this process (again after a fork), lock held."""
        if self.flusher_pid != os.getpid():
            self.flusher_pid = os.getpid()
            threading.Thread(target=self._flush_loop, name="invocation-wakeups", daemon=True).start()

    def _flush_loop(self) -> None:
        while True:
            with self.lock:
                while self.due_at is None:
                    self.lock.wait()
                delay = self.due_at - time.monotonic()
                if delay > 0:
                    self.lock.wait(delay)
                    continue
            self.flush()

    def _remember(self, invocation_id: int, now: float) -> None:
        if len(self.sent_at) >= _FORGET_AFTER:
            self.sent_at = {i: t for i, t in self.sent_at.items() if now - t < self.window_s}
        self.sent_at[invocation_id] = now
