"""Each program's ``memory_limit`` under supervisord, checked by the watchdog listener.

supervisord has no memory limits of its own (systemd has MemoryMax=). On every TICK event
the watchdog sums the proportional set size of each limited program's process tree and
reloads a program above its limit: gunicorn with SIGHUP (fresh workers, no request lost),
anything else with a restart (SIGTERM first, so work in flight finishes).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

COOLDOWN = 60.0  # seconds a program is left alone after it was reloaded
PROC = Path("/proc")


@dataclass(frozen=True)
class Limit:
    """The memory limit of one program and how to shed memory when it is passed."""

    program: str
    mebibytes: int
    sighup: bool = False


def parse_limits(args: Iterable[str]) -> list[Limit]:
    """Parse ``NAME=MIB`` or ``NAME=MIB:hup`` arguments."""
    limits = []
    for arg in args:
        name, _, rest = arg.partition("=")
        size, _, how = rest.partition(":")
        if not name or not size.isdigit() or how not in ("", "hup"):
            raise ValueError(f"{arg!r} is not NAME=MIB or NAME=MIB:hup")
        limits.append(Limit(name, int(size), how == "hup"))
    return limits


def descendants(root: int, parents: Mapping[int, int]) -> list[int]:
    """``root`` and every process below it, given a pid -> parent pid map."""
    children: dict[int, list[int]] = {}
    for pid, parent in parents.items():
        children.setdefault(parent, []).append(pid)
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


def parent_map(proc: Path = PROC) -> dict[int, int]:
    """pid -> parent pid of every process."""
    parents = {}
    for entry in proc.iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue  # it exited meanwhile
            # the command name may hold spaces and parentheses; fields follow the last ')'
            parents[int(entry.name)] = int(stat.rpartition(")")[2].split()[1])
    return parents


def memory_kib(pid: int, proc: Path = PROC) -> int:
    """Proportional set size of one process in KiB (resident size if PSS is unreadable)."""
    try:
        for line in (proc / str(pid) / "smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    try:
        resident_pages = int((proc / str(pid) / "statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return 0
    return resident_pages * os.sysconf("SC_PAGE_SIZE") // 1024


def tree_mebibytes(root: int, parents: Mapping[int, int], proc: Path = PROC) -> float:
    """Memory of a process tree in MiB."""
    return sum(memory_kib(pid, proc) for pid in descendants(root, parents)) / 1024


def check(rpc, limits: list[Limit], reloaded: dict[str, float], now: float) -> None:
    """Reload every limited, running program above its limit (once per cooldown)."""
    parents = parent_map()
    running = {info["name"]: info["pid"] for info in rpc.supervisor.getAllProcessInfo()
               if info["statename"] == "RUNNING"}
    for limit in limits:
        pid = running.get(limit.program)
        if not pid or now - reloaded.get(limit.program, 0.0) < COOLDOWN:
            continue
        used = tree_mebibytes(pid, parents)
        if used <= limit.mebibytes:
            continue
        print(f"memmon: {limit.program} uses {used:.0f} MiB, above its {limit.mebibytes} MiB; "
              f"{'reloading (SIGHUP)' if limit.sighup else 'restarting'}", file=sys.stderr)
        if limit.sighup:
            rpc.supervisor.signalProcess(limit.program, "HUP")
        else:
            rpc.supervisor.stopProcess(limit.program, True)
            rpc.supervisor.startProcess(limit.program, False)
        reloaded[limit.program] = now
