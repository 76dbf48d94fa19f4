"""The real HPA controller scales the chart's Deployment on real consumer lag.

Real rill workers run as local processes against the local Kafka broker and report
`rill_consumer_lag` on /metrics; a stand-in for prometheus-adapter (tests/k8s/adapter.py,
it says so) serves what the chart's adapter rule computes from them as the External
metric `rill_consumer_lag_total`. The kube-controller-manager's HPA controller reads it
through the aggregator and scales the Deployment (its pods are kwok's: the local workers
are not tied to them here, so the lag stays high while the replicas change).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from service.kafka.admin import ensure_topics
from tests.k8s.adapter import EXPOSED_METRIC, StandInAdapter, lag_series
from tests.k8s.apiservice import available as _available
from tests.k8s.apiservice import register as _register
from tests.k8s.apiservice import unregister as _unregister
from tests.k8s.conftest import Endpoints
from tests.k8s.kube import ROOT, Cluster, eventually

PARTITIONS = 4
MAX_REPLICAS = 4
LAG_THRESHOLD = 500
BACKLOG = 30_000
WORKERS = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _produce_backlog(bootstrap: str, topic: str, count: int) -> None:
    from confluent_kafka import Producer  # noqa: PLC0415 - Kafka only where it is used

    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20})
    for i in range(count):
        while True:
            try:
                producer.produce(topic, json.dumps({"id": i}).encode(), str(i).encode())
                break
            except BufferError:
                producer.poll(0.05)
    assert producer.flush(60) == 0


def _start_worker(
    endpoints: Endpoints, topic: str, group: str, port: int, log: Path
) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RILL_")}
    env |= {
        "RILL_BOOTSTRAP_SERVERS": endpoints.bootstrap,
        "RILL_REDIS_URL": endpoints.redis_url,
        "RILL_GROUP_ID": group,
        "RILL_INPUT_TOPIC": topic,
        "RILL_OUTPUT_TOPIC": f"{topic}-out",
        "RILL_DLQ_TOPIC": f"{topic}-dlq",
        "RILL_INPUT_FORMAT": "json",
        "RILL_INPUT_WIRE": "plain",
        "RILL_OUTPUT_FORMAT": "json",
        "RILL_OUTPUT_WIRE": "plain",
        "RILL_WINDOW_TYPE": "none",
        "RILL_APP": "tests.k8s.apps:slow",
        "RILL_BATCH_SIZE": "20",
        "RILL_STATS_INTERVAL_MS": "1000",
        "RILL_METRICS_PORT": str(port),
        "RILL_LOG_LEVEL": "warning",
    }
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "service", "run"],
            env=env,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def _topic_lag(urls: list[str], topic: str) -> float:
    """The topic's lag summed over the workers' /metrics (0 for a worker not answering)."""
    total = 0.0
    for url in urls:
        try:
            with urllib.request.urlopen(url, timeout=3) as answer:  # noqa: S310 - local URLs
                text = answer.read().decode()
        except OSError:
            continue
        total += sum(v for labels, v in lag_series(text) if labels.get("topic") == topic)
    return total


def _hpa_values(topic: str) -> list[str]:
    return [
        f"kafka.topic={topic}",
        "autoscaling.enabled=true",
        "autoscaling.mode=hpa",
        # Scraped by a ServiceMonitor: job is the Service's name, as set_targets labels it.
        "monitoring.serviceMonitor.enabled=true",
        "autoscaling.minReplicas=1",
        f"autoscaling.maxReplicas={MAX_REPLICAS}",
        f"autoscaling.partitions={PARTITIONS}",
        f"autoscaling.lagThreshold={LAG_THRESHOLD}",
    ]


def _condition(hpa: dict[str, Any], kind: str) -> dict[str, Any]:
    for condition in hpa.get("status", {}).get("conditions", []):
        if condition["type"] == kind:
            found: dict[str, Any] = condition
            return found
    return {}


def _replicas(cluster: Cluster, namespace: str, release: str) -> int:
    replicas: int = cluster.get("deployment", "-n", namespace, f"{release}-rill")["spec"][
        "replicas"
    ]
    return replicas


@pytest.fixture
def adapter(cluster: Cluster) -> Iterator[StandInAdapter]:
    """The stand-in external metrics server, registered as the APIService."""
    served = StandInAdapter(
        cluster.pki / "metrics-adapter.crt", cluster.pki / "metrics-adapter.key"
    ).start()
    _register(cluster, served.port)
    eventually(
        lambda: _available(cluster), within_s=90, what="the stand-in APIService becomes Available"
    )
    yield served
    _unregister(cluster)
    served.stop()


@pytest.fixture
def lagging_workers(
    endpoints: Endpoints, unique: str, tmp_path: Path
) -> Iterator[tuple[str, list[str]]]:
    """Real rill workers behind a large backlog: (topic, their /metrics URLs)."""
    topic, group = f"k8s-lag-{unique}", f"k8s-g-{unique}"
    ensure_topics({"bootstrap.servers": endpoints.bootstrap}, [topic], PARTITIONS)
    _produce_backlog(endpoints.bootstrap, topic, BACKLOG)
    ports = [_free_port() for _ in range(WORKERS)]
    workers = [
        _start_worker(endpoints, topic, group, port, tmp_path / f"worker-{i}.log")
        for i, port in enumerate(ports)
    ]
    try:
        yield topic, [f"http://127.0.0.1:{port}/metrics" for port in ports]
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            try:
                worker.wait(timeout=60)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()


def test_hpa_scales_up_on_real_lag_and_stops_at_max_replicas(
    cluster: Cluster,
    adapter: StandInAdapter,
    lagging_workers: tuple[str, list[str]],
    unique: str,
) -> None:
    """Lag far above target: the HPA grows the Deployment step by step up to maxReplicas."""
    topic, urls = lagging_workers
    namespace, release = f"hpa-{unique}", "rill"

    def lag_reported() -> float | None:
        lag = _topic_lag(urls, topic)
        return lag if lag > LAG_THRESHOLD * MAX_REPLICAS else None

    lag = eventually(lag_reported, within_s=120, what="the workers report a lag on /metrics")
    print(f"workers report a lag of {lag:.0f} on {topic}")

    # The stand-in serves no series for the namespace yet: the HPA holds one replica until
    # the workers are registered as its scrape targets below.
    done = cluster.install(release, namespace, (), *_hpa_values(topic))
    assert done.returncode == 0, done.stderr
    try:
        assert _replicas(cluster, namespace, release) == 1
        adapter.set_targets(namespace, f"{release}-rill", urls)
        trace: list[tuple[float, int, str]] = []
        started = time.monotonic()

        def at_max() -> dict[str, Any] | None:
            hpa = cluster.get("hpa", "-n", namespace, f"{release}-rill")
            deployment = cluster.get("deployment", "-n", namespace, f"{release}-rill")
            replicas = deployment["spec"]["replicas"]
            seen = hpa.get("status", {}).get("currentMetrics") or []
            value = seen[0]["external"]["current"].get("averageValue", "?") if seen else "-"
            if not trace or trace[-1][1] != replicas:
                trace.append((time.monotonic() - started, replicas, value))
            ready = deployment["status"].get("readyReplicas", 0)
            return hpa if replicas == MAX_REPLICAS and ready == MAX_REPLICAS else None

        hpa = eventually(at_max, within_s=240, every_s=1.0, what="the HPA reaches maxReplicas")
        print("replicas over time (s, replicas, average lag the HPA saw):", trace)

        replicas = [r for _, r, _ in trace]
        assert replicas[0] == 1, trace
        assert replicas == sorted(replicas), trace
        assert replicas[-1] == MAX_REPLICAS, trace
        metric = hpa["status"]["currentMetrics"][0]["external"]
        assert metric["metric"]["name"] == EXPOSED_METRIC
        assert _condition(hpa, "ScalingActive")["status"] == "True", hpa["status"]

        # Still lagging far above target: the cap, not the metric, holds it at maxReplicas.
        def limited() -> dict[str, Any] | None:
            found = _condition(
                cluster.get("hpa", "-n", namespace, f"{release}-rill"), "ScalingLimited"
            )
            return found if found.get("status") == "True" else None

        reason = eventually(limited, within_s=60, what="the HPA reports ScalingLimited")
        assert reason["reason"] == "TooManyReplicas", reason
        assert _replicas(cluster, namespace, release) == MAX_REPLICAS
    finally:
        cluster.uninstall(release, namespace)


def test_hpa_reports_failed_get_external_metric_without_the_api(
    cluster: Cluster, unique: str
) -> None:
    """No external metrics APIService: the HPA reports FailedGetExternalMetric and holds."""
    _unregister(cluster)
    namespace, release = f"hpa-none-{unique}", "rill"
    done = cluster.install(release, namespace, (), *_hpa_values(f"k8s-none-{unique}"))
    assert done.returncode == 0, done.stderr
    try:

        def failed() -> dict[str, Any] | None:
            hpa = cluster.get("hpa", "-n", namespace, f"{release}-rill")
            active = _condition(hpa, "ScalingActive")
            return active if active.get("reason") == "FailedGetExternalMetric" else None

        active = eventually(
            failed, within_s=120, what="ScalingActive=False FailedGetExternalMetric"
        )
        assert active["status"] == "False"
        events = cluster.get(
            "events", "-n", namespace, "--field-selector", "reason=FailedGetExternalMetric"
        )
        assert events["items"], "no FailedGetExternalMetric event"
        assert _replicas(cluster, namespace, release) == 1
    finally:
        cluster.uninstall(release, namespace)
