"""Real Kafka and Redis for the integration tests.

Where they come from, in order: `KAFKA_BOOTSTRAP_SERVERS` / `REDIS_URL` when set;
testcontainers when a Docker daemon answers; else the local KRaft broker and
redis-server started by `deploy/local/stack.sh up` (what CI and `make test` use).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Endpoints:
    """Where the tests find Kafka and Redis."""

    bootstrap: str
    redis_url: str


def _docker_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        done = subprocess.run(["docker", "info"], capture_output=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def _local_stack() -> Endpoints:
    subprocess.run([str(ROOT / "deploy/local/stack.sh"), "up"], check=True)
    env = dict(
        line.split("=", 1)
        for line in (ROOT / ".rill/local.env").read_text().splitlines()
        if "=" in line
    )
    return Endpoints(env["KAFKA_BOOTSTRAP_SERVERS"], env["REDIS_URL"])


@pytest.fixture(scope="session")
def endpoints() -> Iterator[Endpoints]:
    """Kafka bootstrap servers and a Redis URL for this test session."""
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    redis_url = os.environ.get("REDIS_URL")
    if bootstrap and redis_url:
        yield Endpoints(bootstrap, redis_url)
    elif _docker_answers():
        from testcontainers.kafka import KafkaContainer  # noqa: PLC0415 - only with Docker
        from testcontainers.redis import RedisContainer  # noqa: PLC0415 - only with Docker

        with KafkaContainer().with_kraft() as kafka, RedisContainer() as redis:
            host, port = redis.get_container_host_ip(), redis.get_exposed_port(6379)
            yield Endpoints(kafka.get_bootstrap_server(), f"redis://{host}:{port}/0")
    else:
        yield _local_stack()


def _worker_offset() -> int:
    """0 without xdist, else the worker's number: each worker's fixed ports differ."""
    name = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    return int(name.removeprefix("gw") or 0)


@pytest.fixture
def unique() -> str:
    """A short unique suffix for topic, group and Redis key names of one test."""
    return uuid.uuid4().hex[:10]


@pytest.fixture(scope="session")
def redis_cluster_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real 3-node Redis Cluster of local redis-server processes (cluster mode)."""
    if os.environ.get("REDIS_CLUSTER_URL"):
        yield os.environ["REDIS_CLUSTER_URL"]
        return
    base = int(os.environ.get("RILL_TEST_CLUSTER_PORT", "17101")) + 10 * _worker_offset()
    ports = [base, base + 1, base + 2]
    root = tmp_path_factory.mktemp("redis-cluster")
    for port in ports:
        subprocess.run(
            [
                "redis-server",
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                str(root / f"nodes-{port}.conf"),
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "yes",
                "--dir",
                str(root),
                "--logfile",
                str(root / f"{port}.log"),
                "--pidfile",
                str(root / f"{port}.pid"),
            ],
            check=True,
        )
    try:
        for port in ports:
            _wait_redis(port)
        subprocess.run(
            [
                "redis-cli",
                "--cluster",
                "create",
                *[f"127.0.0.1:{p}" for p in ports],
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            info = subprocess.run(
                ["redis-cli", "-p", str(base), "cluster", "info"],
                capture_output=True,
                text=True,
                check=False,
            ).stdout
            if "cluster_state:ok" in info:
                break
            time.sleep(0.2)
        else:
            raise RuntimeError("the local Redis Cluster did not reach cluster_state:ok")
        yield f"redis://127.0.0.1:{base}/0"
    finally:
        for port in ports:
            subprocess.run(
                ["redis-cli", "-p", str(port), "shutdown", "nosave"],
                capture_output=True,
                check=False,
            )


def _wait_redis(port: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        done = subprocess.run(
            ["redis-cli", "-p", str(port), "ping"], capture_output=True, text=True, check=False
        )
        if "PONG" in done.stdout:
            return
        time.sleep(0.1)
    raise RuntimeError(f"redis-server on port {port} did not answer")


@pytest.fixture(scope="session")
def registry_url() -> str:
    """A real Confluent-compatible schema registry (Apicurio, ccompat API)."""
    if os.environ.get("SCHEMA_REGISTRY_URL"):
        return os.environ["SCHEMA_REGISTRY_URL"]
    port = int(os.environ.get("RILL_LOCAL_REGISTRY_PORT", "18081")) + _worker_offset()
    return start_registry(port)


def start_registry(port: int) -> str:
    """Start (or find) the local registry on `port`; returns its Confluent API URL."""
    subprocess.run(
        [str(ROOT / "deploy/local/stack.sh"), "registry", str(port)],
        check=True,
        capture_output=True,
    )
    return f"http://127.0.0.1:{port}/apis/ccompat/v7"


def stop_registry(port: int) -> None:
    """Stop the local registry on `port`."""
    subprocess.run(
        [str(ROOT / "deploy/local/stack.sh"), "registry-down", str(port)],
        check=True,
        capture_output=True,
    )
