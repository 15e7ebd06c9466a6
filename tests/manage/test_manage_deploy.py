"""deploy/: scripts parse, the systemd unit verifies, RabbitMQ definitions match Dramatiq's."""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from dramatiq.brokers.rabbitmq import DEAD_MESSAGE_TTL, RabbitmqBroker

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
SCRIPTS = ["install-services.sh", "rabbitmq/consumer-timeout.sh"]
NEBULA_QUEUES = {"default", "jobs", "exports", "scheduling"}


@pytest.mark.parametrize("script", SCRIPTS)
def test_scripts_are_valid_executable_bash(script: str) -> None:
    path = DEPLOY / script
    assert path.stat().st_mode & 0o111
    done = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_definitions_declare_queues_exactly_as_dramatiq_does() -> None:
    """A queue declared with other arguments makes Dramatiq's own declaration fail."""
    definitions = json.loads((DEPLOY / "rabbitmq" / "definitions.json").read_text())
    broker = RabbitmqBroker(url="amqp://guest:guest@127.0.0.1:1/%2F")  # never connects
    queues = {q["name"]: q for q in definitions["queues"]}
    for name in NEBULA_QUEUES:
        expected = broker._build_queue_arguments(name)
        assert queues[name]["arguments"] == expected
        assert queues[f"{name}.DQ"]["arguments"] == expected
        assert queues[f"{name}.XQ"]["arguments"] == {"x-message-ttl": DEAD_MESSAGE_TTL}
        assert all(queues[q]["durable"] for q in (name, f"{name}.DQ", f"{name}.XQ"))
    (policy,) = definitions["policies"]
    assert policy["pattern"] == r"\.XQ$" and policy["definition"]["max-length"] > 0


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_the_supervisord_unit_verifies(tmp_path: Path) -> None:
    unit = (DEPLOY / "systemd" / "nebula-supervisord.service").read_text()
    assert "ExecStart=/opt/nebula/.venv/bin/manage start --foreground" in unit
    assert "KillMode=mixed" in unit
    runnable = (unit.replace("/opt/nebula/.venv/bin/manage", shutil.which("true") or "/bin/true")
                .replace("=nebula\n", "=root\n").replace("WorkingDirectory=/opt/nebula",
                                                         f"WorkingDirectory={tmp_path}"))
    path = tmp_path / "nebula-supervisord.service"
    path.write_text(runnable)
    done = subprocess.run(["systemd-analyze", "verify", str(path)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_nginx_retries_the_other_instance_and_never_benches_one() -> None:
    conf = (DEPLOY / "nginx" / "nebula.conf").read_text()
    assert conf.count("max_fails=0;") == 2
    assert "proxy_next_upstream error timeout;" in conf


@pytest.fixture
def vhost(rabbitmq_server: tuple[str, int]) -> Iterator[str]:
    """A RabbitMQ vhost of this test's own."""
    if shutil.which("rabbitmqctl") is None:
        pytest.skip("rabbitmqctl is needed to import definitions")
    name = f"nebula_manage_{uuid.uuid4().hex[:8]}"
    subprocess.run(["rabbitmqctl", "-q", "add_vhost", name], check=True, timeout=60)
    subprocess.run(["rabbitmqctl", "-q", "set_permissions", "-p", name, "guest", ".*", ".*", ".*"],
                   check=True, timeout=60)
    yield name
    subprocess.run(["rabbitmqctl", "-q", "delete_vhost", name], timeout=60)


@pytest.mark.rabbitmq
def test_definitions_and_policies_on_a_real_rabbitmq(
    vhost: str, rabbitmq_server: tuple[str, int]
) -> None:
    text = (DEPLOY / "rabbitmq" / "definitions.json").read_text()
    text = text.replace('"vhost": "nebula"', f'"vhost": "{vhost}"')
    text = text.replace('"name": "nebula"', f'"name": "{vhost}"')
    subprocess.run(["rabbitmqctl", "-q", "import_definitions", "--format", "json"], input=text,
                   text=True, check=True, timeout=60)
    host, port = rabbitmq_server
    broker = RabbitmqBroker(url=f"amqp://guest:guest@{host}:{port}/{vhost}")
    try:
        for name in NEBULA_QUEUES:
            broker.declare_queue(name, ensure=True)  # PRECONDITION_FAILED if they differ
    finally:
        broker.close()
    listed = subprocess.run(["rabbitmqctl", "-q", "list_queues", "-p", vhost, "name", "policy"],
                            capture_output=True, text=True, check=True, timeout=60).stdout
    policies = dict(line.split("\t") for line in listed.splitlines()[1:] if "\t" in line)
    assert policies["jobs.XQ"] == "nebula-dead-letters"

    done = subprocess.run([str(DEPLOY / "rabbitmq" / "consumer-timeout.sh"), vhost],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode in (0, 3), done.stderr  # 3: RabbitMQ < 3.12, global setting instead
    if done.returncode == 3:
        assert "raise the global consumer_timeout" in done.stderr
