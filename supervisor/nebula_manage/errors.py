"""The errors `manage` reports, each with the exit code scripts can rely on.

Exit codes (also in deploy/README.md):

- 0: done, or already in the state asked for (``start`` when running, ``stop`` when stopped).
- 1: something failed or is unhealthy (a program did not start, a health check is down).
- 2: usage error (unknown command or option).
- 3: not running (``status`` and ``pm`` need a running Nebula).
- 4: settings refused (file, key and why are printed); nothing was changed.

Commands forwarded to ``app.cli`` or ``workers.cli`` exit with that command's own code.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_NOT_RUNNING = 3
EXIT_SETTINGS = 4


class ManageError(Exception):
    """A failure `manage` explains in one message and maps to an exit code."""

    exit_code = EXIT_FAILED


class SettingsRefused(ManageError):
    """The settings cannot be used; nothing was written or changed."""

    exit_code = EXIT_SETTINGS

    def __init__(self, problems: list[str], source: str | None = None):
        self.problems = problems
        self.source = source
        super().__init__("\n".join(problems))

    def __str__(self) -> str:
        where = f" in {self.source}" if self.source else ""
        lines = [f"refusing the settings{where}:"]
        lines += [f"  {problem}" for problem in self.problems]
        lines.append("Nothing was changed.")
        return "\n".join(lines)


class NotRunning(ManageError):
    """The command needs a running process manager and there is none."""

    exit_code = EXIT_NOT_RUNNING
