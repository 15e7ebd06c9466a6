"""End to end: ./run.sh in a temporary data dir, the HTTP API, then `manage stop`.

Runs the real thing: supervisord, gunicorn, the Dramatiq worker pool, the scheduler and
beat, on the embedded default (SQLite + SQL broker) and on PostgreSQL + RabbitMQ.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
from pathlib import Path

import pytest
import requests

from tests.e2e import scenarios

ROOT = Path(__file__).resolve().parents[2]
KEY = "e2e-bootstrap-key"

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _processes_of(data_dir: Path) -> list[str]:
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if str(data_dir) in line and "ps -eo" not in line]


def _environ_processes(data_dir: Path) -> list[int]:
    """Pids whose environment names this data dir (the programs supervisord started)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if f"NEBULA_DATA_DIR={data_dir}".encode() in (proc / "environ").read_bytes():
                found.append(int(proc.name))
        except OSError:
            continue
    return found


class Api:
    def __init__(self, base: str, key: str | None):
        self.base = base
        self.key = key

    def call(self, method: str, path: str, **kw) -> requests.Response:
        headers = kw.pop("headers", {})
        if self.key:
            headers.setdefault("x-api-key", self.key)
        return requests.request(method, self.base + path, headers=headers, timeout=30, **kw)


@contextlib.contextmanager
def running_nebula(tmp_path: Path, extra_env: dict | None = None):
    """Start Nebula with ./run.sh; yield (base URL, env, data dir); stop it, check nothing remains."""
    data_dir = tmp_path / "nebula data"
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEBULA_")}
    env.update(NEBULA_DATA_DIR=str(data_dir), NEBULA_BIND=f"127.0.0.1:{port}", NEBULA_BOOTSTRAP_API_KEY=KEY)
    env.update(extra_env or {})
    started = time.monotonic()
    try:
        result = subprocess.run(["./run.sh"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stdout + result.stderr
        assert f"http://127.0.0.1:{port}" in result.stdout
        print(f"run.sh until /api/version answered: {time.monotonic() - started:.1f} s")
        yield f"http://127.0.0.1:{port}", env, data_dir
    finally:
        stop = subprocess.run([str(ROOT / ".venv/bin/manage"), "stop"], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=300)
        deadline = time.monotonic() + 30
        while _environ_processes(data_dir) and time.monotonic() < deadline:
            time.sleep(0.5)
        leftovers = _environ_processes(data_dir)
        for pid in leftovers:  # never leave a stray process behind, even when failing
            try:
                os.kill(pid, 9)
            except OSError:
                pass
        assert stop.returncode == 0, stop.stdout + stop.stderr
        assert leftovers == [], _processes_of(data_dir)


def _wait_ok(api: Api, dataset_id: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        shown = api.call("GET", f"/api/datasets/{dataset_id}").json()
        if shown["state"] in ("ok", "error"):
            return shown
        time.sleep(0.2)
    raise AssertionError(f"dataset {dataset_id} still {shown['state']}")


def scenario(base: str) -> None:
    """The spine issue's check: users, histories, two pastes, byte-exact downloads, isolation."""
    admin = Api(base, KEY)
    user = admin.call("POST", "/api/users", json={"username": "alice", "email": "alice@example.org"}).json()
    alice = Api(base, admin.call("POST", f"/api/users/{user['id']}/api_key").json())
    history = alice.call("POST", "/api/histories", json={"name": "e2e"}).json()
    texts = [("one\r\ntwo", False, b"one\ntwo\n"), ("a b  c\nd e f\n", True, b"a\tb\tc\nd\te\tf\n")]
    outputs = []
    for text, to_tab, _ in texts:
        inputs = {"file_type": "auto", "dbkey": "?", "files_0|type": "upload_dataset",
                  "files_0|url_paste": text, "files_0|space_to_tab": to_tab}
        response = alice.call("POST", "/api/tools", json={"history_id": history["id"], "tool_id": "upload1", "inputs": inputs})
        assert response.status_code == 200, response.text
        outputs.append(response.json()["outputs"][0])
    for output, (_, _, expected) in zip(outputs, texts):
        shown = _wait_ok(alice, output["id"])
        assert shown["state"] == "ok", shown
        assert alice.call("GET", shown["download_url"]).content == expected
    user2 = admin.call("POST", "/api/users", json={"username": "bob", "email": "bob@example.org"}).json()
    bob = Api(base, admin.call("POST", f"/api/users/{user2['id']}/api_key").json())
    assert bob.call("GET", "/api/histories").json() == []
    assert bob.call("GET", f"/api/histories/{history['id']}").status_code == 404
    assert bob.call("GET", f"/api/datasets/{outputs[0]['id']}").status_code == 404
    assert Api(base, None).call("GET", "/api/histories").status_code == 403
    bad = alice.call("POST", "/api/histories", data="{oops", headers={"Content-Type": "application/json"})
    assert bad.status_code == 400 and "err_msg" in bad.json()


def _issue_scenarios(base: str, map_size: int) -> None:
    """Tools, jobs and workflows as their issues check them, as a user of the running server."""
    admin = Api(base, KEY)
    user = admin.call("POST", "/api/users", json={"username": "carol", "email": "carol@example.org"}).json()
    carol = Api(base, admin.call("POST", f"/api/users/{user['id']}/api_key").json())
    history = carol.call("POST", "/api/histories", json={"name": "issues"}).json()["id"]
    scenarios.tools_scenario(carol, history)
    scenarios.workflows_scenario(carol, history, map_size=map_size)


def test_run_sh_embedded_default(tmp_path):
    with running_nebula(tmp_path) as (base, env, data_dir):
        scenario(base)
        _issue_scenarios(base, map_size=300)
        status = subprocess.run([str(ROOT / ".venv/bin/manage"), "status"], cwd=ROOT, env=env,
                                capture_output=True, text=True, timeout=60)
        for service in ("web", "worker", "scheduler", "beat"):
            assert service in status.stdout, status.stdout
        assert (data_dir / "nebula.sqlite").exists()


@pytest.mark.postgres
@pytest.mark.rabbitmq
def test_run_sh_postgres_rabbitmq(tmp_path, pg_url, amqp_vhost_url, queue_prefix):
    extra = {"NEBULA_DATABASE_URL": pg_url, "NEBULA_BROKER_URL": amqp_vhost_url, "NEBULA_QUEUE_PREFIX": queue_prefix}
    with running_nebula(tmp_path, extra) as (base, _env, data_dir):
        scenario(base)
        _issue_scenarios(base, map_size=1000)
        assert not (data_dir / "nebula.sqlite").exists()
