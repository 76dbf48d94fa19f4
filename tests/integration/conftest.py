"""Real Kafka and Redis for the integration tests.

Where they come from, in order: `KAFKA_BOOTSTRAP_SERVERS` / `REDIS_URL` when set;
testcontainers when a Docker daemon answers; else the local KRaft broker and
redis-server started by `deploy/local/stack.sh up` (what CI and `make test` use).
"""

from __future__ import annotations

import os
import shutil
import subprocess
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


@pytest.fixture
def unique() -> str:
    """A short unique suffix for topic, group and Redis key names of one test."""
    return uuid.uuid4().hex[:10]
