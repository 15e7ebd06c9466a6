"""The programs a Deployment runs, independent of the process manager that runs them.

Each backend renders the same list; the commands start Nebula by module path with the
same Python that runs manage, so manage never imports ``app`` or ``workers``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace

from nebula_manage.config import Deployment
from nebula_manage.settings import ServiceSettings, WorkerPoolSettings


class Reload(enum.Enum):
    """How `manage graceful` reloads a program without losing work."""

    SIGHUP = "sighup"  # gunicorn: new workers start before the old ones stop
    ROLLING = "rolling"  # several web instances: restart one, wait for /api/version, next
    RESTART = "restart"  # SIGTERM (in-flight work finishes), then start again


@dataclass(frozen=True)
class Program:
    """One long-running process: its command and how to start, stop and reload it."""

    name: str
    kind: str  # web, worker, scheduler or beat
    argv: list[str]
    environment: dict[str, str]
    umask: str
    start_timeout: int
    stop_timeout: int
    memory_limit: int | None
    reload: Reload
    priority: int  # lower starts first and stops last
    description: str
    bind: str | None = None
    # gunicorn and dramatiq masters pass SIGTERM on to their own children themselves;
    # signalling the whole group as well would cut their drain short.
    stop_as_group: bool = False


def build_programs(deployment: Deployment) -> list[Program]:
    """Every enabled program of a deployment, in start order."""
    settings = deployment.processes
    programs: list[Program] = []
    if settings.beat.enable:
        argv = _python(deployment, "-m", "workers.beat")
        programs.append(_program(deployment, "beat", settings.beat, argv, "periodic tasks"))
    if settings.scheduler.enable:
        sched = settings.scheduler
        argv = _python(
            deployment, "-m", "workers.run", "scheduler",
            "--processes", str(sched.processes), "--threads", str(sched.threads),
            "--metrics-port", str(SCHEDULER_METRICS_PORT),
        )
        description = f"scheduler, {sched.processes} process{'es' if sched.processes > 1 else ''}"
        programs.append(_program(deployment, "scheduler", sched, argv, description))
    enabled_pools = [pool for pool in settings.worker_pools if pool.enable]
    for index, pool in enumerate(enabled_pools):
        programs.append(_worker_program(deployment, pool, worker_metrics_port(index)))
    if settings.web.enable:
        programs += _web_programs(deployment)
    return programs


# Prometheus endpoints on 127.0.0.1: each Dramatiq pool serves its own per-actor metrics,
# beat serves queue depths and states (NEBULA_BEAT_METRICS_PORT, default 9193), the web
# serves /metrics on its own bind.
SCHEDULER_METRICS_PORT = 9192


def worker_metrics_port(index: int) -> int:
    """The metrics port of the index-th enabled worker pool: 9191, then 9201, 9202, …"""
    return 9191 if index == 0 else 9200 + index


def _worker_program(deployment: Deployment, pool: WorkerPoolSettings, metrics_port: int) -> Program:
    argv = _python(
        deployment, "-m", "workers.run", "worker",
        "--queues", ",".join(pool.queues),
        "--processes", str(pool.processes), "--threads", str(pool.threads),
        "--metrics-port", str(metrics_port),
    )
    if pool.prefetch is not None:
        argv += ["--prefetch", str(pool.prefetch)]
    if pool.time_limit is not None:
        argv += ["--time-limit", str(pool.time_limit)]
    description = f"workers on {','.join(pool.queues)}"
    return _program(deployment, f"worker-{pool.name}", pool, argv, description, kind="worker")


def _web_programs(deployment: Deployment) -> list[Program]:
    web = deployment.processes.web
    binds = deployment.web_binds
    reload = Reload.SIGHUP if len(binds) == 1 else Reload.ROLLING
    programs = []
    for index, bind in enumerate(binds):
        argv = _python(
            deployment, "-m", "gunicorn",
            "--bind", bind,
            "--workers", str(web.workers),
            "--threads", str(web.threads),
            "--worker-class", "gthread",
            "--timeout", str(web.timeout),
            "--graceful-timeout", str(web.graceful_timeout),
            "app.api:create_app()",
        )
        program = _program(deployment, f"web-{index}", web, argv, f"web on {bind}")
        programs.append(replace(program, bind=bind, reload=reload))
    return programs


def _python(deployment: Deployment, *args: str) -> list[str]:
    return [deployment.python, *args]


PRIORITY = {"beat": 100, "scheduler": 200, "worker": 200, "web": 300}


def _program(
    deployment: Deployment,
    name: str,
    service: ServiceSettings,
    argv: list[str],
    description: str,
    kind: str | None = None,
) -> Program:
    kind = kind or name.split("-")[0]
    return Program(
        name=name,
        kind=kind,
        argv=argv,
        environment={**deployment.environment, **service.environment},
        umask=service.umask,
        start_timeout=service.start_timeout,
        stop_timeout=service.stop_timeout,
        memory_limit=service.memory_limit,
        reload=Reload.RESTART,
        priority=PRIORITY[kind],
        description=description,
    )


def select(programs: list[Program], names: tuple[str, ...] | list[str]) -> list[Program]:
    """The programs named (``web-0``) or of the kinds named (``web``, ``worker``); all if none."""
    if not names:
        return list(programs)
    chosen = [p for p in programs if p.name in names or p.kind in names]
    unknown = [n for n in names if not any(p.name == n or p.kind == n for p in programs)]
    if unknown:
        known = ", ".join(sorted({p.name for p in programs} | {p.kind for p in programs}))
        raise LookupError(f"no program named {', '.join(unknown)} here; known: {known}")
    return chosen
