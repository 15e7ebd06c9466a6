"""The supervisord backend: one supervisord per data dir, driven over its unix socket.

supervisord is started as ``python -P -m supervisor.supervisord`` from the data dir: ``-P``
keeps the working directory off ``sys.path``, so no folder named ``supervisor`` (the
repository's, or the data dir's state folder) can shadow supervisord's own package.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
import xmlrpc.client
from pathlib import Path

from supervisor.xmlrpc import Faults, SupervisorTransport

from nebula_manage.backend import Backend, Pending, ProcessState
from nebula_manage.errors import ManageError
from nebula_manage.files import SyncResult
from nebula_manage.render_supervisor import IDENTIFIER_PREFIX, ORPHANS
from nebula_manage.watchdog import group_members

LAUNCH_TIMEOUT = 20.0


class SupervisorBackend(Backend):
    """Drives the supervisord whose files live in ``{data_dir}/supervisor``."""

    name = "supervisor"
    own_files = ("supervisord.conf",)

    @property
    def conf(self) -> Path:
        """supervisord.conf."""
        return self.deployment.state_dir / "supervisord.conf"

    def _rpc(self):
        transport = SupervisorTransport(None, None, f"unix://{self.deployment.socket_path}")
        return xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport).supervisor

    def check_owner(self) -> None:
        try:
            text = self.conf.read_text()
        except FileNotFoundError:
            return
        owner = re.search(rf"^identifier = {re.escape(IDENTIFIER_PREFIX)}(\S*)$", text, re.M)
        if owner and owner.group(1) != self.deployment.hostname:
            raise ManageError(
                f"{self.deployment.state_dir} belongs to the supervisord of host "
                f"{owner.group(1)}; hosts sharing a data dir need a local processes.state_dir "
                f"each (deploy/README.md, 'Several hosts'). If this host was renamed, remove "
                f"{self.conf}."
            )

    def pid(self) -> int | None:
        """The pid of this data dir's supervisord, if one is running and answering."""
        if not self.deployment.socket_path.exists():
            return None
        try:
            pid = self._rpc().getPID()
        except (OSError, xmlrpc.client.Error):
            return None
        return pid if _alive(pid) else None

    def is_running(self) -> bool:
        return self.pid() is not None

    def _command(self) -> list[str]:
        return [self.deployment.python, "-P", "-m", "supervisor.supervisord", "-c", str(self.conf)]

    def _environment(self) -> dict[str, str]:
        # Programs get NEBULA_* only from their rendered environment, never from whatever
        # shell first started supervisord, so `manage update` controls them completely.
        return {key: value for key, value in os.environ.items() if not key.startswith("NEBULA_")}

    def launch(self) -> str:
        self.deployment.log_dir.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(
            self._command(),
            cwd=self.deployment.data_dir,
            env=self._environment(),
            capture_output=True,
            text=True,
            timeout=LAUNCH_TIMEOUT,
        )
        if done.returncode != 0:
            raise ManageError(f"supervisord did not start: {(done.stderr or done.stdout).strip()}")
        deadline = time.monotonic() + LAUNCH_TIMEOUT
        while time.monotonic() < deadline:
            pid = self.pid()
            if pid:
                return f"started supervisord (pid {pid}) for {self.deployment.data_dir}"
            time.sleep(0.1)
        raise ManageError(
            f"supervisord did not answer on {self.deployment.socket_path} within "
            f"{LAUNCH_TIMEOUT:.0f} s; see {self.deployment.state_dir / 'supervisord.log'}"
        )

    def foreground_command(self) -> tuple[list[str], dict[str, str]]:
        self.deployment.log_dir.mkdir(parents=True, exist_ok=True)
        return [*self._command(), "--nodaemon"], self._environment()

    def pending(self, synced: SyncResult) -> Pending:
        added, changed, removed = self._rpc().reloadConfig()[0]
        return Pending(added=added, changed=changed, removed=removed)

    def add(self, name: str) -> None:
        _tolerate(lambda: self._rpc().addProcessGroup(name), Faults.ALREADY_ADDED)

    def remove(self, name: str) -> None:
        rpc = self._rpc()
        _tolerate(lambda: rpc.stopProcessGroup(name, True), Faults.NOT_RUNNING, Faults.BAD_NAME)
        _tolerate(lambda: rpc.removeProcessGroup(name), Faults.BAD_NAME)

    def replace(self, name: str) -> None:
        self.remove(name)
        self.add(name)

    def states(self) -> dict[str, ProcessState]:
        return {
            info["name"]: ProcessState(
                name=info["name"],
                state=info["statename"],
                pid=info["pid"],
                description=info["description"],
            )
            for info in self._rpc().getAllProcessInfo()
        }

    def start(self, names: list[str]) -> None:
        rpc = self._rpc()
        for name in names:
            _tolerate(lambda: rpc.startProcess(name, False), Faults.ALREADY_STARTED)

    def stop(self, names: list[str]) -> None:
        rpc = self._rpc()
        for name in names:
            _tolerate(lambda: rpc.stopProcess(name, False), Faults.NOT_RUNNING)

    def signal(self, name: str, signal: str) -> None:
        self._rpc().signalProcess(name, signal)

    def shutdown(self, timeout: float) -> str:
        pid = self.pid()
        if pid is None:
            return "supervisord was not running"
        try:
            self._rpc().shutdown()
        except (OSError, xmlrpc.client.Error):
            pass  # it may close the socket before answering
        deadline = time.monotonic() + timeout
        while _alive(pid):
            if time.monotonic() > deadline:
                raise ManageError(f"supervisord (pid {pid}) is still running after {timeout:.0f} s")
            time.sleep(0.1)
        return f"supervisord (pid {pid}) has exited" + self._wait_for_orphans(timeout)

    def _wait_for_orphans(self, timeout: float) -> str:
        """Wait for what dead programs left behind (the watchdog sent it SIGTERM, so it is
        finishing its work in flight); SIGKILL whatever is still there after the timeout."""
        noted = self.deployment.state_dir / ORPHANS
        try:
            groups = {int(line) for line in noted.read_text().split()}
        except FileNotFoundError:
            return ""
        left = {g: group_members(g) for g in groups}
        left = {g: members for g, members in left.items() if members}
        deadline = time.monotonic() + timeout
        while left and time.monotonic() < deadline:
            time.sleep(0.2)
            left = {g: members for g in left if (members := group_members(g))}
        for group in left:
            try:
                os.killpg(group, signal.SIGKILL)
            except ProcessLookupError:
                pass
        noted.unlink()
        if not groups:
            return ""
        killed = sum(len(members) for members in left.values())
        outcome = f"{killed} process(es) still there after {timeout:.0f} s, killed" if killed else (
            "they have ended"
        )
        return f"; {len(groups)} process group(s) were left by programs that died: {outcome}"

    def control_command(self, args: list[str]) -> list[str]:
        return [self.deployment.python, "-P", "-m", "supervisor.supervisorctl",
                "-c", str(self.conf), *args]

    def follow_command(self) -> list[str]:
        logs = sorted(self.deployment.log_dir.glob("*.log"))
        logs.append(self.deployment.state_dir / "supervisord.log")
        return ["tail", "-n", "20", "-F", *map(str, logs)]


def _tolerate(call, *codes: int) -> None:
    """Make an RPC call, ignoring the faults that mean "already so"."""
    try:
        call()
    except xmlrpc.client.Fault as fault:
        if fault.faultCode not in codes:
            raise ManageError(f"supervisord: {fault.faultString}") from fault


def _alive(pid: int) -> bool:
    """True while the process exists and is not a zombie waiting to be reaped."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[0] != "Z"
