"""Workflow invocation figures against Galaxy 26.1.2's, on PostgreSQL + RabbitMQ with real processes.

    .venv/bin/python bench/workflows.py                     # everything
    .venv/bin/python bench/workflows.py --only post,map1k   # some of it
    .venv/bin/python bench/workflows.py --kill              # + scheduler SIGKILLed mid 10,000-element map-over

Layout: the web app in this process (Flask through its test client: the app's own code
path, without HTTP), one scheduler pool (``python -m workers.run scheduler``) and one worker
pool in ``manage``'s default layout (``python -m workers.run worker --processes 2 --threads 4``). Input datasets are
written straight into the object store and the database (small text files), then put
into lists; everything else goes through the API.

Measured (each against the Galaxy figure of the same machine size, SQLite, jobs created
but not run):

- ``post``: latency of ``POST /api/workflows/{id}/invocations`` for a 1-step workflow and
  100-, 1,000- and 10,000-element map-overs (p50 / p99 over ``--posts`` calls; the
  scheduler is stopped meanwhile and those invocations are cancelled afterwards);
- ``map1k`` / ``map10k``: seconds from the POST until all N jobs exist and until the
  invocation is ``scheduled`` with the workers stopped (as Galaxy was measured: jobs created,
  not run), then how long the workers take to run them; then the same map-over again with
  the workers running throughout (creation competes with execution for the 2 cores);
- ``chain``: a 50-step linear chain of cat1, seconds until ``completed``;
- ``--kill``: the scheduler is SIGKILLed while it creates a 10,000-element map-over's jobs,
  started again, and the jobs are counted (exactly 10,000 expected).
"""

from __future__ import annotations

import argparse
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

from app.models import Job, WorkflowInvocation  # noqa: E402
from app.settings import Settings  # noqa: E402

from common import ApiBench, cleanup, environment, settings_for  # noqa: E402
GALAXY = {
    "post_1": 0.028, "post_100": 0.29, "post_1000": 2.17,
    "scheduled_1": 0.97, "scheduled_100": 1.89, "scheduled_1000": 14.4,
    "chain_scheduled": 4.4, "chain_finished": 480.0,
}
MAP_OVER = {"class": "GalaxyWorkflow", "label": "map cat1", "inputs": {"the_list": {"type": "data_collection",
            "collection_type": "list"}}, "steps": {"cat_each": {"tool_id": "cat1", "in": {"input1": "the_list"}}}}
ONE_STEP = {"class": "GalaxyWorkflow", "label": "one cat1", "inputs": {"data": "data"},
            "steps": {"cat": {"tool_id": "cat1", "in": {"input1": "data"}}}}


def chain(length: int) -> dict:
    """A linear chain of cat1 steps."""
    steps = {"s0": {"tool_id": "cat1", "in": {"input1": "start"}}}
    for i in range(1, length):
        steps[f"s{i}"] = {"tool_id": "cat1", "in": {"input1": f"s{i - 1}/out_file1"}}
    return {"class": "GalaxyWorkflow", "label": f"{length}-step chain", "inputs": {"start": "data"}, "steps": steps}


class Pool:
    """A ``python -m workers.run`` process group."""

    def __init__(self, role: str, env: dict[str, str], log: Path, *args: str, nice: int = 0):
        self.cmd = [sys.executable, "-m", "workers.run", role, *args]
        self.nice = nice
        self.env, self.log = env, log
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        cmd = ["nice", "-n", str(self.nice), *self.cmd] if self.nice else self.cmd
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=self.env, stdout=open(self.log, "ab"),
                                     stderr=subprocess.STDOUT, start_new_session=True)

    def cpu_seconds(self) -> float:
        """CPU time (user + system) used so far by the live processes of the group."""
        if self.proc is None:
            return 0.0
        total = 0
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == self.proc.pid:  # the process group id
                total += int(fields[11]) + int(fields[12])
        return total / os.sysconf("SC_CLK_TCK")

    def freeze(self) -> None:
        """Stop the group's processes where they are (SIGSTOP): nothing runs, nothing restarts later."""
        os.killpg(self.proc.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        """Let a frozen group go on (SIGCONT), already booted and connected."""
        os.killpg(self.proc.pid, signal.SIGCONT)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, sig)
            self.proc.wait(60)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc = None


