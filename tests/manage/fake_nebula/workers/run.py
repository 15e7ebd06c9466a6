"""Behaves like a Dramatiq master: forks a worker, forwards SIGTERM, waits for it.

The worker counts the SIGTERMs it receives while it "finishes its message in flight"
(0.5 s): one means only the master signalled it; two would mean supervisord signalled
the whole process group as well. Like Dramatiq's, it does not notice its master dying.
"""

import os
import signal
import sys
import time

from workers import record


def worker(role):
    terms = []
    signal.signal(signal.SIGTERM, lambda *_: terms.append(1))
    while not terms:
        time.sleep(0.05)
    time.sleep(0.5)  # the message in flight
    record(f"{role}-child {os.getpid()} finished its message after {len(terms)} SIGTERM")
    os._exit(0)


def main():
    role = sys.argv[1]
    child = os.fork()
    if child == 0:
        worker(role)
    record(f"{role}-master {os.getpid()} started child {child}")

    def forward(signum, frame):
        os.kill(child, signal.SIGTERM)
        os.waitpid(child, 0)
        record(f"{role}-master {os.getpid()} stopped")
        sys.exit(0)

    signal.signal(signal.SIGTERM, forward)
    while True:
        time.sleep(1)


if __name__ == "__main__":
    main()
