"""Cross-process wake-ups for the embedded SQL broker, so idle consumers need not poll fast.

A message enqueued by another process must reach this process's idle consumers within
milliseconds. On PostgreSQL, the sender's ``NOTIFY`` (``app.messaging``) carries the queue
name; on SQLite, a change of ``PRAGMA data_version`` tells that another connection committed.
Both loops run in a daemon thread until ``stop`` is set; polling still delivers while either
is down.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable

from app.messaging import NOTIFY_CHANNEL
from app.models.base import utcnow
from app.models.queue import READY

log = logging.getLogger(__name__)

WATCH_INTERVAL = 0.005  # seconds between two looks at SQLite's data_version
_READY_SQL = "SELECT 1 FROM queue_message WHERE queue_name = ? AND state = ? AND available_at <= ? LIMIT 1"

Wake = Callable[[str | None], None]  # wakes the consumers of a queue (of every queue for None)


def watch_sqlite(database: str, queue_names: Callable[[], set[str]], wake: Wake, stop: threading.Event) -> None:
    """Wake consumers within milliseconds when another process commits a ready message.

    ``PRAGMA data_version`` changes when another connection commits; only then comes a
    read, which in WAL mode locks nobody out, so idle workers write nothing.
    """
    conn = sqlite3.connect(database, isolation_level=None, check_same_thread=False)
    seen = None
    while not stop.wait(WATCH_INTERVAL):
        try:
            version = conn.execute("PRAGMA data_version").fetchone()[0]
            if version == seen:
                continue
            seen = version
            now = utcnow().strftime("%Y-%m-%d %H:%M:%S.%f")  # SQLAlchemy's SQLite format
            for queue_name in queue_names():
                if conn.execute(_READY_SQL, (queue_name, READY, now)).fetchone():
                    wake(queue_name)
        except sqlite3.Error as exc:  # polling still delivers meanwhile
            log.warning("SQLite watcher: %s; retrying in 1s.", exc)
            stop.wait(1.0)
    conn.close()


def listen_postgres(conninfo: str, wake: Wake, stop: threading.Event) -> None:
    """Wake consumers on PostgreSQL NOTIFY; polling still covers a dropped listener."""
    import psycopg

    while not stop.is_set():
        try:
            with psycopg.connect(conninfo, autocommit=True) as conn:
                conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
                wake(None)  # whatever was sent while we were not listening
                while not stop.is_set():
                    for notify in conn.notifies(timeout=1.0):
                        wake(notify.payload)
        except psycopg.Error as exc:
            log.info("Queue listener lost its connection (%s); reconnecting.", exc)
            stop.wait(1.0)