class Bench(ApiBench):
    """The web app in-process, the database, and helpers."""

    def datasets(self, history: str, count: int) -> list[int]:
        """``count`` small ok text datasets, written directly (not what is measured)."""
        from app.models import Dataset, History
        from app.services.registry import build_services

        services = build_services(self.settings)
        history_id = self.ids.decode(history)
        staging = Path(self.settings.data_dir) / "bench_staging"
        staging.mkdir(exist_ok=True)
        ids = []
        with services.session_factory.begin() as session:
            user_id = session.get(History, history_id).user_id
            from app.services.histories import allocate_hids

            first = allocate_hids(session, history_id, count)
            rows = [{"history_id": history_id, "user_id": user_id, "hid": first + i, "name": f"e{i}", "state": "ok",
                     "extension": "txt", "dbkey": "?", "visible": False, "deleted": False, "purged": False,
                     "tags": [], "metadata_": {}, "file_size": 0} for i in range(count)]
            ids = list(session.scalars(sa.insert(Dataset).returning(Dataset.id, sort_by_parameter_order=True), rows))
            keys = []
            for dataset_id in ids:
                path = staging / f"{dataset_id}"
                path.write_text(f"element {dataset_id}\n")
                keys.append({"id": dataset_id, "object_key": services.object_store.put(dataset_id, path)})
            session.execute(sa.update(Dataset), keys)
        services.engine.dispose()
        return ids

    def make_list(self, history: str, count: int) -> str:
        """A list collection of ``count`` fresh datasets."""
        ids = self.datasets(history, count)
        made = self.call("post", f"/api/histories/{history}/contents", json={
            "type": "dataset_collection", "collection_type": "list", "name": f"{count} inputs", "copy_elements": False,
            "element_identifiers": [{"name": f"e{i}", "src": "hda", "id": self.ids.encode(d)} for i, d in enumerate(ids)]})
        return made["id"]

    def invoke(self, workflow: str, inputs: dict, history: str) -> tuple[str, float]:
        started = time.perf_counter()
        result = self.call("post", f"/api/workflows/{workflow}/invocations",
                           json={"inputs": inputs, "history_id": history})
        return result["id"], time.perf_counter() - started

    def counts(self, invocation: str) -> tuple[str, int, dict[str, int]]:
        """(state, jobs, jobs by state) of an invocation and its sub-invocations."""
        invocation_id = self.ids.decode(invocation)
        with self.engine.connect() as conn:
            state = conn.scalar(sa.select(WorkflowInvocation.state).where(WorkflowInvocation.id == invocation_id))
            by_state = dict(conn.execute(sa.select(Job.state, sa.func.count()).where(Job.invocation_id == invocation_id)
                                         .group_by(Job.state)).all())
        return state, sum(by_state.values()), by_state

    def follow_creation(self, invocation: str, started: float, jobs: int, timeout: float = 300) -> dict[str, float]:
        """Seconds from ``started`` until all jobs exist and until the invocation is scheduled.

        Polled with one cheap query, every 5 ms for small invocations and every 20 ms for
        large ones: counting 10,000 jobs every 5 ms would itself take much of a core from
        the database being measured.
        """
        marks: dict[str, float] = {}
        invocation_id = self.ids.decode(invocation)
        query = sa.select(WorkflowInvocation.state, sa.select(sa.func.count()).select_from(Job)
                          .where(Job.invocation_id == invocation_id).scalar_subquery()
                          ).where(WorkflowInvocation.id == invocation_id)
        deadline = time.monotonic() + timeout
        with self.engine.connect() as conn:
            while time.monotonic() < deadline:
                state, count = conn.execute(query).one()
                conn.rollback()
                now = time.perf_counter() - started
                if count >= jobs:
                    marks.setdefault("jobs", now)
                if state in ("scheduled", "completed"):
                    marks.setdefault("scheduled", now)
                if len(marks) == 2:
                    return marks
                time.sleep(0.005 if jobs <= 1000 else 0.02)
        raise TimeoutError(f"invocation {invocation}: jobs not created after {timeout} s: {self.counts(invocation)}")

    def follow(self, invocation: str, started: float, jobs: int, timeout: float = 900) -> dict[str, float]:
        """Seconds from ``started`` until all jobs exist, until scheduled, and until completed."""
        marks: dict[str, float] = {}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state, count, by_state = self.counts(invocation)
            now = time.perf_counter() - started
            if count >= jobs and "jobs" not in marks:
                marks["jobs"] = now
            if state in ("scheduled", "completed") and "scheduled" not in marks:
                marks["scheduled"] = now
            if state == "completed":
                marks["completed"] = now
                return marks
            if state in ("failed", "cancelled"):
                raise RuntimeError(f"invocation {invocation} ended {state}: {by_state}")
            time.sleep(0.005 if "jobs" not in marks else 0.05)
        raise TimeoutError(f"invocation {invocation} not completed after {timeout} s: {self.counts(invocation)}")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def bench_posts(bench: Bench, history: str, workflows: dict[str, str], inputs: dict[str, dict], posts: int) -> list[str]:
    """POST latencies per size (scheduler stopped); returns the invocations made, to cancel."""
    made = []
    with bench.engine.connect() as conn:  # fresh statistics after the bulk set-up, as a running server has
        conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("ANALYZE")
    time.sleep(2)
    print("invoke POST latency (scheduler stopped; the request is O(1) in the workflow's size):")
    for name, (workflow, galaxy) in {"1-step": (workflows["one"], GALAXY["post_1"]),
                                     "100-element map-over": (workflows["map100"], GALAXY["post_100"]),
                                     "1,000-element map-over": (workflows["map1000"], GALAXY["post_1000"]),
                                     "10,000-element map-over": (workflows["map10000"], None)}.items():
        times = []
        for _ in range(5):  # warm-up (plan cache, connections), not counted
            made.append(bench.invoke(workflow, inputs[name], history)[0])
        for _ in range(posts):
            invocation, took = bench.invoke(workflow, inputs[name], history)
            made.append(invocation)
            times.append(took)
        galaxy_text = f"Galaxy {galaxy:.3f} s" if galaxy else "Galaxy: not measured"
        print(f"  {name:24s} p50 {statistics.median(times) * 1000:6.1f} ms  p99 {percentile(times, 0.99) * 1000:6.1f} ms"
              f"  max {max(times) * 1000:6.1f} ms   ({galaxy_text}; target p99 <= 25 ms)", flush=True)
    return made


