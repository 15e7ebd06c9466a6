"""Running a rendered command: its own process group, a clean environment, a wall-time limit.

A simple command runs from its argv list with the redirections opened here (no shell); any
other command is written to ``command.sh`` in the job's working directory and runs as
``bash command.sh``. stdout (unless redirected to an output) and stderr go to in-memory
files, of which only the tails (``cap`` bytes) are kept and whose size the monitor
bounds; the job row records the script either way.
"""

from __future__ import annotations

import os
import resource
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from app.jobs.monitor import JobMonitor, kill_group
from app.tools.command import RenderedCommand

PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
SHELL = "/bin/bash" if os.path.exists("/bin/bash") else "/bin/sh"
SCRIPT = "command.sh"


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
        "TMPDIR": str(workdir),
        "TMP": str(workdir),
        "TEMP": str(workdir),
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
    output_ids: list[int] | None = None,
) -> Execution:
    """Run the command to its end (or until stopped); return exit code and output tails.

    The thread blocks in waitpid; the monitor enforces the wall time (and cancellation),
    so no polling loop adds latency to a job of a few milliseconds.
    """
    if command.argv is None:
        (workdir / SCRIPT).write_text(f"#!{SHELL}\n{command.script}\n", encoding="utf-8", errors="surrogateescape")
    with _capture("stderr") as err:
        out = None
        try:
            process, out = _spawn(command, workdir, env, err)
        except OSError as exc:
            return Execution(127 if isinstance(exc, FileNotFoundError) else 1, "", f"{exc.filename or ''}: {exc.strerror}\n")
        if memory_mb:
            _limit_memory(process.pid, memory_mb)
        captures = [err] if out is None else [err, out]
        running = monitor.register(job_id, process, output_ids or [], deadline=wall_time, captures=captures)
        try:
            code = process.wait()
        finally:
            monitor.unregister(job_id)
            kill_group(process.pid)  # whatever the command left running in the background
        stdout = _tail(out, cap) if out is not None else ""
        if out is not None:
            out.close()
        return Execution(code, stdout, _tail(err, cap), running.stop_reason)


def _capture(name: str) -> BinaryIO:
    """An in-memory file for a stream the job writes (no inode created and removed per job)."""
    try:
        return os.fdopen(os.memfd_create(f"nebula-job-{name}", os.MFD_CLOEXEC), "w+b")
    except (AttributeError, OSError):  # no memfd here: an unnamed temporary file
        return tempfile.TemporaryFile()


def _spawn(command: RenderedCommand, workdir: Path, env: dict[str, str], err: BinaryIO
           ) -> tuple[subprocess.Popen, BinaryIO | None]:
    """Start the process (argv with redirections, or bash on the script).

    Returns the process and, when its stdout is not redirected to an output, the
    in-memory file capturing it (read back for the job's stdout).
    """
    common = dict(cwd=workdir, env=env, stderr=err, start_new_session=True, close_fds=True)
    if command.argv is None or command.stdout is None:
        captured = _capture("stdout")
        try:
            argv = [SHELL, SCRIPT] if command.argv is None else command.argv
            if command.argv is not None and command.stdin is not None:
                with open(workdir / command.stdin, "rb") as source:
                    return subprocess.Popen(argv, stdin=source, stdout=captured, **common), captured
            return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=captured, **common), captured
        except BaseException:
            captured.close()
            raise
    with open(workdir / command.stdout, "ab" if command.append else "wb") as out:
        if command.stdin is None:
            return subprocess.Popen(command.argv, stdin=subprocess.DEVNULL, stdout=out, **common), None
        with open(workdir / command.stdin, "rb") as source:
            return subprocess.Popen(command.argv, stdin=source, stdout=out, **common), None


def _tail(handle: BinaryIO, cap: int) -> str:
    """The last ``cap`` bytes written to an open file (nothing read when it is empty)."""
    size = os.fstat(handle.fileno()).st_size
    if not size:
        return ""
    handle.seek(max(0, size - cap))
    return _text(handle.read(cap), size, cap)


def _limit_memory(pid: int, memory_mb: int) -> None:
    """Cap the address space of the started process (inherited by its children)."""
    limit = memory_mb * 1024 * 1024
    try:
        resource.prlimit(pid, resource.RLIMIT_AS, (limit, limit))
    except (OSError, ValueError):
        pass


def _text(data: bytes, size: int, cap: int) -> str:
    """Bytes as text for the database (NUL dropped: PostgreSQL refuses it), marked when cut."""
    text = data.decode("utf-8", errors="replace").replace("\x00", "")
    return f"[… {size - cap} bytes cut …]\n{text}" if size > cap else text
