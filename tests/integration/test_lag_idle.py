"""Idle partitions and the exported lag, through worker processes on the real broker and Redis.

A partition counts as idle only when nothing of it is buffered and its position is at the
end (the last stable offset): never because the fetcher served other partitions for a
while, in either guarantee mode. `rill_consumer_lag` is end - position in both modes.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer

from service.processing import dlq
from tests.integration.conftest import Endpoints
from tests.integration.helpers import (
    create_topics,
    header,
    produce,
    read_once,
    start_worker,
    stop_worker,
    worker_env,
)
from tests.integration.test_operations import free_port, scrape
from tests.support.window_model import AGGREGATES, Rec, run_model, same_values

pytestmark = pytest.mark.integration

PARTITIONS = 8
GRACE_MS = 200
WINDOW_MS = 1000
BASE_MS = 1_700_000_000_000  # positive event times, far from the wall clock

WINDOWED = {
    "filter_field": "",
    "key_by": "customer_id",
    "window_type": "tumbling",
    "window_size_ms": WINDOW_MS,
    "window_grace_ms": GRACE_MS,
    "window_time_field": "ts",
    "aggregates": ",".join(AGGREGATES),
    "input_format": "json",
    "input_wire": "plain",
    "output_format": "json",
    "output_wire": "plain",
    "transaction_timeout_ms": 10_000,
}
# The fetcher hands out each partition in chunks of up to max.partition.fetch.bytes, one
# partition after another: with 256 KiB chunks, 8 partitions and a 1 s idle timeout a
# partition waits longer than the timeout for its next chunk on this workload.
UNEVEN_FETCH = {
    "window_idle_timeout_ms": 1000,
    "kafka_extra": json.dumps({"consumer.max.partition.fetch.bytes": str(256 * 1024)}),
}


def skewed_events(n: int, keys: int, seed: int) -> list[dict[str, Any]]:
    """Orders over Zipf-skewed customers, event time 1 ms apart, disorder below the grace."""
    rng = random.Random(seed)
    weights = [1 / (rank + 1) for rank in range(keys)]
    customers = rng.choices([f"c-{k:03d}" for k in range(keys)], weights, k=n)
    events = []
    for i, customer in enumerate(customers):
        jitter = -rng.randrange(GRACE_MS) if rng.random() < 0.2 else 0
        events.append(
            {"customer_id": customer, "ts": BASE_MS + i + jitter, "amount": rng.randint(1, 400)}
        )
    return events


def model_input(endpoints: Endpoints, topic: str) -> list[Rec]:
    """The input topic as the reference model reads it (partition, offset, key, time)."""
    recs = []
    for r in read_once(endpoints.bootstrap, topic):
        v = json.loads(r.value or b"")
        recs.append(Rec(r.partition, r.offset, v["customer_id"], v["ts"], float(v["amount"])))
    return recs


def read_until_quiet(
    endpoints: Endpoints, topic: str, expected: int, quiet_s: float, timeout_s: float
) -> list[Any]:
    """Read `topic` until `expected` records are there, or it stopped growing for `quiet_s`."""
    deadline = time.monotonic() + timeout_s
    records = read_once(endpoints.bootstrap, topic)
    changed = time.monotonic()
    while len(records) < expected and time.monotonic() < deadline:
        time.sleep(1.0)
        again = read_once(endpoints.bootstrap, topic)
        if len(again) != len(records):
            changed = time.monotonic()
        elif time.monotonic() - changed > quiet_s:
            break
        records = again
    return read_once(endpoints.bootstrap, topic)


@pytest.mark.parametrize("guarantee", ["exactly_once", "at_least_once"])
def test_clean_run_every_window_exact(
    endpoints: Endpoints, unique: str, tmp_path: Path, guarantee: str
) -> None:
    """No faults, a skewed preloaded backlog served unevenly: every window equals the model."""
    total = 120_000
    env = worker_env(
        endpoints.bootstrap,
        endpoints.redis_url,
        unique,
        redis_prefix=unique,
        **{**WINDOWED, **UNEVEN_FETCH, "processing_guarantee": guarantee},
    )
    topic = env["RILL_INPUT_TOPIC"]
    create_topics(endpoints.bootstrap, [topic], partitions=PARTITIONS)
    create_topics(endpoints.bootstrap, [env["RILL_OUTPUT_TOPIC"], env["RILL_DLQ_TOPIC"]])
    events = skewed_events(total, keys=64, seed=9)
    produce(
        endpoints.bootstrap,
        topic,
        [(e["customer_id"].encode(), json.dumps(e).encode()) for e in events],
    )
    model = run_model(model_input(endpoints, topic), "tumbling", size=WINDOW_MS, grace=GRACE_MS)
    assert not model.late, "the workload has no late record"
    started = time.monotonic()
    worker = start_worker(env, tmp_path / "w.log")
    try:
        sink = read_until_quiet(
            endpoints, env["RILL_OUTPUT_TOPIC"], len(model.windows), quiet_s=15, timeout_s=240
        )
    finally:
        stop_worker(worker)
    elapsed = time.monotonic() - started
    emitted: dict[tuple[str, int, int], dict[str, Any]] = {}
    for rec in sink:
        v = json.loads(rec.value or b"")
        emitted[(v.pop("key"), v.pop("window_start"), v.pop("window_end"))] = v
    missing = set(model.windows) - set(emitted)
    wrong = [
        w
        for w in emitted.keys() & model.windows.keys()
        if not same_values(emitted[w], model.windows[w])
    ]
    late = [
        r
        for r in read_once(endpoints.bootstrap, env["RILL_DLQ_TOPIC"])
        if header(r, dlq.ERROR_STAGE) == "late"
    ]
    print(
        f"\nclean run ({guarantee}, {total} records, {PARTITIONS} partitions, {elapsed:.0f} s): "
        f"{len(model.windows)} windows, {len(missing)} missing, {len(wrong)} wrong, "
        f"{len(late)} on-time records in the DLQ as late"
    )
    assert not missing
    assert not wrong
    assert not late


def _produce_to(bootstrap: str, topic: str, events: list[tuple[int, dict[str, Any]]]) -> None:
    """Produce (partition, event) pairs in transactions of 500, as an exactly-once upstream.

    Each transaction leaves a commit marker in every partition it wrote: a partition read to
    its end has its high watermark past the offset after its last record.
    """
    producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": f"feed-{topic}"})
    producer.init_transactions(30)
    for start in range(0, len(events), 500):
        producer.begin_transaction()
        for partition, event in events[start : start + 500]:
            value = json.dumps(event).encode()
            producer.produce(topic, value, event["customer_id"].encode(), partition)
            producer.poll(0)
        producer.commit_transaction(30)


def _lags(port: int, topic: str) -> dict[str, float]:
    """rill_consumer_lag per partition, as /metrics shows it now."""
    return {
        dict(labels)["partition"]: value
        for (name, labels), value in scrape(port).items()
        if name == "rill_consumer_lag" and dict(labels).get("topic") == topic
    }


def _phase(
    start_ms: int, n: int, partitions: list[int], seed: int
) -> list[tuple[int, dict[str, Any]]]:
    """`n` events 1 ms apart from `start_ms`, spread over `partitions`, 4 customers each."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        p = partitions[i % len(partitions)]
        event = {"customer_id": f"p{p}-{rng.randrange(4)}", "ts": start_ms + i, "amount": 1}
        out.append((p, event))
    return out


