"""Running `manage` against a real supervisord with stand-in programs (tests/manage/fake_nebula).

`manage` runs as ``python -m nebula_manage.cli`` with the repository root as its working
directory, so the repository's ``supervisor/`` folder is first on its sys.path: a test that
gets anywhere proves that folder does not shadow supervisord's own package.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import xmlrpc.client
from dataclasses import dataclass, field
from http.client import HTTPException
from pathlib import Path

import yaml
from supervisor.xmlrpc import SupervisorTransport

REPO = Path(__file__).resolve().parents[2]
FAKE_NEBULA = Path(__file__).resolve().parent / "fake_nebula"
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def fast_settings(data_dir: Path, binds: list[str]) -> dict:
    """Settings with short timeouts, so the process tests stay quick."""
    def quick() -> dict:
        return {"start_timeout": 1}  # a dict each: YAML would write one shared dict as an alias

    return {
        "nebula": {"data_dir": str(data_dir), "bind": binds[0]},
        "processes": {
            "web": {"binds": binds, "workers": 1, "threads": 4, "graceful_timeout": 3,
                    "stop_timeout": 6, **quick()},
            "worker_pools": [{"name": "main", "processes": 1, "stop_timeout": 10, **quick()}],
            "scheduler": quick(),
            "beat": quick(),
        },
    }


@dataclass
class Nebula:
    """One data dir's settings file and a way to run manage on it."""

    config: Path
    data_dir: Path
    binds: list[str]
    fake: bool = True  # run the stand-ins of tests/manage/fake_nebula, not Nebula itself

    @classmethod
    def create(cls, root: Path, web_instances: int = 2, fake: bool = True) -> "Nebula":
        """Settings for web_instances web programs (and one of everything else)."""
        data_dir = root / "data"
        binds = [f"127.0.0.1:{free_port()}" for _ in range(web_instances)]
        config = root / "nebula.yml"
        nebula = cls(config, data_dir, binds, fake)
        nebula.write(fast_settings(data_dir, binds))
        return nebula

    def write(self, settings: dict) -> None:
        """Replace the settings file."""
        self.config.write_text(yaml.safe_dump(settings))

    def settings(self) -> dict:
        """The settings file's content."""
        return yaml.safe_load(self.config.read_text())

    def environment(self) -> dict[str, str]:
        """This test run's environment without NEBULA_* (a CI's would redirect manage)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("NEBULA_")}
        if self.fake:
            paths = [str(FAKE_NEBULA), env.get("PYTHONPATH", "")]
            env["PYTHONPATH"] = os.pathsep.join(filter(None, paths))
        return env

    def manage(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run `manage -c CONFIG ARGS` from the repository root."""
        return subprocess.run(
            [sys.executable, "-m", "nebula_manage.cli", "-c", str(self.config), *args],
            cwd=REPO,
            env=self.environment(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def rpc(self):
        """supervisord's XML-RPC interface."""
        sock = self.data_dir / "supervisor" / "supervisord.sock"
        transport = SupervisorTransport(None, None, f"unix://{sock}")
        return xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport).supervisor

    def states(self) -> dict[str, tuple[str, int]]:
        """{program: (state, pid)} as supervisord reports them."""
        return {i["name"]: (i["statename"], i["pid"]) for i in self.rpc().getAllProcessInfo()}

    def events(self) -> list[str]:
        """What the stand-in programs wrote to events.log."""
        path = self.data_dir / "events.log"
        return path.read_text().splitlines() if path.exists() else []

    def processes(self) -> list[int]:
        """Pids of every process of this data dir: supervisord and all it started."""
        marker = str(self.data_dir).encode()
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                mine = marker in (entry / "cmdline").read_bytes() + (entry / "environ").read_bytes()
                zombie = (entry / "stat").read_text().rpartition(")")[2].split()[0] == "Z"
                if mine and not zombie:
                    found.append(int(entry.name))
            except OSError:
                continue
        return found

    def kill_everything(self) -> None:
        """Clean-up after a failed test: nothing of this data dir may outlive it."""
        for pid in self.processes():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def wait_for(predicate, timeout: float, step: float = 0.05):
    """Poll until predicate() is truthy; return its value, or raise after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout} s: {predicate}")
        time.sleep(step)


@dataclass
class RequestLoop:
    """Clients sending GET /api/version in a loop, as nginx would send them upstream.

    With several binds a request that cannot connect (or is reset before any answer) goes
    to the next bind, as nginx's ``proxy_next_upstream error`` does; it fails only when
    every bind failed. With one bind, every error is a failure.
    """

    binds: list[str]
    clients: int = 2
    served: int = 0
    failed: int = 0
    retried: int = 0
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _threads: list[threading.Thread] = field(default_factory=list)

    def __enter__(self) -> "RequestLoop":
        for number in range(self.clients):
            thread = threading.Thread(target=self._run, args=(number,), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)

    def _run(self, number: int) -> None:
        turn = number
        while not self._stop.is_set():
            turn += 1
            order = self.binds[turn % len(self.binds):] + self.binds[: turn % len(self.binds)]
            outcome = self._one(order)
            with self._lock:
                if outcome is None:
                    self.served += 1
                elif outcome == "retried":
                    self.served += 1
                    self.retried += 1
                else:
                    self.failed += 1
                    self.errors.append(outcome)

    @staticmethod
    def _one(order: list[str]) -> str | None:
        problems = []
        for bind in order:
            try:
                with _OPENER.open(f"http://{bind}/api/version?sleep=0.02", timeout=10) as answer:
                    answer.read()
                return "retried" if problems else None
            except urllib.error.HTTPError as exc:
                return f"{bind}: HTTP {exc.code}"  # an answer: nginx would pass it on
            except (OSError, HTTPException) as exc:
                problems.append(f"{bind}: {exc!r}")
        return "; ".join(problems)
