"""The runner's two database steps as one statement each, on PostgreSQL.

A trivial job's cost is mostly round trips. Here the claim (UPDATE the job, read its
inputs and outputs) and the finish (UPDATE the job, UPDATE its outputs, find jobs waiting
on them) are single statements with data-modifying CTEs, each atomic on its own, sent in
autocommit mode on a psycopg connection each worker thread keeps (no pool checkout, no
SQLAlchemy layers: prepared statements, rows as named tuples): two round trips per job
instead of about ten (checkout ping, BEGIN, COMMIT, and the statements one by one). Other
databases, and jobs whose end must send messages in the same transaction (a workflow's
jobs), take the general path in ``runner``.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import re
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import psycopg
from psycopg.rows import namedtuple_row
from sqlalchemy.engine import Engine

from app.models import DatasetState, JobState

T = TypeVar("T")


def _placeholders(sql: str) -> str:
    """``:name`` parameters (as in the general path's statements) in psycopg's ``%(name)s`` form."""
    return re.sub(r"(?<![:\w]):(\w+)", r"%(\1)s", sql)


_DATASET_COLUMNS = "d.id, d.state, d.object_key, d.extension, d.name AS dataset_name, d.hid, d.metadata, d.purged"
CLAIM = f"""
WITH claimed AS (
    UPDATE job SET state = '{JobState.RUNNING}', worker_id = :worker, attempts = attempts + 1,
           start_time = :now, update_time = :now, pid = NULL
    WHERE id = :job_id AND state IN ('{JobState.QUEUED}', '{JobState.NEW}')
    RETURNING tool_id, params, invocation_id
)
SELECT claimed.tool_id, claimed.params, claimed.invocation_id, io.*
FROM claimed LEFT JOIN LATERAL (
    SELECT 0 AS is_output, ji.name AS param, {_DATASET_COLUMNS}, ji.id AS position
    FROM job_input ji JOIN dataset d ON d.id = ji.dataset_id WHERE ji.job_id = :job_id
    UNION ALL
    SELECT 1 AS is_output, jo.name AS param, {_DATASET_COLUMNS}, jo.id AS position
    FROM job_output jo JOIN dataset d ON d.id = jo.dataset_id WHERE jo.job_id = :job_id
) io ON true
ORDER BY io.is_output, io.position
"""
CLAIM = _placeholders(CLAIM)


@functools.lru_cache(maxsize=16)
def finish_statement(outputs: int) -> str:
    """The finish of a job with ``outputs`` outputs that succeeded (0: it failed, outputs set in error)."""
    job = f"""
    finished AS (
        UPDATE job SET state = :new_state, exit_code = :code, command_line = :script, stdout = :out,
               stderr = :err, info = :why, end_time = :now, update_time = :now, pid = NULL
        WHERE id = :job_id AND state = '{JobState.RUNNING}' AND worker_id = :worker
        RETURNING id
    )"""
    if outputs:
        rows = ", ".join(
            f"(CAST(:id_{i} AS INTEGER), CAST(:key_{i} AS VARCHAR), CAST(:ext_{i} AS VARCHAR), "
            f"CAST(:size_{i} AS BIGINT), CAST(:lines_{i} AS INTEGER), CAST(:peek_{i} AS TEXT), "
            f"CAST(:blurb_{i} AS VARCHAR), CAST(:meta_{i} AS JSON))" for i in range(outputs))
        stored = f"""
    stored AS (
        UPDATE dataset SET state = '{DatasetState.OK}', object_key = v.key, extension = v.ext, file_size = v.size,
               line_count = v.lines, peek = v.peek, blurb = v.blurb, metadata = v.meta, info = NULL,
               update_time = :now
        FROM (VALUES {rows}) AS v(id, key, ext, size, lines, peek, blurb, meta)
        WHERE dataset.id = v.id AND EXISTS (SELECT 1 FROM finished)
        RETURNING dataset.id
    )"""
    else:
        stored = f"""
    stored AS (
        UPDATE dataset SET state = '{DatasetState.ERROR}', info = :why, blurb = 'error', update_time = :now
        WHERE id IN (SELECT dataset_id FROM job_output WHERE job_id = :job_id)
          AND state <> '{DatasetState.DISCARDED}' AND EXISTS (SELECT 1 FROM finished)
        RETURNING dataset.id
    )"""
    return _placeholders(f"""
WITH {job},{stored}
SELECT (SELECT count(*) FROM finished) AS done,
       (SELECT count(*) FROM stored) AS stored,
       ARRAY(SELECT DISTINCT ji.job_id FROM job_input ji JOIN job w ON w.id = ji.job_id
             WHERE ji.dataset_id IN (SELECT dataset_id FROM job_output WHERE job_id = :job_id)
               AND w.state = '{JobState.NEW}') AS waiting
""")


class ThreadConnections:
    """One autocommit psycopg connection per thread, reopened once when it breaks."""

    def __init__(self, engine: Engine):
        url = engine.url.set(drivername="postgresql")
        self.conninfo = url.render_as_string(hide_password=False)
        self.local = threading.local()

    def _connect(self) -> psycopg.Connection:
        return psycopg.connect(self.conninfo, autocommit=True, row_factory=namedtuple_row)

    def run(self, work: Callable[[psycopg.Connection], T]) -> T:
        """Run ``work`` on this thread's connection (retried once on a fresh one if it was lost)."""
        for attempt in (1, 2):
            conn = getattr(self.local, "conn", None)
            if conn is None or conn.closed:
                conn = self.local.conn = self._connect()
            try:
                return work(conn)
            except psycopg.OperationalError:
                if conn.broken or conn.closed:
                    conn.close()
                    self.local.conn = None
                    if attempt == 1:
                        continue
                raise
        raise AssertionError("unreachable")


def claim(conns: ThreadConnections, job_id: int, worker: str, now: dt.datetime) -> list[Any]:
    """Claim a queued (or waiting) job; its input and output rows (none: not claimed)."""
    params = {"job_id": job_id, "worker": worker, "now": now}
    return conns.run(lambda conn: conn.execute(CLAIM, params, prepare=True).fetchall())


def finish(conns: ThreadConnections, params: dict[str, Any], outputs: list[dict[str, Any]]) -> tuple[bool, list[int]]:
    """Record a job's end and its outputs in one statement: (still held, ids of jobs waiting on it)."""
    values = dict(params)
    for i, row in enumerate(outputs):
        values.update({f"id_{i}": row["dataset_id"], f"key_{i}": row["key"], f"ext_{i}": row["ext"],
                       f"size_{i}": row["size"], f"lines_{i}": row["lines"], f"peek_{i}": row["text_peek"],
                       f"blurb_{i}": row["text_blurb"], f"meta_{i}": json.dumps(row.get("meta") or {})})
    row = conns.run(lambda conn: conn.execute(finish_statement(len(outputs)), values, prepare=True).fetchone())
    return bool(row.done), list(row.waiting or [])