def test_after_restart_lag_returns_to_zero_and_idle_windows_close(
    endpoints: Endpoints, unique: str, tmp_path: Path
) -> None:
    """Exactly-once, restarted: rill_consumer_lag is 0 once the input is read, windows close."""
    port = free_port()
    env = worker_env(
        endpoints.bootstrap,
        endpoints.redis_url,
        unique,
        redis_prefix=unique,
        metrics_port=port,
        stats_interval_ms=500,
        window_idle_timeout_ms=1000,
        processing_guarantee="exactly_once",
        **WINDOWED,
    )
    topic = env["RILL_INPUT_TOPIC"]
    create_topics(endpoints.bootstrap, [topic], partitions=4)
    create_topics(endpoints.bootstrap, [env["RILL_OUTPUT_TOPIC"], env["RILL_DLQ_TOPIC"]])
    now = int(time.time() * 1000)
    # Before the restart every partition gets records; after it only two do, the other
    # two stay idle. Event times of the second part are after the first part's windows
    # were closed by the idle timeout (the watermark followed the wall clock meanwhile).
    _produce_to(endpoints.bootstrap, topic, _phase(now - 600_000, 4000, [0, 1, 2, 3], seed=1))
    first = run_model(model_input(endpoints, topic), "tumbling", size=WINDOW_MS, grace=GRACE_MS)
    worker = start_worker(env, tmp_path / "first.log")
    try:
        read_until_quiet(
            endpoints, env["RILL_OUTPUT_TOPIC"], len(first.windows), quiet_s=20, timeout_s=90
        )
    finally:
        assert stop_worker(worker) == 0
    _produce_to(endpoints.bootstrap, topic, _phase(now + 60_000, 3000, [1, 3], seed=2))
    model = run_model(model_input(endpoints, topic), "tumbling", size=WINDOW_MS, grace=GRACE_MS)
    worker = start_worker(env, tmp_path / "second.log")
    seen: list[dict[str, float]] = []
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                lags = _lags(port, topic)
            except OSError:  # the worker's HTTP server is not up yet
                lags = {}
            if lags and lags != (seen[-1] if seen else None):
                seen.append(lags)
            if len(lags) == 4 and not any(lags.values()):
                break
            time.sleep(0.5)
        sink = read_until_quiet(
            endpoints, env["RILL_OUTPUT_TOPIC"], len(model.windows), quiet_s=15, timeout_s=60
        )
    finally:
        stop_worker(worker)
    emitted = set()
    for rec in sink:
        v = json.loads(rec.value or b"")
        emitted.add((v["key"], v["window_start"], v["window_end"]))
    missing = set(model.windows) - emitted
    print(
        f"\nrestart (exactly_once): rill_consumer_lag per partition as it changed: {seen}; "
        f"{len(model.windows)} windows, {len(missing)} never closed"
    )
    assert seen, "the lag is exported"
    assert seen[-1] == dict.fromkeys("0123", 0.0), "the lag returns to 0 once the input is read"
    assert not missing, "windows of partitions idle after their last record close"
