"""The bench's input: two workloads of Avro orders, and the windows they must yield.

- `demo`: the demo orders (20 customers, an order every 250 ms of event time on
  average): about 1.5 records per key and 10 s window once cancelled orders are dropped.
- `skewed`: 1,000 customers drawn from a Zipf-like law (weight 1/rank^1.1), an order
  every 2 ms of event time: about 5,000 records per 10 s window, a quarter of them on
  the hottest few keys.
- `manykeys`: 50,000 customers, the same Zipf-like law, an order every 1 ms of event time,
  and out of event-time order: each order's time is moved back by up to 1.5 s (less than
  the 2 s grace, so none is late): about 10,000 records per 10 s window, most keys with a
  single record in it (many windows per record: the state-heavy case).

In `demo` and `skewed` event times increase with the offset in every partition; in
`manykeys` they go back by up to 1.5 s, within the grace: no record is ever late for
either system. Each partition ends with a sentinel record (key `~sentinel`) 60 s of
event time after the last order: it closes every order window in both rill (watermark
= max event time - grace) and Quix Streams (closing strategy "partition", same rule).
The Kafka timestamp (CreateTime) of every record is its `created_at`, which is the
event time Quix reads; rill reads the field.
"""

from __future__ import annotations

import io
import json
import math
import random
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import accumulate
from typing import Any

import fastavro
from confluent_kafka import Producer

from bench.common import PARTITIONS, ROOT
from service.demo import demo_orders

HEADER = b"\x00\x00\x00\x00\x01"  # Confluent wire format, fixed schema id 1
SENTINEL = "~sentinel"
WINDOW_MS = 10_000
GRACE_MS = 2_000
MANY_KEYS = 50_000
DISORDER_MS = 1_500  # below GRACE_MS: out of order, never late
SCHEMA = fastavro.parse_schema(json.loads((ROOT / "service/schemas/order.avsc").read_text()))


def partition_of(key: str) -> int:
    """The partition a key goes to (the bench assigns partitions itself)."""
    return zlib.crc32(key.encode()) % PARTITIONS


def skewed_orders(
    count: int, start_ms: int, keys: int = 1_000, step_ms: float = 2, disorder_ms: int = 0
) -> Iterator[dict[str, Any]]:
    """`count` orders over `keys` customers with Zipf-like weights, seeded; each order's
    event time moved back by up to `disorder_ms` (0: in event-time order)."""
    rng = random.Random(11)
    shift = random.Random(13)
    cum = list(accumulate(1 / (rank + 1) ** 1.1 for rank in range(keys)))
    names = [f"k-{i:04d}" for i in range(keys)]
    picks = rng.choices(names, cum_weights=cum, k=count)
    statuses = ("created", "paid", "shipped", "cancelled")
    for i, key in enumerate(picks):
        yield {
            "order_id": f"s-{i}",
            "customer_id": key,
            "amount": round(rng.uniform(1, 500), 2),
            "currency": "EUR",
            "status": statuses[i % 4],
            "created_at": start_ms + math.floor(i * step_ms) - shift.randrange(disorder_ms + 1),
            "note": None,
        }


def orders(workload: str, count: int) -> list[dict[str, Any]]:
    """The orders of a workload, event times ending a minute before now."""
    span = {"demo": 0.25, "skewed": 0.002, "manykeys": 0.001}[workload] * count * 1.2 + 120
    start = int((time.time() - span) * 1000)
    if workload == "demo":
        return list(demo_orders(count, seed=99, start_ms=start))
    if workload == "manykeys":
        return list(skewed_orders(count, start, MANY_KEYS, step_ms=1, disorder_ms=DISORDER_MS))
    return list(skewed_orders(count, start))


def encode(order: dict[str, Any]) -> bytes:
    """Confluent wire Avro of one order."""
    buf = io.BytesIO()
    buf.write(HEADER)
    fastavro.schemaless_writer(buf, SCHEMA, order)
    return buf.getvalue()


