"""The floor: a bare confluent-kafka + fastavro loop, run as its own process.

Consume a batch, decode each record, drop cancelled orders, project five fields, encode
Avro, produce, flush, store offsets. No state, no DLQ, no metrics: what a hand-written
consumer costs on this machine. It runs until it is stopped.

Usage: python bench/floor.py BOOTSTRAP INPUT OUTPUT GROUP [BATCH]
"""

from __future__ import annotations

import io
import json
import signal
import sys
from pathlib import Path

import fastavro
from confluent_kafka import Consumer, Producer

ROOT = Path(__file__).resolve().parents[1]
HEADER_OUT = b"\x00\x00\x00\x00\x02"


def _schema(name: str) -> object:
    return fastavro.parse_schema(json.loads((ROOT / "service/schemas" / name).read_text()))


def main() -> None:
    """Run the loop until SIGTERM."""
    bootstrap, topic, out_topic, group = sys.argv[1:5]
    batch = int(sys.argv[5]) if len(sys.argv) > 5 else 1000
    reader, writer = _schema("order.avsc"), _schema("order_out.avsc")
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
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
    running = [True]
    signal.signal(signal.SIGTERM, lambda *_: running.__setitem__(0, False))
    consumer.subscribe([topic])
    while running[0]:
        msgs = consumer.consume(batch, 0.5)
        if not msgs:
            continue
        for msg in msgs:
            buf = io.BytesIO(msg.value())
            buf.seek(5)
            rec = fastavro.schemaless_reader(buf, reader, None)
            if rec["status"] == "cancelled" or rec["customer_id"] == "~sentinel":
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
    consumer.close()


if __name__ == "__main__":
    main()
