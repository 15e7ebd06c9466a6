"""supervisord's event listener for Nebula: reaps what a dead program left, limits memory.

- PROCESS_STATE_EXITED and PROCESS_STATE_STOPPED: SIGTERM to the program's old process
  group. supervisord makes every program a process-group leader; when a Dramatiq master
  dies (SIGKILL, a crash) its worker processes stay behind, orphaned, and keep taking
  messages beside the new master's workers, and they would outlive `manage stop`. SIGTERM
  lets them finish the message in flight and exit. The group id is the dead master's pid,
  which the kernel does not give to a new process while the group has members, so nothing
  else is signalled. The group is noted in the orphans file, so that `manage stop` can
  wait for it too.
- TICK_5 (when a service has a memory_limit): see ``memmon.py``.

Run by supervisord as ``python -P -m nebula_manage.watchdog ORPHANS_FILE [NAME=MIB[:hup] ...]``.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

from nebula_manage import memmon

EXIT_EVENTS = ("PROCESS_STATE_EXITED", "PROCESS_STATE_STOPPED")


def group_members(group: int, proc: Path = memmon.PROC) -> list[int]:
    """Live (not zombie) processes of a process group."""
    members = []
    for entry in proc.iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rpartition(")")[2].split()
            except OSError:
                continue
            if int(fields[2]) == group and fields[0] != "Z":
                members.append(int(entry.name))
    return members


def reap(group: int) -> bool:
    """SIGTERM every process left in a process group; False when none is left."""
    if not group_members(group):
        return False
    try:
        os.killpg(group, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def handle(event: str, payload: str, rpc, limits: list[memmon.Limit],
           reloaded: dict[str, float], orphans: Path | None = None) -> None:
    """Act on one event."""
    from supervisor import childutils

    if event in EXIT_EVENTS:
        fields = childutils.get_headers(payload.split("\n", 1)[0])
        pid = int(fields.get("pid") or 0)
        if pid > 1 and reap(pid):
            print(f"watchdog: {fields.get('processname')} (pid {pid}) left processes behind; "
                  "sent them SIGTERM", file=sys.stderr)
            if orphans is not None:
                with orphans.open("a") as noted:
                    noted.write(f"{pid}\n")
    elif event.startswith("TICK") and limits:
        memmon.check(rpc, limits, reloaded, time.monotonic())


def main(argv: list[str] | None = None) -> None:
    """Serve supervisord's event listener protocol forever."""
    from supervisor import childutils

    args = sys.argv[1:] if argv is None else argv
    orphans, limits = Path(args[0]), memmon.parse_limits(args[1:])
    rpc = childutils.getRPCInterface(os.environ)
    reloaded: dict[str, float] = {}
    while True:
        headers, payload = childutils.listener.wait(sys.stdin, sys.stdout)
        try:
            handle(headers["eventname"], payload, rpc, limits, reloaded, orphans)
        except Exception as exc:  # noqa: BLE001 - one failed event must not stop the listener
            print(f"watchdog: {headers.get('eventname')} failed: {exc!r}", file=sys.stderr)
        sys.stderr.flush()
        childutils.listener.ok(sys.stdout)


if __name__ == "__main__":
    main()
