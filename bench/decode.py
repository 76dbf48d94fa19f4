"""Per-record decode cost of each format, against plain fastavro in the same run.

No Kafka and no network: the registry-format serdes get their schema cache filled
directly, as the worker's prefetch does once per id. Each figure is the best of several
rounds over the same 50,000 records.

Usage: python bench/decode.py
"""

from __future__ import annotations

import json
import struct
import sys
import tempfile
import time
from collections.abc import Callable
from io import BytesIO
from pathlib import Path
from typing import Any

import fastavro
import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from service.demo import demo_orders  # noqa: E402 - after the path set-up above
from service.serde import AvroSerde, JsonSerde, ProtobufSerde  # noqa: E402
from service.serde.avro_registry import RegistryAvroSerde, prepare_avro  # noqa: E402
from service.serde.json_registry import RegistryJsonSerde, prepare_json  # noqa: E402
from service.serde.protobuf_serde import load_message_class  # noqa: E402
from service.serde.schema_cache import SchemaCache  # noqa: E402
from service.serde.wire import ConfluentWire, PlainWire  # noqa: E402

N = 50_000
ROUNDS = 5
ORDER = json.loads((ROOT / "service/schemas/order.avsc").read_text())
PROTO = """syntax = "proto3";
package bench;
message Order {
  string order_id = 1; string customer_id = 2; double amount = 3; string currency = 4;
  string status = 5; int64 created_at = 6; string note = 7;
}
"""


def best_us(decode: Callable[[bytes], Any], values: list[bytes]) -> float:
    """Best µs per record over ROUNDS passes."""
    best = float("inf")
    for _ in range(ROUNDS):
        t = time.perf_counter()
        for v in values:
            decode(v)
        best = min(best, (time.perf_counter() - t) / len(values) * 1e6)
    return best


def main() -> None:
    """Measure and print µs/record and ratios."""
    orders = list(demo_orders(N, seed=3))
    parsed = fastavro.parse_schema(ORDER)
    plain = []
    for o in orders:
        buf = BytesIO()
        fastavro.schemaless_writer(buf, parsed, o)
        plain.append(buf.getvalue())
    wire = [struct.pack(">bI", 0, 1) + v for v in plain]

    def bare(v: bytes) -> Any:
        return fastavro.schemaless_reader(BytesIO(v), parsed, None)

    cache = SchemaCache(prepare_avro(ORDER))
    cache.known[1] = cache.prepare("AVRO", json.dumps(ORDER))
    evolved = dict(
        ORDER, fields=[*ORDER["fields"], {"name": "channel", "type": "string", "default": "web"}]
    )
    cache_evolved = SchemaCache(prepare_avro(evolved))
    cache_evolved.known[1] = cache_evolved.prepare("AVRO", json.dumps(ORDER))

    json_plain = [orjson.dumps(o) for o in orders]
    json_wire = [struct.pack(">bI", 0, 2) + v for v in json_plain]
    json_cache = SchemaCache(prepare_json)
    json_cache.known[2] = prepare_json(
        "JSON",
        json.dumps(
            {
                "type": "object",
                "properties": {"amount": {"type": "number"}},
                "required": ["order_id", "amount"],
            }
        ),
    )

    with tempfile.TemporaryDirectory() as tmp:
        proto = Path(tmp) / "order.proto"
        proto.write_text(PROTO)
        cls = load_message_class(str(proto), "bench.Order")
    proto_plain = [cls(**{**o, "note": o["note"] or ""}).SerializeToString() for o in orders]
    proto_wire = [struct.pack(">bI", 0, 3) + b"\x00" + v for v in proto_plain]
    proto_cache = SchemaCache(lambda t, s: True)
    proto_cache.known[3] = True

    rows = {
        "fastavro schemaless (floor)": best_us(bare, plain),
        "avro plain": best_us(AvroSerde(ORDER, PlainWire()).decode, plain),
        "avro confluent (fixed id)": best_us(AvroSerde(ORDER, ConfluentWire(1)).decode, wire),
        "avro registry (wire format)": best_us(RegistryAvroSerde(cache).decode, wire),
        "avro registry + evolution": best_us(RegistryAvroSerde(cache_evolved).decode, wire),
        "json plain": best_us(JsonSerde(PlainWire()).decode, json_plain),
        "json schema registry": best_us(RegistryJsonSerde(json_cache).decode, json_wire),
        "protobuf plain": best_us(ProtobufSerde(cls, PlainWire()).decode, proto_plain),
        "protobuf registry": best_us(ProtobufSerde(cls, cache=proto_cache).decode, proto_wire),
    }
    # The headline ratio, measured alternately so drift of the machine hits both alike.
    registry = RegistryAvroSerde(cache).decode
    pairs = [(best_us(bare, plain), best_us(registry, wire)) for _ in range(5)]
    floor_us, wire_us = min(p[0] for p in pairs), min(p[1] for p in pairs)
    rows["fastavro schemaless (floor)"] = min(rows["fastavro schemaless (floor)"], floor_us)
    rows["avro registry (wire format)"] = min(rows["avro registry (wire format)"], wire_us)
    floor = rows["fastavro schemaless (floor)"]
    print(f"{'format':32} {'us/record':>10} {'x floor':>8}")
    for name, us in rows.items():
        print(f"{name:32} {us:10.2f} {us / floor:8.2f}")
    ratio = rows["avro registry (wire format)"] / floor
    print(f"wire-format Avro vs plain fastavro: {ratio:.3f}x")
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / f"decode-{int(time.time())}.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
