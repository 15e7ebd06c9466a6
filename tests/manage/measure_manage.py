"""Figures for manage (not a test): start-to-healthy time, requests during graceful, SIGKILL.

    .venv/bin/python tests/manage/measure_manage.py           # stand-in programs
    .venv/bin/python tests/manage/measure_manage.py --real    # Nebula itself, SQLite

Runs from the repository root like the process tests, in a temporary data dir.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from manage_harness import Nebula, RequestLoop, wait_for  # noqa: E402


def timed(nebula: Nebula, *args: str) -> float:
    began = time.monotonic()
    done = nebula.manage(*args)
    if done.returncode != 0:
        raise SystemExit(f"manage {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
    return time.monotonic() - began


def graceful_under_load(nebula: Nebula, seconds_before: float = 2.0) -> dict:
    with RequestLoop(nebula.binds, clients=4) as load:
        time.sleep(seconds_before)
        before = load.served
        took = timed(nebula, "graceful")
        during = load.served - before
        time.sleep(1.0)
    return {"took_s": round(took, 2), "served_during": during, "served_total": load.served,
            "failed": load.failed, "retried_on_other_instance": load.retried}


def sigkill_worker(nebula: Nebula) -> dict:
    _, victim = nebula.states()["worker-main"]
    killed = time.monotonic()
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: nebula.states()["worker-main"][1] not in (0, victim), timeout=30, step=0.01)
    respawned = time.monotonic() - killed
    wait_for(lambda: nebula.states()["worker-main"][0] == "RUNNING", timeout=30, step=0.01)
    return {"respawned_s": round(respawned, 2), "running_again_s": round(time.monotonic() - killed, 2)}


def scenario(root: Path, web_instances: int, real: bool, start_timeout: int) -> dict:
    nebula = Nebula.create(root, web_instances=web_instances, fake=not real)
    settings = nebula.settings()
    for service in ("web", "scheduler", "beat"):
        settings["processes"][service]["start_timeout"] = start_timeout
    settings["processes"]["worker_pools"][0]["start_timeout"] = start_timeout
    nebula.write(settings)
    try:
        if real:
            timed(nebula, "db", "upgrade")
        figures = {"start_to_healthy_s": round(timed(nebula, "start"), 2)}
        figures["graceful"] = graceful_under_load(nebula)
        figures["sigkill_worker"] = sigkill_worker(nebula)
        figures["stop_s"] = round(timed(nebula, "stop"), 2)
        figures["left_after_stop"] = len(nebula.processes())
        return figures
    finally:
        nebula.kill_everything()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--real", action="store_true", help="run Nebula's own programs")
    args = parser.parse_args()
    # start_timeout is supervisord's startsecs: a program counts as started after that long
    for web_instances in (1, 2):
        for start_timeout in (5, 1) if args.real else (1,):
            with tempfile.TemporaryDirectory(prefix="mm") as root:
                figures = scenario(Path(root), web_instances, args.real, start_timeout)
            print(f"{'nebula' if args.real else 'stand-ins'}, {web_instances} web instance(s), "
                  f"start_timeout {start_timeout} s: {figures}")


if __name__ == "__main__":
    main()
