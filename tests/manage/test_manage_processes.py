"""manage driving a real supervisord: start, status, graceful, SIGKILL, refusals, stop.

The programs are the stand-ins of tests/manage/fake_nebula (a real gunicorn serving a tiny
app, Dramatiq-like masters that fork a worker), run by exactly the commands manage renders.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from manage_harness import Nebula, RequestLoop, wait_for

pytestmark = pytest.mark.slow


@pytest.fixture
def nebula(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nebula]:
    """Settings for two web instances, one worker pool, scheduler and beat; nothing of it
    survives the test."""
    nebula = Nebula.create(tmp_path_factory.mktemp("mg"))
    yield nebula
    if nebula.processes():
        nebula.manage("stop", timeout=60)
        nebula.kill_everything()


def _pids(nebula: Nebula) -> dict[str, int]:
    return {name: pid for name, (_, pid) in nebula.states().items() if name != "watchdog"}


def _child_terms(nebula: Nebula) -> list[str]:
    return [line for line in nebula.events() if "finished its message" in line]


def test_start_status_sigkill_refusals_stop(nebula: Nebula) -> None:
    began = time.monotonic()
    started = nebula.manage("start")
    assert started.returncode == 0, started.stdout + started.stderr
    assert time.monotonic() - began < 20
    assert "5 programs healthy" in started.stdout
    assert {state for state, _ in nebula.states().values()} == {"RUNNING"}

    again = nebula.manage("start")
    assert again.returncode == 0
    assert "already running" in again.stdout

    status = nebula.manage("status")
    assert status.returncode == 0
    assert status.stdout.count("RUNNING") == 6  # and the watchdog

    # supervisord restarts a worker master killed with SIGKILL, and the watchdog stops the
    # worker it left behind (which, like Dramatiq's, does not notice its master dying)
    _, victim = nebula.states()["worker-main"]
    (orphan,) = [line.split()[-1] for line in nebula.events() if f"master {victim} started" in line]
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: nebula.states()["worker-main"][1] not in (0, victim), timeout=10)
    wait_for(lambda: nebula.states()["worker-main"][0] == "RUNNING", timeout=10)
    wait_for(lambda: any(f"child {orphan} finished" in line for line in nebula.events()), timeout=10)
    assert (nebula.data_dir / "supervisor" / "orphans").read_text().split() == [str(victim)]

    # bad settings are refused with file, line, key and why; nothing running changes
    before = _pids(nebula)
    good = nebula.settings()
    nebula.write({**good, "processes": {**good["processes"], "beat": {"processes": 2}}})
    refused = nebula.manage("update")
    assert refused.returncode == 4
    assert f"{nebula.config}:" in refused.stderr
    assert "processes.beat.processes" in refused.stderr and "exactly one beat" in refused.stderr
    nebula.write({**good, "nebula": {**good["nebula"], "refuse_me": True}})  # the app refuses
    refused = nebula.manage("graceful")
    assert refused.returncode == 4
    assert "nebula.refuse_me: unknown setting" in refused.stderr
    assert _pids(nebula) == before
    nebula.write(good)

    stopped = nebula.manage("stop")
    assert stopped.returncode == 0, stopped.stderr
    assert nebula.processes() == []
    assert not (nebula.data_dir / "supervisor" / "supervisord.sock").exists()

    stopped_again = nebula.manage("stop")
    assert stopped_again.returncode == 0
    assert "not running" in stopped_again.stdout
    assert nebula.manage("status").returncode == 3
    assert nebula.manage("pm", "status").returncode == 3


def test_graceful_rolls_two_web_instances_without_failing_a_request(nebula: Nebula) -> None:
    # graceful on a stopped Nebula starts it
    first = nebula.manage("graceful")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "was not running; starting it" in first.stdout
    before = _pids(nebula)

    with RequestLoop(nebula.binds) as load:
        wait_for(lambda: load.served > 20, timeout=10)
        served_before = load.served
        reloaded = nebula.manage("graceful")
        served_during = load.served - served_before
    assert reloaded.returncode == 0, reloaded.stdout + reloaded.stderr
    assert load.failed == 0, load.errors[:5]
    assert served_during > 50

    after = _pids(nebula)
    assert all(after[name] != before[name] for name in before), (before, after)
    # web-0 answered again before web-1 was stopped
    assert reloaded.stdout.index("web-0: restarted") < reloaded.stdout.index("stopping web-1")
    assert "beat, scheduler, worker-main: restarted" in reloaded.stdout
    # each Dramatiq-like master forwarded one SIGTERM and its worker finished its message:
    # supervisord did not signal the whole group
    finished = _child_terms(nebula)
    assert len(finished) == 2 and all("after 1 SIGTERM" in line for line in finished), finished


def test_graceful_reloads_a_single_web_instance_with_sighup(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    nebula = Nebula.create(tmp_path_factory.mktemp("mg1"), web_instances=1)
    try:
        assert nebula.manage("start").returncode == 0
        master = nebula.states()["web-0"][1]
        with RequestLoop(nebula.binds) as load:
            wait_for(lambda: load.served > 20, timeout=10)
            reloaded = nebula.manage("graceful", "web")
            time.sleep(0.5)
        assert reloaded.returncode == 0, reloaded.stdout + reloaded.stderr
        assert "SIGHUP" in reloaded.stdout
        assert load.failed == 0, load.errors[:5]
        assert nebula.states()["web-0"][1] == master  # same gunicorn master, new workers
        assert nebula.manage("stop").returncode == 0
        assert nebula.processes() == []
    finally:
        nebula.kill_everything()


def test_update_applies_changes_and_removes_stale_programs(nebula: Nebula) -> None:
    assert nebula.manage("start").returncode == 0
    before = _pids(nebula)
    settings = nebula.settings()
    pools = settings["processes"]["worker_pools"]
    pools[0]["threads"] = 2  # changes worker-main only
    settings["processes"]["beat"]["enable"] = False
    settings["processes"]["worker_pools"] = pools + [
        {"name": "exports", "queues": ["exports"], "processes": 1, "start_timeout": 1,
         "stop_timeout": 10}
    ]
    nebula.write(settings)

    updated = nebula.manage("update")
    assert updated.returncode == 0, updated.stdout + updated.stderr
    conf_d = nebula.data_dir / "supervisor" / "conf.d"
    assert not (conf_d / "beat.conf").exists()
    assert (conf_d / "worker-exports.conf").exists()
    after = _pids(nebula)
    assert "beat" not in after
    assert after["worker-main"] != before["worker-main"]
    for unchanged in ("web-0", "web-1", "scheduler"):
        assert after[unchanged] == before[unchanged]
    wait_for(lambda: nebula.states()["worker-exports"][0] == "RUNNING", timeout=10)
    assert "nothing changed" in nebula.manage("update").stdout


def test_the_repository_supervisor_folder_never_shadows_supervisord(tmp_path: Path) -> None:
    # every test here runs manage (and so supervisord's package) from the repository root,
    # where the supervisor/ folder comes first on sys.path: it must stay a plain folder
    repo_supervisor = Path(__file__).resolve().parents[2] / "supervisor"
    assert not (repo_supervisor / "__init__.py").exists()
    shown = Nebula.create(tmp_path).manage("pm", "version")
    assert shown.returncode == 3 and "not running" in shown.stderr  # supervisor imported fine
