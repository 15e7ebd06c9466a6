"""The module Dramatiq's worker processes import: it sets the broker, then loads the actors.

``python -m workers.run`` starts ``dramatiq workers.main`` with the right queues.
"""

import ctypes
import signal

from workers.runtime import build_runtime

PR_SET_PDEATHSIG = 1


def _die_with_master() -> None:
    """Have the kernel send SIGTERM to this worker process when its Dramatiq master dies,
    so a master killed with SIGKILL never leaves workers consuming on their own."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: supervisord's watchdog still reaps them
        pass


_die_with_master()
runtime = build_runtime()
broker = runtime.broker
