"""`rill plan`'s model of KEDA's Kafka scaler serves what KEDA itself serves.

KEDA's own operator and metrics server run against the local control plane and broker
(tests/k8s/keda_real.py). A topic is given fixed offsets: a backlog on every partition, and
a consumer group that committed on some partitions only (no worker runs, so nothing
moves). The External metric KEDA serves for the chart's ScaledObject must equal
`service.planner.keda.total_lag_from_offsets` on the same offsets: the no-committed-offset
rule of each `offsetResetPolicy` and the partitions x lagThreshold cap included.
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from service.kafka.admin import ensure_topics
from service.planner.keda import total_lag_from_offsets
from tests.k8s.conftest import Endpoints
from tests.k8s.keda_real import running_keda
from tests.k8s.keda_standin import metric_name, read_offsets, trigger_of
from tests.k8s.kube import Cluster, eventually

PER_PARTITION = 50
# Committed offsets per partition; None: the group never committed there.
COMMITS: dict[int, int | None] = {0: 10, 1: PER_PARTITION, 2: None, 3: 0}


def _quantity(text: str) -> float:
    """A Kubernetes quantity as KEDA's metrics server prints it (e.g. 190, 1500m, 2k)."""
    suffixes = {"m": 1e-3, "k": 1e3, "M": 1e6}
    if text[-1] in suffixes:
        return float(text[:-1]) * suffixes[text[-1]]
    return float(text)


@pytest.fixture(scope="module")
def keda(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """KEDA's operator and metrics server, for this module's tests."""
    with running_keda(cluster, tmp_path_factory.mktemp("keda")):
        yield


def _fixed_offsets(bootstrap: str, topic: str, group: str) -> None:
    ensure_topics({"bootstrap.servers": bootstrap}, [topic], len(COMMITS))
    producer = Producer({"bootstrap.servers": bootstrap})
    for partition in COMMITS:
        for i in range(PER_PARTITION):
            producer.produce(topic, json.dumps({"id": i}).encode(), partition=partition)
    assert producer.flush(30) == 0
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    commits = [TopicPartition(topic, p, o) for p, o in COMMITS.items() if o is not None]
    consumer.commit(offsets=commits, asynchronous=False)
    consumer.close()


@pytest.mark.parametrize(
    ("policy", "threshold"),
    [("earliest", 1000), ("latest", 1000), ("earliest", 10)],
    ids=["earliest", "latest", "earliest-capped"],
)
def test_planner_kafka_lag_equals_kedas_metric(
    keda: None,
    cluster: Cluster,
    endpoints: Endpoints,
    unique: str,
    policy: str,
    threshold: int,
    tmp_path: Path,
) -> None:
    """KEDA's served metric == total_lag_from_offsets on the same committed and end offsets."""
    topic, namespace = f"keda-model-{policy}-{threshold}-{unique}", f"kedamodel-{unique}"
    group = f"{topic}-g"
    _fixed_offsets(endpoints.bootstrap, topic, group)
    sets = [
        f"kafka.bootstrapServers={endpoints.bootstrap}",
        f"kafka.topic={topic}",
        f"kafka.groupId={group}",
        "autoscaling.enabled=true",
        "autoscaling.mode=keda",
        f"autoscaling.lagThreshold={threshold}",
        f"autoscaling.keda.offsetResetPolicy={policy}",
    ]
    done = cluster.install("model", namespace, (), *sets)
    assert done.returncode == 0, done.stderr
    try:
        scaled = cluster.get("scaledobject", "-n", namespace, "model-rill")
        trigger = trigger_of(scaled["spec"]["triggers"][0]["metadata"])
        selector = urllib.parse.quote("scaledobject.keda.sh/name=model-rill")
        path = (
            f"/apis/external.metrics.k8s.io/v1beta1/namespaces/{namespace}/"
            f"{metric_name(topic)}?labelSelector={selector}"
        )

        def served() -> float | None:
            answer = cluster.kubectl("get", "--raw", path, check=False)
            if answer.returncode != 0:
                return None
            items = json.loads(answer.stdout)["items"]
            return _quantity(items[0]["value"]) if items else None

        value = eventually(served, within_s=120, what="KEDA serves the trigger's metric")
        offsets = read_offsets(endpoints.bootstrap, group, topic)
        modelled, _ = total_lag_from_offsets(offsets, trigger, {})
        print(f"{policy}, lagThreshold {threshold}: KEDA serves {value}, the model {modelled}")
        assert value == modelled
        committed_only = sum(o.end - o.committed for o in offsets if o.committed is not None)
        assert modelled != committed_only, "the case exercises the no-commit rule or the cap"
    finally:
        cluster.uninstall("model", namespace)
