"""Fixtures shared by every test tier.

Real PostgreSQL and RabbitMQ tests use a database and a vhost of the test run's own and
remove them afterwards. On a laptop without those services they skip with the reason;
in CI (NEBULA_REQUIRE_SERVICES=1, set by .ci/run) they fail instead.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

# prometheus_client reads this when first imported; one directory for the whole run,
# so apps built by many tests never write into a removed temporary directory.
os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="nebula-test-metrics-"))

PG_ADMIN_URL = os.environ.get(
    "NEBULA_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
AMQP_HOST = os.environ.get("NEBULA_TEST_RABBITMQ_HOST", "127.0.0.1")
AMQP_PORT = int(os.environ.get("NEBULA_TEST_RABBITMQ_PORT", "5672"))
REQUIRE_SERVICES = os.environ.get("NEBULA_REQUIRE_SERVICES") == "1"
RUN_ID = uuid.uuid4().hex[:8]


def service_missing(what: str) -> None:
    """Skip (laptop) or fail (CI) a test whose real service is not reachable."""
    message = f"{what} is not reachable; start it (see README, 'Services')"
    if REQUIRE_SERVICES:
        pytest.fail(message + " — required because NEBULA_REQUIRE_SERVICES=1", pytrace=False)
    pytest.skip(message)


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def postgres_server() -> str:
    """The admin URL of a running PostgreSQL server."""
    engine = sa.create_engine(PG_ADMIN_URL)
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except Exception:  # noqa: BLE001 - any failure means "not reachable"
        service_missing(f"PostgreSQL at {PG_ADMIN_URL}")
    finally:
        engine.dispose()
    return PG_ADMIN_URL


def create_pg_database(admin_url: str, name: str) -> str:
    """Create a fresh database and return its URL."""
    engine = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    engine.dispose()
    return str(sa.engine.make_url(admin_url).set(database=name).render_as_string(hide_password=False))


def drop_pg_database(admin_url: str, name: str) -> None:
    """Drop a database made by create_pg_database, disconnecting its users."""
    engine = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    engine.dispose()


@pytest.fixture
def pg_url(postgres_server: str) -> Iterator[str]:
    """A fresh, empty PostgreSQL database of this test's own."""
    name = f"nebula_test_{RUN_ID}_{uuid.uuid4().hex[:6]}"
    url = create_pg_database(postgres_server, name)
    yield url
    drop_pg_database(postgres_server, name)


@pytest.fixture(scope="session")
def rabbitmq_server() -> tuple[str, int]:
    """Host and port of a running RabbitMQ."""
    if not _port_open(AMQP_HOST, AMQP_PORT):
        service_missing(f"RabbitMQ at {AMQP_HOST}:{AMQP_PORT}")
    return AMQP_HOST, AMQP_PORT


def _rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="session")
def amqp_vhost_url(rabbitmq_server: tuple[str, int]) -> Iterator[str]:
    """An amqp:// URL of a vhost of this test run's own (removed afterwards).

    Without rabbitmqctl (a remote RabbitMQ) the default vhost is used, and tests keep
    apart through a queue prefix of their own (see ``amqp_url``).
    """
    host, port = rabbitmq_server
    if shutil.which("rabbitmqctl") is None:
        yield f"amqp://guest:guest@{host}:{port}/%2F"
        return
    vhost = f"nebula_test_{RUN_ID}"
    _rabbitmqctl("add_vhost", vhost)
    _rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    yield f"amqp://guest:guest@{host}:{port}/{vhost}"
    _rabbitmqctl("delete_vhost", vhost)


@pytest.fixture
def queue_prefix() -> str:
    """A queue prefix unique to one test, so tests sharing a vhost never see each other."""
    return f"t{uuid.uuid4().hex[:8]}."


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """An empty data dir for one test."""
    path = tmp_path / "data"
    path.mkdir()
    return path
