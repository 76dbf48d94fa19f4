"""The at-least-once worker on the real broker: content, DLQ and restart after SIGTERM."""

from __future__ import annotations

import json
import signal
import struct
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from service.demo import demo_orders
from service.processing import dlq
from tests.integration.conftest import Endpoints
from tests.integration.helpers import (
    HeldFeed,
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

pytestmark = pytest.mark.integration

IN_SERDE = avro_serde("order.avsc", 1)
OUT_SERDE = avro_serde("order_out.avsc", 2)
# The stateless projection pipeline, no filter: every good record has exactly one output.
NO_FILTER = {
    "filter_field": "",
    "window_type": "none",
    "project": "order_id,customer_id,amount,currency,created_at",
    "rename": '{"amount": "total"}',
    "output_format": "avro",
    "output_schema": "order_out.avsc",
    "output_wire": "confluent",
    "output_schema_id": "2",
}


def expected_output(order: dict[str, Any]) -> dict[str, Any]:
    """The demo pipeline's output for one order, written out independently of rill."""
    return {
        "order_id": order["order_id"],
        "customer_id": order["customer_id"],
        "total": order["amount"],
        "currency": order["currency"],
        "created_at": order["created_at"],
    }


def _comparable(value: dict[str, Any]) -> dict[str, Any]:
    out = dict(value)
    ts = out["created_at"]
    out["created_at"] = ts if isinstance(ts, int) else int(ts.timestamp() * 1000)
    return out


def test_10000_avro_records_transform_exactly(
    endpoints: Endpoints, unique: str, tmp_path: Path
) -> None:
    """10,000 Avro records in -> exactly the 10,000 expected outputs, keyed by customer."""
    env = worker_env(endpoints.bootstrap, endpoints.redis_url, unique, **NO_FILTER)
    create_topics(endpoints.bootstrap, [env["RILL_INPUT_TOPIC"]])
    orders = list(demo_orders(10_000, seed=11))
    produce(
        endpoints.bootstrap,
        env["RILL_INPUT_TOPIC"],
        ((o["customer_id"].encode(), IN_SERDE.encode(o)) for o in orders),
    )
    proc = start_worker(env, tmp_path / "worker.log")
    try:
        sink = read_all(endpoints.bootstrap, env["RILL_OUTPUT_TOPIC"], 10_000)
    finally:
        code = stop_worker(proc)
    assert code == 0, (tmp_path / "worker.log").read_text()[-3000:]
    got = {}
    for rec in sink:
        value = _comparable(OUT_SERDE.decode(rec.value))
        assert rec.key == value["customer_id"].encode()
        got[value["order_id"]] = value
    assert len(sink) == 10_000
    assert got == {o["order_id"]: expected_output(o) for o in orders}
    assert read_once(endpoints.bootstrap, env["RILL_DLQ_TOPIC"]) == []


def _corrupt_values() -> list[tuple[bytes, str, str]]:
    """100 bad values: (bytes, expected stage, expected error class or message part)."""
    good = IN_SERDE.encode(next(demo_orders(1, seed=3)))
    wrong_schema = struct.pack(">bI", 0, 1) + json.dumps({"x": 1}).encode()
    bad: list[tuple[bytes, str, str]] = []
    for i in range(100):
        kind = i % 5
        if kind == 0:
            bad.append((b"garbage-" + bytes([i]) * 7, "decode", "magic byte"))
        elif kind == 1:
            bad.append((struct.pack(">bI", 0, 99) + good[5:], "decode", "unknown schema id"))
        elif kind == 2:
            bad.append((good[: 6 + i % 20], "decode", "not an Avro record"))
        elif kind == 3:
            bad.append((good + b"\x02tail", "decode", "trailing bytes"))
        else:
            bad.append((wrong_schema, "decode", "Avro"))
    return bad


def test_100_corrupt_records_land_in_dlq_with_reasons(
    endpoints: Endpoints, unique: str, tmp_path: Path
) -> None:
    """100 corrupt records among 2,000 good ones -> exactly 100 DLQ records, none lost."""
    env = worker_env(endpoints.bootstrap, endpoints.redis_url, unique, **NO_FILTER)
    create_topics(endpoints.bootstrap, [env["RILL_INPUT_TOPIC"]], partitions=3)
    orders = list(demo_orders(2_000, seed=5))
    bad = _corrupt_values()
    items: list[tuple[bytes | None, bytes | None]] = []
    for i, order in enumerate(orders):
        items.append((order["customer_id"].encode(), IN_SERDE.encode(order)))
        if i % 20 == 0:
            value, _, _ = bad[i // 20]
            items.append((f"bad-{i // 20}".encode(), value))
    produce(endpoints.bootstrap, env["RILL_INPUT_TOPIC"], items)
    proc = start_worker(env, tmp_path / "worker.log")
    try:
        dlq_records = read_all(endpoints.bootstrap, env["RILL_DLQ_TOPIC"], 100)
        sink = read_all(endpoints.bootstrap, env["RILL_OUTPUT_TOPIC"], 2_000)
    finally:
        code = stop_worker(proc)
    assert code == 0
    assert len(dlq_records) == 100
    assert len(sink) == 2_000
    assert {OUT_SERDE.decode(r.value)["order_id"] for r in sink} == {o["order_id"] for o in orders}
    for rec in dlq_records:
        index = int(rec.key.decode().split("-")[1])
        value, stage, reason = bad[index]
        assert rec.value == value, "DLQ keeps the original value byte-for-byte"
        assert header(rec, dlq.ERROR_STAGE) == stage
        assert reason in (header(rec, dlq.ERROR_MESSAGE) or "")
        assert header(rec, dlq.SOURCE_TOPIC) == env["RILL_INPUT_TOPIC"]
        assert header(rec, dlq.ERROR_CLASS)
        assert int(header(rec, dlq.SOURCE_OFFSET) or -1) >= 0
    lines = [json.loads(x) for x in (tmp_path / "worker.log").read_text().splitlines() if x]
    one_by_one = sum(1 for x in lines if x["event"] == "record to DLQ")
    counted = sum(x["count"] for x in lines if x["event"].startswith("more records to DLQ"))
    assert one_by_one + counted == 100, "every DLQ record is logged, or counted under a flood"


def _order_feed(bootstrap: str, topic: str, orders: list[dict[str, Any]]) -> HeldFeed:
    """Orders at about 2,000 records/s, the second half held until released."""
    items = [(o["customer_id"].encode(), IN_SERDE.encode(o)) for o in orders]
    return HeldFeed(bootstrap, topic, items, rate=2_000, hold_at=len(items) // 2)


def test_sigterm_mid_stream_then_restart_loses_nothing(
    endpoints: Endpoints, unique: str, tmp_path: Path
) -> None:
    """A worker stopped by SIGTERM mid-stream and restarted: every input reaches the sink."""
    total = 30_000
    env = worker_env(endpoints.bootstrap, endpoints.redis_url, unique, batch_size=200, **NO_FILTER)
    create_topics(endpoints.bootstrap, [env["RILL_INPUT_TOPIC"]])
    orders = list(demo_orders(total, seed=21))
    feed = _order_feed(endpoints.bootstrap, env["RILL_INPUT_TOPIC"], orders)
    log_path = tmp_path / "worker.log"
    first = start_worker(env, log_path)
    feed.start()
    try:
        read_all(endpoints.bootstrap, env["RILL_OUTPUT_TOPIC"], 300, settle_s=0)
    finally:
        code = stop_worker(first, signal.SIGTERM)
    assert code == 0, "SIGTERM finishes the batch, commits and exits cleanly"
    stopped_at = len(read_once(endpoints.bootstrap, env["RILL_OUTPUT_TOPIC"]))
    assert not feed.finished(), "the first worker stopped while input was still arriving"
    feed.release()
    second = start_worker(env, log_path)
    try:
        sink = read_all(endpoints.bootstrap, env["RILL_OUTPUT_TOPIC"], total, timeout_s=120)
    finally:
        feed.join()
        assert stop_worker(second) == 0
    ids = Counter(OUT_SERDE.decode(r.value)["order_id"] for r in sink)
    assert set(ids) == {o["order_id"] for o in orders}, "every input record is in the sink"
    duplicates = sum(n - 1 for n in ids.values())
    assert "stop requested" in log_path.read_text()
    print(
        f"\nsigterm restart: first worker stopped after {stopped_at} of {total} outputs, "
        f"{duplicates} duplicates after restart"
    )


def test_exactly_once_stateless_sigkill_leaves_no_duplicates(
    endpoints: Endpoints, unique: str, tmp_path: Path
) -> None:
    """Exactly-once, stateless: SIGKILL mid-stream and restart -> every record exactly once."""
    total = 20_000
    env = worker_env(
        endpoints.bootstrap,
        endpoints.redis_url,
        unique,
        batch_size=200,
        processing_guarantee="exactly_once",
        transaction_timeout_ms=10_000,
        **NO_FILTER,
    )
    create_topics(endpoints.bootstrap, [env["RILL_INPUT_TOPIC"]])
    orders = list(demo_orders(total, seed=8))
    feed = _order_feed(endpoints.bootstrap, env["RILL_INPUT_TOPIC"], orders)
    first = start_worker(env, tmp_path / "a.log")
    feed.start()
    try:
        read_all(endpoints.bootstrap, env["RILL_OUTPUT_TOPIC"], 300, settle_s=0)
    finally:
        killed = stop_worker(first, signal.SIGKILL)
    assert killed == -signal.SIGKILL
    assert not feed.finished(), "killed while input was still arriving"
    feed.release()
    second = start_worker(env, tmp_path / "b.log")
    try:
        feed.join()
        sink = read_all(
            endpoints.bootstrap, env["RILL_OUTPUT_TOPIC"], total, timeout_s=120, settle_s=5
        )
    finally:
        code = stop_worker(second)
    assert code == 0
    ids = Counter(OUT_SERDE.decode(r.value)["order_id"] for r in sink)
    assert set(ids) == {o["order_id"] for o in orders}
    duplicates = sum(n - 1 for n in ids.values())
    assert duplicates == 0, "read_committed readers see each output once"
    print(f"\nexactly-once stateless sigkill: {len(sink)} outputs, 0 duplicates")
