"""Beat's Prometheus endpoint: queue depths, and invocations and jobs by state.

Computed when scraped (a few COUNT queries and one look at each queue), so the figures
are current and nothing runs when nobody scrapes.
"""

from __future__ import annotations

import logging

import sqlalchemy as sa

from workers.broker import queue_stats
from workers.runtime import WorkerRuntime

log = logging.getLogger(__name__)

# Tables counted by state; a table that does not exist yet is skipped.
STATE_TABLES = {"job": "nebula_jobs", "workflow_invocation": "nebula_invocations", "task": "nebula_tasks"}


class NebulaCollector:
    """A prometheus_client collector reading the database and the broker."""

    def __init__(self, rt: WorkerRuntime):
        self.rt = rt

    def collect(self):
        """Yield the metric families."""
        from prometheus_client.core import GaugeMetricFamily

        depth = GaugeMetricFamily("nebula_queue_messages", "Messages in a queue, by kind.", labels=["queue", "kind"])
        try:
            for stat in queue_stats(self.rt.settings, broker=self.rt.broker):
                for kind in ("ready", "delayed", "unacked", "dead", "consumers"):
                    value = getattr(stat, kind)
                    if value is not None:
                        depth.add_metric([stat.name, kind], value)
        except Exception:  # noqa: BLE001 - a scrape must not kill beat
            log.exception("queue stats unavailable")
        yield depth
        with self.rt.services.engine.connect() as conn:
            names = set(sa.inspect(conn).get_table_names())
            for table, metric in STATE_TABLES.items():
                if table not in names:
                    continue
                family = GaugeMetricFamily(metric, f"Rows of {table} by state.", labels=["state"])
                rows = conn.execute(sa.text(f"SELECT state, COUNT(*) FROM {table} GROUP BY state"))
                for state, count in rows:
                    family.add_metric([str(state)], count)
                yield family


def serve_metrics(rt: WorkerRuntime, port: int, host: str = "127.0.0.1") -> None:
    """Start the endpoint in a daemon thread."""
    from prometheus_client import CollectorRegistry, start_http_server

    registry = CollectorRegistry()
    registry.register(NebulaCollector(rt))
    start_http_server(port, addr=host, registry=registry)
