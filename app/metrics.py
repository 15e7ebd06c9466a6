"""Prometheus metrics of the web: request counts and latencies, aggregated across gunicorn workers.

prometheus_client's multiprocess mode keeps each worker's samples in files under the data
dir; ``GET /metrics`` sums them. The directory must be known before prometheus_client is
first imported in the process, hence the lazy import.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

from flask import Flask, Response, g, request

from app.settings import Settings

_METRICS: "WebMetrics | None" = None


@dataclass
class WebMetrics:
    """The web's metric objects (one set per process)."""

    requests: Any
    latency: Any


def _metrics(settings: Settings) -> WebMetrics:
    global _METRICS
    if _METRICS is None:
        port = settings.bind.rpartition(":")[2]
        directory = settings.resolved_data_dir / "metrics" / f"web-{port}"
        directory.mkdir(parents=True, exist_ok=True)
        os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", str(directory))
        from prometheus_client import Counter, Histogram

        _METRICS = WebMetrics(
            requests=Counter("nebula_http_requests_total", "HTTP requests served.", ["method", "route", "status"]),
            latency=Histogram("nebula_http_request_duration_seconds", "Time to answer an HTTP request.",
                              ["method", "route"], buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)),
        )
    return _METRICS


def init_app(app: Flask, settings: Settings) -> None:
    """Count and time every request; serve the aggregate at ``/metrics``."""
    metrics = _metrics(settings)

    @app.before_request
    def _start() -> None:
        g.metrics_start = time.perf_counter()

    @app.after_request
    def _observe(response: Response) -> Response:
        route = request.url_rule.rule if request.url_rule is not None else "unmatched"
        elapsed = time.perf_counter() - g.get("metrics_start", time.perf_counter())
        metrics.requests.labels(request.method, route, str(response.status_code)).inc()
        metrics.latency.labels(request.method, route).observe(elapsed)
        return response

    app.add_url_rule("/metrics", "metrics", _exposition)


def _exposition() -> Response:
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
    from prometheus_client import multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)
