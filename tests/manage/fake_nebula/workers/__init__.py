"""A stand-in for Nebula's workers package (process tests only)."""

import os
import time


def record(event):
    """Append one line to $NEBULA_DATA_DIR/events.log."""
    with open(os.path.join(os.environ["NEBULA_DATA_DIR"], "events.log"), "a") as log:
        log.write(f"{time.time():.3f} {event}\n")
