"""A STAND-IN for KEDA (operator + metrics server) with the Kafka trigger, for tests and demos.

KEDA's operator is not run here (see docs/autoscaling.md for why and what was measured);
this module does what it does for one ScaledObject with one `kafka` trigger, from the
v2.16.1 sources:

- the operator (`controllers/keda/hpa.go`, `newHPAForScaledObject`): an HPA named
  `keda-hpa-<name>` on the Deployment, minReplicas `max(minReplicaCount, 1)`
  (`GetHPAMinReplicas`), maxReplicas `maxReplicaCount`, `advanced.
  horizontalPodAutoscalerConfig.behavior`, and one External metric
  `s0-kafka-<topic>` (`GenerateMetricNameWithIndex` + `NormalizeString`) selected by
  `scaledobject.keda.sh/name=<name>`, with an AverageValue target of `lagThreshold`;
- the metrics server (`pkg/scalers/kafka_scaler.go`, `GetMetricsAndActivity`): on every
  request of the HPA controller, the group's committed offsets and the partitions' high
  watermarks (sarama's OffsetNewest: read-uncommitted, commit markers included) from
  the broker, then `getLagForPartition` / `getTotalLag` exactly as
  `service.planner.keda.total_lag_from_offsets` implements them (no committed offset,
  `offsetResetPolicy`, the partitions x lagThreshold cap, excludePersistentLag).

Not done: activation and scaling to and from zero (the executor's `RequestScale`: the
closed loop runs with minReplicaCount >= 1, where the HPA alone decides), fallback, the
scaler cache, authentication (PLAINTEXT only), and every other trigger type.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs

import yaml
from confluent_kafka import Consumer, TopicPartition

from service.planner.keda import KafkaTrigger, PartitionOffsets, total_lag_from_offsets
from tests.k8s.adapter import GROUP_VERSION, Matcher, StandInAdapter, _status, parse_selector
from tests.k8s.kube import Cluster

OWNER_LABEL = "scaledobject.keda.sh/name"
_PATH = re.compile(r"^/apis/external\.metrics\.k8s\.io/v1beta1/namespaces/([^/]+)/([^/]+)$")
_INVALID_OFFSET = -1001  # librdkafka's OFFSET_INVALID: the group committed nothing


def normalize(name: str) -> str:
    """KEDA's `NormalizeString`: '/', '.', ':', '%', '(' and ')' become '-'."""
    return re.sub(r"[/.:%()]", "-", name)


def metric_name(topic: str, trigger_index: int = 0) -> str:
    """The External metric name KEDA gives a Kafka trigger on one topic."""
    return f"s{trigger_index}-{normalize(f'kafka-{topic}')}"


def trigger_of(metadata: Mapping[str, str]) -> KafkaTrigger:
    """The Kafka trigger's metadata as the scaler parses it (strings, KEDA's defaults)."""

    def flag(key: str) -> bool:
        return str(metadata.get(key, "false")).lower() == "true"

    return KafkaTrigger(
        lag_threshold=int(metadata.get("lagThreshold", "10")),
        activation_lag_threshold=int(metadata.get("activationLagThreshold", "0")),
        allow_idle_consumers=flag("allowIdleConsumers"),
        limit_to_partitions_with_lag=flag("limitToPartitionsWithLag"),
        offset_reset_policy="earliest"
        if metadata.get("offsetResetPolicy") == "earliest"
        else "latest",
        scale_to_zero_on_invalid_offset=flag("scaleToZeroOnInvalidOffset"),
        exclude_persistent_lag=flag("excludePersistentLag"),
    )


def read_offsets(bootstrap: str, group: str, topic: str) -> list[PartitionOffsets]:
    """Committed offset (None when none) and high watermark of every partition of `topic`."""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False}
    )
    try:
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        parts = [TopicPartition(topic, p) for p in sorted(meta.partitions)]
        committed = consumer.committed(parts, timeout=10)
        out = []
        for tp in committed:
            _, high = consumer.get_watermark_offsets(
                TopicPartition(topic, tp.partition), timeout=10, cached=False
            )
            offset = None if tp.offset == _INVALID_OFFSET or tp.offset < 0 else tp.offset
            out.append(PartitionOffsets(high, offset))
        return out
    finally:
        consumer.close()


