"""Throughput of rill against a floor measured in the same run.

The floor is a bare confluent-kafka + fastavro loop: consume a batch, decode, apply the
same projection, encode, produce, flush, store offsets. rill runs its real worker on the
same records. Both start after group join; the clock runs from the first batch consumed
to the last output delivered. Figures are ratios to the floor; nothing is asserted.

Usage: KAFKA_BOOTSTRAP_SERVERS=... python bench/run.py [--records N]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import fastavro
from confluent_kafka import Consumer, Producer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from service.app import build_plan  # noqa: E402 - after the path set-up above
from service.config import load_settings  # noqa: E402
from service.demo import demo_orders  # noqa: E402
from service.kafka.admin import ensure_topics  # noqa: E402
from service.observability.logging import configure_logging  # noqa: E402
from service.processing.batch import process_batch  # noqa: E402
from service.records import InRecord  # noqa: E402
from service.runtime.worker import Worker  # noqa: E402
from tests.support.demo_configs import PROJECTION_SETTINGS  # noqa: E402

HEADER_IN = b"\x00\x00\x00\x00\x01"
HEADER_OUT = b"\x00\x00\x00\x00\x02"


def _schema(name: str) -> Any:
    return fastavro.parse_schema(json.loads((ROOT / "service/schemas" / name).read_text()))


def prepare(bootstrap: str, topic: str, n: int) -> list[bytes]:
    """Produce n demo orders (Confluent wire Avro) to a new topic; returns the values."""
    ensure_topics({"bootstrap.servers": bootstrap}, [topic], 4)
    schema = _schema("order.avsc")
    values = []
    for order in demo_orders(n, seed=99):
        buf = io.BytesIO()
        buf.write(HEADER_IN)
        fastavro.schemaless_writer(buf, schema, order)
        values.append(buf.getvalue())
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 50})
    for i, value in enumerate(values):
        while True:
            try:
                producer.produce(topic, value, f"c-{i % 20}".encode())
                break
            except BufferError:
                producer.poll(0.05)
    producer.flush(60)
    return values


def floor(bootstrap: str, topic: str, n: int, batch: int) -> float:
    """Records/s of the bare loop."""
    reader, writer = _schema("order.avsc"), _schema("order_out.avsc")
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"floor-{uuid.uuid4()}",
            "auto.offset.reset": "earliest",
            "enable.auto.offset.store": False,
            "partition.assignment.strategy": "cooperative-sticky",
        }
    )
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "linger.ms": 20,
            "enable.idempotence": True,
            "compression.type": "lz4",
        }
    )
    consumer.subscribe([topic])
    out_topic = f"{topic}-floor-out"
    done, first, t0 = 0, 0, 0.0
    while done < n:
        msgs = consumer.consume(batch, 0.5)
        if not msgs:
            continue
        for msg in msgs:
            buf = io.BytesIO(msg.value())
            buf.seek(5)
            rec = fastavro.schemaless_reader(buf, reader, None)
            if rec["status"] == "cancelled":
                continue
            out = {
                "order_id": rec["order_id"],
                "customer_id": rec["customer_id"],
                "total": rec["amount"],
                "currency": rec["currency"],
                "created_at": rec["created_at"],
            }
            obuf = io.BytesIO()
            obuf.write(HEADER_OUT)
            fastavro.schemaless_writer(obuf, writer, out)
            producer.produce(out_topic, obuf.getvalue(), rec["customer_id"].encode())
        producer.flush(30)
        consumer.store_offsets(msgs[-1])
        done += len(msgs)
        if not t0:
            t0, first = time.perf_counter(), done
    elapsed = time.perf_counter() - t0
    consumer.close()
    return (n - first) / elapsed


def rill(bootstrap: str, topic: str, n: int, batch: int, **overrides: Any) -> tuple[float, int]:
    """Records/s of the rill worker, and its Redis round trips."""
    name = uuid.uuid4().hex[:8]
    settings = load_settings(
        bootstrap_servers=bootstrap,
        input_topic=topic,
        output_topic=f"{topic}-{name}-out",
        dlq_topic=f"{topic}-{name}-dlq",
        group_id=f"rill-{name}",
        metrics_port=0,
        batch_size=batch,
        log_level="warning",
        redis_prefix=f"bench-{name}",
        redis_url=os.environ.get("REDIS_URL", "redis://127.0.0.1:16379/0"),
        **overrides,
    )
    worker = Worker(settings, build_plan(settings))
    thread = threading.Thread(target=worker.run)
    thread.start()
    registry = worker.metrics.registry

    def consumed() -> float:
        return registry.get_sample_value("rill_records_in_total", {"topic": topic}) or 0.0

    t0 = 0.0
    first = 0.0
    while consumed() < n:
        if not t0 and consumed() > 0:
            t0, first = time.perf_counter(), consumed()
        time.sleep(0.002)
    elapsed = time.perf_counter() - t0
    worker.request_stop()
    thread.join()
    engine = worker._engine
    return (n - first) / elapsed, engine.store.round_trips if engine else 0


def pure(values: list[bytes]) -> tuple[float, float]:
    """µs per record: bare fastavro decode+project+encode vs rill's process_batch (no Kafka)."""
    reader, writer = _schema("order.avsc"), _schema("order_out.avsc")
    t = time.perf_counter()
    for v in values:
        buf = io.BytesIO(v)
        buf.seek(5)
        rec = fastavro.schemaless_reader(buf, reader, None)
        if rec["status"] == "cancelled":
            continue
        obuf = io.BytesIO()
        obuf.write(HEADER_OUT)
        fastavro.schemaless_writer(
            obuf,
            writer,
            {
                "order_id": rec["order_id"],
                "customer_id": rec["customer_id"],
                "total": rec["amount"],
                "currency": rec["currency"],
                "created_at": rec["created_at"],
            },
        )
    bare = (time.perf_counter() - t) / len(values) * 1e6
    plan = build_plan(load_settings(**PROJECTION_SETTINGS))
    records = [InRecord("t", 0, i, b"k", v, None, 0) for i, v in enumerate(values)]
    t = time.perf_counter()
    for start in range(0, len(records), 1000):
        process_batch(records[start : start + 1000], plan, 0)
    ours = (time.perf_counter() - t) / len(values) * 1e6
    return bare, ours


