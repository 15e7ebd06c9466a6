"""start, stop, graceful and status against an in-memory backend: what is done, in what order."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from nebula_manage import operations
from nebula_manage.backend import Backend, Pending, ProcessState
from nebula_manage.config import load_deployment
from nebula_manage.files import SyncResult
from nebula_manage.operations import Operator


class FakeBackend(Backend):
    """Programs change state at once; every call is recorded."""

    name = "fake"

    def __init__(self, deployment, running: bool = True) -> None:
        super().__init__(deployment)
        self.running = running
        self.calls: list[tuple[str, ...]] = []
        self.loaded: dict[str, str] = {}
        self.next_pending = Pending()

    def load_all(self) -> None:
        self.loaded = {p.name: "RUNNING" for p in operations.build_programs(self.deployment)}

    def is_running(self) -> bool:
        return self.running

    def launch(self) -> str:
        self.calls.append(("launch",))
        self.running = True
        self.load_all()
        return "launched"

    def foreground_command(self):
        return None

    def pending(self, synced: SyncResult) -> Pending:
        return self.next_pending

    def add(self, name: str) -> None:
        self.calls.append(("add", name))
        self.loaded[name] = "RUNNING"

    def remove(self, name: str) -> None:
        self.calls.append(("remove", name))
        self.loaded.pop(name, None)

    def replace(self, name: str) -> None:
        self.calls.append(("replace", name))
        self.loaded[name] = "RUNNING"

    def states(self) -> dict[str, ProcessState]:
        return {name: ProcessState(name, state) for name, state in self.loaded.items()}

    def start(self, names: list[str]) -> None:
        self.calls.append(("start", *names))
        self.loaded.update({name: "RUNNING" for name in names})

    def stop(self, names: list[str]) -> None:
        self.calls.append(("stop", *names))
        self.loaded.update({name: "STOPPED" for name in names})

    def signal(self, name: str, signal: str) -> None:
        self.calls.append(("signal", name, signal))

    def shutdown(self, timeout: float) -> str:
        self.calls.append(("shutdown",))
        self.running = False
        self.loaded = {}
        return "shut down"

    def control_command(self, args: list[str]) -> list[str]:
        return ["true"]

    def follow_command(self) -> list[str]:
        return ["true"]


@pytest.fixture
def answering(monkeypatch) -> set[str]:
    """Binds whose /api/version answers (all of them unless a test removes some)."""
    up: set[str] = {"127.0.0.1:8081", "127.0.0.1:8082", "127.0.0.1:8080"}
    monkeypatch.setattr(operations, "web_answers", lambda bind, timeout: (bind in up, bind))
    return up


def operator(tmp_path: Path, binds: list[str], running: bool = True) -> tuple[Operator, list[str]]:
    config = tmp_path / "nebula.yml"
    config.write_text(
        f"nebula:\n  data_dir: {tmp_path / 'data'}\nprocesses:\n  web:\n    binds: {binds}\n"
    )
    deployment = load_deployment(config, {}, sys.executable, tmp_path)
    backend = FakeBackend(deployment, running)
    if running:
        backend.load_all()
    said: list[str] = []
    return Operator(deployment, backend, said.append), said


def test_graceful_rolls_web_instances_then_restarts_the_rest_together(tmp_path, answering):
    op, said = operator(tmp_path, ["127.0.0.1:8081", "127.0.0.1:8082"])
    assert operations.graceful(op, ()) == 0
    assert op.backend.calls == [
        ("stop", "web-0"), ("start", "web-0"),
        ("stop", "web-1"), ("start", "web-1"),
        ("stop", "scheduler", "worker-main"), ("stop", "beat"),
        ("start", "beat", "scheduler", "worker-main"),
    ]
    assert said[-1].startswith("graceful reload done")


def test_graceful_stops_rolling_when_an_instance_does_not_come_back(tmp_path, answering):
    answering.discard("127.0.0.1:8081")
    op, said = operator(tmp_path, ["127.0.0.1:8081", "127.0.0.1:8082"])
    assert operations.graceful(op, ("web",), timeout=0.3) == 1
    assert op.backend.calls == [("stop", "web-0"), ("start", "web-0")]  # web-1 left serving
    assert any("graceful reload stopped here" in line for line in said)


def test_graceful_reloads_a_single_web_instance_with_sighup(tmp_path, answering):
    op, _ = operator(tmp_path, ["127.0.0.1:8080"])
    assert operations.graceful(op, ("web",)) == 0
    assert op.backend.calls == [("signal", "web-0", "HUP")]


def test_graceful_applies_changes_program_by_program(tmp_path, answering):
    op, _ = operator(tmp_path, ["127.0.0.1:8081", "127.0.0.1:8082"])
    op.backend.loaded["worker-old"] = "RUNNING"
    op.backend.next_pending = Pending(added=[], changed=["web-1", "worker-main"],
                                      removed=["worker-old"])
    assert operations.graceful(op, ()) == 0
    assert op.backend.calls == [
        ("remove", "worker-old"),
        ("stop", "web-0"), ("start", "web-0"),
        ("replace", "web-1"),
        ("stop", "scheduler", "worker-main"), ("stop", "beat"),
        ("replace", "worker-main"), ("start", "beat", "scheduler"),
    ]


def test_graceful_starts_a_stopped_nebula(tmp_path, answering):
    op, said = operator(tmp_path, ["127.0.0.1:8080"], running=False)
    assert operations.graceful(op, ()) == 0
    assert op.backend.calls == [("launch",)]
    assert said[0] == "Nebula was not running; starting it"


def test_stop_takes_web_down_first_and_beat_last(tmp_path, answering):
    op, _ = operator(tmp_path, ["127.0.0.1:8081", "127.0.0.1:8082"])
    op.backend.loaded["watchdog"] = "RUNNING"
    assert operations.stop(op, ()) == 0
    assert op.backend.calls == [
        ("stop", "web-0", "web-1"), ("stop", "scheduler", "worker-main"), ("stop", "beat"),
        ("stop", "watchdog"), ("shutdown",),
    ]


def test_stop_when_nothing_runs_says_so_and_succeeds(tmp_path):
    op, said = operator(tmp_path, ["127.0.0.1:8080"], running=False)
    assert operations.stop(op, ()) == 0
    assert "not running" in said[0] and op.backend.calls == []


def test_start_twice_applies_the_configuration_and_succeeds(tmp_path, answering):
    op, said = operator(tmp_path, ["127.0.0.1:8080"])
    op.backend.next_pending = Pending(added=["worker-new"])
    assert operations.start(op, ()) == 0
    assert "Nebula is already running; applying the configuration" in said
    assert op.backend.calls[0] == ("add", "worker-new")


def test_start_reports_programs_that_do_not_become_healthy(tmp_path, answering):
    answering.clear()
    op, said = operator(tmp_path, ["127.0.0.1:8080"], running=False)
    assert operations.start(op, (), timeout=0.3) == 1
    assert any(line.startswith("not healthy: web-0:") for line in said)


def test_status_exit_codes(tmp_path):
    op, _ = operator(tmp_path, ["127.0.0.1:8080"])
    assert operations.status(op, ()) == 0
    op.backend.loaded["beat"] = "FATAL"
    assert operations.status(op, ()) == 1
    assert operations.status(op, ("web",)) == 0
    op.backend.running = False
    assert operations.status(op, ()) == 3


def test_unknown_program_names_are_an_error(tmp_path):
    op, _ = operator(tmp_path, ["127.0.0.1:8080"])
    with pytest.raises(operations.ManageError, match="no program named wbe here"):
        operations.graceful(op, ("wbe",))


def test_graceful_applies_a_changed_helper_and_names_what_it_leaves(tmp_path, answering):
    op, said = operator(tmp_path, ["127.0.0.1:8080"])
    op.backend.loaded["watchdog"] = "RUNNING"
    op.backend.next_pending = Pending(changed=["watchdog", "worker-main"])
    assert operations.graceful(op, ("web",)) == 0
    assert op.backend.calls == [("replace", "watchdog"), ("signal", "web-0", "HUP")]
    assert any(line.startswith("not reloaded now, though their settings changed: worker-main")
               for line in said)


def test_a_changed_supervisord_conf_needs_a_restart_and_says_so(tmp_path, answering):
    op, said = operator(tmp_path, ["127.0.0.1:8080"])
    op.backend.own_files = ("supervisord.conf",)
    assert operations.update(op) == 0  # first rendering: every file is new
    assert any(line.startswith("supervisord.conf changed: it takes effect after") for line in said)
    said.clear()
    assert operations.update(op) == 0
    assert not any("takes effect" in line for line in said)
