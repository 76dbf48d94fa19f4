"""Bad input through a worker process on the real broker and Redis: it keeps running.

A record whose DLQ copy is larger than the producer's `message.max.bytes`, and event
times that are NaN, infinite or far in the future, used to crash the worker at every
restart (re-emitting the batch's good records each time) or make every later record
late. Now each is one DLQ entry with its reason, and the windows of the good records
come out once.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer

from service.processing import dlq
from service.processing.sizes import TRUNCATED
from tests.integration.conftest import ROOT, Endpoints, start_registry, stop_registry
from tests.integration.helpers import (
    avro_serde,
    create_topics,
    header,
    produce,
    read_all,
    read_once,
    start_worker,
    stop_worker,
    worker_env,
)
from tests.integration.test_registry import (
    PAYMENT_V1,
    PAYMENT_V2,
    _avro,
    registry_input,
)

pytestmark = pytest.mark.integration

SIZE_MS = 1000
HUGE = 999_950  # under max_record_bytes (1,000,000): too large only with DLQ headers


def _produce(bootstrap: str, topic: str, items: list[tuple[bytes, bytes]]) -> None:
    """Produce in order to partition 0, allowing records up to ~1 MiB.

    Idempotent, so a batch retried (a topic just created may not have its leader yet) keeps
    its place: without it the first records could land after the later ones.
    """
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "message.max.bytes": 1_040_000,
            "enable.idempotence": True,
        }
    )
    for key, value in items:
        producer.produce(topic, value, key, partition=0)
        producer.poll(0)
    assert producer.flush(60) == 0


def _order(customer: str, time_ms: float, n: int) -> dict[str, Any]:
    return {
        "order_id": f"o-{n}",
        "customer_id": customer,
        "amount": time_ms,  # the event-time field of this pipeline (an Avro double)
        "currency": "EUR",
        "status": "paid",
        "created_at": 0,
        "note": None,
    }


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
def test_oversize_and_bad_time_records_go_to_the_dlq_and_the_worker_runs_on(
    endpoints: Endpoints, unique: str, tmp_path: Path, guarantee: str
) -> None:
    """Oversize, NaN, ±Inf and far-future records: DLQ entries; windows once; no crash."""
    env = worker_env(
        endpoints.bootstrap,
        endpoints.redis_url,
        unique,
        redis_prefix=unique,
        processing_guarantee=guarantee,
        transaction_timeout_ms=10_000,
        filter_field="",
        key_by="customer_id",
        window_type="tumbling",
        window_size_ms=SIZE_MS,
        window_grace_ms=0,
        window_time_field="amount",
        window_idle_timeout_ms=0,
        aggregates="count",
        output_format="json",
        output_wire="plain",
    )
    topics = [env["RILL_INPUT_TOPIC"], env["RILL_OUTPUT_TOPIC"], env["RILL_DLQ_TOPIC"]]
    create_topics(endpoints.bootstrap, topics, partitions=1)
    serde = avro_serde("order.avsc", 1)
    base = (time.time_ns() // 1_000_000 - 120_000) // SIZE_MS * SIZE_MS
    good: list[tuple[str, float]] = [(f"c{i % 3}", base + i * 100) for i in range(30)]
    bad_times = {"nan": float("nan"), "inf": float("inf"), "-inf": float("-inf")}
    bad_times["future"] = base + 10 * 365 * 24 * 3_600_000.0
    items: list[tuple[bytes, bytes]] = []
    for n, (customer, ts) in enumerate(good[:15]):
        items.append((customer.encode(), serde.encode(_order(customer, ts, n))))
    items.append((b"huge", b"\xff" * HUGE))  # not Avro: a decode error, DLQ'd whole
    for name, ts in bad_times.items():
        items.append((name.encode(), serde.encode(_order(name, ts, 0))))
    for n, (customer, ts) in enumerate(good[15:], start=15):
        items.append((customer.encode(), serde.encode(_order(customer, ts, n))))
    # After the far-future record: still on time; then one record to close the windows.
    good.append(("c0", base + 3 * SIZE_MS + 50))
    items.append((b"c0", serde.encode(_order("c0", good[-1][1], 99))))
    items.append((b"closer", serde.encode(_order("closer", base + 10 * SIZE_MS, 100))))
    _produce(endpoints.bootstrap, env["RILL_INPUT_TOPIC"], items)

    expected = Counter((c, int(ts) // SIZE_MS * SIZE_MS) for c, ts in good)
    worker = start_worker(env, tmp_path / "worker.log")
    try:
        outputs = read_all(endpoints.bootstrap, env["RILL_OUTPUT_TOPIC"], len(expected))
        dead = read_all(endpoints.bootstrap, env["RILL_DLQ_TOPIC"], 1 + len(bad_times))
        running = worker.poll() is None
    finally:
        stop_worker(worker)
    log = (tmp_path / "worker.log").read_text(errors="replace")
    assert running, f"the worker exited: {log[-3000:]}"
    got: Counter[tuple[str, int]] = Counter()
    for record in outputs:
        value = json.loads(record.value or b"")
        got[(value["key"], value["window_start"])] += value["count"]
    assert got == expected, "each window once, with every good record (none late)"

    by_key = {r.key or b"": r for r in dead}
    assert sorted(by_key) == sorted([b"huge", *(k.encode() for k in bad_times)])
    huge = by_key[b"huge"]
    assert huge.value is None, "the copy keeps a reference instead of the value"
    assert header(huge, TRUNCATED) == str(HUGE)
    assert header(huge, dlq.ERROR_STAGE) == "decode"
    assert header(huge, dlq.SOURCE_TOPIC) == env["RILL_INPUT_TOPIC"]
    assert header(huge, dlq.SOURCE_OFFSET) == "15"
    for name in bad_times:
        entry = by_key[name.encode()]
        assert header(entry, dlq.ERROR_STAGE) == "transform"
        assert header(entry, dlq.ERROR_CLASS) == "EventTimeError"
    assert "ahead of the wall clock" in (header(by_key[b"future"], dlq.ERROR_MESSAGE) or "")


@pytest.fixture
def registry() -> Iterator[tuple[str, int]]:
    """A registry of this test only, which it freezes mid-run."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    url = start_registry(port)
    yield url, port
    stop_registry(port)