def main() -> None:
    """Run the benchmarks and print a report."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=1000)
    args = parser.parse_args()
    configure_logging("warning")  # as `rill run` does with RILL_LOG_LEVEL=warning
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:19092")
    topic = f"bench-{uuid.uuid4().hex[:8]}"
    values = prepare(bootstrap, topic, args.records)
    bare_us, ours_us = pure(values)
    floor_rps = floor(bootstrap, topic, args.records, args.batch)
    rill_rps, _ = rill(bootstrap, topic, args.records, args.batch, **PROJECTION_SETTINGS)
    win_rps, trips = rill(bootstrap, topic, args.records, args.batch)
    # The demo's 10 s windows hold about 1.5 records per customer and window; 5 min
    # windows about 45: the cost of windowing is per window touched, not per record.
    dense_rps, dense_trips = rill(
        bootstrap, topic, args.records, args.batch, window_size_ms=300_000
    )
    report = {
        "records": args.records,
        "batch": args.batch,
        "floor_records_per_s": round(floor_rps),
        "rill_stateless_records_per_s": round(rill_rps),
        "rill_stateless_to_floor": round(rill_rps / floor_rps, 3),
        "rill_windowed_records_per_s": round(win_rps),
        "rill_windowed_to_floor": round(win_rps / floor_rps, 3),
        "windowed_redis_round_trips_per_1000_records": round(trips / args.records * 1000, 2),
        "rill_windowed_5min_records_per_s": round(dense_rps),
        "rill_windowed_5min_to_floor": round(dense_rps / floor_rps, 3),
        "windowed_5min_round_trips_per_1000_records": round(dense_trips / args.records * 1000, 2),
        "pure_bare_us_per_record": round(bare_us, 2),
        "pure_rill_us_per_record": round(ours_us, 2),
        "pure_overhead_ratio": round(ours_us / bare_us, 3),
    }
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / f"throughput-{int(time.time())}.json").write_text(json.dumps(report, indent=2))
    for key, value in report.items():
        print(f"{key:28} {value}")


if __name__ == "__main__":
    main()
