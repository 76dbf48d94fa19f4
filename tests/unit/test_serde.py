"""Serdes: round trips and every way bytes can be wrong."""

from __future__ import annotations

import json
import struct

import pytest

from service.config import SCHEMA_DIR as SCHEMAS
from service.demo import demo_orders
from service.errors import DecodeError, EncodeError
from service.serde import AvroSerde, JsonSerde
from service.serde.wire import ConfluentWire, PlainWire

ORDER_SCHEMA = json.loads((SCHEMAS / "order.avsc").read_text())


@pytest.fixture
def order() -> dict[str, object]:
    """One demo order."""
    return next(demo_orders(1))


def test_avro_plain_round_trip(order: dict[str, object]) -> None:
    """Plain Avro decodes to what was encoded (timestamps come back as datetimes)."""
    serde = AvroSerde(ORDER_SCHEMA, PlainWire())
    back = serde.decode(serde.encode(order))
    assert back["order_id"] == order["order_id"]
    assert int(back["created_at"].timestamp() * 1000) == order["created_at"]


def test_avro_confluent_wire_header(order: dict[str, object]) -> None:
    """The Confluent wire format starts with magic 0 and the big-endian schema id."""
    data = AvroSerde(ORDER_SCHEMA, ConfluentWire(42)).encode(order)
    assert data[:5] == struct.pack(">bI", 0, 42)
    assert AvroSerde(ORDER_SCHEMA, ConfluentWire(42)).decode(data)["amount"] == order["amount"]


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (None, "null value"),
        (b"\x01\x00\x00\x00\x01abc", "magic byte"),
        (b"\x00\x00", "shorter than the wire header"),
        (b"\x00\x00\x00\x00\x07abc", "unknown schema id"),
        (b"\x00\x00\x00\x00\x01" + b"\xff" * 3, "not an Avro record"),
    ],
)
def test_avro_bad_bytes_raise_decode_error(data: bytes | None, reason: str) -> None:
    """Garbage, wrong framing and unknown ids are DecodeErrors with a reason."""
    with pytest.raises(DecodeError, match=reason):
        AvroSerde(ORDER_SCHEMA, ConfluentWire(1)).decode(data)


def test_avro_trailing_bytes_mean_wrong_schema(order: dict[str, object]) -> None:
    """A value longer than one record of the schema is not silently accepted."""
    serde = AvroSerde(ORDER_SCHEMA, PlainWire())
    with pytest.raises(DecodeError, match="trailing bytes"):
        serde.decode(serde.encode(order) + b"\x00")


def test_avro_encode_misfit_raises_encode_error() -> None:
    """A record missing a required field cannot be encoded."""
    with pytest.raises(EncodeError, match="order_id"):
        AvroSerde(ORDER_SCHEMA, PlainWire()).encode({"amount": 1.0})


def test_json_round_trip_and_errors() -> None:
    """JSON objects round-trip; non-objects and garbage are DecodeErrors."""
    serde = JsonSerde(ConfluentWire(3))
    assert serde.decode(serde.encode({"a": 1})) == {"a": 1}
    plain = JsonSerde(PlainWire())
    with pytest.raises(DecodeError, match="list"):
        plain.decode(b"[1, 2]")
    with pytest.raises(DecodeError, match="not JSON"):
        plain.decode(b"{oops")
    with pytest.raises(EncodeError):
        plain.encode({"a": object()})
