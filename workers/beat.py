"""Beat: the one process running periodic work (``python -m workers.beat``).

Each periodic task is a plain function of the runtime, registered in ``PERIODIC`` with its
interval. A failure is logged and the loop goes on; a file lock in the data dir keeps a
second beat on the same host from running at all.
"""

from __future__ import annotations

import fcntl
import logging
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from app.messaging import relay_outbox
from workers.actors.exports import short_term_storage_cleanup
from workers.actors.scheduling import scheduling_sweep
from workers.runtime import WorkerRuntime, build_runtime

log = logging.getLogger("workers.beat")


@dataclass(frozen=True)
class Periodic:
    """A function run every ``interval`` seconds."""

    name: str
    interval: float
    run: Callable[[WorkerRuntime], object]


def outbox_relay(rt: WorkerRuntime) -> int:
    """Publish outbox messages their writers could not (broker was down, process died)."""
    if rt.settings.uses_embedded_broker:
        return 0
    return relay_outbox(rt.services.engine, rt.services.publisher)


def recover_leases(rt: WorkerRuntime) -> int:
    """Give messages claimed by dead workers of the embedded broker back to the queue."""
    recover = getattr(rt.broker, "recover_expired_leases", None)
    return recover() if recover else 0


def resend_stalled_uploads(rt: WorkerRuntime) -> int:
    """Uploads whose pipeline stopped between two steps get it again."""
    from app.services.uploads import resend_stalled_uploads as resend

    with rt.services.session_factory.begin() as session:
        return resend(session, rt.services.enqueuer, stalled_after_s=rt.settings.upload_stall_timeout)


# Every periodic task, in one place.
PERIODIC: list[Periodic] = [
    Periodic("outbox_relay", 1.0, outbox_relay),
    Periodic("recover_leases", 10.0, recover_leases),
    Periodic("short_term_storage_cleanup", 300.0, short_term_storage_cleanup),
    Periodic("scheduling_sweep", 10.0, scheduling_sweep),
    Periodic("resend_stalled_uploads", 60.0, resend_stalled_uploads),
]


def run_forever(rt: WorkerRuntime, stop: threading.Event, tick: float = 0.2) -> None:
    """Run each periodic task when due until ``stop`` is set."""
    due = {p.name: 0.0 for p in PERIODIC}
    while not stop.is_set():
        now = time.monotonic()
        for periodic in PERIODIC:
            if now >= due[periodic.name]:
                due[periodic.name] = now + periodic.interval
                try:
                    result = periodic.run(rt)
                    if result:
                        log.info("periodic", extra={"task": periodic.name, "result": result})
                except Exception:  # noqa: BLE001 - top of the loop: log and keep going
                    log.exception("periodic task %s failed", periodic.name)
        stop.wait(tick)


def main() -> None:
    """Entry point: take the beat lock, serve metrics, then loop until SIGTERM/SIGINT."""
    import os

    rt = build_runtime()
    lock_path = rt.settings.resolved_data_dir / "beat.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    handle = lock_path.open("w")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise SystemExit(f"another beat holds {lock_path}; exactly one beat may run") from None
    port = int(os.environ.get("NEBULA_BEAT_METRICS_PORT", "9193"))
    if port:
        from workers.metrics import serve_metrics

        try:
            serve_metrics(rt, port)
        except OSError as exc:
            log.error("metrics endpoint not started on port %d: %s", port, exc)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    log.info("beat started", extra={"periodic": [p.name for p in PERIODIC]})
    run_forever(rt, stop)
    log.info("beat stopped")


if __name__ == "__main__":
    main()