def kill_test(bench: Bench, scheduler: Pool, workers: Pool, workflow: str, hdca: str, history: str, size: int) -> None:
    """SIGKILL the scheduler while it creates a map-over's jobs; restart; count the jobs."""
    workers.stop()  # jobs stay queued: only creation is under test
    invocation, _ = bench.invoke(workflow, {"the_list": {"src": "hdca", "id": hdca}}, history)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        _, count, _ = bench.counts(invocation)
        if count >= size // 4:
            break
        time.sleep(0.002)
    scheduler.stop(signal.SIGKILL)
    _, at_kill, _ = bench.counts(invocation)
    time.sleep(1.0)
    scheduler.start()
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        state, count, _ = bench.counts(invocation)
        if state == "scheduled":
            break
        time.sleep(0.1)
    time.sleep(2.0)  # any straggling duplicate would show up now
    with bench.engine.connect() as conn:
        invocation_id = bench.ids.decode(invocation)
        total = conn.scalar(sa.select(sa.func.count()).select_from(Job).where(Job.invocation_id == invocation_id))
        distinct = conn.scalar(sa.select(sa.func.count(sa.distinct(Job.element_index)))
                               .where(Job.invocation_id == invocation_id))
    verdict = "OK" if total == size == distinct else "WRONG"
    print(f"scheduler SIGKILLed with {at_kill} of {size} jobs created, restarted: {total} jobs "
          f"({distinct} distinct element indexes), invocation {state} — {verdict} "
          f"(Galaxy made 114,557 jobs from 21,989 elements)", flush=True)
    workers.start()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="post,map1k,map10k,chain", help="comma-separated parts to run")
    parser.add_argument("--posts", type=int, default=50, help="POSTs per size for the latency figures")
    parser.add_argument("--chain", type=int, default=50, help="steps of the linear chain")
    parser.add_argument("--kill", action="store_true", help="also the scheduler SIGKILL test (10,000 elements)")
    parser.add_argument("--backend", choices=["rabbitmq-pg", "sql-pg", "sql-sqlite"], default="rabbitmq-pg")
    parser.add_argument("--scheduler-threads", type=int, default=4)
    parser.add_argument("--worker-threads", type=int, default=4, help="threads per job worker process (manage's default: 4)")
    parser.add_argument("--nice-workers", type=int, default=0,
                        help="run the job workers at this nice level (scheduling before bulk job execution)")
    args = parser.parse_args()
    parts = set(args.only.split(","))
    prefix, db_name = f"wfbench{uuid.uuid4().hex[:6]}.", f"nebula_wfbench_{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory() as tmp:
        settings = settings_for(args.backend, Path(tmp) / "data", prefix, db_name)
        env = environment(settings)
        subprocess.run([sys.executable, "-m", "app.cli", "db", "upgrade"], cwd=ROOT, env=env, check=True,
                       stdout=subprocess.DEVNULL)
        scheduler = Pool("scheduler", env, Path(tmp) / "scheduler.log", "--processes", "1",
                         "--threads", str(args.scheduler_threads))
        workers = Pool("worker", env, Path(tmp) / "workers.log", "--processes", "2", "--threads", str(args.worker_threads),
                       nice=args.nice_workers)
        try:
            bench = Bench(settings)
            history = bench.call("post", "/api/histories", json={"name": "workflow bench"})["id"]
            upload = lambda wf: bench.call("post", "/api/workflows/upload", json={"workflow": wf})["id"]  # noqa: E731
            workflows = {"one": upload(ONE_STEP), "chain": upload(chain(args.chain))}
            workflows["map100"] = workflows["map1000"] = workflows["map10000"] = upload(MAP_OVER)
            single = bench.ids.encode(bench.datasets(history, 1)[0])
            lists = {n: bench.make_list(history, n) for n in (100, 1000, 10000)}
            inputs = {"1-step": {"data": {"src": "hda", "id": single}},
                      "100-element map-over": {"the_list": {"src": "hdca", "id": lists[100]}},
                      "1,000-element map-over": {"the_list": {"src": "hdca", "id": lists[1000]}},
                      "10,000-element map-over": {"the_list": {"src": "hdca", "id": lists[10000]}}}
            if "post" in parts:
                made = bench_posts(bench, history, workflows, inputs, args.posts)
                for invocation in made:
                    bench.call("delete", f"/api/invocations/{invocation}")
            scheduler.start()
            workers.start()
            # warm-up: code paths, tool box, connections in every process
            warm, started = bench.invoke(workflows["map100"], inputs["100-element map-over"], history)
            bench.follow(warm, time.perf_counter(), 100)
            for part, size in (("map1k", 1000), ("map10k", 10000)):
                if part not in parts:
                    continue
                the_list = {"the_list": {"src": "hdca", "id": lists[size]}}
                target = 0.5 if size == 1000 else 5.0
                galaxy = f"Galaxy {GALAXY['scheduled_1000']} s until scheduled" if size == 1000 else "Galaxy: not measured"
                # As Galaxy was measured: jobs created, not run (the workers are frozen meanwhile,
                # and go on afterwards already booted, so their rate leaves out a process start).
                workers.freeze()
                cpu = scheduler.cpu_seconds()
                started = time.perf_counter()
                invocation, post = bench.invoke(workflows["map1000"], the_list, history)
                marks = bench.follow_creation(invocation, started, size)
                cpu = scheduler.cpu_seconds() - cpu
                workers.thaw()
                ran = time.perf_counter()
                bench.follow(invocation, ran, size)
                run_s = time.perf_counter() - ran
                print(f"{size:,}-element map-over, jobs created not run: POST {post * 1000:.1f} ms; all {size:,} jobs "
                      f"created {marks['jobs']:.2f} s after the POST (target <= {target} s; {galaxy}); scheduled "
                      f"{marks['scheduled']:.2f} s; scheduler CPU {cpu:.2f} s. Then run by the workers in {run_s:.1f} s "
                      f"({size / run_s:.0f} jobs/s)", flush=True)
                # Everything at once: creation competes with the workers running the first jobs.
                started = time.perf_counter()
                invocation, post = bench.invoke(workflows["map1000"], the_list, history)
                marks = bench.follow(invocation, started, size)
                print(f"{size:,}-element map-over, workers running: all jobs created {marks['jobs']:.2f} s, "
                      f"completed {marks['completed']:.2f} s after the POST", flush=True)
            if "chain" in parts:
                data = bench.ids.encode(bench.datasets(history, 1)[0])
                started = time.perf_counter()
                invocation, post = bench.invoke(workflows["chain"], {"start": {"src": "hda", "id": data}}, history)
                marks = bench.follow(invocation, started, args.chain)
                print(f"{args.chain}-step chain of cat1: POST {post * 1000:.1f} ms; finished (completed) in "
                      f"{marks['completed']:.2f} s (target <= 10 s; Galaxy scheduled it in {GALAXY['chain_scheduled']} s "
                      f"and finished its jobs in {GALAXY['chain_finished']:.0f} s)", flush=True)
            if args.kill:
                kill_test(bench, scheduler, workers, workflows["map10000"], lists[10000], history, 10000)
        finally:
            scheduler.stop()
            workers.stop()
            cleanup(settings, db_name)


if __name__ == "__main__":
    main()
