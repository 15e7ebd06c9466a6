"""The watchdog listener: leftovers of a dead program reaped, memory limits enforced."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from nebula_manage import memmon, watchdog
from nebula_manage.memmon import Limit, descendants, parse_limits, tree_mebibytes


def test_parse_limits() -> None:
    assert parse_limits(["web-0=512:hup", "worker-main=2048"]) == [
        Limit("web-0", 512, True), Limit("worker-main", 2048, False)
    ]
    with pytest.raises(ValueError):
        parse_limits(["web-0=lots"])


def test_descendants() -> None:
    parents = {10: 1, 11: 10, 12: 10, 13: 12, 20: 1}
    assert sorted(descendants(10, parents)) == [10, 11, 12, 13]


def test_tree_memory_from_proc(tmp_path: Path) -> None:
    for pid, pss in ((10, 1024), (11, 2048)):
        (tmp_path / str(pid)).mkdir()
        (tmp_path / str(pid) / "smaps_rollup").write_text(f"Rss: 9 kB\nPss: {pss} kB\n")
    assert tree_mebibytes(10, {10: 1, 11: 10}, tmp_path) == 3.0


class FakeRPC:
    def __init__(self) -> None:
        self.calls: list[tuple] = []
        self.supervisor = self

    def getAllProcessInfo(self) -> list[dict]:
        return [{"name": "web-0", "pid": 10, "statename": "RUNNING"},
                {"name": "worker-main", "pid": 20, "statename": "RUNNING"},
                {"name": "beat", "pid": 30, "statename": "RUNNING"}]

    def signalProcess(self, name, sig):
        self.calls.append(("signal", name, sig))

    def stopProcess(self, name, wait):
        self.calls.append(("stop", name))

    def startProcess(self, name, wait):
        self.calls.append(("start", name))


def test_programs_over_their_limit_are_reloaded_once_per_cooldown(monkeypatch) -> None:
    monkeypatch.setattr(memmon, "parent_map", lambda: {})
    monkeypatch.setattr(memmon, "tree_mebibytes", lambda pid, parents: {10: 600, 20: 900, 30: 5}[pid])
    limits = [Limit("web-0", 512, True), Limit("worker-main", 1024), Limit("beat", 1)]
    rpc, reloaded = FakeRPC(), {}
    memmon.check(rpc, limits, reloaded, now=1000.0)
    assert rpc.calls == [("signal", "web-0", "HUP"), ("stop", "beat"), ("start", "beat")]
    memmon.check(rpc, limits, reloaded, now=1010.0)  # within the cooldown
    assert len(rpc.calls) == 3


def test_the_watchdog_terminates_what_a_dead_program_left_in_its_group(tmp_path: Path) -> None:
    # a process group whose leader is gone, as after a Dramatiq master's SIGKILL
    leader = subprocess.Popen(["sh", "-c", "sleep 60 & echo $!; exit 0"], start_new_session=True,
                              stdout=subprocess.PIPE, text=True)
    orphan = int(leader.stdout.readline())
    leader.wait()
    payload = f"processname:worker-main groupname:worker-main from_state:RUNNING expected:0 pid:{leader.pid}"
    noted = tmp_path / "orphans"
    assert watchdog.group_members(leader.pid) == [orphan]
    watchdog.handle("PROCESS_STATE_EXITED", payload, rpc=None, limits=[], reloaded={}, orphans=noted)
    assert _wait_gone(orphan)
    assert noted.read_text() == f"{leader.pid}\n"  # for `manage stop` to wait on
    # a group with nobody left is neither signalled nor noted
    watchdog.handle("PROCESS_STATE_EXITED", payload, rpc=None, limits=[], reloaded={}, orphans=noted)
    assert noted.read_text() == f"{leader.pid}\n"


def _wait_gone(pid: int) -> bool:
    import os
    import time

    for _ in range(100):
        try:
            os.kill(pid, 0)
            state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
            if state == "Z":
                return True
        except (ProcessLookupError, FileNotFoundError):
            return True
        time.sleep(0.02)
    return False


def test_stop_waits_for_noted_orphans_then_kills_them(tmp_path: Path) -> None:
    import sys

    from nebula_manage.backend_supervisor import SupervisorBackend
    from nebula_manage.config import load_deployment

    deployment = load_deployment(None, {"NEBULA_DATA_DIR": str(tmp_path)}, sys.executable, tmp_path)
    deployment.state_dir.mkdir(parents=True)
    stubborn = subprocess.Popen(["sh", "-c", "trap '' TERM; sleep 60"], start_new_session=True)
    ended = subprocess.Popen(["true"], start_new_session=True)
    ended.wait()
    (deployment.state_dir / "orphans").write_text(f"{stubborn.pid}\n{ended.pid}\n")
    said = SupervisorBackend(deployment)._wait_for_orphans(timeout=0.5)
    assert stubborn.wait(timeout=5) == -9
    assert said == "; 2 process group(s) were left by programs that died: 2 process(es) still " \
                   "there after 0 s, killed"  # sh and its sleep
    assert not (deployment.state_dir / "orphans").exists()