def produce(
    bootstrap: str,
    topic: str,
    rows: list[dict[str, Any]],
    sentinel: bool = True,
    by_order: bool = False,
) -> None:
    """Write orders (and the sentinels) to a topic, partition by key, timestamp = created_at.

    `by_order`: every order to partition 0 keyed by its order id (the re-keyed rows' input:
    one partition, so the sentinel comes after every order in the repartition topic too).
    """
    producer = Producer(
        {"bootstrap.servers": bootstrap, "linger.ms": 50, "compression.type": "lz4"}
    )

    def send(order: dict[str, Any], partition: int | None = None) -> None:
        key = order["order_id" if by_order else "customer_id"]
        if partition is None:
            partition = 0 if by_order else partition_of(key)
        while True:
            try:
                producer.produce(
                    topic, encode(order), key.encode(), partition, timestamp=order["created_at"]
                )
                return
            except BufferError:
                producer.poll(0.05)

    for order in rows:
        send(order)
    if sentinel and rows:
        last = rows[-1]["created_at"] + 60_000
        for p in range(1 if by_order else PARTITIONS):
            order = dict(
                rows[-1],
                order_id=f"sentinel-{p}",
                customer_id=SENTINEL,
                status="created",
                created_at=last,
            )
            send(order, p)
    producer.flush(120)


@dataclass(frozen=True, slots=True)
class Window:
    """A window result: count, sum, min and max of `amount`."""

    count: int
    sum: float
    min: float
    max: float


def reference(
    rows: list[dict[str, Any]], size_ms: int = WINDOW_MS
) -> dict[tuple[str, int], Window]:
    """The windows the job must emit, computed directly from the input (sentinels excluded)."""
    acc: dict[tuple[str, int], list[float]] = {}
    for o in rows:
        if o["status"] == "cancelled":
            continue
        start = o["created_at"] - o["created_at"] % size_ms
        a = acc.get((o["customer_id"], start))
        x = o["amount"]
        if a is None:
            acc[(o["customer_id"], start)] = [1, x, x, x]
        else:
            a[0] += 1
            a[1] += x
            a[2] = min(a[2], x)
            a[3] = max(a[3], x)
    return {k: Window(int(a[0]), a[1], a[2], a[3]) for k, a in acc.items()}


def non_cancelled(rows: list[dict[str, Any]]) -> int:
    """How many orders pass the job's filter."""
    return sum(1 for o in rows if o["status"] != "cancelled")


def count_reference(rows: list[dict[str, Any]], count: int) -> dict[tuple[str, int], Window]:
    """The full count windows of `count` records per customer, numbered 0, 1, ... per key
    (a key's records keep their order: one partition per key, produced in order)."""
    per_key: dict[str, list[float]] = {}
    for o in rows:
        if o["status"] != "cancelled":
            per_key.setdefault(o["customer_id"], []).append(o["amount"])
    out: dict[tuple[str, int], Window] = {}
    for key, amounts in per_key.items():
        for i in range(len(amounts) // count):
            chunk = amounts[i * count : (i + 1) * count]
            out[(key, i)] = Window(count, sum(chunk), min(chunk), max(chunk))
    return out


def tier_of(customer_id: str) -> str:
    """The tier the customers table gives a customer (a function of the id alone)."""
    return f"tier-{zlib.crc32(customer_id.encode()) % 7}"


def customers_table(
    bootstrap: str, topic: str, rows: list[dict[str, Any]], others: int = 10_000
) -> tuple[str, dict[str, str]]:
    """The enrichment row's table: a compacted topic holding every customer of `rows` (and
    the sentinel's), plus `others` customers no order names, written twice each (the
    second value wins). Returns the topic and, per order id, the tier its output carries."""
    from confluent_kafka.admin import AdminClient, NewTopic  # noqa: PLC0415 - only here

    admin = AdminClient({"bootstrap.servers": bootstrap})
    new = NewTopic(topic, PARTITIONS, 1, config={"cleanup.policy": "compact"})
    for future in admin.create_topics([new], operation_timeout=30).values():
        future.result()
    customers = {o["customer_id"] for o in rows} | {SENTINEL}
    customers |= {f"other-{i}" for i in range(others)}
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 50})
    for value in ("stale", None):
        for cid in sorted(customers):
            row = {"tier": tier_of(cid) if value is None else value, "name": cid}
            while True:
                try:
                    producer.produce(topic, json.dumps(row).encode(), cid.encode())
                    break
                except BufferError:
                    producer.poll(0.05)
    producer.flush(120)
    tiers = {o["order_id"]: tier_of(o["customer_id"]) for o in rows}
    return topic, tiers


def route_of(customer_id: str, topics: list[str]) -> str:
    """The topic of a customer's orders in the routed row: one of `topics`, by CRC32."""
    return topics[zlib.crc32(customer_id.encode()) % len(topics)]
