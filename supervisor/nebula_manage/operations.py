"""start, stop, restart, graceful, update and status, the same for every backend.

Each takes an `Operator` (the deployment, its backend and somewhere to say things) and
returns an exit code from ``errors.py``.
"""

from __future__ import annotations

import itertools
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import click

from nebula_manage.backend import STOPPED_STATES, UP, Backend, Pending, ProcessState
from nebula_manage.config import Deployment
from nebula_manage.errors import EXIT_FAILED, EXIT_NOT_RUNNING, EXIT_OK, ManageError
from nebula_manage.files import SyncResult, sync
from nebula_manage.probe import web_answers
from nebula_manage.programs import PRIORITY, Program, Reload, build_programs, select
from nebula_manage.render import render

POLL = 0.1
START_GRACE = 30.0  # seconds beyond the start timeouts to wait for health


@dataclass
class Operator:
    """A deployment, the backend that runs it, and where to report."""

    deployment: Deployment
    backend: Backend
    say: Callable[[str], None] = print
    # False when the settings were refused: act only on what the process manager has loaded
    known_programs: bool = True
    programs: list[Program] = field(init=False)

    def __post_init__(self) -> None:
        self.programs = build_programs(self.deployment) if self.known_programs else []

    def chosen(self, names: tuple[str, ...] | list[str]) -> list[Program]:
        """The programs named on the command line (all when none)."""
        try:
            return select(self.programs, names)
        except LookupError as exc:
            raise ManageError(str(exc)) from exc

    def chosen_names(self, names: tuple[str, ...] | list[str]) -> list[str]:
        """Names of the programs named, from the settings or, without them, from what runs."""
        if self.known_programs:
            return [p.name for p in self.chosen(names)]
        loaded = list(self.backend.states())
        return [n for n in loaded if not names or n in names or _kind(n) in names]


def _kind(name: str) -> str:
    """web-0 -> web, worker-main -> worker, scheduler -> scheduler."""
    return name.split("-")[0]


def write_files(op: Operator, force: bool = False) -> SyncResult:
    """Render and write what changed; say what was written and removed."""
    op.backend.check_owner()
    for path in (op.deployment.data_dir, op.deployment.log_dir):
        path.mkdir(parents=True, exist_ok=True)
    op.deployment.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    rendering = render(op.deployment)
    result = sync(rendering, force)
    for relative in result.written:
        op.say(f"wrote {rendering.root / relative}")
    for relative in result.removed:
        op.say(f"removed {rendering.root / relative}")
    return result


def apply(op: Operator, synced: SyncResult, force: bool = False) -> Pending:
    """Make the running process manager use the files: add, replace and remove programs."""
    _note_manager_restart(op, synced)
    pending = op.backend.pending(synced)
    if force:
        loaded = set(op.backend.states()) - set(pending.removed)
        pending.changed = sorted(loaded | set(pending.changed))
    for name in pending.removed:
        op.backend.remove(name)
        op.say(f"{name}: stopped and removed")
    for name in pending.changed:
        op.backend.replace(name)
        op.say(f"{name}: restarted with its new configuration")
    for name in pending.added:
        op.backend.add(name)
        op.say(f"{name}: added")
    return pending


def update(op: Operator, force: bool = False) -> int:
    """Write what changed and apply it to a running Nebula."""
    synced = write_files(op, force)
    if not op.backend.is_running():
        op.say("configuration written; Nebula is not running (`manage start` starts it)")
        return EXIT_OK
    if not apply(op, synced, force) and not synced.changed:
        op.say("nothing changed")
    return EXIT_OK


def start(op: Operator, names: tuple[str, ...], timeout: float | None = None) -> int:
    """Start the process manager if needed, apply the configuration, wait until healthy."""
    chosen = op.chosen(names)
    synced = write_files(op)
    if not op.backend.is_running():
        op.say(op.backend.launch())
        chosen = op.programs  # a fresh process manager starts every program
    else:
        op.say("Nebula is already running; applying the configuration")
        apply(op, synced)
        op.backend.start([p.name for p in chosen])
    return _report_health(op, chosen, timeout)


def restart(op: Operator, names: tuple[str, ...], timeout: float | None = None) -> int:
    """Stop the programs and start them again (not graceful: see `graceful`)."""
    if not op.backend.is_running():
        op.say("Nebula was not running; starting it")
        return start(op, names, timeout)
    chosen = op.chosen(names)
    apply(op, write_files(op))
    stop_in_tiers(op, [p.name for p in chosen])
    op.backend.start([p.name for p in chosen])
    return _report_health(op, chosen, timeout)


