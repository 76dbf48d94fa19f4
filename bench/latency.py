"""End-to-end latency at a fixed input rate.

The bench produces orders at a steady rate (a fraction of the system's measured
maximum), each with `created_at` = its Kafka timestamp (CreateTime) = the wall clock
when the bench hands it to the producer (linger.ms 5). Sinks stamp LogAppendTime.

- Windowed: a window result is due when the record that closes it arrives: the first
  record of its partition with event time >= window end + grace (both systems' closing
  rule). Latency = sink append time of the result - CreateTime of that record.
- Stateless: latency = sink append time of the output - CreateTime of its input.

The first 5 s of results are left out (start-up); windows the final sentinel closes are
not counted.

Where rill's latency goes: its own histograms, read from its /metrics at the end of the
row (`stages`): the poll-to-commit time of a batch, the Redis apply round trip, the
delivery (producer flush, or the transaction) and the offset commit, each as a mean and
the upper bound of the bucket holding its 99th percentile; plus the fixed waits of its
configuration (poll timeout, producer linger).
"""

from __future__ import annotations

import bisect
import io
import random
import signal
import subprocess
import tempfile
import time
import urllib.request
import uuid
from typing import Any

import fastavro
from confluent_kafka import Producer
from prometheus_client.parser import text_string_to_metric_families

from bench.common import PARTITIONS, Steal, create_topics, free_port, read_topic
from bench.systems import Run, System, start
from bench.throughput import OUT_SCHEMA, parse_window, wait_done
from bench.workloads import GRACE_MS, SENTINEL, encode, partition_of

# Windowed rows use 1 s windows: a 30 s run then closes about 25 windows per key and
# partition, so p99 is taken over a few hundred closings (with the throughput job's 10 s
# windows it was two or three closing moments, every result of one sharing its latency).
LATENCY_WINDOW_MS = 1_000


def pace(bootstrap: str, topic: str, rate: float, seconds: float) -> list[list[int]]:
    """Produce demo-like orders at `rate` per second; returns each partition's event times."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    rng = random.Random(5)
    times: list[list[int]] = [[] for _ in range(PARTITIONS)]
    t0 = time.monotonic()
    sent = 0
    statuses = ("created", "paid", "shipped", "cancelled")
    while (elapsed := time.monotonic() - t0) < seconds:
        while sent < rate * elapsed:
            key = f"c-{rng.randrange(200):03d}"
            now = int(time.time() * 1000)
            order = {
                "order_id": f"l-{sent}",
                "customer_id": key,
                "amount": round(rng.uniform(1, 500), 2),
                "currency": "EUR",
                "status": statuses[sent % 4],
                "created_at": now,
                "note": None,
            }
            p = partition_of(key)
            try:
                producer.produce(topic, encode(order), key.encode(), partition=p, timestamp=now)
            except BufferError:
                producer.poll(0.01)
                continue
            times[p].append(now)
            sent += 1
        producer.poll(0)
        time.sleep(0.002)
    last = int(time.time() * 1000) + 60_000
    for p in range(PARTITIONS):
        order = {
            "order_id": f"sentinel-{p}",
            "customer_id": SENTINEL,
            "amount": 1.0,
            "currency": "EUR",
        }
        order.update({"status": "created", "created_at": last, "note": None})
        producer.produce(topic, encode(order), SENTINEL.encode(), partition=p, timestamp=last)
    producer.flush(60)
    return times


def percentile(values: list[float], q: float) -> float:
    """The q-quantile (0..1) of values, nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


# rill's stage histograms, by what the latency table calls them.
STAGES = {
    "batch": "rill_batch_seconds",
    "apply": "rill_redis_seconds",
    "delivery": "rill_delivery_seconds",
    "commit": "rill_commit_seconds",
}


