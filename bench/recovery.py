"""Recovery after SIGKILL with many open windows, and worker memory at a state size.

The job here is the windowed job with 1 day windows that emit every update (rill
`RILL_WINDOW_EMIT=update`, Quix `.current()`), so every record processed shows in the
sink at once. Every record's event time is the wall clock when it is produced, inside one
day's window: the state is `size` open windows (one per distinct key) and nothing closes
(a run across midnight UTC would close them). Probes carry the wall clock too, so a
watermark that rill's idle rule moved on with the wall clock never makes them late.

1. Prefill `size` records with `size` distinct keys; start the worker; wait until all
   are in the sink and the group's committed offsets reach the end (Quix: its
   checkpoint, with the changelog, is flushed).
2. Note its RSS; SIGKILL it and start the replacement at once (same group, same state:
   rill's Redis, Quix's changelog topics on a fresh state dir, as a new pod would).
3. Produce a probe record every 100 ms. Recovery = the sink append time of the first
   probe's result - the time of the kill. It includes the group's session timeout
   (the dead member's partitions move only then: `session.timeout.ms`, set alike for
   both), process start-up, group join and, for Quix, the changelog restore.
"""

from __future__ import annotations

import json
import signal
import subprocess
import tempfile
import time
import uuid
from dataclasses import replace
from typing import Any

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

from bench.common import PARTITIONS, create_topics, end_offsets, status_mb
from bench.systems import Run, System, start
from bench.workloads import encode, partition_of

DAY_MS = 86_400_000


def _order(key: str, ts: int, i: int) -> bytes:
    return encode(
        {
            "order_id": f"r-{i}",
            "customer_id": key,
            "amount": 1.0,
            "currency": "EUR",
            "status": "created",
            "created_at": ts,
            "note": None,
        }
    )


def prefill(bootstrap: str, topic: str, size: int, ts: int) -> None:
    """`size` records, one per key, all at event time ts."""
    producer = Producer(
        {"bootstrap.servers": bootstrap, "linger.ms": 50, "compression.type": "lz4"}
    )
    for i in range(size):
        key = f"w-{i}"
        while True:
            try:
                producer.produce(
                    topic,
                    _order(key, ts, i),
                    key.encode(),
                    partition=partition_of(key),
                    timestamp=ts,
                )
                break
            except BufferError:
                producer.poll(0.05)
    producer.flush(120)


def committed_all(bootstrap: str, topic: str, group: str) -> bool:
    """The group's committed offsets reached the end of every partition."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "log_level": 3})
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        done = consumer.committed(tps, 10)
        ends = [consumer.get_watermark_offsets(tp, 10)[1] for tp in tps]
        return all(c.offset >= e for c, e in zip(done, ends, strict=True))
    except KafkaException:
        return False
    finally:
        consumer.close()


def _probe_seen(value: bytes, key: bytes | None) -> bool:
    if key and key.startswith(b"p-"):
        return True
    try:
        return str(json.loads(value).get("key", "")).startswith("p-")
    except ValueError:
        return False


def _tail(bootstrap: str, topic: str) -> Consumer:
    """A consumer of topic from its current end."""
    sink = Consumer({"bootstrap.servers": bootstrap, "group.id": f"r-{topic}", "log_level": 3})
    tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
    sink.assign(
        [TopicPartition(topic, tp.partition, sink.get_watermark_offsets(tp)[1]) for tp in tps]
    )
    return sink


def _load(
    bootstrap: str, run: Run, proc: subprocess.Popen[bytes], size: int, timeout_s: float
) -> None:
    """Until every prefilled record is in the sink and the group committed them all."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        if end_offsets(bootstrap, run.output) >= size and committed_all(
            bootstrap, run.input, run.group
        ):
            return
        time.sleep(0.5)


def _first_probe(bootstrap: str, run: Run, killed: float, proc: subprocess.Popen[bytes]) -> int:
    """Produce a probe every 100 ms until one's result is in the sink: its append time (ms)."""
    sink = _tail(bootstrap, run.output)
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0})
    i = 0
    try:
        while time.time() - killed < 900 and proc.poll() is None:
            key = f"p-{i}"
            ts = int(time.time() * 1000)
            producer.produce(
                run.input, _order(key, ts, i), key.encode(), partition=i % PARTITIONS, timestamp=ts
            )
            producer.poll(0)
            i += 1
            for m in sink.consume(100, 0.1):
                if m.error() is None and _probe_seen(m.value(), m.key()):
                    return int(m.timestamp()[1])
        return 0
    finally:
        producer.flush(10)
        sink.close()


def measure(
    bootstrap: str,
    system: System,
    size: int,
    redis: tuple[str, int],
    session_timeout_ms: int,
    kill: bool = True,
) -> dict[str, Any]:
    """Load `size` open windows; RSS; then (kill) the recovery time of a replacement."""
    name = f"bench-rec-{system.kind}-{size}-{uuid.uuid4().hex[:4]}"
    create_topics(bootstrap, [name])
    create_topics(bootstrap, [f"{name}-out"], log_append_time=True)
    create_topics(bootstrap, [f"{name}-out-dlq"])
    ts = int(time.time() * 1000)
    prefill(bootstrap, name, size, ts)
    row: dict[str, Any] = {"system": system.name, "open_windows": size}
    with (
        tempfile.TemporaryDirectory(prefix="bench-a-") as a,
        tempfile.TemporaryDirectory(prefix="bench-b-") as b,
    ):
        run = Run(
            bootstrap,
            name,
            f"{name}-out",
            f"g-{name}",
            redis[0],
            a,
            DAY_MS,
            "update",
            session_timeout_ms,
        )
        t0 = time.monotonic()
        proc = start(system, run)
        _load(bootstrap, run, proc, size, 900)
        row["load_s"] = round(time.monotonic() - t0, 1)
        row["rss_mb"] = round(status_mb(proc.pid, "VmRSS"), 1)
        row["peak_rss_mb"] = round(status_mb(proc.pid, "VmHWM"), 1)
        if not kill:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
            return row
        proc.send_signal(signal.SIGKILL)
        killed = time.time()
        proc.wait()
        replacement = start(system, replace(run, state_dir=b))
        try:
            seen_ms = _first_probe(bootstrap, run, killed, replacement)
            row["replacement_rss_mb"] = round(status_mb(replacement.pid, "VmRSS"), 1)
        finally:
            replacement.send_signal(signal.SIGTERM)
            try:
                replacement.wait(60)
            except subprocess.TimeoutExpired:
                replacement.kill()
        row["recovery_s"] = round(seen_ms / 1000 - killed, 2) if seen_ms else None
    return row