def graceful(op: Operator, names: tuple[str, ...], timeout: float | None = None) -> int:
    """Reload without failing a request or losing a message; starts a stopped Nebula."""
    if not op.backend.is_running():
        op.say("Nebula was not running; starting it")
        return start(op, names, timeout)
    began = time.monotonic()
    chosen = op.chosen(names)
    synced = write_files(op)
    _note_manager_restart(op, synced)
    pending = op.backend.pending(synced)
    _apply_before_reload(op, pending, chosen)
    # web one instance at a time, so one always answers; then the rest together
    webs = [p for p in chosen if p.kind == "web" and p.name not in pending.added]
    others = [p for p in chosen if p.kind != "web" and p.name not in pending.added]
    for program in webs:
        how = _reload_web(op, program, changed=program.name in pending.changed)
        if not _healthy_after(op, [program], how, timeout):
            return EXIT_FAILED
    if others:
        _restart_together(op, others, pending)
        how = "restarted (work in flight finished first)"
        if not _healthy_after(op, others, how, timeout):
            return EXIT_FAILED
    op.say(f"graceful reload done in {time.monotonic() - began:.1f} s")
    return EXIT_OK


def _apply_before_reload(op: Operator, pending: Pending, chosen: list[Program]) -> None:
    """Remove and add programs, restart changed helpers; name changed programs left alone."""
    for name in pending.removed:
        op.backend.remove(name)
        op.say(f"{name}: stopped and removed")
    for name in pending.added:
        op.backend.add(name)
        op.say(f"{name}: added")
    known = {p.name for p in op.programs}
    for name in pending.changed:
        if name not in known:  # a helper such as the watchdog: nothing to drain
            op.backend.replace(name)
            op.say(f"{name}: restarted with its new configuration")
    skipped = [p.name for p in op.programs if p.name in pending.changed and p not in chosen]
    if skipped:
        op.say(f"not reloaded now, though their settings changed: {', '.join(skipped)} "
               "(`manage graceful` without names applies them)")


def _note_manager_restart(op: Operator, synced: SyncResult) -> None:
    """Say so when the process manager's own file changed: a running one does not reread it."""
    changed = [f for f in synced.written if f in op.backend.own_files]
    if changed and op.backend.is_running():
        op.say(f"{', '.join(changed)} changed: it takes effect after `manage shutdown` and "
               "`manage start` (the programs already use their new settings)")


def _reload_web(op: Operator, program: Program, changed: bool) -> str:
    if changed:
        if program.reload is Reload.SIGHUP:
            op.say(f"{program.name}: its configuration changed, so it restarts; with a single "
                   "web instance requests fail meanwhile (list two binds to avoid that)")
        op.backend.replace(program.name)
        return "restarted with its new configuration"
    if program.reload is Reload.SIGHUP:
        op.backend.signal(program.name, "HUP")
        return "reloaded (SIGHUP: new gunicorn workers replaced the old ones)"
    stop_in_tiers(op, [program.name])
    op.backend.start([program.name])
    return "restarted, then answered /api/version"


def _restart_together(op: Operator, programs: list[Program], pending: Pending) -> None:
    """Stop them all (each finishes its work in flight), then start them again: the
    reload takes as long as the slowest drain, not the sum of them."""
    stop_in_tiers(op, [p.name for p in programs])
    for program in programs:
        if program.name in pending.changed:
            op.backend.replace(program.name)
    op.backend.start([p.name for p in programs if p.name not in pending.changed])


def _healthy_after(op: Operator, programs: list[Program], how: str, timeout: float | None) -> bool:
    names = ", ".join(p.name for p in programs)
    longest = max(_timeout(p, timeout) for p in programs)
    problems = wait_healthy(op, programs, longest)
    if problems:
        op.say(f"{names}: {how}, but not healthy: {'; '.join(problems)}")
        op.say("graceful reload stopped here; the programs after it were left as they were")
        return False
    op.say(f"{names}: {how}")
    return True


def stop(op: Operator, names: tuple[str, ...]) -> int:
    """Stop programs; without names, stop everything and the process manager itself."""
    if not op.backend.is_running():
        op.say(f"Nebula is not running (nothing runs for {op.deployment.data_dir}); "
               "nothing to stop")
        return EXIT_OK
    if names:
        stop_in_tiers(op, op.chosen_names(names))
        return EXIT_OK
    stop_in_tiers(op, list(op.backend.states()))
    # what dead programs left behind gets as long as live ones to finish its work
    op.say(op.backend.shutdown(timeout=_longest_stop(op)))
    return EXIT_OK


def _longest_stop(op: Operator) -> float:
    return max((p.stop_timeout for p in op.programs), default=60)


def shutdown(op: Operator) -> int:
    """Stop the process manager (it stops its programs first)."""
    if not op.backend.is_running():
        op.say(f"Nebula is not running (nothing runs for {op.deployment.data_dir})")
        return EXIT_OK
    op.say(op.backend.shutdown(timeout=_longest_stop(op) + 60))
    return EXIT_OK


