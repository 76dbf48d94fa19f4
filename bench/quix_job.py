"""The bench's windowed job written for Quix Streams, run as its own process.

The same job as rill's: Confluent-wire Avro in (5-byte header, then fastavro), drop
cancelled orders, tumbling windows per message key (the customer id) with a grace
period, count / sum / min / max of `amount`, JSON out. Event time is the Kafka
timestamp, which the bench sets to `created_at`. Windows close per partition
(`final(closing_strategy="partition")`): when the partition's highest event time minus
the grace reaches the window's end, as in rill. Quix's RocksDB state lives in a
temporary directory. `--emit current` emits every update (the recovery phase uses it
to see the first record processed after a restart).

`--count N` windows every N records of a key (`tumbling_count_window`, emitted when full)
instead of the time windows, as rill's `RILL_WINDOW_TYPE=count_tumbling`.

`--group-by` re-keys by customer id first (`group_by`, through Quix's repartition topic)
for input keyed otherwise, as rill's `RILL_GROUP_BY=customer_id`.

`--stateless` runs rill's stateless bench job instead: drop cancelled orders, keep
order_id, customer_id, amount (renamed total), currency, created_at, Confluent-wire Avro
out with schema id 2 (service/schemas/order_out.avsc), as `RILL_WINDOW_TYPE=none` does.

Usage: python bench/quix_job.py BOOTSTRAP INPUT OUTPUT GROUP STATE_DIR
           [--guarantee at-least-once|exactly-once] [--window-ms N] [--grace-ms N]
           [--emit final|current] [--session-timeout-ms N] [--stateless] [--count N] [--group-by]
"""

from __future__ import annotations

import argparse
import io
import json
import logging
from pathlib import Path
from typing import Any

import fastavro
from quixstreams import Application
from quixstreams.dataframe.windows import aggregations as agg
from quixstreams.models.serializers.base import Deserializer, Serializer

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = fastavro.parse_schema(json.loads((ROOT / "service/schemas/order.avsc").read_text()))
OUT_SCHEMA = fastavro.parse_schema(
    json.loads((ROOT / "service/schemas/order_out.avsc").read_text())
)
OUT_HEADER = b"\x00\x00\x00\x00\x02"  # Confluent wire format, schema id 2 (rill's bench)


class WireAvro(Deserializer):
    """Confluent wire-format Avro with a known schema (rill's `input_wire=confluent`)."""

    def __call__(self, value: bytes, ctx: Any) -> Any:
        buf = io.BytesIO(value)
        buf.seek(5)
        return fastavro.schemaless_reader(buf, SCHEMA, None)


class WireAvroOut(Serializer):
    """Confluent wire-format Avro out, as rill's stateless bench job writes it."""

    def __call__(self, value: Any, ctx: Any) -> bytes:
        buf = io.BytesIO()
        buf.write(OUT_HEADER)
        fastavro.schemaless_writer(buf, OUT_SCHEMA, value)
        return buf.getvalue()


def project(order: dict[str, Any]) -> dict[str, Any]:
    """The stateless job's projection: five fields, amount renamed total."""
    return {
        "order_id": order["order_id"],
        "customer_id": order["customer_id"],
        "total": order["amount"],
        "currency": order["currency"],
        "created_at": order["created_at"],
    }


def main() -> None:
    """Build the app and run it until SIGTERM."""
    parser = argparse.ArgumentParser()
    for name in ("bootstrap", "input", "output", "group", "state_dir"):
        parser.add_argument(name)
    parser.add_argument("--guarantee", default="at-least-once")
    parser.add_argument("--window-ms", type=int, default=10_000)
    parser.add_argument("--grace-ms", type=int, default=2_000)
    parser.add_argument("--emit", default="final")
    parser.add_argument("--session-timeout-ms", type=int, default=45_000)
    parser.add_argument("--stateless", action="store_true")
    parser.add_argument("--count", type=int, default=0)
    parser.add_argument("--group-by", action="store_true")
    args = parser.parse_args()
    app = Application(
        broker_address=args.bootstrap,
        consumer_group=args.group,
        auto_offset_reset="earliest",
        processing_guarantee=args.guarantee,
        state_dir=args.state_dir,
        loglevel=logging.WARNING,
        consumer_extra_config={"session.timeout.ms": args.session_timeout_ms},
    )
    source = app.topic(args.input, value_deserializer=WireAvro(), key_deserializer="str")
    sdf = app.dataframe(source)
    sdf = sdf.filter(lambda v: v["status"] != "cancelled")
    if args.group_by:
        # Raw text keys as rill's, so both partition the re-keyed records alike (murmur2).
        sdf = sdf.group_by("customer_id", key_serializer="str", key_deserializer="str")
    if args.stateless:
        sdf = sdf.apply(project)
        sdf.to_topic(app.topic(args.output, value_serializer=WireAvroOut(), key_serializer="str"))
        app.run()
        return
    sink = app.topic(args.output, value_serializer="json", key_serializer="str")
    aggs = {"count": agg.Count(), "sum": agg.Sum("amount")}
    aggs |= {"min": agg.Min("amount"), "max": agg.Max("amount")}
    if args.count:
        counted = sdf.tumbling_count_window(args.count).agg(**aggs)
        sdf = counted.final() if args.emit == "final" else counted.current()
    else:
        window = sdf.tumbling_window(args.window_ms, grace_ms=args.grace_ms).agg(**aggs)
        final = window.final(closing_strategy="partition")
        sdf = final if args.emit == "final" else window.current()
    sdf.to_topic(sink)
    app.run()


if __name__ == "__main__":
    main()
