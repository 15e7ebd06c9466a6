"""The systemd backend: units in the unit directory, driven with systemctl.

Rendered by the same function as the supervisord files (``render_systemd.py``); tested by
rendering, since the machines this was written on have no systemd running.
"""

from __future__ import annotations

import subprocess

from nebula_manage.backend import Backend, Pending, ProcessState
from nebula_manage.errors import ManageError
from nebula_manage.files import SyncResult
from nebula_manage.render_systemd import TARGET, UNIT_PREFIX

# systemd ActiveState -> the supervisord state names manage reports
STATES = {
    "active": "RUNNING",
    "reloading": "RUNNING",
    "activating": "STARTING",
    "deactivating": "STOPPING",
    "failed": "FATAL",
    "inactive": "STOPPED",
}


def _unit(name: str) -> str:
    return f"{UNIT_PREFIX}{name}.service"


def _program(unit: str) -> str | None:
    if unit.startswith(UNIT_PREFIX) and unit.endswith(".service"):
        return unit.removeprefix(UNIT_PREFIX).removesuffix(".service")
    return None


class SystemdBackend(Backend):
    """Drives ``nebula.target`` and its services with systemctl."""

    name = "systemd"

    @property
    def _scope(self) -> list[str]:
        return ["--user"] if self.deployment.processes.systemd.scope == "user" else []

    def _systemctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        argv = ["systemctl", *self._scope, *args]
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=900)
        except FileNotFoundError as exc:
            raise ManageError("systemctl is not installed; use process_manager: supervisor") from exc
        if check and done.returncode != 0:
            raise ManageError(f"{' '.join(argv)} failed: {(done.stderr or done.stdout).strip()}")
        return done

    def is_running(self) -> bool:
        return self._systemctl("is-active", "--quiet", TARGET, check=False).returncode == 0

    def launch(self) -> str:
        self._systemctl("daemon-reload")
        self._systemctl("enable", TARGET)
        self._systemctl("start", TARGET)
        return f"started {TARGET}"

    def foreground_command(self) -> None:
        return None

    def pending(self, synced: SyncResult) -> Pending:
        # The unit files are written already; daemon-reload makes systemd read them.
        self._systemctl("daemon-reload")
        created = [_program(unit) for unit in synced.created]
        changed = [_program(unit) for unit in synced.written if unit not in synced.created]
        removed = [_program(unit) for unit in synced.removed]
        return Pending(
            added=[name for name in created if name],
            changed=[name for name in changed if name],
            removed=[name for name in removed if name],
        )

    def add(self, name: str) -> None:
        self._systemctl("start", _unit(name))

    def remove(self, name: str) -> None:
        self._systemctl("stop", _unit(name), check=False)

    def replace(self, name: str) -> None:
        self._systemctl("restart", _unit(name))

    def states(self) -> dict[str, ProcessState]:
        units = self._systemctl("list-dependencies", "--plain", TARGET, check=False).stdout.split()
        names = [name for name in map(_program, units) if name]
        if not names:
            return {}
        shown = self._systemctl(
            "show", "-p", "Id,ActiveState,SubState,MainPID", *map(_unit, names), check=False
        ).stdout
        states = {}
        for block in shown.strip().split("\n\n"):
            props = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
            name = _program(props.get("Id", ""))
            if name:
                states[name] = ProcessState(
                    name=name,
                    state=STATES.get(props.get("ActiveState", ""), "UNKNOWN"),
                    pid=int(props.get("MainPID") or 0),
                    description=props.get("SubState", ""),
                )
        return states

    def start(self, names: list[str]) -> None:
        self._systemctl("start", "--no-block", *map(_unit, names))

    def stop(self, names: list[str]) -> None:
        self._systemctl("stop", "--no-block", *map(_unit, names))

    def signal(self, name: str, signal: str) -> None:
        self._systemctl("kill", "--kill-who=main", f"--signal=SIG{signal}", _unit(name))

    def shutdown(self, timeout: float) -> str:
        self._systemctl("stop", TARGET)
        return f"stopped {TARGET}"

    def control_command(self, args: list[str]) -> list[str]:
        return ["systemctl", *self._scope, *args]

    def follow_command(self) -> list[str]:
        return ["journalctl", *self._scope, "-f", "-u", f"{UNIT_PREFIX}*", "-u", TARGET]