def stop_in_tiers(op: Operator, names: list[str]) -> None:
    """Stop web first, then scheduler and workers, then beat; wait for each tier."""
    by_name = {p.name: p for p in op.programs}

    def priority(name: str) -> int:
        # helpers (the watchdog) go last: they reap what a stopping program leaves behind
        return -PRIORITY.get(_kind(name), 0)

    for _, tier in itertools.groupby(sorted(names, key=priority), key=priority):
        states = op.backend.states()
        running = [n for n in tier if states.get(n, _GONE).state not in STOPPED_STATES]
        if not running:
            continue
        op.backend.stop(running)
        longest = max(by_name[n].stop_timeout if n in by_name else 10 for n in running)
        op.say(f"stopping {', '.join(running)} (up to {longest} s for work in flight)")
        _wait_stopped(op, running, longest + 10)


_GONE = ProcessState(name="", state="STOPPED")


def _wait_stopped(op: Operator, names: list[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        states = op.backend.states()
        left = [n for n in names if states.get(n, _GONE).state not in STOPPED_STATES]
        if not left:
            return
        if time.monotonic() > deadline:
            raise ManageError(f"{', '.join(left)} did not stop within {timeout:.0f} s")
        time.sleep(POLL)


def wait_healthy(op: Operator, programs: list[Program], timeout: float) -> list[str]:
    """Wait until the programs run and web answers /api/version; return what is not so.

    On a terminal a progress bar counts the programs that are up.
    """
    deadline = time.monotonic() + timeout
    bar = _progress(len(programs), "waiting for programs")
    shown = 0
    try:
        while True:
            states = op.backend.states()
            problems = []
            for program in programs:
                state = states.get(program.name)
                if state is None or state.state != UP:
                    problems.append(f"{program.name} is {state.state if state else 'not loaded'}")
                elif program.bind:
                    ok, detail = web_answers(program.bind, timeout=1.0)
                    if not ok:
                        problems.append(f"{program.name}: {detail}")
            healthy = len(programs) - len(problems)
            if bar is not None and healthy > shown:
                bar.update(healthy - shown)
                shown = healthy
            failed = any(states.get(p.name, _GONE).state == "FATAL" for p in programs)
            if not problems or failed or time.monotonic() > deadline:
                return problems
            time.sleep(POLL)
    finally:
        if bar is not None:
            bar.render_finish()


def _progress(length: int, label: str):
    """A click progress bar on stderr when it is a terminal (never in logs or pipes)."""
    if not sys.stderr.isatty() or length == 0:
        return None
    bar = click.progressbar(length=length, label=label, file=sys.stderr, show_pos=True)
    bar.render_progress()
    return bar


def _timeout(program: Program, override: float | None) -> float:
    return override if override is not None else program.start_timeout + START_GRACE


def _report_health(op: Operator, chosen: list[Program], timeout: float | None) -> int:
    longest = max((p.start_timeout for p in chosen), default=0)
    wait = timeout if timeout is not None else longest + START_GRACE
    began = time.monotonic()
    problems = wait_healthy(op, chosen, wait)
    status_lines(op, [p.name for p in chosen])
    if problems:
        op.say("not healthy: " + "; ".join(problems))
        op.say(f"logs: {op.deployment.log_dir}")
        return EXIT_FAILED
    op.say(f"{len(chosen)} programs healthy after {time.monotonic() - began:.1f} s")
    return EXIT_OK


def status(op: Operator, names: tuple[str, ...]) -> int:
    """Print each program's state; 0 when all run, 1 when some do not, 3 when not running."""
    if not op.backend.is_running():
        op.say(f"Nebula is not running (nothing runs for {op.deployment.data_dir})")
        return EXIT_NOT_RUNNING
    shown = op.chosen_names(names)
    states = status_lines(op, shown, extras=not names)
    listed = shown + ([n for n in states if n not in shown] if not names else [])
    return EXIT_OK if all(states.get(n, _GONE).state == UP for n in listed) else EXIT_FAILED


def status_lines(op: Operator, names: list[str], extras: bool = True) -> dict[str, ProcessState]:
    """Print one line per program (and, with extras, per other loaded process)."""
    states = op.backend.states()
    others = sorted(set(states) - set(names)) if extras else []
    width = max((len(name) for name in [*names, *others]), default=4)
    for name in [*names, *others]:
        state = states.get(name)
        if state is None:
            op.say(f"{name:<{width}}  NOT LOADED  (run `manage update`)")
        else:
            op.say(f"{name:<{width}}  {state.state:<10}  {state.description}")
    return states
