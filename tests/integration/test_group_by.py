"""group_by on the real broker and Redis: orders keyed by order id, windowed per customer
through the repartition topic, two workers, one SIGKILLed mid-stream."""

from __future__ import annotations

import json
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource

from service.config import load_settings
from service.processing.partitioning import java_partition
from service.runtime import real_edges
from tests.integration.conftest import Endpoints
from tests.integration.helpers import (
    HeldFeed,
    create_topics,
    produce,
    read_all,
    read_once,
    start_worker,
    stop_worker,
    worker_env,
)

pytestmark = pytest.mark.integration

PARTITIONS = 4
CUSTOMERS = 40
# Event time advances 1 ms per order while the feed runs at 4,000 orders/s: a grace of
# 10 minutes of event time covers any delay a kill and a rebalance put between two input
# partitions' records in one repartition partition, so no order is late and every window
# is whole. The windows close only when the far-future orders at the end arrive.
GRACE_MS = 600_000
FAR_FUTURE_MS = 10**9
SETTINGS = {
    "filter_field": "",
    "key_by": "order_id",
    "group_by": "customer_id",
    "window_type": "tumbling",
    "window_size_ms": 1000,
    "window_grace_ms": GRACE_MS,
    "window_time_field": "ts",
    "window_idle_timeout_ms": 0,
    "aggregates": "count,sum:amount",
    "input_format": "json",
    "input_wire": "plain",
    "output_format": "json",
    "output_wire": "plain",
    "batch_size": 500,
    "transaction_timeout_ms": 10_000,
    "kafka_extra": json.dumps(
        {"consumer.session.timeout.ms": "6000", "consumer.heartbeat.interval.ms": "500"}
    ),
}


def _orders(n: int) -> list[dict[str, Any]]:
    return [
        {
            "order_id": f"o-{i}",
            "customer_id": f"c-{i * 7 % CUSTOMERS:02d}",
            "ts": i,
            "amount": i % 97,
        }
        for i in range(n)
    ]


def _reference(orders: list[dict[str, Any]]) -> dict[tuple[str, int], tuple[int, int]]:
    """(customer, window start) -> (count, total), computed from the input alone."""
    per: dict[tuple[str, int], list[int]] = {}
    for o in orders:
        per.setdefault((o["customer_id"], o["ts"] - o["ts"] % 1000), []).append(o["amount"])
    return {w: (len(a), sum(a)) for w, a in per.items()}


