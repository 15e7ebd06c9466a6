"""The ``processes:`` section of the settings file: which services run here, and how.

One pydantic model per service; their field descriptions are the documentation and
generate the sample settings file (see ``sample.py``). Defaults suit a 2-core machine.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

NAME_PATTERN = r"^[a-z0-9][a-z0-9_]*$"
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
QUEUE_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


def check_bind(value: str) -> str:
    """Accept host:port (IPv6 hosts in brackets) with a port between 1 and 65535."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{value!r} is not host:port, e.g. 127.0.0.1:8080")
    return value


def bind_port(bind: str) -> int:
    """The port of a host:port bind."""
    return int(bind.rpartition(":")[2])


class Section(BaseModel):
    """A settings section: unknown keys are errors, an empty section means all defaults."""

    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True)

    @model_validator(mode="before")
    @classmethod
    def _empty_is_defaults(cls, data: Any) -> Any:
        # `web:` followed only by comments parses as None; treat it as "all defaults".
        return {} if data is None else data


class ServiceSettings(Section):
    """Settings every service has; each service model adds its own."""

    enable: bool = Field(
        True,
        description="Run this service on this host. Switch services off on hosts that run only "
        "some of them; every host shares the database, broker and data directory.",
    )
    environment: dict[str, str] = Field(
        default_factory=dict,
        description="Extra environment variables of this service, on top of every NEBULA_* "
        "variable manage runs with (those reach every service).",
    )
    umask: str = Field("022", description="umask of the service's processes, in octal.")
    start_timeout: int = Field(
        5,
        gt=0,
        description="Seconds a process must stay up to count as started; one that exits "
        "sooner is retried, three times (supervisord startsecs, systemd TimeoutStartSec).",
    )
    stop_timeout: int = Field(
        30,
        gt=0,
        description="Seconds between SIGTERM and SIGKILL when the service stops.",
    )
    memory_limit: int | None = Field(
        None,
        gt=0,
        description="Memory limit of the service's whole process tree, in MiB; a service "
        "above it is restarted (gracefully). Empty: no limit.",
    )

    @field_validator("environment")
    @classmethod
    def _check_environment(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            if not ENV_NAME.match(name):
                raise ValueError(f"{name!r} is not an environment variable name")
        return value

    @field_validator("umask", mode="before")
    @classmethod
    def _check_umask(cls, value: Any) -> str:
        if not isinstance(value, str):
            # YAML reads 022 as the number 18; only a quoted umask is unambiguous.
            raise ValueError(f"write the umask quoted, e.g. umask: '022' (got {value!r})")
        if not re.fullmatch(r"0?[0-7]{3}", value):
            raise ValueError(f"{value!r} is not an octal umask such as 022 or 027")
        return value[-3:]


class WebSettings(ServiceSettings):
    """gunicorn serving the HTTP API; one or several instances."""

    binds: list[str] = Field(
        default_factory=list,
        description="host:port of each gunicorn instance. With two or more behind nginx "
        "(deploy/nginx/nebula.conf), `manage graceful` restarts them one at a time. "
        "Empty: one instance on nebula.bind.",
    )
    workers: int = Field(2, ge=1, description="gunicorn worker processes per instance.")
    threads: int = Field(4, ge=1, description="Threads per gunicorn worker (gthread).")
    timeout: int = Field(
        60, ge=1, description="Seconds a request may take before gunicorn restarts its worker."
    )
    graceful_timeout: int = Field(
        30,
        ge=1,
        description="Seconds gunicorn lets requests in flight finish when it stops or reloads.",
    )
    stop_timeout: int = Field(
        40,
        gt=0,
        description="Seconds between SIGTERM and SIGKILL; keep it above graceful_timeout so "
        "gunicorn can drain its requests.",
    )

    @field_validator("binds")
    @classmethod
    def _check_binds(cls, value: list[str]) -> list[str]:
        seen: dict[int, str] = {}
        for bind in value:
            check_bind(bind)
            port = bind_port(bind)
            if port in seen:
                raise ValueError(
                    f"two web instances on port {port} ({seen[port]} and {bind}); "
                    "give each instance its own port"
                )
            seen[port] = bind
        return value

    @model_validator(mode="after")
    def _check_drain(self) -> "WebSettings":
        if self.stop_timeout <= self.graceful_timeout:
            raise ValueError(
                f"stop_timeout ({self.stop_timeout}) must exceed graceful_timeout "
                f"({self.graceful_timeout}), or gunicorn is killed before it drains"
            )
        return self


class WorkerPoolSettings(ServiceSettings):
    """One Dramatiq worker pool: a master process with its worker processes."""

    name: str = Field(
        "main",
        pattern=NAME_PATTERN,
        description="Name of the pool, unique on this host (lowercase letters, digits, _).",
    )
    queues: list[str] = Field(
        default_factory=lambda: ["default", "jobs", "exports"],
        min_length=1,
        description="Queues the pool consumes. Give exports a pool of their own with a "
        "time_limit below RabbitMQ's consumer_timeout (see deploy/rabbitmq).",
    )
    processes: int = Field(2, ge=1, description="Worker processes of the pool.")
    threads: int = Field(4, ge=1, description="Worker threads per process.")
    prefetch: int | None = Field(
        None, ge=1, description="Messages each worker prefetches. Empty: Dramatiq's default."
    )
    time_limit: int | None = Field(
        None,
        ge=1,
        description="Longest a message may run, in seconds. Empty: each task's own limit.",
    )
    stop_timeout: int = Field(
        660,
        gt=0,
        description="Seconds between SIGTERM and SIGKILL. On SIGTERM Dramatiq stops taking "
        "messages and waits up to 10 minutes for those in flight, so keep this above 600.",
    )

    @field_validator("queues")
    @classmethod
    def _check_queues(cls, value: list[str]) -> list[str]:
        for queue in value:
            if not QUEUE_NAME.match(queue):
                raise ValueError(f"{queue!r} is not a queue name")
        if len(set(value)) != len(value):
            raise ValueError("a queue is listed twice")
        return value


class SchedulerSettings(ServiceSettings):
    """Scheduler processes advancing workflow invocations (a Dramatiq master)."""

    processes: int = Field(1, ge=1, description="Scheduler processes.")
    threads: int = Field(2, ge=1, description="Threads per scheduler process.")
    stop_timeout: int = Field(
        60,
        gt=0,
        description="Seconds between SIGTERM and SIGKILL; a scheduling pass in flight finishes "
        "first.",
    )


class BeatSettings(ServiceSettings):
    """The periodic-task process; exactly one runs in a deployment."""

    processes: int = Field(
        1,
        description="Always 1: exactly one beat runs in a deployment. On the other hosts "
        "switch it off with enable: false.",
    )
    stop_timeout: int = Field(10, gt=0, description="Seconds between SIGTERM and SIGKILL.")

    @field_validator("processes")
    @classmethod
    def _exactly_one(cls, value: int) -> int:
        if value != 1:
            raise ValueError(
                f"{value} beat processes: exactly one beat runs in a deployment; use 1 here, "
                "or enable: false on hosts where another host runs beat"
            )
        return value


class SystemdSettings(Section):
    """Where and as whom the systemd backend installs its units."""

    scope: Literal["system", "user"] = Field(
        "system",
        description="system units (run as root, managed with systemctl) or user units "
        "(systemctl --user).",
    )
    unit_dir: Path | None = Field(
        None,
        description="Directory the units are written to. Empty: /etc/systemd/system, or "
        "~/.config/systemd/user for user units.",
    )
    user: str | None = Field(None, description="User the services run as (system units only).")
    group: str | None = Field(None, description="Group the services run as (system units only).")

    def resolved_unit_dir(self) -> Path:
        """The unit directory, defaulted by scope."""
        if self.unit_dir is not None:
            return self.unit_dir.expanduser().resolve()
        if self.scope == "user":
            return Path("~/.config/systemd/user").expanduser()
        return Path("/etc/systemd/system")


class ProcessSettings(Section):
    """The ``processes:`` section: the services of this host and the process manager."""

    process_manager: Literal["supervisor", "systemd"] = Field(
        "supervisor",
        description="What runs the services: supervisor (a supervisord of manage's own, "
        "state in {data_dir}/supervisor) or systemd (units and nebula.target).",
    )
    state_dir: Path | None = Field(
        None,
        description="Where manage keeps supervisord's files ({state_dir}/supervisor) and the "
        "programs' logs ({state_dir}/logs). Empty: the data dir. Hosts sharing one data dir "
        "need a local one each, e.g. /var/lib/nebula.",
    )
    web: WebSettings = Field(default_factory=WebSettings, description="The HTTP API (gunicorn).")
    worker_pools: list[WorkerPoolSettings] = Field(
        default_factory=lambda: [WorkerPoolSettings()],
        description="Dramatiq worker pools running jobs, exports and other tasks. Empty list: "
        "no workers on this host.",
    )
    scheduler: SchedulerSettings = Field(
        default_factory=SchedulerSettings, description="Workflow scheduler processes."
    )
    beat: BeatSettings = Field(
        default_factory=BeatSettings, description="Periodic tasks; exactly one per deployment."
    )
    systemd: SystemdSettings = Field(
        default_factory=SystemdSettings, description="Only used with process_manager: systemd."
    )

    @field_validator("worker_pools")
    @classmethod
    def _unique_pools(cls, value: list[WorkerPoolSettings]) -> list[WorkerPoolSettings]:
        names = [pool.name for pool in value]
        for name in names:
            if names.count(name) > 1:
                raise ValueError(f"two worker pools are named {name!r}; names must be unique")
        return value

    @model_validator(mode="after")
    def _something_runs(self) -> "ProcessSettings":
        services = [self.web, self.scheduler, self.beat, *self.worker_pools]
        if not any(service.enable for service in services):
            raise ValueError("every service is switched off; nothing would run on this host")
        return self
