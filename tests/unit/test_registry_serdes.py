"""Registry serdes on the client's mock:// registry (unit tier), and Protobuf framing."""

from __future__ import annotations

import json
import struct
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.schema_registry import Schema

from service.app import build_plan, open_plan
from service.config import load_settings
from service.errors import ConfigError, DecodeError, EncodeError, RillError
from service.kafka.registry_client import RegistryResolver, record_name_of, subject_name
from service.records import InRecord
from service.serde.avro_registry import RegistryAvroSerde, prepare_avro
from service.serde.json_registry import RegistryJsonSerde, prepare_json
from service.serde.protobuf_serde import ProtobufSerde, load_message_class
from service.serde.schema_cache import SchemaCache, peek_schema_id
from service.serde.wire import ConfluentWire, PlainWire

V1 = {"type": "record", "name": "P", "fields": [{"name": "a", "type": "int"}]}
READER = {
    "type": "record",
    "name": "P",
    "fields": [{"name": "a", "type": "long"}, {"name": "b", "type": "string", "default": "x"}],
}


def _rec(value: bytes) -> InRecord:
    return InRecord("t", 0, 0, None, value, None, 0)


def test_avro_registry_decodes_writer_into_reader_and_caches_by_id() -> None:
    """One lookup per id; records of the writer come out in the reader shape."""
    cache = SchemaCache(prepare_avro(READER))
    resolver = RegistryResolver({"url": "mock://unit-avro"}, cache).start()
    schema_id = resolver.client.register_schema("t-value", Schema(json.dumps(V1), "AVRO"))
    writer = RegistryAvroSerde(SchemaCache(prepare_avro(None)), V1, schema_id)
    values = [writer.encode({"a": i}) for i in range(50)]
    resolver.prefetch([_rec(v) for v in values])
    resolver.prefetch([_rec(v) for v in values])
    assert resolver.lookups == 1, "schemas are cached by id"
    serde = RegistryAvroSerde(cache)
    assert [serde.decode(v) for v in values[:2]] == [{"a": 0, "b": "x"}, {"a": 1, "b": "x"}]
    with pytest.raises(DecodeError, match="unknown schema id 77"):
        serde.decode(struct.pack(">bI", 0, 77) + b"\x02")


def test_unknown_id_is_reported_once_per_batch() -> None:
    """An id the registry does not know is a DLQ reason, without retries."""
    cache = SchemaCache(prepare_avro(None))
    resolver = RegistryResolver({"url": "mock://unit-unknown"}, cache, retries=3).start()
    resolver.prefetch([_rec(struct.pack(">bI", 0, 5) + b"\x00")])
    assert resolver.lookups == 1
    assert "not in the schema registry" in cache.failed[5]


def test_json_schema_registry_validates() -> None:
    """JSON records are checked against their writer's JSON Schema."""
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    cache = SchemaCache(prepare_json)
    resolver = RegistryResolver({"url": "mock://unit-json"}, cache).start()
    sid = resolver.client.register_schema("j-value", Schema(json.dumps(schema), "JSON"))
    resolver.prefetch([_rec(struct.pack(">bI", 0, sid) + b"{}")])
    serde = RegistryJsonSerde(cache, output_id=sid)
    assert serde.decode(serde.encode({"n": 3})) == {"n": 3}
    with pytest.raises(DecodeError, match="does not match"):
        serde.decode(struct.pack(">bI", 0, sid) + b'{"n": "three"}')


def test_protobuf_plain_and_confluent_framing(tmp_path: Path) -> None:
    """.proto compiled at start; Confluent framing carries message indexes."""
    proto = tmp_path / "m.proto"
    proto.write_text(
        'syntax = "proto3";\npackage u;\nenum K { A = 0; B = 1; }\n'
        "message M { string id = 1; int64 n = 2; repeated K ks = 3; }\n"
    )
    cls = load_message_class(str(proto), "u.M")
    plain = ProtobufSerde(cls, PlainWire())
    record = {"id": "x", "n": 2**40, "ks": ["B", "A"]}
    assert plain.decode(plain.encode(record)) == record
    framed = ProtobufSerde(cls, ConfluentWire(9))
    data = framed.encode(record)
    assert data[:6] == struct.pack(">bI", 0, 9) + b"\x00"
    assert peek_schema_id(data) == 9
    assert framed.decode(data) == record
    # Message indexes [1, 0] (zigzag varints: count 2 -> 4, 1 -> 2, 0 -> 0) are skipped.
    assert framed.decode(data[:5] + b"\x04\x02\x00" + data[6:]) == record
    with pytest.raises(DecodeError):
        plain.decode(b"\xff\xff\xff")


def test_subject_name_strategies() -> None:
    """topic, record and topic_record subjects, as Confluent names them."""
    text = json.dumps({"type": "record", "name": "Order", "namespace": "shop", "fields": []})
    name = record_name_of(text, "AVRO")
    assert subject_name("topic", "orders", name) == "orders-value"
    assert subject_name("record", "orders", name) == "shop.Order"
    assert subject_name("topic_record", "orders", name) == "orders-shop.Order"


ORDER_OUT = {
    "order_id": "o-1",
    "customer_id": "c-001",
    "total": 12.5,
    "currency": "EUR",
    "created_at": 1_767_225_600_000,
}


def _registry_output(url: str, **overrides: Any) -> dict[str, Any]:
    return {
        "output_format": "avro",
        "output_schema": "order_out.avsc",
        "output_wire": "registry",
        "schema_registry_url": url,
        "window_type": "none",
        **overrides,
    }


def test_plan_holds_an_unstarted_registry_that_open_plan_starts_and_closes() -> None:
    """build_plan opens nothing; open_plan registers the output schema, hands the encoder
    its id, and the ExitStack closes the client."""
    plan = build_plan(
        load_settings(**_registry_output("mock://open-plan", output_auto_register=True))
    )
    registry = plan.resolver
    with pytest.raises(RillError, match="before start"):
        _ = registry.client
    with pytest.raises(EncodeError, match="no output schema and id"):
        plan.encoder.encode(ORDER_OUT)
    with ExitStack() as stack:
        open_plan(plan, stack)
        subject = registry.client.get_latest_version("orders-by-customer-value")
        data = plan.encoder.encode(ORDER_OUT)
        assert peek_schema_id(data) == subject.schema_id
    with pytest.raises(RillError, match="before start"):
        _ = registry.client


def test_open_plan_refuses_an_unregistered_output_schema_without_auto_register() -> None:
    """Without RILL_OUTPUT_AUTO_REGISTER the output schema must already be registered."""
    plan = build_plan(load_settings(**_registry_output("mock://open-plan-unregistered")))
    with ExitStack() as stack, pytest.raises(ConfigError, match="RILL_OUTPUT_AUTO_REGISTER"):
        open_plan(plan, stack)


def test_open_plan_without_registry_opens_nothing() -> None:
    """A plan with plain and fixed-id serdes has no client to open."""
    plan = build_plan(load_settings())
    assert plan.resolver is None
    with ExitStack() as stack:
        open_plan(plan, stack)
