"""History archive export against ``tar czf`` of the same files; the worker's peak memory.

    python bench/history_archive.py                      # 50 and 200 datasets of 5 MiB
    python bench/history_archive.py --sizes 200 --level 6 --content random

For each size, a fresh data dir (SQLite, embedded broker) gets one history of N datasets
of 5 MiB each, written straight into the object store. Then, in the same run:

1. ``tar czf`` of the dataset files (gzip's default level 6), timed;
2. a worker process — the real runtime, a Dramatiq worker with one thread on the exports
   queue — runs the PrepareHistoryArchive task, sent as the app sends it; its wall time is
   the task's, and its peak RSS comes from ``os.wait4`` on that process alone.

Prints MiB/s of both, their ratio (target ≥ 0.9: Nebula at least 0.9× tar's speed), the CPU
seconds each used (less sensitive than wall time on a shared machine) and the worker's peak
RSS (target < 150 MiB, not growing with the history). Nebula compresses at level 1
(``app.exports.archive.DEFAULT_COMPRESSLEVEL``), in 1 MiB pieces on a thread pool as pigz
does (a multi-member gzip); ``--level 6`` compares like for like with tar's gzip.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MIB = 1 << 20
ROOT = Path(__file__).resolve().parents[1]


def make_block(kind: str, size: int = 5 * MIB) -> bytes:
    """5 MiB of tabular text (like a BED/VCF-ish dataset) or random bytes."""
    if kind == "random":
        return os.urandom(size)
    rng = random.Random(42)
    lines, total, i = [], 0, 0
    while total < size:
        line = (f"chr{rng.randint(1, 22)}\t{rng.randint(1, 10**8)}\t{rng.randint(1, 10**8)}\tread_{i}\t"
                f"{rng.randint(0, 60)}\t{'+-'[i % 2]}\t{''.join(rng.choices('ACGT', k=40))}\n")
        lines.append(line)
        total += len(line)
        i += 1
    return "".join(lines).encode()[:size]


def populate(data_dir: Path, count: int, block: bytes) -> tuple[int, Path]:
    """A user, a history and ``count`` datasets with files; return (history id, objects dir)."""
    from app.migrate import upgrade
    from app.models import Dataset, History, User
    from app.services.registry import build_services
    from app.settings import Settings

    settings = Settings(data_dir=data_dir, log_format="console", log_level="WARNING")
    upgrade(settings)
    services = build_services(settings)
    staging = data_dir / "staging"
    staging.mkdir()
    with services.session_factory.begin() as session:
        user = User(username="bench", email="bench@example.org")
        session.add(user)
        session.flush()
        history = History(user_id=user.id, name="bench", hid_counter=count + 1)
        session.add(history)
        session.flush()
        for n in range(count):
            dataset = Dataset(history_id=history.id, user_id=user.id, hid=n + 1, name=f"dataset {n}", state="ok",
                              extension="tabular", file_size=len(block))
            session.add(dataset)
            session.flush()
            path = staging / f"{n}"
            # Each file differs from the others (a header line), as real datasets do.
            path.write_bytes(f"# dataset {n}\n".encode() + block[: len(block) - 16])
            dataset.object_key = services.object_store.put(dataset.id, path)
            dataset.file_size = services.object_store.path(dataset.object_key).stat().st_size
        history_id = history.id
    services.engine.dispose()
    return history_id, services.object_store.root


def run_tar(objects: Path, out: Path) -> tuple[float, float]:
    """(wall seconds, CPU seconds of tar and its gzip) for ``tar czf`` of the object store's files."""
    started = time.perf_counter()
    proc = subprocess.Popen(["tar", "czf", str(out), "-C", str(objects), "."])
    _, status, usage = os.wait4(proc.pid, 0)
    if status != 0:
        raise SystemExit(f"tar failed ({status})")
    return time.perf_counter() - started, usage.ru_utime + usage.ru_stime


def run_worker(data_dir: Path, history_id: int, level: int | None) -> tuple[dict, float, int, float]:
    """(task result, wall seconds, peak RSS in KiB, CPU seconds) of a worker process doing the export."""
    env = dict(os.environ, NEBULA_DATA_DIR=str(data_dir), NEBULA_LOG_LEVEL="WARNING", NEBULA_LOG_FORMAT="console")
    args = [sys.executable, __file__, "--child", str(history_id)] + (["--level", str(level)] if level else [])
    started = time.perf_counter()
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, cwd=ROOT)
    assert proc.stdout is not None
    output = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - started
    if status != 0:
        raise SystemExit(f"worker failed ({status}): {output.decode()[-2000:]}")
    result = json.loads(output.decode().strip().splitlines()[-1])
    return result, elapsed, usage.ru_maxrss, usage.ru_utime + usage.ru_stime