def _drained(bootstrap: str, group: str, topics: list[str], timeout_s: float = 240) -> bool:
    """Wait until the group committed every record of `topics` (both stages done)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            ends: dict[tuple[str, int], int] = {}
            for topic in topics:
                for r in read_once(bootstrap, topic):
                    tp = (r.topic, r.partition)
                    ends[tp] = max(ends.get(tp, 0), r.offset + 1)
            asked = [TopicPartition(t, p) for t, p in ends]
            committed = {
                (tp.topic, tp.partition): tp.offset for tp in consumer.committed(asked, 10)
            }
            if ends and all(committed.get(tp, -1) >= end for tp, end in ends.items()):
                return True
            time.sleep(1.0)
        return False
    finally:
        consumer.close()


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
def test_windows_per_customer_through_group_by_survive_a_sigkill(
    endpoints: Endpoints, unique: str, tmp_path: Path, guarantee: str
) -> None:
    """Input keyed by order id over 4 partitions, windowed per customer by two workers,
    one SIGKILLed mid-stream: every (customer, window) emitted with the totals of the
    input, in both modes; in exactly-once each exactly once."""
    total = 40_000
    env = worker_env(
        endpoints.bootstrap,
        endpoints.redis_url,
        unique,
        redis_prefix=unique,
        processing_guarantee=guarantee,
        **SETTINGS,
    )
    group, source = env["RILL_GROUP_ID"], env["RILL_INPUT_TOPIC"]
    repartition = f"{group}-repartition"
    create_topics(endpoints.bootstrap, [source], partitions=PARTITIONS)
    create_topics(endpoints.bootstrap, [env["RILL_OUTPUT_TOPIC"], env["RILL_DLQ_TOPIC"]])
    orders = _orders(total)
    feed = HeldFeed(
        endpoints.bootstrap,
        source,
        [(o["order_id"].encode(), json.dumps(o).encode()) for o in orders],
        rate=4_000,
        hold_at=total // 2,
    )
    a = start_worker(env, tmp_path / "a.log")
    b = start_worker(env, tmp_path / "b.log")
    feed.start()
    try:
        # Both stages running at full speed: a quarter of the orders re-keyed so far.
        assert read_all(endpoints.bootstrap, repartition, total // 4, timeout_s=120, settle_s=0)
        assert stop_worker(a, signal.SIGKILL) == -signal.SIGKILL
        assert not feed.finished(), "killed while orders were still arriving"
        feed.release()
        a = start_worker(env, tmp_path / "a2.log")
        feed.join()
        assert _drained(endpoints.bootstrap, group, [source, repartition]), "both stages done"
        assert read_once(endpoints.bootstrap, env["RILL_OUTPUT_TOPIC"]) == [], "none closed yet"
        closing = [
            {"order_id": f"end-{c}", "customer_id": f"c-{c:02d}", "ts": FAR_FUTURE_MS, "amount": 0}
            for c in range(CUSTOMERS)
        ]
        produce(
            endpoints.bootstrap,
            source,
            [(o["order_id"].encode(), json.dumps(o).encode()) for o in closing],
        )
        reference = _reference(orders)
        sink = read_all(
            endpoints.bootstrap, env["RILL_OUTPUT_TOPIC"], len(reference), timeout_s=180, settle_s=5
        )
    finally:
        feed.release()
        stop_worker(a)
        stop_worker(b)
    emitted: Counter[tuple[str, int]] = Counter()
    values: dict[tuple[str, int], tuple[int, int]] = {}
    for rec in sink:
        v = json.loads(rec.value or b"")
        window = (v["key"], v["window_start"])
        emitted[window] += 1
        values[window] = (v["count"], int(v["sum_amount"]))
    assert set(emitted) == set(reference), "every (customer, window), none extra"
    repartitioned = read_once(endpoints.bootstrap, repartition)
    placed = {(r.key, r.partition) for r in repartitioned}
    assert all(p == java_partition(k or b"", PARTITIONS) for k, p in placed), "Java partitioner"
    # In both modes: an order re-keyed twice (at least once, a batch redone after the
    # kill) is applied once, by its source position.
    assert values == reference, "totals equal the input's"
    if guarantee == "exactly_once":
        assert max(emitted.values()) == 1, "each (customer, window) exactly once"
        assert len(repartitioned) == total + CUSTOMERS, "each order re-keyed exactly once"
    print(
        f"\ngroup_by sigkill ({guarantee}): {len(reference)} windows, "
        f"{sum(emitted.values()) - len(emitted)} repeated emissions, "
        f"{len(repartitioned) - total - CUSTOMERS} orders re-keyed twice, "
        f"{sum(1 for w in reference if values[w] != reference[w])} windows off the reference"
    )


def test_repartition_topic_is_partitioned_as_librdkafka_murmur2_random(
    endpoints: Endpoints, unique: str
) -> None:
    """rill's java_partition picks the partition librdkafka's murmur2_random partitioner picks."""
    topic = f"murmur-{unique}"
    create_topics(endpoints.bootstrap, [topic], partitions=7)
    producer = Producer({"bootstrap.servers": endpoints.bootstrap, "partitioner": "murmur2_random"})
    keys = [f"customer-{i}".encode() for i in range(50)]
    for key in keys:
        producer.produce(topic, b"x", key)
    assert producer.flush(30) == 0
    got = {
        (r.key, r.partition) for r in read_all(endpoints.bootstrap, topic, len(keys), settle_s=0)
    }
    assert got == {(k, java_partition(k, 7)) for k in keys}


def test_the_repartition_topic_is_created_with_its_partitions_and_retention(
    endpoints: Endpoints, unique: str
) -> None:
    """create_topics makes <group>-repartition with RILL_REPARTITION_PARTITIONS (else the
    input's count), cleanup policy delete and RILL_REPARTITION_RETENTION_MS; an existing
    one keeps its partition count, which is what the workers then partition by."""
    env = worker_env(endpoints.bootstrap, endpoints.redis_url, unique, group_by="customer_id")
    create_topics(endpoints.bootstrap, [env["RILL_INPUT_TOPIC"]], partitions=3)
    topic = f"{env['RILL_GROUP_ID']}-repartition"
    settings = load_settings(
        bootstrap_servers=endpoints.bootstrap,
        group_id=env["RILL_GROUP_ID"],
        input_topic=env["RILL_INPUT_TOPIC"],
        output_topic=env["RILL_OUTPUT_TOPIC"],
        dlq_topic=env["RILL_DLQ_TOPIC"],
        repartition_retention_ms=3_600_000,
    )
    source = settings.topics.input
    counts = real_edges.create_topics(settings, topic)
    assert counts == {source: 3, topic: 3}, "the input's count"
    configs = _topic_configs(endpoints.bootstrap, topic)
    assert configs["cleanup.policy"].value == "delete"
    assert configs["retention.ms"].value == "3600000"
    again = load_settings(**{**settings.model_dump(), "repartition_partitions": 6})
    counts = real_edges.create_topics(again, topic)
    assert counts == {source: 3, topic: 3}, "an existing topic is kept"
    other = f"{unique}-other-repartition"
    counts = real_edges.create_topics(again, other)
    assert counts == {source: 3, other: 6}, "RILL_REPARTITION_PARTITIONS"


def _topic_configs(bootstrap: str, topic: str) -> dict[str, Any]:
    """A topic's configs. A topic just created may be unknown to the broker's metadata for
    a moment (KRaft applies it asynchronously): asked again then, for up to 30 s."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    deadline = time.monotonic() + 30
    while True:
        try:
            return dict(admin.describe_configs([resource])[resource].result(timeout=30))
        except KafkaException as exc:
            unknown = exc.args[0].code() == KafkaError.UNKNOWN_TOPIC_OR_PART
            if not unknown or time.monotonic() > deadline:
                raise
            time.sleep(0.2)