def stages(metrics_text: str) -> dict[str, dict[str, float]]:
    """Mean and p99 (its bucket's upper bound) in ms of each of rill's stage histograms."""
    out: dict[str, dict[str, float]] = {}
    families = {f.name: f for f in text_string_to_metric_families(metrics_text)}
    for stage, name in STAGES.items():
        family = families.get(name)
        if family is None:
            continue
        buckets: list[tuple[float, float]] = []
        total = count = 0.0
        for sample in family.samples:
            if sample.name.endswith("_bucket"):
                buckets.append((float(sample.labels["le"]), sample.value))
            elif sample.name.endswith("_sum"):
                total = sample.value
            elif sample.name.endswith("_count"):
                count = sample.value
        if not count:
            continue
        buckets.sort()
        p99 = next((le for le, n in buckets if n >= 0.99 * count), float("inf"))
        out[stage] = {"mean_ms": round(total / count * 1000, 2), "p99_le_ms": p99 * 1000}
    return out


def scrape(port: int) -> str:
    """The text of a worker's /metrics ('' when it does not answer)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            return str(resp.read().decode())
    except OSError:
        return ""


def measure(
    bootstrap: str, system: System, rate: float, seconds: float, redis: tuple[str, int]
) -> dict[str, Any]:
    """Latency of one system at `rate` records/s for `seconds`."""
    tag = f"{system.kind}-{system.guarantee[:1]}{int(system.windowed)}"
    name = f"bench-lat-{tag}-{uuid.uuid4().hex[:4]}"
    create_topics(bootstrap, [name])
    create_topics(bootstrap, [f"{name}-out"], log_append_time=True)
    create_topics(bootstrap, [f"{name}-out-dlq"])
    with tempfile.TemporaryDirectory(prefix="bench-state-") as state_dir:
        port = free_port() if system.kind == "rill" else 0
        run = Run(
            bootstrap,
            name,
            f"{name}-out",
            f"g-{name}",
            redis[0],
            state_dir,
            LATENCY_WINDOW_MS,
            metrics_port=port,
        )
        proc = start(system, run)
        time.sleep(8)  # start-up and group join, before the clock runs
        started_ms = int(time.time() * 1000)
        steal = Steal()
        times = pace(bootstrap, name, rate, seconds)
        steal_pct = steal.percent()
        finished_at = time.monotonic()
        wait_done(bootstrap, [f"{name}-out"], 1, proc, 30)
        drain_s = time.monotonic() - finished_at
        metrics_text = scrape(port) if port else ""
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
    recs = read_topic(bootstrap, f"{name}-out", 30)
    lat: list[float] = []
    for rec in recs:
        if system.windowed:
            (key, start_ms), _ = parse_window(system, rec)
            if key == SENTINEL:
                continue
            ts = times[partition_of(key)]
            i = bisect.bisect_left(ts, start_ms + LATENCY_WINDOW_MS + GRACE_MS)
            if i == len(ts):
                continue  # closed by the sentinel
            source = ts[i]
        else:
            buf = io.BytesIO(rec.value)
            buf.seek(5)
            out = fastavro.schemaless_reader(buf, OUT_SCHEMA, None)
            if out["customer_id"] == SENTINEL:
                continue
            created = out["created_at"]
            source = created if isinstance(created, int) else int(created.timestamp() * 1000)
        if source >= started_ms + 5_000:
            lat.append(rec.ts_ms - source)
    row: dict[str, Any] = {
        "system": system.name,
        "rate": round(rate),
        "seconds": seconds,
        "results": len(lat),
        "steal_pct": steal_pct,
        # Seconds from the last record sent until the sink stopped growing (3 s of quiet
        # included): far above that the system fell behind the rate.
        "drain_s": round(drain_s, 1),
    }
    if metrics_text:
        row["stages"] = stages(metrics_text)
    if lat:
        row.update(
            {
                "p50_ms": percentile(lat, 0.5),
                "p99_ms": percentile(lat, 0.99),
                "max_ms": max(lat),
            }
        )
    return row
