"""Start a Dramatiq worker pool or the scheduler with Nebula's queue names.

    python -m workers.run worker --queues default,jobs,exports --processes 2 --threads 8
    python -m workers.run scheduler --processes 1 --threads 4

Both run ``dramatiq workers.main`` (a master process that forks the workers and forwards
SIGTERM to them); the queue names get the configured prefix here.
"""

from __future__ import annotations

import os
import sys

import click

from app.settings import load_settings

# Nothing here may import dramatiq at module level: its Prometheus middleware reads its
# settings from the environment when dramatiq is first imported (see _metrics_env).
TIME_LIMIT_ENV = "NEBULA_WORKER_TIME_LIMIT"
METRICS_ENV = "NEBULA_WORKER_METRICS"
ROLE_QUEUES = {"worker": "default,jobs,exports", "scheduler": "scheduling"}
DEFAULT_METRICS_PORTS = {"worker": 9191, "scheduler": 9192}


def _metrics_env(settings, role: str, port: int) -> None:
    """Configure Dramatiq's Prometheus middleware: its files under the data dir, its port."""
    if port == 0:
        return
    directory = settings.resolved_data_dir / "metrics" / f"{role}-{port}"
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.db"):  # counts of a previous run
        stale.unlink()
    os.environ.update({"dramatiq_prom_db": str(directory), "dramatiq_prom_port": str(port),
                       "dramatiq_prom_host": os.environ.get("dramatiq_prom_host", "127.0.0.1"),
                       METRICS_ENV: "1"})


@click.command()
@click.argument("role", type=click.Choice(sorted(ROLE_QUEUES)))
@click.option("--queues", help="Comma-separated logical queues (default: the role's).")
@click.option("--processes", type=click.IntRange(1, 64), default=1, show_default=True)
@click.option("--threads", type=click.IntRange(1, 256), default=8, show_default=True)
@click.option("--prefetch", type=click.IntRange(1, 65535),
              help="Messages each worker process prefetches per queue (default: 2 x threads).")
@click.option("--time-limit", type=click.IntRange(1), help="Default time limit of a message, in seconds.")
@click.option("--metrics-port", type=click.IntRange(0, 65535),
              help="Port of the pool's Prometheus endpoint (0: none; default 9191 worker, 9192 scheduler).")
@click.option("--shutdown-timeout", type=click.IntRange(1), default=600, show_default=True,
              help="Seconds the workers get to finish in-flight messages on SIGTERM.")
def main(role: str, queues: str | None, processes: int, threads: int, prefetch: int | None,
         time_limit: int | None, metrics_port: int | None, shutdown_timeout: int) -> None:
    """Run one Dramatiq pool for ROLE (worker or scheduler)."""
    settings = load_settings()
    if prefetch:
        os.environ["dramatiq_queue_prefetch"] = str(prefetch)  # read when dramatiq is imported
    _metrics_env(settings, role, DEFAULT_METRICS_PORTS[role] if metrics_port is None else metrics_port)
    from dramatiq.cli import main as dramatiq_main, make_argument_parser

    names = [settings.queue_name(q.strip()) for q in (queues or ROLE_QUEUES[role]).split(",") if q.strip()]
    if time_limit:
        os.environ[TIME_LIMIT_ENV] = str(time_limit)
    os.environ["NEBULA_PROCESS_ROLE"] = role
    argv = ["workers.main", "--processes", str(processes), "--threads", str(threads),
            "--skip-logging", "--worker-shutdown-timeout", str(shutdown_timeout * 1000),
            "--queues", *names]
    sys.exit(dramatiq_main(make_argument_parser().parse_args(argv)))


if __name__ == "__main__":
    main()
