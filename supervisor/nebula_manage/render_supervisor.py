"""Render a Deployment as supervisord configuration under ``{data_dir}/supervisor``.

One ``conf.d/<program>.conf`` per program and no ``[group:]`` section: supervisord's
``update`` restarts a whole group when one member changes, and programs of their own
restart only when their own configuration changed.
"""

from __future__ import annotations

import re
import shlex

from nebula_manage.config import Deployment
from nebula_manage.errors import SettingsRefused
from nebula_manage.files import Rendering, header
from nebula_manage.programs import Program, build_programs

HEADER = header(";")
IDENTIFIER_PREFIX = "nebula@"
WATCHDOG = "watchdog"
ORPHANS = "orphans"  # process groups the watchdog found left behind, for `manage stop`
EXIT_EVENTS = "PROCESS_STATE_EXITED,PROCESS_STATE_STOPPED"
MEMORY_TICK = "TICK_5"
# configparser ends a value at whitespace followed by ; or # (an inline comment).
_INLINE_COMMENT = re.compile(r"\s[;#]")


def render_supervisor(deployment: Deployment) -> Rendering:
    """The supervisord.conf and one conf.d file per program (plus the memory monitor)."""
    programs = build_programs(deployment)
    files = {"supervisord.conf": _supervisord_conf(deployment)}
    for program in programs:
        files[f"conf.d/{program.name}.conf"] = _program_conf(deployment, program)
    files[f"conf.d/{WATCHDOG}.conf"] = _watchdog_conf(deployment, programs)
    return Rendering(
        root=deployment.state_dir, files=files, managed=("supervisord.conf", "conf.d/*.conf")
    )


def _supervisord_conf(deployment: Deployment) -> str:
    state, socket = deployment.state_dir, deployment.socket_path
    return HEADER + _sections(
        ("unix_http_server", {"file": socket, "chmod": "0700"}),
        (
            "supervisord",
            {
                "logfile": state / "supervisord.log",
                "logfile_maxbytes": "10MB",
                "logfile_backups": "5",
                "pidfile": state / "supervisord.pid",
                "directory": deployment.data_dir,
                "childlogdir": deployment.log_dir,
                # `manage` refuses a state dir whose supervisord.conf names another host. No
                # ':' or space: event listeners get it in a header of name:value words
                "identifier": f"{IDENTIFIER_PREFIX}{deployment.hostname}",
                "nodaemon": "false",
            },
        ),
        (
            "rpcinterface:supervisor",
            {"supervisor.rpcinterface_factory": "supervisor.rpcinterface:make_main_rpcinterface"},
        ),
        ("supervisorctl", {"serverurl": f"unix://{socket}"}),
        ("include", {"files": "conf.d/*.conf"}),
    )


def _program_conf(deployment: Deployment, program: Program) -> str:
    return HEADER + f"; {program.description}\n" + _sections(
        (
            f"program:{program.name}",
            {
                "command": _command(program.argv),
                "directory": deployment.data_dir,
                "umask": program.umask,
                "priority": program.priority,
                "autostart": "true",
                "autorestart": "true",
                "startsecs": program.start_timeout,
                "startretries": 3,
                "stopsignal": "TERM",
                "stopwaitsecs": program.stop_timeout,
                "stopasgroup": str(program.stop_as_group).lower(),
                # whatever is left after stopwaitsecs goes, children included
                "killasgroup": "true",
                "environment": _environment(program.environment, program.name),
                "stdout_logfile": deployment.log_dir / f"{program.name}.log",
                "stdout_logfile_maxbytes": "50MB",
                "stdout_logfile_backups": 5,
                "redirect_stderr": "true",
            },
        )
    )


def _watchdog_conf(deployment: Deployment, programs: list[Program]) -> str:
    # gunicorn sheds memory with SIGHUP: fresh workers, and no request is lost
    limits = [f"{p.name}={p.memory_limit}{':hup' if p.kind == 'web' else ''}"
              for p in programs if p.memory_limit]
    orphans = deployment.state_dir / ORPHANS
    argv = [deployment.python, "-P", "-m", "nebula_manage.watchdog", str(orphans), *limits]
    events = EXIT_EVENTS + (f",{MEMORY_TICK}" if limits else "")
    return HEADER + "; reaps what a dead program left behind; enforces memory_limit\n" + (
        _sections(
            (
                f"eventlistener:{WATCHDOG}",
                {
                    "command": _command(argv),
                    "events": events,
                    "directory": deployment.data_dir,
                    "priority": 50,
                    "autostart": "true",
                    "autorestart": "true",
                    # stdout is the event protocol; stderr is the watchdog's log
                    "stdout_logfile": "NONE",
                    "stderr_logfile": deployment.log_dir / f"{WATCHDOG}.log",
                },
            )
        )
    )


def _sections(*sections: tuple[str, dict[str, object]]) -> str:
    blocks = []
    for name, options in sections:
        lines = [f"[{name}]"]
        lines += [f"{key} = {_value(str(value), key)}" for key, value in options.items()]
        blocks.append("\n".join(lines) + "\n")
    return "\n".join(blocks)


def _value(value: str, key: str) -> str:
    if "\n" in value or _INLINE_COMMENT.search(value):
        raise SettingsRefused(
            [f"{key}: {value!r} cannot be written to a supervisord file (a line break, or "
             "';'/'#' after a space); change that value"]
        )
    # supervisord expands %(name)s in its values; a literal % is written %%.
    return value.replace("%", "%%")


def _command(argv: list[str]) -> str:
    return " ".join(shlex.quote(arg) for arg in argv)


def _environment(environment: dict[str, str], owner: str) -> str:
    """KEY="value",... as supervisord parses it (it strips quotes at both ends of a value)."""
    pairs = []
    for key, value in environment.items():
        quote = "'" if '"' in value else '"'
        quote_at_an_end = bool(value) and (value[0] in "'\"" or value[-1] in "'\"")
        if quote in value or quote_at_an_end or "\n" in value or _INLINE_COMMENT.search(value):
            # the value is not shown: it may be a password
            raise SettingsRefused(
                [f"environment of {owner}: the value of {key} cannot pass through supervisord "
                 "(it holds both quote kinds, a quote at an end, a line break, or ';' or '#' "
                 "after a space); change it, or use process_manager: systemd"]
            )
        pairs.append(f"{key}={quote}{value}{quote}")
    return ",".join(pairs)