def child(history_id: int, level: int | None) -> None:
    """The worker process: runtime + one Dramatiq worker thread; send the task and wait for it."""
    import dramatiq

    from app.exports import archive
    from app.models import Task, TaskState
    from app.schemas.tasks import PrepareHistoryArchive
    from app.shortterm import ShortTermStorage
    from workers.runtime import build_runtime

    if level:
        archive.DEFAULT_COMPRESSLEVEL = level
    rt = build_runtime()
    services = rt.services
    sts = ShortTermStorage.from_settings(rt.settings)
    meta = sts.create(1, "bench.tar.gz", "application/x-gzip")
    with services.session_factory.begin() as session:
        task_id = services.enqueuer.send(session, PrepareHistoryArchive(
            storage_request_id=meta.request_id, history_id=history_id, model_store_format="tar.gz"), track=True)
    worker = dramatiq.Worker(rt.broker, worker_threads=1, worker_timeout=100,
                             queues={rt.settings.queue_name("exports")})
    started = time.perf_counter()
    worker.start()
    try:
        while True:
            with services.session_factory() as session:
                task = session.get(Task, task_id)
                if task.state in TaskState.TERMINAL:
                    break
            time.sleep(0.05)
    finally:
        worker.stop()
    elapsed = time.perf_counter() - started
    if task.state != TaskState.SUCCESS:
        raise SystemExit(f"export failed: {task.error}")
    print(json.dumps({**task.result, "task_seconds": elapsed, "archive": str(sts.target_path(meta.request_id))}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[50, 200], help="datasets per history (5 MiB each)")
    parser.add_argument("--content", choices=["text", "random"], default="text")
    parser.add_argument("--level", type=int, default=None, help="Nebula's gzip level (default: its setting, 1)")
    parser.add_argument("--repeat", type=int, default=1, help="alternate tar and Nebula this many times; medians")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        child(args.child, args.level)
        return
    block = make_block(args.content)
    print(f"content: {args.content}; Nebula gzip level {args.level or 1}, tar czf (gzip level 6); "
          f"median of {args.repeat}; CPU = user+sys of tar+gzip / of the worker process")
    print(f"{'datasets':>8} {'GiB':>5} {'tar s':>7} {'tar MiB/s':>9} {'nebula s':>8} {'nebula MiB/s':>12} "
          f"{'ratio':>6} {'tar CPU s':>9} {'nebula CPU s':>12} {'worker peak MiB':>15} {'tgz MiB':>8} {'nebula MiB':>10}")
    for count in args.sizes:
        with tempfile.TemporaryDirectory(prefix="nebula-bench-", dir=os.environ.get("BENCH_TMP")) as tmp:
            data_dir = Path(tmp) / "data"
            history_id, objects = populate(data_dir, count, block)
            total = sum(p.stat().st_size for p in objects.rglob("*.dat"))
            tar_out = Path(tmp) / "tar.tgz"
            tars, nebulas, peaks = [], [], []
            for _ in range(args.repeat):
                tars.append(run_tar(objects, tar_out))
                result, _, peak_kib, cpu = run_worker(data_dir, history_id, args.level)
                nebulas.append((result["task_seconds"], cpu))
                peaks.append(peak_kib)
                Path(result["archive"]).unlink(missing_ok=True)
            tar_s, tar_cpu = statistics.median(t for t, _ in tars), statistics.median(c for _, c in tars)
            nebula_s, nebula_cpu = statistics.median(n for n, _ in nebulas), statistics.median(c for _, c in nebulas)
            print(f"{count:>8} {total / (1 << 30):>5.2f} {tar_s:>7.1f} {total / MIB / tar_s:>9.1f} {nebula_s:>8.1f} "
                  f"{total / MIB / nebula_s:>12.1f} {tar_s / nebula_s:>6.2f} {tar_cpu:>9.1f} {nebula_cpu:>12.1f} "
                  f"{max(peaks) / 1024:>15.1f} {tar_out.stat().st_size / MIB:>8.0f} {result['archive_bytes'] / MIB:>10.0f}",
                  flush=True)


if __name__ == "__main__":
    main()
