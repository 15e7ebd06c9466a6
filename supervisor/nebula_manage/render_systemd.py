"""Render a Deployment as systemd units: one service per program and ``nebula.target``.

Stop semantics match the supervisord rendering: ``KillMode=mixed`` sends SIGTERM to the
main process only (gunicorn drains, a Dramatiq master forwards it and waits for messages
in flight) and SIGKILL to the whole cgroup once ``TimeoutStopSec`` has passed.
"""

from __future__ import annotations

from nebula_manage.config import Deployment
from nebula_manage.errors import SettingsRefused
from nebula_manage.files import Rendering, header
from nebula_manage.programs import Program, Reload, build_programs

HEADER = header("#")
TARGET = "nebula.target"
UNIT_PREFIX = "nebula-"
AFTER = "network-online.target postgresql.service rabbitmq-server.service"


def unit_name(program: Program) -> str:
    """The systemd unit of a program."""
    return f"{UNIT_PREFIX}{program.name}.service"


def render_systemd(deployment: Deployment) -> Rendering:
    """One service unit per program and a target that wants them all."""
    programs = build_programs(deployment)
    files = {unit_name(p): _service(deployment, p) for p in programs}
    files[TARGET] = _target(deployment, programs)
    return Rendering(
        root=deployment.processes.systemd.resolved_unit_dir(),
        files=files,
        managed=(f"{UNIT_PREFIX}*.service", TARGET),
    )


def _target(deployment: Deployment, programs: list[Program]) -> str:
    wanted_by = "default.target" if deployment.processes.systemd.scope == "user" else (
        "multi-user.target"
    )
    return HEADER + _sections(
        ("Unit", [
            ("Description", f"Nebula in {deployment.data_dir}"),
            ("Wants", " ".join(unit_name(p) for p in programs)),
            ("After", AFTER),
        ]),
        ("Install", [("WantedBy", wanted_by)]),
    )


def _service(deployment: Deployment, program: Program) -> str:
    systemd = deployment.processes.systemd
    service: list[tuple[str, object]] = [
        ("Type", "simple"),
        ("WorkingDirectory", _escape(str(deployment.data_dir))),
        ("ExecStart", " ".join(_quote(arg, command=True) for arg in program.argv)),
    ]
    if program.reload is not Reload.RESTART:
        service.append(("ExecReload", "/bin/kill -HUP $MAINPID"))
    service += [("Environment", _quote(f"{key}={value}"))
                for key, value in program.environment.items()]
    service += [
        ("UMask", f"0{program.umask}"),
        ("KillMode", "mixed"),
        ("KillSignal", "SIGTERM"),
        ("TimeoutStartSec", program.start_timeout),
        ("TimeoutStopSec", program.stop_timeout),
        ("Restart", "always"),
        ("RestartSec", 2),
        ("SyslogIdentifier", f"{UNIT_PREFIX}{program.name}"),
    ]
    if program.memory_limit:
        service.append(("MemoryMax", f"{program.memory_limit}M"))
    if systemd.scope == "system" and systemd.user:
        service.append(("User", systemd.user))
    if systemd.scope == "system" and systemd.group:
        service.append(("Group", systemd.group))
    return HEADER + _sections(
        ("Unit", [
            ("Description", f"Nebula {program.description}"),
            ("PartOf", TARGET),
            ("After", AFTER),
            ("Wants", "network-online.target"),
        ]),
        ("Service", service),
    )


def _sections(*sections: tuple[str, list[tuple[str, object]]]) -> str:
    blocks = []
    for name, options in sections:
        lines = [f"[{name}]"] + [f"{key}={value}" for key, value in options]
        blocks.append("\n".join(lines) + "\n")
    return "\n".join(blocks)


def _escape(text: str) -> str:
    if "\n" in text:
        raise SettingsRefused([f"{text!r}: a line break cannot be written to a systemd unit"])
    # % starts a specifier everywhere in a unit file; doubled, it is literal.
    return text.replace("%", "%%")


def _quote(text: str, command: bool = False) -> str:
    """A double-quoted word as systemd's ExecStart= and Environment= parse it."""
    text = _escape(text).replace("\\", "\\\\").replace('"', '\\"')
    if command:
        text = text.replace("$", "$$")  # ExecStart= expands $NAME; Environment= does not
    return f'"{text}"'
