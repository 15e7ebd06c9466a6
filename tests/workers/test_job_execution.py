"""Jobs in real worker processes on the embedded broker: cat1 end to end, and a worker
SIGKILLed in the middle of a job (the job runs again, from a clean directory, and ends ok once).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from app.api import create_app
from app.db import make_engine
from app.models import Job, QueueMessage
from app.models.base import utcnow
from app.settings import Settings
from workers.brokers.sql import SQLBroker

ROOT = Path(__file__).resolve().parents[2]
KEY = "job-test-admin-key"
SLOW_TOOL = """
    id: slow_cat
    name: Slow cat
    inputs:
      - {name: input, type: data}
      - {name: marker, type: text}
      - {name: seconds, type: integer, value: 30}
    outputs:
      out: {format_source: input}
    command: echo started >> {{ marker }} && sleep {{ seconds }} && cat {{ input }} > {{ out }}
"""


class Pool:
    """``python -m workers.run worker`` as a real process group."""

    def __init__(self, env: dict[str, str], log: Path):
        self.log = log.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "workers.run", "worker", "--processes", "1", "--threads", "4"],
            cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.log.close()


def _wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.slow
def test_jobs_in_real_workers_and_a_worker_killed_mid_job(data_dir: Path, tmp_path: Path):
    tools = tmp_path / "tools"
    tools.mkdir()
    (tools / "slow_cat.yml").write_text(textwrap.dedent(SLOW_TOOL))
    env = {**os.environ, "NEBULA_DATA_DIR": str(data_dir), "NEBULA_TOOL_DIRS": json.dumps([str(tools)]),
           "NEBULA_BROKER_URL": "sql", "NEBULA_BOOTSTRAP_API_KEY": KEY, "NEBULA_LOG_FORMAT": "console",
           "NEBULA_ID_SECRET": "job-test"}
    env.pop("NEBULA_DATABASE_URL", None)
    env.pop("NEBULA_CONFIG", None)
    subprocess.run([sys.executable, "-m", "app.cli", "db", "upgrade"], cwd=ROOT, env=env, check=True,
                   capture_output=True)
    settings = Settings(data_dir=data_dir, tool_dirs=[tools], broker_url="sql", bootstrap_api_key=KEY,
                        log_format="console", id_secret="job-test")
    client = create_app(settings).test_client()
    api = lambda method, url, **kw: getattr(client, method)(url, headers={"x-api-key": KEY}, **kw)  # noqa: E731
    engine = make_engine(settings)
    log = tmp_path / "workers.log"
    pool = Pool(env, log)
    try:
        history = api("post", "/api/histories", json={"name": "real workers"}).json["id"]
        inputs = {"files_0|url_paste": "hello\nworld\n", "files_0|type": "upload_dataset"}
        upload = api("post", "/api/tools", json={"history_id": history, "tool_id": "upload1", "inputs": inputs}).json
        dataset = upload["outputs"][0]["id"]
        ran = api("post", "/api/tools", json={"history_id": history, "tool_id": "cat1",
                                              "inputs": {"input1": {"src": "hda", "id": dataset}}}).json
        job_id = ran["jobs"][0]["id"]
        _wait(lambda: api("get", f"/api/jobs/{job_id}").json["state"] == "ok", 60, "cat1 to finish")
        out = api("get", f"/api/datasets/{ran['outputs'][0]['id']}").json
        assert api("get", out["download_url"]).data == b"hello\nworld\n"

        marker = tmp_path / "runs"
        slow = api("post", "/api/tools", json={"history_id": history, "tool_id": "slow_cat", "inputs": {
            "input": {"src": "hda", "id": dataset}, "marker": str(marker), "seconds": 30}}).json
        slow_id = settings_ids(settings).decode(slow["jobs"][0]["id"])

        def running_with_pid():
            with engine.connect() as conn:
                row = conn.execute(sa.select(Job.state, Job.worker_id, Job.pid).where(Job.id == slow_id)).first()
            return row if row.state == "running" and row.pid else None

        first = _wait(running_with_pid, 60, "the slow job to run")
        assert marker.read_text() == "started\n"
        os.kill(int(first.worker_id.rsplit(":", 1)[1]), signal.SIGKILL)
        pool.process.wait(30)  # the pool's master shuts down when a worker dies
        pool.stop()
        # The dead worker's message comes back once its lease runs out; run the clock forward.
        with engine.begin() as conn:
            conn.execute(sa.update(QueueMessage).where(QueueMessage.state == "claimed")
                         .values(lease_until=utcnow().replace(year=2000)))
        assert SQLBroker(engine).recover_expired_leases() >= 1

        pool = Pool(env, log)
        with engine.begin() as conn:  # shorten the second run
            params = conn.scalar(sa.select(Job.params).where(Job.id == slow_id))
            conn.execute(sa.update(Job).where(Job.id == slow_id).values(params={**params, "seconds": 1}))
        done = _wait(lambda: api("get", f"/api/jobs/{slow['jobs'][0]['id']}?full=true").json["state"]
                     in ("ok", "error"), 60, "the job to run again")
        job = api("get", f"/api/jobs/{slow['jobs'][0]['id']}?full=true").json
        assert done and job["state"] == "ok", job
        assert job["attempts"] == 2 and marker.read_text() == "started\nstarted\n"
        out = api("get", f"/api/datasets/{slow['outputs'][0]['id']}").json
        assert out["state"] == "ok" and api("get", out["download_url"]).data == b"hello\nworld\n"
        # What the dead worker left running was stopped.
        assert not Path(f"/proc/{first.pid}").exists() or b"NEBULA_JOB_ID" not in _environ(first.pid)
    finally:
        pool.stop()
        engine.dispose()


def settings_ids(settings: Settings):
    from app.ids import IdEncoder

    return IdEncoder(settings.id_secret)


def _environ(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return b""
