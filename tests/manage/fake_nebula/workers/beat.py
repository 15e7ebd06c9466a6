"""Sleeps until SIGTERM, like beat between its periodic tasks."""

import os
import signal
import sys
import time

from workers import record

signal.signal(signal.SIGTERM, lambda *_: (record(f"beat {os.getpid()} stopped"), sys.exit(0)))
record(f"beat {os.getpid()} started")
while True:
    time.sleep(1)