def _registry_pid(port: int) -> int:
    state = Path(os.environ.get("RILL_LOCAL_STATE_DIR", ROOT / ".rill"))
    return int((state / "registry" / f"{port}.pid").read_text())


def test_records_wait_while_the_registry_does_not_answer_and_none_is_lost(
    endpoints: Endpoints, registry: tuple[str, int], unique: str, tmp_path: Path
) -> None:
    """Registry frozen mid-run: a new id's records wait (no DLQ), then all come out in order."""
    url, port = registry
    env, v1, v2 = registry_input(
        endpoints, url, unique, schema_registry_retry_interval_s=1, schema_registry_wait_s=600
    )
    topic = env["RILL_INPUT_TOPIC"]

    def records(start: int, n: int, new: bool = False) -> list[tuple[bytes | None, bytes | None]]:
        out: list[tuple[bytes | None, bytes | None]] = []
        for i in range(start, start + n):
            if new:
                value = _avro(PAYMENT_V2, v2, {"id": f"r{i}", "amount": i, "currency": "USD"})
            else:
                value = _avro(PAYMENT_V1, v1, {"id": f"r{i}", "amount": i})
            out.append((f"r{i}".encode(), value))
        return out

    produce(endpoints.bootstrap, topic, records(0, 50))
    pid = _registry_pid(port)
    worker = start_worker(env, tmp_path / "w.log")
    try:
        read_all(endpoints.bootstrap, env["RILL_OUTPUT_TOPIC"], 50, settle_s=0)
        os.kill(pid, signal.SIGSTOP)  # connections hang: the registry does not answer
        try:
            produce(
                endpoints.bootstrap,
                topic,
                [*records(50, 50), *records(100, 20, new=True), *records(120, 50)],
            )
            before = read_all(endpoints.bootstrap, env["RILL_OUTPUT_TOPIC"], 100, settle_s=3)
            held_dlq = read_once(endpoints.bootstrap, env["RILL_DLQ_TOPIC"])
        finally:
            os.kill(pid, signal.SIGCONT)
        sink = read_all(endpoints.bootstrap, env["RILL_OUTPUT_TOPIC"], 170)
        running = worker.poll() is None
    finally:
        code = stop_worker(worker)
    assert running
    assert code == 0
    assert len(before) == 100, "records before the new id flowed; it and later ones waited"
    assert held_dlq == [], "waiting records are not DLQ entries"
    ids = [json.loads(r.value or b"")["id"] for r in sink]
    assert ids == [f"r{i}" for i in range(170)], "every record once, in order"
    assert read_once(endpoints.bootstrap, env["RILL_DLQ_TOPIC"]) == []
