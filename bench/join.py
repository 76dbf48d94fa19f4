"""Per-record cost of the table join in the pure batch function, against the same job
without it, in the same run.

No Kafka and no Redis: the batch's rows are handed to `process_batch` as the runtime's
one `HMGET` per batch would (its round trip is per batch, not per record: measure it
with the real Redis, docs/enrichment.md). The job is the bench's stateless one (Avro
orders in, project, Avro out); the joined job merges a JSON row per customer and writes
its `tier` too. Rounds of the two alternate; each figure is the best round.

Usage: python bench/join.py [--customers N]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from service.demo import demo_orders  # noqa: E402 - after the path set-up above
from service.processing.batch import Plan, decode_batch, process_batch  # noqa: E402
from service.processing.chain import Step  # noqa: E402
from service.processing.join import JoinPlan, field_key  # noqa: E402
from service.processing.steps import make_project  # noqa: E402
from service.records import BatchResult, InRecord  # noqa: E402
from service.serde import AvroSerde, JsonSerde  # noqa: E402
from service.serde.wire import ConfluentWire, PlainWire  # noqa: E402

FIELDS = ["order_id", "customer_id", "amount", "currency", "created_at"]


def _avro(path: str, schema_id: int) -> AvroSerde:
    return AvroSerde(json.loads((ROOT / path).read_text()), ConfluentWire(schema_id))


def _best(run: Callable[[], object], records: int, rounds: int) -> float:
    """The best of `rounds` runs, in microseconds per record."""
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - started)
    return best / records * 1e6


def main() -> None:
    """Print the figures."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=5000, help="per batch")
    parser.add_argument("--customers", type=int, default=0, help="0: the demo's 20")
    args = parser.parse_args()
    source = _avro("service/schemas/order.avsc", 1)
    orders = list(demo_orders(args.records, seed=1))
    if args.customers:
        orders = [{**o, "customer_id": f"c{i % args.customers}"} for i, o in enumerate(orders)]
    records = [InRecord("in", 0, i, None, source.encode(o), None, 0) for i, o in enumerate(orders)]
    rows = {
        c.encode(): json.dumps({"tier": "gold", "name": c}).encode()
        for c in {o["customer_id"] for o in orders}
    }
    plain = Plan(
        source,
        _avro("service/schemas/order_out.avsc", 2),
        (Step("map", make_project(FIELDS, {"amount": "total"}), "project"),),
        "out",
        "dlq",
        1_000_000,
        0,
        "bench",
    )
    join = JoinPlan("customers", field_key("customer_id"), JsonSerde(PlainWire()), as_=None)
    joined = Plan(
        source,
        _avro("bench/order_enriched.avsc", 3),
        (Step("map", make_project([*FIELDS, "tier"], {"amount": "total"}), "project"),),
        "out",
        "dlq",
        1_000_000,
        0,
        "bench",
        join=join,
    )

    def with_join() -> BatchResult:
        decoded, keys = decode_batch(records, joined)
        return process_batch(records, joined, 0, decoded, {k: rows[k] for k in keys})

    result = with_join()
    if len(result.outputs) != len(records) or result.dlq:
        raise SystemExit("the joined job lost records: the figures would mean nothing")
    without, with_ = [], []
    for _ in range(6):  # alternate, so a slow spell of the machine falls on both
        without.append(_best(lambda: process_batch(records, plain, 0), len(records), 8))
        with_.append(_best(with_join, len(records), 8))
    a, b = min(without), min(with_)
    print(
        f"{len(rows)} distinct keys in a batch of {len(records)}: without the join "
        f"{a:.2f} us/record, with it {b:.2f} us/record (+{b - a:.2f}, +{(b - a) / a:.0%})"
    )


if __name__ == "__main__":
    main()
