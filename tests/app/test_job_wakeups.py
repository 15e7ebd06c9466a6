"""Invocation wake-ups from job ends: the first at once, the rest gathered per window."""

from __future__ import annotations

import threading
import time

from app.jobs.wakeups import InvocationWakeups


def test_first_wake_goes_at_once_and_later_ones_are_gathered_after_them():
    sent: list[tuple[float, list[int]]] = []
    done = threading.Event()

    def send(ids: list[int]) -> None:
        sent.append((time.monotonic(), ids))
        if len(sent) == 3:
            done.set()

    wakeups = InvocationWakeups(send, window_s=0.2)
    start = time.monotonic()
    wakeups.wake(1)
    assert sent == [(sent[0][0], [1])] and sent[0][0] - start < 0.05  # the first: at once
    wakeups.wake(2)  # another invocation is not held back by the first
    for _ in range(100):
        wakeups.wake(1)  # gathered: one wake-up at the window's end
    assert [ids for _, ids in sent] == [[1], [2]]
    assert done.wait(2)
    at, ids = sent[2]
    assert ids == [1] and 0.15 <= at - start < 1.0
    time.sleep(0.3)
    assert len(sent) == 3  # nothing more without new ends


def test_a_wake_after_a_quiet_window_goes_at_once_and_flush_sends_what_is_gathered():
    sent: list[list[int]] = []
    wakeups = InvocationWakeups(sent.append, window_s=0.05)
    wakeups.wake(7)
    time.sleep(0.08)
    wakeups.wake(7)
    assert sent == [[7], [7]]
    wakeups.wake(7)
    wakeups.wake(8)
    wakeups.wake(8)
    wakeups.flush()  # what a worker's exit does
    assert sent == [[7], [7], [8], [7, 8]]


def test_gathered_wake_ups_leave_from_one_long_lived_thread():
    """The publisher keeps a broker connection per thread: flushes must not each make a thread."""
    threads: list[str] = []
    idents: set[int] = set()

    def send(ids: list[int]) -> None:
        threads.append(threading.current_thread().name)
        idents.add(threading.get_ident())

    wakeups = InvocationWakeups(send, window_s=0.03)
    for _ in range(4):
        wakeups.wake(5)  # at once (the first of a window) ...
        wakeups.wake(5)  # ... and gathered
        time.sleep(0.08)
    gathered = [name for name in threads if name != threading.current_thread().name]
    assert len(threads) == 8 and gathered == ["invocation-wakeups"] * 4
    assert len(idents) == 2  # this thread and the one flusher