def hpa_for(scaled_object: Mapping[str, Any], namespace: str) -> dict[str, Any]:
    """The HPA KEDA's operator creates for a ScaledObject with one Kafka trigger."""
    spec = scaled_object["spec"]
    name = scaled_object["metadata"]["name"]
    trigger = spec["triggers"][0]
    if trigger["type"] != "kafka" or len(spec["triggers"]) != 1:
        raise ValueError("the stand-in serves one kafka trigger")
    minimum = int(spec.get("minReplicaCount", 0) or 0)
    hpa_spec: dict[str, Any] = {
        "scaleTargetRef": {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": spec["scaleTargetRef"]["name"],
        },
        "minReplicas": minimum if minimum > 0 else 1,
        "maxReplicas": int(spec.get("maxReplicaCount", 100)),
        "metrics": [
            {
                "type": "External",
                "external": {
                    "metric": {
                        "name": metric_name(trigger["metadata"]["topic"]),
                        "selector": {"matchLabels": {OWNER_LABEL: name}},
                    },
                    "target": {
                        "type": "AverageValue",
                        "averageValue": str(trigger["metadata"]["lagThreshold"]),
                    },
                },
            }
        ],
    }
    behavior = spec.get("advanced", {}).get("horizontalPodAutoscalerConfig", {}).get("behavior")
    if behavior:
        hpa_spec["behavior"] = behavior
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {
            "name": f"keda-hpa-{name}",
            "namespace": namespace,
            "labels": {"app.kubernetes.io/managed-by": "keda-operator", OWNER_LABEL: name},
        },
        "spec": hpa_spec,
    }


class KedaStandIn(StandInAdapter):
    """Serves `s0-kafka-<topic>` for the ScaledObjects it was told about (`adopt`)."""

    def __init__(self, *args: Any, bootstrap: str, **kwargs: Any) -> None:
        """As StandInAdapter; `bootstrap` is the broker the Kafka triggers read."""
        super().__init__(*args, **kwargs)
        self._bootstrap = bootstrap
        # (namespace, ScaledObject name) -> (group, topic, trigger, previousOffsets)
        self._objects: dict[tuple[str, str], tuple[str, str, KafkaTrigger, dict[int, int]]] = {}
        self.served: list[tuple[float, int]] = []

    def adopt(self, cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
        """Do the operator's part for a ScaledObject: create its HPA; returns the HPA."""
        scaled = cluster.get("scaledobject", "-n", namespace, name)
        metadata = scaled["spec"]["triggers"][0]["metadata"]
        bootstrap = metadata["bootstrapServers"]
        if bootstrap != self._bootstrap:
            raise ValueError(f"the trigger reads {bootstrap}, the stand-in {self._bootstrap}")
        with self._lock:
            self._objects[(namespace, name)] = (
                metadata["consumerGroup"],
                metadata["topic"],
                trigger_of(metadata),
                {},
            )
        hpa = hpa_for(scaled, namespace)
        cluster.apply(yaml.safe_dump(hpa))
        return hpa

    def answer(self, path: str, query: str) -> tuple[int, dict[str, Any]]:
        """The metrics server's GET: the trigger's total lag, computed as the scaler does."""
        self.requests.append(path)
        if path.rstrip("/") == f"/apis/{GROUP_VERSION}":
            return 200, _discovery()
        found = _PATH.match(path)
        if not found:
            return 404, _status(404, f"{path} is not served by the KEDA stand-in")
        namespace, metric = found.group(1), found.group(2)
        selector = parse_qs_selector(query)
        owner = next((m.value for m in selector if m.label == OWNER_LABEL and m.equal), None)
        with self._lock:
            adopted = self._objects.get((namespace, owner or ""))
        if adopted is None or metric != metric_name(adopted[1]):
            return 404, _status(404, f"no ScaledObject {owner!r} serves {metric} in {namespace}")
        group, topic, trigger, previous = adopted
        try:
            offsets = read_offsets(self._bootstrap, group, topic)
        except Exception as exc:  # noqa: BLE001 - the scaler's error path: the HPA sees a failure
            return 500, _status(500, f"kafka scaler: {exc}")
        with self._lock:
            total, _ = total_lag_from_offsets(offsets, trigger, previous)
        self.served.append((datetime.now(UTC).timestamp(), total))
        return 200, _values(metric, total)


def parse_qs_selector(query: str) -> list[Matcher]:
    """The labelSelector of a query string, parsed (empty when absent)."""
    return parse_selector(parse_qs(query).get("labelSelector", [""])[0])


def _values(metric: str, total: int) -> dict[str, Any]:
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "kind": "ExternalMetricValueList",
        "apiVersion": GROUP_VERSION,
        "metadata": {},
        "items": [
            {"metricName": metric, "metricLabels": None, "timestamp": now, "value": str(total)}
        ],
    }


def _discovery() -> dict[str, Any]:
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": GROUP_VERSION,
        "resources": [
            {
                "name": "externalmetrics",
                "singularName": "",
                "namespaced": True,
                "kind": "ExternalMetricValueList",
                "verbs": ["get"],
            }
        ],
    }
