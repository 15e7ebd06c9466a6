"""What manage needs from a process manager: a few primitives each backend implements.

The operations built on them (start, graceful, stop...) live in ``operations.py`` and are
the same for supervisord and systemd.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

from nebula_manage.config import Deployment
from nebula_manage.files import SyncResult

UP = "RUNNING"
STOPPED_STATES = frozenset({"STOPPED", "EXITED", "FATAL", "UNKNOWN"})


@dataclass(frozen=True)
class ProcessState:
    """One program as the process manager sees it (supervisord's state names)."""

    name: str
    state: str  # STOPPED STARTING RUNNING BACKOFF STOPPING EXITED FATAL UNKNOWN
    pid: int = 0
    description: str = ""


@dataclass
class Pending:
    """How the running process manager differs from the files just written."""

    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.added or self.changed or self.removed)


class Backend(ABC):
    """Drives one process manager for one Deployment."""

    name = ""
    own_files: tuple[str, ...] = ()  # rendered files a running manager rereads only on restart

    def __init__(self, deployment: Deployment):
        self.deployment = deployment

    def check_owner(self) -> None:
        """Refuse files another host wrote (hosts can share a data dir); nothing by default."""

    @abstractmethod
    def is_running(self) -> bool:
        """True when the process manager (with Nebula's programs loaded) is up."""

    @abstractmethod
    def launch(self) -> str:
        """Start the process manager in the background; it starts every program. Returns
        a line saying what was started."""

    @abstractmethod
    def foreground_command(self) -> tuple[list[str], dict[str, str]] | None:
        """argv and environment to run the process manager in the foreground, if it can."""

    @abstractmethod
    def pending(self, synced: SyncResult) -> Pending:
        """Programs to add, replace or remove so the running manager matches the files."""

    @abstractmethod
    def add(self, name: str) -> None:
        """Load a new program (it starts by itself)."""

    @abstractmethod
    def remove(self, name: str) -> None:
        """Stop a program and unload it."""

    @abstractmethod
    def replace(self, name: str) -> None:
        """Stop a program and start it again with its new configuration."""

    @abstractmethod
    def states(self) -> dict[str, ProcessState]:
        """Every loaded program's state, by name."""

    @abstractmethod
    def start(self, names: list[str]) -> None:
        """Ask the programs to start; does not wait."""

    @abstractmethod
    def stop(self, names: list[str]) -> None:
        """Send the programs their stop signal; does not wait."""

    @abstractmethod
    def signal(self, name: str, signal: str) -> None:
        """Send a signal (``HUP``) to a program's main process."""

    @abstractmethod
    def shutdown(self, timeout: float) -> str:
        """Stop the process manager itself and wait until it is gone. Returns what it did."""

    @abstractmethod
    def control_command(self, args: list[str]) -> list[str]:
        """argv of the process manager's own control tool (supervisorctl, systemctl)."""

    @abstractmethod
    def follow_command(self) -> list[str]:
        """argv that follows every program's log."""
