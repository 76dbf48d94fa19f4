"""The local Kubernetes control plane, and Kafka/Redis, for the k8s tests.

`make test` starts the cluster first (`make k8s-up`); run alone, the `cluster` fixture
starts it (a no-op when it answers; the first start builds the binaries, several
minutes).
"""

from __future__ import annotations

import os
import subprocess
import uuid
from dataclasses import dataclass

import pytest

from tests.k8s.kube import CLUSTER_SH, ROOT, Cluster, load


@dataclass(frozen=True)
class Endpoints:
    """Where the tests find Kafka and Redis."""

    bootstrap: str
    redis_url: str


@pytest.fixture(scope="session")
def cluster() -> Cluster:
    """The running local control plane (started when it is not)."""
    subprocess.run([str(CLUSTER_SH), "up"], check=True)
    return load(ROOT / ".rill" / "k8s" / "env")


@pytest.fixture(scope="session")
def endpoints() -> Endpoints:
    """Kafka and Redis: from the environment, else the local stack (`stack.sh up`)."""
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    redis_url = os.environ.get("REDIS_URL")
    if bootstrap and redis_url:
        return Endpoints(bootstrap, redis_url)
    subprocess.run([str(ROOT / "deploy" / "local" / "stack.sh"), "up"], check=True)
    env = dict(
        line.split("=", 1)
        for line in (ROOT / ".rill" / "local.env").read_text().splitlines()
        if "=" in line
    )
    return Endpoints(env["KAFKA_BOOTSTRAP_SERVERS"], env["REDIS_URL"])


@pytest.fixture
def unique() -> str:
    """A short unique suffix for namespaces, topics and groups of one test."""
    return uuid.uuid4().hex[:10]
