"""Running a rendered command: its own process group, a clean environment, a wall-time limit.

A simple command runs from its argv list with the redirections opened here (no shell); any
other command runs as ``bash command.sh`` from the job's working directory, where the
script is written either way. stdout and stderr go to files there and only their tails
(``cap`` bytes) are kept.
"""

from __future__ import annotations

import os
import resource
import subprocess
from dataclasses import dataclass
from pathlib import Path

from app.jobs.monitor import JobMonitor, kill_group
from app.tools.command import RenderedCommand

PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
SHELL = "/bin/bash" if os.path.exists("/bin/bash") else "/bin/sh"
STDOUT, STDERR, SCRIPT = "tool_stdout", "tool_stderr", "command.sh"


@dataclass(frozen=True)
class Execution:
    """How a command ended."""

    exit_code: int | None
    stdout: str
    stderr: str
    failure: str | None = None  # why it was stopped (wall time, cancelled), None when it ran to its end


def job_environment(job_id: int, workdir: Path, cpus: int) -> dict[str, str]:
    """The whole environment of a job: nothing of the worker's leaks in."""
    return {
        "PATH": PATH,
        "HOME": str(workdir),
        "TMPDIR": str(workdir / "tmp"),
        "TMP": str(workdir / "tmp"),
        "TEMP": str(workdir / "tmp"),
        "LANG": "C",
        "LC_ALL": "C",
        "GALAXY_SLOTS": str(cpus),
        "NEBULA_JOB_ID": str(job_id),
    }


def run_command(
    job_id: int,
    command: RenderedCommand,
    workdir: Path,
    *,
    env: dict[str, str],
    wall_time: float,
    cap: int,
    monitor: JobMonitor,
    memory_mb: int | None = None,
) -> Execution:
    """Run the command to its end (or until killed); return exit code and output tails."""
    (workdir / SCRIPT).write_text(f"#!{SHELL}\n{command.script}\n", encoding="utf-8", errors="surrogateescape")
    with open(workdir / STDERR, "wb") as err:
        try:
            process = _spawn(command, workdir, env, err)
        except OSError as exc:
            return Execution(127 if isinstance(exc, FileNotFoundError) else 1, "", f"{exc.filename or ''}: {exc.strerror}\n")
    if memory_mb:
        _limit_memory(process.pid, memory_mb)
    running = monitor.register(job_id, process)
    try:
        try:
            code = process.wait(timeout=wall_time)
        except subprocess.TimeoutExpired:
            monitor.stop(running, f"wall time limit of {wall_time:g} s exceeded")
            code = process.wait()
    finally:
        monitor.unregister(job_id)
        kill_group(process.pid)  # whatever the command left running in the background
    return Execution(code, tail(workdir / STDOUT, cap), tail(workdir / STDERR, cap), running.stop_reason)


def _spawn(command: RenderedCommand, workdir: Path, env: dict[str, str], err) -> subprocess.Popen:
    """Start the process: argv with redirections, or bash on the script."""
    common = dict(cwd=workdir, env=env, stderr=err, start_new_session=True, close_fds=True)
    if command.argv is None:
        with open(workdir / STDOUT, "wb") as out:
            return subprocess.Popen([SHELL, SCRIPT], stdin=subprocess.DEVNULL, stdout=out, **common)
    target = workdir / (command.stdout or STDOUT)
    mode = "ab" if command.stdout and command.append else "wb"
    with open(target, mode) as out:
        if command.stdin is None:
            return subprocess.Popen(command.argv, stdin=subprocess.DEVNULL, stdout=out, **common)
        with open(workdir / command.stdin, "rb") as source:
            return subprocess.Popen(command.argv, stdin=source, stdout=out, **common)


def _limit_memory(pid: int, memory_mb: int) -> None:
    """Cap the address space of the started process (inherited by its children)."""
    limit = memory_mb * 1024 * 1024
    try:
        resource.prlimit(pid, resource.RLIMIT_AS, (limit, limit))
    except (OSError, ValueError):
        pass


def tail(path: Path, cap: int) -> str:
    """The last ``cap`` bytes of a file as text (NUL bytes dropped: the database refuses them)."""
    try:
        size = path.stat().st_size
        with path.open("rb") as handle:
            if size > cap:
                handle.seek(size - cap)
            data = handle.read(cap)
    except FileNotFoundError:
        return ""
    text = data.decode("utf-8", errors="replace").replace("\x00", "")
    return f"[… {size - cap} bytes cut …]\n{text}" if size > cap else text
