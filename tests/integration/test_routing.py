"""Routing and the co-partition check on the real broker and Redis, worker processes."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer

from service.kafka.admin import partition_count
from service.processing import dlq
from service.processing.partitioning import java_partition, librdkafka_partition
from tests.integration.conftest import Endpoints
from tests.integration.helpers import (
    create_topics,
    produce,
    read_all,
    read_once,
    start_worker,
    stop_worker,
    worker_env,
)
from tests.integration.test_operations import free_port, scrape, total, wait_for

pytestmark = pytest.mark.integration

MODES = ["at_least_once", "exactly_once"]
JSON_IO = {
    "input_format": "json",
    "input_wire": "plain",
    "output_format": "json",
    "output_wire": "plain",
    "filter_field": "",
}
WINDOWED = {
    **JSON_IO,
    "key_by": "customer_id",
    "window_type": "tumbling",
    "window_size_ms": 1000,
    "window_grace_ms": 0,
    "window_time_field": "ts",
    "window_idle_timeout_ms": 0,
    "aggregates": "count",
}


@pytest.mark.parametrize("guarantee", MODES)
def test_records_reach_the_topic_their_field_names(
    endpoints: Endpoints, unique: str, tmp_path: Path, guarantee: str
) -> None:
    """Each record reaches the topic its route field names, once; a record naming a topic
    outside RILL_ROUTE_TOPICS goes to the DLQ with stage route; routed topics are created
    at start; /metrics counts outputs per routed topic."""
    eu, us = f"eu-{unique}", f"us-{unique}"
    port = free_port()
    env = worker_env(
        endpoints.bootstrap,
        endpoints.redis_url,
        unique,
        processing_guarantee=guarantee,
        window_type="none",
        key_by="id",
        route_field="region",
        route_topics=f"{eu},{us}",
        metrics_port=port,
        **JSON_IO,
    )
    regions = [eu, us, "mars"]
    rows = [{"id": i, "region": regions[i % 3]} for i in range(300)]
    create_topics(endpoints.bootstrap, [env["RILL_INPUT_TOPIC"]], partitions=2)
    produce(
        endpoints.bootstrap, env["RILL_INPUT_TOPIC"], [(b"k", json.dumps(r).encode()) for r in rows]
    )
    proc = start_worker(env, tmp_path / "w.log")
    try:
        got = {t: read_all(endpoints.bootstrap, t, 100) for t in (eu, us)}
        bad = read_all(endpoints.bootstrap, env["RILL_DLQ_TOPIC"], 100)
        m = scrape(port)
    finally:
        code = stop_worker(proc)
    assert code == 0
    for topic in (eu, us):
        # Created at start like the sink (the input's partition count), not auto-created.
        assert partition_count({"bootstrap.servers": endpoints.bootstrap}, topic) == 2
        ids = sorted(json.loads(r.value or b"")["id"] for r in got[topic])
        assert ids == [r["id"] for r in rows if r["region"] == topic], f"{topic}: each once"
        assert total(m, "rill_records_routed_total", output=topic) == 100
    assert read_once(endpoints.bootstrap, env["RILL_OUTPUT_TOPIC"]) == []
    assert len(bad) == 100
    reasons = [dlq.reason_of(r.headers) for r in bad]
    assert {r[dlq.ERROR_STAGE] for r in reasons} == {"route"}
    assert "'mars', not one of RILL_ROUTE_TOPICS" in reasons[0][dlq.ERROR_MESSAGE]


@pytest.mark.parametrize("guarantee", MODES)
def test_window_results_are_routed_by_a_python_function(
    endpoints: Endpoints, unique: str, tmp_path: Path, guarantee: str
) -> None:
    """Pipeline.route over window results: each window lands once, in the topic its count
    picks (big / small)."""
    big_topic, small_topic = f"big-{unique}", f"small-{unique}"
    env = worker_env(
        endpoints.bootstrap,
        endpoints.redis_url,
        unique,
        processing_guarantee=guarantee,
        app="tests.integration.apps:routed_windows",
        route_topics=f"{big_topic},{small_topic}",
        **WINDOWED,
    )
    # In each second-window c-0 has 8 orders and c-1 two, event times increasing; 10
    # windows each, closed by a last record at ts 10_500 (one partition, one watermark).
    rows = [
        {"customer_id": "c-0" if j < 8 else "c-1", "ts": s * 1000 + j * 10}
        for s in range(10)
        for j in range(10)
    ]
    rows += [{"customer_id": "c-2", "ts": 10_500}]
    create_topics(endpoints.bootstrap, [env["RILL_INPUT_TOPIC"]], partitions=1)
    produce(
        endpoints.bootstrap,
        env["RILL_INPUT_TOPIC"],
        [(r["customer_id"].encode(), json.dumps(r).encode()) for r in rows],
    )
    proc = start_worker(env, tmp_path / "w.log")
    try:
        big = read_all(endpoints.bootstrap, big_topic, 10)
        small = read_all(endpoints.bootstrap, small_topic, 10)
    finally:
        code = stop_worker(proc)
    assert code == 0
    assert Counter((r.key, json.loads(r.value or b"")["count"]) for r in big) == {(b"c-0", 8): 10}
    assert Counter((r.key, json.loads(r.value or b"")["count"]) for r in small) == {(b"c-1", 2): 10}


def _partitions_of(bootstrap: str, topic: str, keys: list[bytes], partitioner: str) -> list[int]:
    """Produce one record per key with a librdkafka partitioner; the partition of each."""
    producer = Producer({"bootstrap.servers": bootstrap, "partitioner": partitioner})
    got: dict[bytes, int] = {}
    for key in keys:
        producer.produce(
            topic, b"{}", key, on_delivery=lambda _e, m: got.__setitem__(m.key(), m.partition())
        )
    assert producer.flush(30) == 0
    return [got[k] for k in keys]


def test_the_hashes_agree_with_librdkafkas_partitioners(endpoints: Endpoints, unique: str) -> None:
    """librdkafka's murmur2 (the Java client's) and consistent_random (CRC32) partitioners
    put keys where java_partition and librdkafka_partition say, on a 7-partition topic."""
    topic = f"hashes-{unique}"
    create_topics(endpoints.bootstrap, [topic], partitions=7)
    keys = [f"customer-{i}".encode() for i in range(200)] + ["ü-€".encode(), b"x"]
    murmur = _partitions_of(endpoints.bootstrap, topic, keys, "murmur2")
    crc = _partitions_of(endpoints.bootstrap, topic, keys, "consistent")
    assert murmur == [java_partition(k, 7) for k in keys]
    assert crc == [librdkafka_partition(k, 7) for k in keys]
    assert murmur != crc, "two different partitioners"


def _orders(n: int) -> list[dict[str, Any]]:
    return [{"order_id": f"o-{i}", "customer_id": f"c-{i % 13}", "ts": i * 10} for i in range(n)]


def test_input_not_keyed_by_the_window_key_is_counted_and_warned(
    endpoints: Endpoints, unique: str, tmp_path: Path
) -> None:
    """Orders keyed by order id, windowed per customer on 4 partitions: every misplaced
    record counted in rill_records_not_copartitioned_total, a warning naming group_by, the
    worker goes on (warn)."""
    port = free_port()
    env = worker_env(
        endpoints.bootstrap, endpoints.redis_url, unique, metrics_port=port, **WINDOWED
    )
    topic = env["RILL_INPUT_TOPIC"]
    create_topics(endpoints.bootstrap, [topic], partitions=4)
    orders = _orders(400)
    produce(
        endpoints.bootstrap,
        topic,
        [(o["order_id"].encode(), json.dumps(o).encode()) for o in orders],
    )
    placed = read_once(endpoints.bootstrap, topic)
    assert len(placed) == 400
    misplaced = sum(
        1
        for r in placed
        if r.partition
        not in (
            java_partition(json.loads(r.value or b"")["customer_id"].encode(), 4),
            librdkafka_partition(json.loads(r.value or b"")["customer_id"].encode(), 4),
        )
    )
    assert misplaced > 100, "keyed by order id, most customers' orders are spread"
    log_path = tmp_path / "w.log"
    proc = start_worker(env, log_path)
    try:
        wait_for(
            lambda: total(scrape(port), "rill_records_in_total", topic=topic) >= 400, what="400 in"
        )
        m = scrape(port)
    finally:
        code = stop_worker(proc)
    assert code == 0
    assert total(m, "rill_records_not_copartitioned_total", topic=topic) == misplaced
    warnings = [
        json.loads(line)
        for line in log_path.read_text().splitlines()
        if "window input not co-partitioned" in line
    ]
    assert warnings, "a warning"
    assert "group_by" in warnings[0]["fix"]
    assert warnings[0]["setting"] == "RILL_COPARTITION_CHECK"


def test_input_keyed_by_the_window_key_is_not_counted(
    endpoints: Endpoints, unique: str, tmp_path: Path
) -> None:
    """The same orders keyed by customer (librdkafka's default partitioner): nothing counted."""
    port = free_port()
    env = worker_env(
        endpoints.bootstrap, endpoints.redis_url, unique, metrics_port=port, **WINDOWED
    )
    topic = env["RILL_INPUT_TOPIC"]
    create_topics(endpoints.bootstrap, [topic], partitions=4)
    produce(
        endpoints.bootstrap,
        topic,
        [(o["customer_id"].encode(), json.dumps(o).encode()) for o in _orders(400)],
    )
    proc = start_worker(env, tmp_path / "w.log")
    try:
        wait_for(
            lambda: total(scrape(port), "rill_records_in_total", topic=topic) >= 400, what="400 in"
        )
        m = scrape(port)
    finally:
        code = stop_worker(proc)
    assert code == 0
    assert total(m, "rill_records_not_copartitioned_total", topic=topic) == 0


@pytest.mark.parametrize("guarantee", MODES)
def test_fail_stops_the_worker_naming_the_setting_and_group_by(
    endpoints: Endpoints, unique: str, tmp_path: Path, guarantee: str
) -> None:
    """RILL_COPARTITION_CHECK=fail: the worker exits with an error naming the setting and
    group_by, and emits no window."""
    env = worker_env(
        endpoints.bootstrap,
        endpoints.redis_url,
        unique,
        processing_guarantee=guarantee,
        copartition_check="fail",
        **WINDOWED,
    )
    topic = env["RILL_INPUT_TOPIC"]
    create_topics(endpoints.bootstrap, [topic], partitions=4)
    orders = _orders(400)
    produce(
        endpoints.bootstrap,
        topic,
        [(o["order_id"].encode(), json.dumps(o).encode()) for o in orders],
    )
    log_path = tmp_path / "w.log"
    proc = start_worker(env, log_path)
    try:
        code = proc.wait(timeout=90)
    finally:
        stop_worker(proc)
    assert code == 1
    [line] = [json.loads(x) for x in log_path.read_text().splitlines() if "stopped on error" in x]
    assert line["error_class"] == "CopartitionError"
    assert "RILL_COPARTITION_CHECK=fail" in line["error"]
    assert "group_by" in line["error"]
    assert read_once(endpoints.bootstrap, env["RILL_OUTPUT_TOPIC"]) == []
