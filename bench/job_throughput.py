"""Job throughput: cat1 mapped over a list of N small datasets, from the POST until every job is ok.

    .venv/bin/python bench/job_throughput.py [--jobs 1000] [--rounds 3] [--backend rabbitmq-pg]

Real processes in the default layout: the web app in this process (Flask, through its
test client: the same code as under gunicorn, without HTTP), one worker pool in ``manage``'s default layout,
``python -m workers.run worker --processes 2 --threads 4``, after ``python -m app.cli db
upgrade``, on PostgreSQL + RabbitMQ (or ``sql-pg`` / ``sql-sqlite`` for the embedded broker).
The N inputs are uploaded once through the fetch API into a list; each round POSTs the
map-over and waits until all N jobs are ok. In the same run, each round also runs the same
N ``cat`` commands from a plain Python loop with ``subprocess`` (the baseline), and the
map-over once more with the workers frozen during the POST ("workers alone": the rate once
every message is queued, i.e. the POST's cost left out). Prints jobs/s end to end, the
POST's own latency, the workers' rate, the baseline's rate and the ratio, per round and as
medians. Targets (DESIGN.md): >= 100 jobs/s and >= 0.5x the bare loop.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from app.models import Dataset, Job  # noqa: E402
from app.settings import Settings  # noqa: E402

from common import ApiBench, cleanup, environment, settings_for  # noqa: E402


class Bench(ApiBench):
    """The web app, the database, and helpers to drive a map-over."""

    def upload_list(self, history: str, count: int) -> str:
        """A list of ``count`` small datasets through the fetch API; waits until they are ok."""
        elements = [{"src": "pasted", "paste_content": f"element {i}\n", "name": f"e{i}", "ext": "txt"}
                    for i in range(count)]
        fetched = self.call("post", "/api/tools/fetch", json={"history_id": history, "targets": [
            {"destination": {"type": "hdca"}, "collection_type": "list", "name": f"{count} inputs", "elements": elements}]})
        job_id = self.ids.decode(fetched["jobs"][0]["id"])
        self.wait_jobs([job_id], 600)
        return fetched["output_collections"][0]["id"]

    def wait_jobs(self, job_ids: list[int], timeout: float) -> None:
        """Wait until every job is ok (raises on an error)."""
        low, high = min(job_ids), max(job_ids)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.engine.connect() as conn:
                states = dict(conn.execute(sa.select(Job.state, sa.func.count()).where(Job.id.between(low, high))
                                           .group_by(Job.state)).all())
            if states.get("error"):
                raise RuntimeError(f"jobs failed: {states}")
            if states.get("ok", 0) >= len(job_ids):
                return
            time.sleep(0.02)
        raise TimeoutError(f"jobs not finished after {timeout} s: {states}")

    def map_cat1(self, history: str, hdca: str, frozen: list[int] | None = None) -> tuple[float, float, int]:
        """(seconds until all ok, seconds of the POST, jobs) for one map-over of cat1.

        With ``frozen`` (the worker pool's pids) the workers are stopped during the POST and
        the time counts from when they resume: the workers' own rate, the POST left out.
        """
        for pid in frozen or []:
            os.kill(pid, signal.SIGSTOP)
        started = time.perf_counter()
        try:
            result = self.call("post", "/api/tools", json={"history_id": history, "tool_id": "cat1", "inputs": {
                "input1": {"batch": True, "values": [{"src": "hdca", "id": hdca}]}}})
            posted = time.perf_counter()
        finally:
            if frozen:
                time.sleep(0.5)  # let the last publishes land
                started = time.perf_counter()
                for pid in frozen:
                    os.kill(pid, signal.SIGCONT)
        job_ids = [self.ids.decode(j["id"]) for j in result["jobs"]]
        self.wait_jobs(job_ids, 600)
        return time.perf_counter() - started, posted - started, len(job_ids)

    def input_paths(self, hdca: str) -> list[Path]:
        """The files of the list's datasets."""
        from app.services.collections import leaf_datasets
        from app.services.registry import build_services

        services = build_services(self.settings)
        with services.session_factory() as session:
            from app.models import HistoryDatasetCollection

            collection_id = session.get(HistoryDatasetCollection, self.ids.decode(hdca)).collection_id
            ids = [d for _, d in leaf_datasets(session, collection_id)]
            keys = dict(session.execute(sa.select(Dataset.id, Dataset.object_key).where(Dataset.id.in_(ids))).all())
        services.engine.dispose()
        return [services.object_store.path(keys[i]) for i in ids]


def pool_pids(pool: subprocess.Popen) -> list[int]:
    """The pool's master and worker processes."""
    children = subprocess.run(["pgrep", "-P", str(pool.pid)], capture_output=True, text=True).stdout.split()
    return [pool.pid, *map(int, children)]


def bare_loop(paths: list[Path], out_dir: Path) -> float:
    """Seconds to run ``cat`` on each input from a plain loop (stdout to a file, as the job does)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    for i, path in enumerate(paths):
        with open(out_dir / f"out_{i}", "wb") as out:
            subprocess.run(["cat", str(path)], stdout=out, check=True)
    return time.perf_counter() - started


def main() -> None:
    """Run the rounds and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=1000, help="elements of the mapped list (= jobs per round)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--backend", choices=["rabbitmq-pg", "sql-pg", "sql-sqlite"], default="rabbitmq-pg")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4, help="threads per process (manage's default: 4)")
    args = parser.parse_args()
    prefix, db_name = f"jobbench{uuid.uuid4().hex[:6]}.", f"nebula_jobbench_{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory() as tmp:
        settings = settings_for(args.backend, Path(tmp) / "data", prefix, db_name)
        env = environment(settings)
        subprocess.run([sys.executable, "-m", "app.cli", "db", "upgrade"], cwd=ROOT, env=env, check=True,
                       stdout=subprocess.DEVNULL)
        pool = subprocess.Popen([sys.executable, "-m", "workers.run", "worker", "--processes", str(args.processes),
                                 "--threads", str(args.threads)], cwd=ROOT, env=env,
                                stdout=open(Path(tmp) / "workers.log", "wb"), stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            bench = Bench(settings)
            history = bench.call("post", "/api/histories", json={"name": "job throughput"})["id"]
            warm = bench.upload_list(history, 50)
            bench.map_cat1(history, warm)  # warm-up: tool box, connections, code paths
            hdca = bench.upload_list(history, args.jobs)
            paths = bench.input_paths(hdca)
            rows = []
            for number in range(1, args.rounds + 1):
                total, post, jobs = bench.map_cat1(history, hdca)
                drained, _, _ = bench.map_cat1(history, hdca, frozen=pool_pids(pool))
                bare = bare_loop(paths, Path(tmp) / f"bare_{number}")
                rows.append((jobs / total, post, jobs / drained, jobs / bare))
                print(f"round {number}: {jobs} jobs end to end {jobs / total:7.1f} jobs/s ({total:.2f} s, POST {post * 1000:.0f} ms)"
                      f" | workers alone {jobs / drained:7.1f} jobs/s | bare subprocess loop {jobs / bare:7.1f} jobs/s"
                      f" | ratio {jobs / total / (jobs / bare):.2f}", flush=True)
            rate, post, workers, bare = (statistics.median(column) for column in zip(*rows))
            print(json.dumps({"backend": args.backend, "jobs": args.jobs, "rounds": args.rounds,
                              "layout": f"{args.processes}x{args.threads}", "jobs_per_s": round(rate, 1),
                              "post_ms": round(post * 1000), "workers_alone_jobs_per_s": round(workers, 1),
                              "bare_loop_jobs_per_s": round(bare, 1), "ratio": round(rate / bare, 2)}))
            print(f"median of {args.rounds}: {rate:.1f} jobs/s end to end (POST {post * 1000:.0f} ms), "
                  f"workers alone {workers:.1f} jobs/s, bare loop {bare:.1f} jobs/s, ratio {rate / bare:.2f} "
                  "(targets: >= 100 jobs/s, >= 0.5)")
        finally:
            pool.send_signal(signal.SIGTERM)
            try:
                pool.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(pool.pid, signal.SIGKILL)
            cleanup(settings, db_name)


if __name__ == "__main__":
    main()
